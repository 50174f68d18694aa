"""The options of one call: one record for ``complete``, ``acomplete``,
``stream`` and ``astream``.

The four methods take these as keyword arguments (so help and tab completion
show them) and build one :class:`CallOptions`, which is all the core passes
on. ``tests/test_parity.py`` checks that every twin takes exactly these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    """Seconds each model request may take, retries included (default: the
    client's); time in tools and waiting for approval does not count."""
    max_tool_rounds: int | None = None
    """Run the model's tool calls and send the results back, up to this many
    times (default: 5 when a tool has a Python function, else 0)."""
    max_tool_calls: int | None = None
    """The most tool calls run for one message, all rounds together (default: 25)."""
    tool_timeout: float | None = None
    """Seconds a tool may run before it is abandoned, unless the tool sets its own
    (default: 60)."""
    approve: Any = None
    """Who allows each tool call: ``"always"``, ``"never"``, ``"ask"`` or a callable
    ``before_call(tool, arguments) -> bool`` (default: ``"ask"`` for tools marked
    ``dangerous``, ``"always"`` for the others)."""
    log: bool | None = None
    """Log this call (default: the client's setting)."""
    cache: bool | None = None
    """Answer from the response cache when possible (default: the client's setting)."""
    tags: Sequence[str] | None = None
    """Labels stored with the call in the log."""
    metadata: dict[str, Any] | None = None
    """Extra fields for middlewares (a conversation id, a batch row)."""
    template: Any = None
    """A saved template (``nl.templates.get(name)``) or its name: fills the prompt,
    system, model, options and schema (``notebook_llm.Client`` only)."""
    params: Mapping[str, Any] | None = None
    """Values for the template's ``$names``."""
    fragments: Sequence[Any] | None = None
    """Files, URLs or fragment aliases whose text goes before the prompt."""
    system_fragments: Sequence[Any] | None = None
    """Files, URLs or fragment aliases whose text goes before the system prompt."""
    context: Sequence[Any] | None = None
    """Objects sent beside the prompt as compact cards: DataFrames, Series, dicts,
    lists, arrays (a bounded summary each), matplotlib figures (a PNG), any
    other object (its repr, capped)."""
    attachments: Sequence[Any] | None = None
    """Files sent beside the prompt: paths, URLs, bytes or content parts (images,
    PDFs, text, audio), the MIME type detected from the name and the bytes."""
    context_tokens: int | None = None
    """The token budget of all ``context`` cards together (default 2,000)."""

    def uses_assets(self) -> bool:
        """True when a template, parameters or fragments are named (resolved by
        ``notebook_llm.Client`` before the request is built)."""
        return (self.template is not None or self.params is not None
                or bool(self.fragments) or bool(self.system_fragments))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(field.name for field in fields(cls))
