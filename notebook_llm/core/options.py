"""The options of one call: one record for ``complete``, ``acomplete``,
``stream`` and ``astream``.

The four methods take these as keyword arguments (so help and tab completion
show them) and build one :class:`CallOptions`, which is all the core passes
on. ``tests/test_parity.py`` checks that every twin takes exactly these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["CallOptions"]


@dataclass(frozen=True, kw_only=True, slots=True)
class CallOptions:
    """Per-call options (every one may be left out)."""

    system: str | None = None
    """A system prompt."""
    temperature: float | None = None
    """Sampling temperature."""
    max_tokens: int | None = None
    """The most tokens to generate."""
    tools: Sequence[Any] | None = None
    """Python functions (type hints and docstrings describe them), or tool dicts."""
    tool_choice: Any = None
    """``"auto"``, ``"none"``, ``"required"`` or a tool name."""
    response_format: Any = None
    """A Pydantic model (the result's ``parsed``), ``"json"``, or a dict."""
    reasoning_effort: str | None = None
    """``"low"``, ``"medium"`` or ``"high"`` for reasoning models."""
    api_key: str | None = None
    """A key for this call (otherwise found in the environment)."""
    api_base: str | None = None
    """A base URL for this call."""
    timeout: float | None = None
    """Seconds the whole call may take, retries included (default: the client's)."""
    log: bool | None = None
    """Log this call (default: the client's setting)."""
    cache: bool | None = None
    """Answer from the response cache when possible (default: the client's setting)."""
    tags: Sequence[str] | None = None
    """Labels stored with the call in the log."""
    metadata: dict[str, Any] | None = None
    """Extra fields for middlewares (a conversation id, a batch row)."""
    context: Sequence[Any] | None = None
    """Objects sent beside the prompt as compact cards: DataFrames, Series, dicts,
    lists, arrays (a bounded summary each), matplotlib figures (a PNG), any
    other object (its repr, capped)."""
    attachments: Sequence[Any] | None = None
    """Files sent beside the prompt: paths, URLs, bytes or content parts (images,
    PDFs, text, audio), the MIME type detected from the name and the bytes."""
    context_tokens: int | None = None
    """The token budget of all ``context`` cards together (default 2,000)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(field.name for field in fields(cls))
