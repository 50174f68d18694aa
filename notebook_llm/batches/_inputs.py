"""Turning a batch's inputs into rows: keys, prompts or messages, and the job hash.

Inputs are read lazily (a DataFrame row is rendered when a worker takes it), so
100,000 rows never exist as 100,000 prompt strings at once. Templates are
checked against the DataFrame's columns before anything is sent.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from notebook_llm.core.errors import InvalidRequestError
from notebook_llm.core.types import Message

__all__ = ["Inputs", "Payload", "RowTemplate", "template_fields"]

Payload = str | list[Message]
"""What one row sends: a prompt, or a list of messages."""


class RowTemplate(Protocol):
    """A template other than a ``str.format`` string (a saved template): the names
    it needs from each row, and the row's prompt or messages."""

    @property
    def fields(self) -> list[str]:
        """The row values it needs (columns or dict keys)."""

    def render(self, values: Mapping[str, Any]) -> Payload:
        """The row's prompt or messages."""


def template_fields(template: str) -> list[str]:
    """The top-level names a ``str.format`` template uses (``{review}``, ``{a.b}`` -> ``a``)."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidRequestError(f"template is not a valid format string: {exc}") from exc
    for _literal, field, _spec, _conv in parsed:
        if field is None:
            continue
        name = field.split(".", 1)[0].split("[", 1)[0]
        if not name or name.isdigit():
            raise InvalidRequestError(
                f"template fields must be named ({{column}}), not positional: {template!r}"
            )
        if name not in names:
            names.append(name)
    return names


def _is_dataframe(value: Any) -> bool:
    # Without importing pandas: a DataFrame has these and is not a Mapping.
    return type(value).__name__ == "DataFrame" and hasattr(value, "itertuples")


def _is_messages(item: Any) -> bool:
    return isinstance(item, (list, tuple)) and all(
        isinstance(message, Mapping) and "role" in message for message in item
    )


class Inputs:
    """A batch's rows, read lazily.

    Accepts a list of prompts, a list of message lists, a list of dicts (with a
    ``template``) or a pandas DataFrame (with a ``template``, or a ``prompt`` or
    ``messages`` column). Row keys are the DataFrame index (as strings) or the
    list positions.
    """

    def __init__(self, inputs: Any, template: str | RowTemplate | None = None) -> None:
        self.template = template
        self.frame: Any = None
        self.items: Sequence[Any] | None = None
        self.column: str | None = None
        self.fields: list[str]
        if isinstance(template, str):
            self.fields = template_fields(template)
            self._render: Any = template.format_map
        elif template is not None:
            self.fields = list(template.fields)
            self._render = template.render
        else:
            self.fields = []
        if _is_dataframe(inputs):
            self._init_frame(inputs)
        elif isinstance(inputs, (str, bytes)) or (_is_messages(inputs) and inputs):
            raise InvalidRequestError(
                "batch() takes a list of prompts (or message lists, or a DataFrame); "
                "wrap a single prompt in a list"
            )
        elif isinstance(inputs, Sequence) or hasattr(inputs, "__len__"):
            self.items = inputs if isinstance(inputs, Sequence) else list(inputs)
            self._check_items()
        else:
            raise InvalidRequestError(
                f"batch() inputs must be a list or a DataFrame, not {type(inputs).__name__}"
            )

    def _init_frame(self, frame: Any) -> None:
        if not frame.index.is_unique:
            raise InvalidRequestError(
                "The DataFrame's index has duplicate labels, so rows cannot be told apart: "
                "call .reset_index(drop=True) first"
            )
        columns = [str(column) for column in frame.columns]
        if self.template is not None:
            missing = [name for name in self.fields if name not in columns]
            if missing:
                raise InvalidRequestError(
                    f"template uses column {missing[0]!r}, which the DataFrame does not have "
                    f"(columns: {', '.join(columns) or 'none'})"
                )
        elif "messages" in columns:
            self.column = "messages"
        elif "prompt" in columns:
            self.column = "prompt"
        else:
            raise InvalidRequestError(
                "Pass template=... (e.g. 'Classify this review: {review}') to build prompts "
                "from the DataFrame's columns, or give it a 'prompt' or 'messages' column"
            )
        self.frame = frame

    def _check_items(self) -> None:
        assert self.items is not None
        if self.template is None:
            return
        needed = set(self.fields)
        for position, item in enumerate(self.items):
            if isinstance(item, Mapping):
                missing = needed - set(item)
            elif needed == {"input"}:
                missing = set()
            else:
                raise InvalidRequestError(
                    f"With a template, list items must be dicts (item {position} is "
                    f"{type(item).__name__}); or use {{input}} in the template for plain strings"
                )
            if missing:
                raise InvalidRequestError(
                    f"template uses {sorted(missing)[0]!r}, which item {position} lacks"
                )

    # -- reading -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self.frame) if self.frame is not None else len(self.items or ())

    @property
    def index(self) -> Any:
        """The DataFrame's index, or ``None`` for a list (positions)."""
        return None if self.frame is None else self.frame.index

    def rows(self) -> Iterator[tuple[str, int, Payload]]:
        """``(row_key, position, prompt_or_messages)`` for every row, in order."""
        if self.frame is not None:
            yield from self._frame_rows()
            return
        template = self.template
        for position, item in enumerate(self.items or ()):
            if template is not None:
                mapping = item if isinstance(item, Mapping) else {"input": item}
                yield str(position), position, self._render(mapping)
            elif isinstance(item, str):
                yield str(position), position, item
            elif _is_messages(item):
                yield str(position), position, [dict(message) for message in item]
            else:
                raise InvalidRequestError(
                    f"Item {position} is a {type(item).__name__}: items must be prompts "
                    "(str) or message lists, or pass a template for dicts"
                )

    def _frame_rows(self) -> Iterator[tuple[str, int, Payload]]:
        frame = self.frame
        if self.column is not None:
            messages = self.column == "messages"
            for position, (label, value) in enumerate(
                zip(frame.index, frame[self.column], strict=True)
            ):
                payload: Payload = [dict(m) for m in value] if messages else str(value)
                yield str(label), position, payload
            return
        assert self.template is not None
        render = self._render
        names = self.fields
        by_name = {str(column): column for column in frame.columns}
        if not names:
            fixed = render({})
            for position, label in enumerate(frame.index):
                yield str(label), position, fixed
            return
        sub = frame[[by_name[name] for name in names]]
        for position, (label, *values) in enumerate(sub.itertuples(index=True, name=None)):
            yield str(label), position, render(dict(zip(names, values, strict=True)))

    def digest(self) -> tuple[str, int]:
        """A sha256 of every row's key and payload, and the prompt characters in all."""
        sha = hashlib.sha256()
        chars = 0
        for key, _position, payload in self.rows():
            if isinstance(payload, str):
                text = payload
                chars += len(payload)
            else:
                text = json.dumps(payload, sort_keys=True, default=str)
                chars += sum(len(str(message.get("content") or "")) for message in payload)
            sha.update(key.encode())
            sha.update(b"\0")
            sha.update(text.encode("utf-8", "surrogatepass"))
            sha.update(b"\1")
        return sha.hexdigest(), chars
