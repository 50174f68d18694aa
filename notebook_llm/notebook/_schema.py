"""``--schema``: a Pydantic model from the user namespace, or a one-line DSL.

The DSL is ``name: str, age: int, tags: list[str], note: str | None``: field
names with types built from ``str``, ``int``, ``float``, ``bool``, ``Any``,
``list[T]``, ``set[T]``, ``dict[K, V]``, ``T | None`` (or ``Optional[T]``) and
Pydantic models defined in the notebook. Nothing is evaluated.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from typing import Any, TypeGuard

from notebook_llm.notebook._errors import CellError

__all__ = ["resolve_schema"]

_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_]\w*)|(?P<punct>[\[\],|:]))")
_BASIC: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "Any": Any}


def _is_model(value: object) -> TypeGuard[type]:
    return isinstance(value, type) and hasattr(value, "model_validate_json")


def resolve_schema(spec: str, namespace: Mapping[str, Any]) -> type:
    """The Pydantic model class that ``--schema spec`` means.

    Raises:
        CellError: the name is not a model, or the DSL does not parse.
    """
    spec = spec.strip().strip("'\"")
    if spec.isidentifier():
        value = namespace.get(spec)
        if _is_model(value):
            return value
        if value is not None:
            raise CellError(f"--schema {spec}: {spec} is not a Pydantic model class",
                            title="SchemaError")
        raise CellError(f"--schema {spec}: no Pydantic model named {spec!r} in the notebook",
                        title="SchemaError", hint="Or write fields: 'name: str, age: int'.")
    try:
        fields = _Parser(spec, namespace).fields()
    except ValueError as exc:
        raise CellError(f"--schema {spec!r}: {exc}", title="SchemaError",
                        hint="Example: 'name: str, age: int, tags: list[str]'.") from None
    import pydantic

    definitions: dict[str, Any] = {name: (kind, ...) for name, kind in fields}
    model: type = pydantic.create_model("Answer", **definitions)
    return model


class _Parser:
    """A recursive-descent reader of the DSL (no ``eval``)."""

    def __init__(self, text: str, namespace: Mapping[str, Any]) -> None:
        self.namespace = namespace
        self.tokens: list[str] = []
        position = 0
        text = text.rstrip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise ValueError(f"unexpected {text[position:].strip()[:10]!r}")
            self.tokens.append(match.group("name") or match.group("punct"))
            position = match.end()
        self.index = 0

    def _peek(self) -> str | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        token = self._peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(f"expected {expected or 'more'}, found {token or 'the end'}")
        self.index += 1
        return token

    def fields(self) -> list[tuple[str, Any]]:
        fields: list[tuple[str, Any]] = []
        while True:
            name = self._take()
            if not name.isidentifier():
                raise ValueError(f"expected a field name, found {name!r}")
            self._take(":")
            fields.append((name, self._type()))
            if self._peek() is None:
                break
            self._take(",")
        if len({name for name, _ in fields}) != len(fields):
            raise ValueError("a field name appears twice")
        return fields

    def _type(self) -> Any:
        kind = self._single()
        while self._peek() == "|":
            self._take("|")
            kind = kind | self._single() if kind is not Any else Any
        return kind

    def _single(self) -> Any:
        name = self._take()
        if name == "None":
            return type(None)
        if name in _BASIC:
            return _BASIC[name]
        if name in ("list", "set", "Optional"):
            self._take("[")
            inner = self._type()
            self._take("]")
            if name == "Optional":
                return inner | None
            return types.GenericAlias(list if name == "list" else set, (inner,))
        if name == "dict":
            self._take("[")
            key = self._type()
            self._take(",")
            value = self._type()
            self._take("]")
            return types.GenericAlias(dict, (key, value))
        value = self.namespace.get(name)
        if _is_model(value):
            return value
        raise ValueError(f"unknown type {name!r}")
