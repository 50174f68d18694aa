"""Content parts into the user message: where ``context=`` and ``attachments=`` go.

The core takes parts that are already built (:class:`~notebook_llm.core.types.TextPart`,
``ImagePart``, ``DocumentPart``, ``AudioPart``) and plain strings;
:class:`notebook_llm.Client` turns DataFrames, figures, paths and URLs into
parts first (``notebook_llm._context``, ``notebook_llm._attachments``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from notebook_llm.core.errors import InvalidRequestError
from notebook_llm.core.modalities import check_parts
from notebook_llm.core.types import (
    AudioPart,
    ContentPart,
    DocumentPart,
    ImagePart,
    Message,
    ProviderInfo,
    TextPart,
)

__all__ = ["PART_TYPES", "attach_parts", "plain_parts", "with_parts"]

PART_TYPES = (TextPart, ImagePart, DocumentPart, AudioPart)


def plain_parts(items: Iterable[Any] | None, what: str) -> list[ContentPart]:
    """``items`` as parts when each is a part or a string; anything else raises."""
    parts: list[ContentPart] = []
    for item in items or ():
        if isinstance(item, PART_TYPES):
            parts.append(item)
        elif isinstance(item, str) and what == "context":
            parts.append(TextPart(item))
        else:
            raise InvalidRequestError(
                f"{what}= got a {type(item).__name__}: this client takes content parts "
                "(TextPart, ImagePart, DocumentPart, AudioPart) and strings only. "
                "notebook_llm.Client (and nl.complete) also take DataFrames, figures, "
                "paths and URLs"
            )
    return parts


def attach_parts(messages: Sequence[Message], parts: Sequence[ContentPart]) -> list[Message]:
    """The messages with ``parts`` put before the text of the last user message.

    Text parts go first (the data a question is about reads best before it),
    then images, documents and audio, then the prompt itself.
    """
    out = [dict(message) for message in messages]
    index = next(
        (i for i in range(len(out) - 1, -1, -1) if out[i].get("role", "user") == "user"), None
    )
    if index is None:
        out.append({"role": "user", "content": []})
        index = len(out) - 1
    content = out[index].get("content")
    if content is None or content == "":
        tail: list[Any] = []
    elif isinstance(content, str):
        tail = [{"type": "text", "text": content}]
    else:
        tail = list(content)
    ordered = [p for p in parts if isinstance(p, TextPart)] + [
        p for p in parts if not isinstance(p, TextPart)
    ]
    out[index]["content"] = [part.to_message_part() for part in ordered] + tail
    return out


def with_parts(
    info: ProviderInfo, model: str, messages: list[Message], parts: Sequence[ContentPart]
) -> list[Message]:
    """``messages`` with ``parts`` attached, once ``model`` is known to take each
    of them (:func:`~notebook_llm.core.modalities.check_parts`): otherwise it
    raises, and nothing is sent."""
    if not parts:
        return messages
    check_parts(info, model, parts)
    return attach_parts(messages, parts)
