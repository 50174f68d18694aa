"""Attachments: a path, a URL or bytes in, a content part out.

``attachments=["chart.png", "https://.../paper.pdf", b"..."]`` and ``%%llm -a``
follow ``llm``'s ``-a``: the type comes from the bytes themselves (their magic
numbers), then from the name (the standard library's ``mimetypes``). Images
(PNG, JPEG, GIF, WebP) become :class:`ImagePart`, PDFs :class:`DocumentPart`,
WAV and MP3 :class:`AudioPart`, and text (Markdown, CSV, JSON, code...) a
:class:`TextPart` headed by its name, which every model reads.

Everything is read here, before the call: a missing file, a URL that cannot
be fetched, an unknown format or a file over :data:`MAX_ATTACHMENT_BYTES` is an
:class:`~notebook_llm.errors.InvalidRequestError` saying what to do, and nothing
is sent. What each provider accepts (and how large) is checked next, by
:func:`notebook_llm.core.modalities.check_parts`.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from notebook_llm.core.errors import InvalidRequestError
from notebook_llm.core.parts import PART_TYPES
from notebook_llm.core.types import AudioPart, ContentPart, DocumentPart, ImagePart, TextPart

__all__ = ["MAX_ATTACHMENT_BYTES", "attachment_part", "attachment_parts", "sniff"]

MAX_ATTACHMENT_BYTES = 50 * 2**20
"""Nothing larger is read (no provider takes a single part over 50 MB)."""

URL_TIMEOUT_S = 30.0

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"%PDF-", 0, "application/pdf"),
    (b"WAVE", 8, "audio/wav"),
    (b"ID3", 0, "audio/mpeg"),
    (b"\xff\xfb", 0, "audio/mpeg"),
    (b"\xff\xf3", 0, "audio/mpeg"),
    (b"\xff\xf2", 0, "audio/mpeg"),
    (b"PK\x03\x04", 0, "application/zip"),
    (b"\x1f\x8b", 0, "application/gzip"),
)
_TEXT_TYPES = frozenset({
    "application/json", "application/xml", "application/x-yaml", "application/yaml",
    "application/javascript", "application/x-python", "application/toml", "application/sql",
    "application/x-sh", "application/x-ipynb+json",
})  # fmt: skip
_TEXT_SUFFIXES = frozenset({
    ".md", ".txt", ".csv", ".tsv", ".json", ".jsonl", ".py", ".yaml", ".yml", ".toml",
    ".ini", ".cfg", ".rst", ".sql", ".r", ".js", ".ts", ".html", ".xml", ".log", ".ipynb",
})  # fmt: skip


def sniff(data: bytes, name: str = "") -> str:
    """The MIME type of ``data``: its magic bytes first, then ``name``'s suffix.

    Text that decodes as UTF-8 is ``text/plain`` when nothing else says more;
    ``application/octet-stream`` when nothing is known.
    """
    for signature, offset, mime in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            if mime == "image/webp" and data[:4] != b"RIFF":
                continue
            if mime == "audio/wav" and data[:4] != b"RIFF":
                continue
            return mime
    guessed, _ = mimetypes.guess_type(name) if name else (None, None)
    if guessed:
        return guessed
    if name and Path(name).suffix.lower() in _TEXT_SUFFIXES:
        return "text/plain"
    head = data[:4096]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the edge
            return "application/octet-stream"
    return "application/octet-stream" if b"\x00" in head else "text/plain"


def _is_text(mime: str, name: str) -> bool:
    return (mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith("+json")
            or Path(name).suffix.lower() in _TEXT_SUFFIXES)  # fmt: skip


def part_from_bytes(data: bytes, name: str = "", mime: str | None = None) -> ContentPart:
    """``data`` as the part its type calls for; an unknown format raises."""
    label = name or "attachment"
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise InvalidRequestError(
            f"{label} is {len(data) / 2**20:.1f} MB: attachments are limited to "
            f"{MAX_ATTACHMENT_BYTES // 2**20} MB. Nothing was sent. Send a smaller file "
            "or a part of it"
        )
    sniffed = sniff(data, name)
    kind = sniffed if sniffed != "application/octet-stream" else (mime or sniffed)
    kind = kind.split(";")[0].strip().lower()
    if kind == "image/jpg":
        kind = "image/jpeg"
    if not name:  # providers want a file name with its extension (OpenAI's file parts)
        label = f"attachment{mimetypes.guess_extension(kind) or ''}"
    if kind in ("image/png", "image/jpeg", "image/gif", "image/webp"):
        return ImagePart(kind, data, label=label)
    if kind == "application/pdf":
        return DocumentPart(kind, data, label=label)
    if kind in ("audio/wav", "audio/x-wav", "audio/wave"):
        return AudioPart("wav", data, label=label)
    if kind in ("audio/mpeg", "audio/mp3"):
        return AudioPart("mp3", data, label=label)
    if _is_text(kind, name):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequestError(
                f"{label} looks like text ({kind}) but is not UTF-8. Nothing was sent. "
                "Convert it to UTF-8 first"
            ) from None
        return TextPart(f"--- {label} ---\n{text}", label=label)
    raise InvalidRequestError(
        f"{label}: cannot send {kind} files. Nothing was sent. Attachments may be "
        "images (PNG, JPEG, GIF, WebP), PDFs, audio (WAV, MP3) or text"
    )


def _read_path(path: Path) -> ContentPart:
    path = path.expanduser()
    if not path.exists():
        raise InvalidRequestError(
            f"attachment {str(path)!r} does not exist (the working directory is "
            f"{os.getcwd()!r}). Nothing was sent. Check the path"
        )
    if not path.is_file():
        raise InvalidRequestError(
            f"attachment {str(path)!r} is not a file. Nothing was sent. Name a file"
        )
    size = path.stat().st_size
    if size > MAX_ATTACHMENT_BYTES:
        raise InvalidRequestError(
            f"{path.name} is {size / 2**20:.1f} MB: attachments are limited to "
            f"{MAX_ATTACHMENT_BYTES // 2**20} MB. Nothing was sent. Send a smaller file"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequestError(
            f"attachment {str(path)!r} cannot be read: {exc.strerror or exc}. Nothing was sent"
        ) from None
    return part_from_bytes(data, path.name)


def _read_url(url: str) -> ContentPart:
    import httpx

    name = Path(urlparse(url).path).name or urlparse(url).netloc
    try:
        with httpx.Client(timeout=URL_TIMEOUT_S, follow_redirects=True) as client, \
                client.stream("GET", url) as response:
            if response.status_code >= 400:
                raise InvalidRequestError(
                    f"attachment {url} cannot be read: the server answered HTTP "
                    f"{response.status_code}. Nothing was sent. Check the URL, or download "
                    "the file and attach the path"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_ATTACHMENT_BYTES:
                    raise InvalidRequestError(
                        f"attachment {url} is over {MAX_ATTACHMENT_BYTES // 2**20} MB. "
                        "Nothing was sent. Send a smaller file"
                    )
                chunks.append(chunk)
            mime = response.headers.get("content-type")
    except httpx.HTTPError as exc:
        raise InvalidRequestError(
            f"attachment {url} cannot be read: {type(exc).__name__}: {exc}. Nothing was "
            "sent. Check the URL and the network, or attach a local file"
        ) from None
    return part_from_bytes(b"".join(chunks), name, mime)


def attachment_part(item: Any) -> ContentPart:
    """One attachment (a path, ``http(s)://`` URL, bytes or content part) as a part."""
    if isinstance(item, PART_TYPES):
        return item
    if isinstance(item, (bytes, bytearray, memoryview)):
        return part_from_bytes(bytes(item))
    if isinstance(item, os.PathLike):
        return _read_path(Path(item))
    if isinstance(item, str):
        text = item.strip()
        scheme = urlparse(text).scheme.lower()
        if scheme in ("http", "https"):
            return _read_url(text)
        if scheme == "file":
            return _read_path(Path(urlparse(text).path))
        if not text:
            raise InvalidRequestError("an attachment is an empty string: name a file or URL")
        return _read_path(Path(text))
    raise InvalidRequestError(
        f"cannot attach a {type(item).__name__}: attach a path, an http(s) URL or bytes "
        "(use context= for DataFrames, figures and other objects)"
    )


def attachment_parts(items: Any) -> list[ContentPart]:
    """Every attachment as a part, in order; a single path or URL is allowed too."""
    if items is None:
        return []
    if isinstance(items, (str, bytes, os.PathLike, *PART_TYPES)):
        items = [items]
    return [attachment_part(item) for item in items]
