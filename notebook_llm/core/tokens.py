"""The library's one token estimate: about four characters a token.

Used where a count is needed before or without the provider's own: sizing
rate-limit buckets, holding budget before a call, and the usage of a stream
that ended without a usage report (stopped by the user, cut off, or a server
such as llama-cpp-python's that sends none). Exact counts, when the provider
sends them, always win.
"""

from __future__ import annotations

import json
import re
from typing import Any

from notebook_llm.core.types import Request, Usage

__all__ = [
    "CHARS_PER_TOKEN",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "estimated_usage",
    "image_tokens",
]

CHARS_PER_TOKEN = 4
"""English prose averages about four characters a token across the common tokenizers."""


def estimate_tokens(text: str) -> int:
    """Tokens in ``text``: one per four characters, rounded up (0 for ``""``)."""
    return -(-len(text) // CHARS_PER_TOKEN)


IMAGE_TOKENS = 1_000
"""An image whose size cannot be read: about what a 1,000 x 750 image costs."""

PDF_PAGE_TOKENS = 2_000
"""A PDF page (its text plus its picture, as Anthropic and OpenAI both send it)."""

AUDIO_BYTES_PER_TOKEN = 1_600
"""About ten tokens a second of 128 kbit/s audio."""


def _decoded(url: str, head: int | None = None) -> bytes:
    import base64

    _, _, data = url.partition(",")
    if head is not None:
        data = data[: head - head % 4]
    try:
        return base64.b64decode(data)
    except ValueError:
        return b""


def image_tokens(width: int, height: int) -> int:
    """Tokens of a ``width`` x ``height`` image: Anthropic's ``w*h/750`` after
    scaling the long side down to 1,568 pixels (OpenAI's tiles land close)."""
    scale = min(1.0, 1568 / max(width, height, 1))
    return max(1, int(width * scale * height * scale / 750))


def _image_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's start-of-frame segment (after any EXIF)."""
    position = 2
    while position + 9 < len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return width, height
        position += 2 + length
    return None


def _part_chars(part: Any) -> int:
    """A content part's weight in characters (so that four make a token)."""
    if not isinstance(part, dict):
        return len(str(part))
    kind = part.get("type")
    if kind in ("text", "input_text"):
        return len(str(part.get("text") or ""))
    if kind == "image_url":
        image = part.get("image_url")
        url = str(image.get("url") if isinstance(image, dict) else image or "")
        head = _decoded(url, 64) if url.startswith("data:") else b""
        if head[:3] == b"\xff\xd8\xff":  # a JPEG says its size after its EXIF block
            head = _decoded(url, 96_000)
        size = _image_size(head)
        return CHARS_PER_TOKEN * (image_tokens(*size) if size else IMAGE_TOKENS)
    if kind == "file":
        data = _decoded(str((part.get("file") or {}).get("file_data") or ""))
        pages = max(1, len(re.findall(rb"/Type\s*/Page\b", data)))
        return CHARS_PER_TOKEN * PDF_PAGE_TOKENS * pages
    if kind == "input_audio":
        audio = len(str((part.get("input_audio") or {}).get("data") or "")) * 3 // 4
        return CHARS_PER_TOKEN * max(1, audio // AUDIO_BYTES_PER_TOKEN)
    return len(json.dumps(part, default=str))


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if content is None:
        return 0
    if isinstance(content, list):
        # Images, PDFs and audio count as the model sees them, not as base64 text.
        return sum(_part_chars(part) for part in content)
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
