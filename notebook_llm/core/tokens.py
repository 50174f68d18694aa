"""The library's one token estimate: about four characters a token.

Used where a count is needed before or without the provider's own: sizing
rate-limit buckets, holding budget before a call, and the usage of a stream
that ended without a usage report (stopped by the user, cut off, or a server
such as llama-cpp-python's that sends none). Exact counts, when the provider
sends them, always win.
"""

from __future__ import annotations

import json
from typing import Any

from notebook_llm.core.types import Request, Usage

__all__ = ["CHARS_PER_TOKEN", "estimate_prompt_tokens", "estimate_tokens", "estimated_usage"]

CHARS_PER_TOKEN = 4
"""English prose averages about four characters a token across the common tokenizers."""


def estimate_tokens(text: str) -> int:
    """Tokens in ``text``: one per four characters, rounded up (0 for ``""``)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if content is None:
        return 0
    return len(json.dumps(content, default=str))


def estimate_prompt_tokens(request: Request) -> int:
    """The prompt's tokens: system prompt, messages and tool schemas."""
    chars = len(request.system or "")
    for message in request.messages:
        chars += _content_chars(message.get("content"))
    if request.tools:
        chars += len(
            json.dumps([[t.name, t.description, t.parameters] for t in request.tools], default=str)
        )
    return -(-chars // CHARS_PER_TOKEN)


def estimated_usage(request: Request, text: str, reasoning: str | None = None) -> Usage:
    """Usage counted here, marked ``estimated``, for an answer the provider did not count."""
    output = estimate_tokens(text) + estimate_tokens(reasoning or "")
    return Usage(
        input_tokens=estimate_prompt_tokens(request),
        output_tokens=output,
        reasoning_tokens=estimate_tokens(reasoning or ""),
        estimated=True,
    )
