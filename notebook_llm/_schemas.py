"""Schemas for structured answers: the one-line DSL, JSON schemas and Pydantic models.

The DSL takes both llm's form and the typed form earlier cells use::

    name, age int, bio: the person's biography      # llm: type after the name,
                                                    # a description after ':'
    name: str, age: int, tags: list[str]           # a type name after ':' is a type
    name str: the full name                        # both: type, then description

Fields are separated by commas (outside brackets) or, when the text has
several lines, one per line. Types are built from ``str``, ``int``,
``float``, ``bool``, ``Any``, ``list[T]``, ``set[T]``, ``dict[K, V]``,
``T | None`` (or ``Optional[T]``) and Pydantic models from a namespace (the
notebook's); a field without a type is a string. Nothing is evaluated.

:func:`schema_dsl` returns the JSON schema (the dict llm's ``schema_dsl``
returns for the same text); :func:`schema_model` the Pydantic model that
parses answers; :func:`response_format` turns any accepted schema (a model
class, a JSON schema dict, DSL text) into what ``response_format=`` takes.
:func:`schema_id` is the stable id the call log stores a schema under.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
from collections.abc import Mapping
from typing import Any, TypeGuard

from notebook_llm.core.errors import InvalidRequestError

__all__ = [
    "SchemaError",
    "is_model",
    "json_schema_of",
    "response_format",
    "schema_dsl",
    "schema_id",
    "schema_model",
]

_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_]\w*)|(?P<punct>[\[\],|]))")
_BASIC: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "Any": Any}
_HINT = ("Write fields as 'name, age int, bio: a description' or 'name: str, age: int'; "
         "types: str, int, float, bool, list[T], dict[K, V], T | None.")


class SchemaError(InvalidRequestError):
    """A schema that does not parse; the message names the field."""


def is_model(value: object) -> TypeGuard[type]:
    """True for a Pydantic model class."""
    return isinstance(value, type) and hasattr(value, "model_validate_json")


def _split_fields(text: str) -> list[str]:
    if "\n" in text.strip():
        return [line.strip().rstrip(",").strip() for line in text.splitlines() if line.strip()]
    parts: list[str] = []
    depth, start = 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _fields(text: str, namespace: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """``(name, type, description)`` for every field of the DSL."""
    fields: list[tuple[str, Any, str]] = []
    for position, field in enumerate(_split_fields(text), start=1):
        if not field:
            raise SchemaError(f"field {position} is empty (two commas in a row?). {_HINT}")
        try:
            fields.append(_field(field, namespace))
        except ValueError as exc:
            raise SchemaError(f"field {position} ({field!r}): {exc}. {_HINT}") from None
    names = [name for name, _, _ in fields]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SchemaError(f"field {repeated[0]!r} appears twice")
    return fields


def _field(field: str, namespace: Mapping[str, Any]) -> tuple[str, Any, str]:
    head, colon, tail = field.partition(":")
    words = head.split(None, 1)
    if not words or not words[0].isidentifier():
        raise ValueError(f"{(words or [''])[0]!r} is not a field name")
    name = words[0]
    description = ""
    if len(words) == 2:  # llm's 'name type', maybe ': description'
        kind = _Types(words[1], namespace).parse()
        description = tail.strip()
    elif colon:
        # 'name: T' is a type when T parses as one; otherwise a description.
        try:
            kind = _Types(tail, namespace).parse()
        except ValueError as exc:
            if not tail.strip():
                raise ValueError("nothing after ':'") from None
            _typo(tail.strip(), namespace, exc)
            kind, description = str, tail.strip()
    else:
        kind = str
    return name, kind, description


def _typo(word: str, namespace: Mapping[str, Any], error: ValueError) -> None:
    """Raise when a one-word description looks like a mistyped type (``age: intt``)."""
    if " " in word and "[" not in word and "|" not in word:
        return  # words: a description
    unknown = re.search(r"unknown type '(\w+)'", str(error))
    name = unknown.group(1) if unknown else word
    known = [*_BASIC, "list", "set", "dict", "Optional",
             *[key for key, value in namespace.items() if is_model(value)]]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    if close or "[" in word or "|" in word:
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"{error}{hint}") from None


class _Types:
    """A recursive-descent reader of one type expression (no ``eval``)."""

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

    def parse(self) -> Any:
        if not self.tokens:
            raise ValueError("a type is missing")
        kind = self._type()
        if self._peek() is not None:
            raise ValueError(f"unexpected {self._peek()!r} after the type")
        return kind

    def _peek(self) -> str | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        token = self._peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(f"expected {expected or 'more'}, found {token or 'the end'}")
        self.index += 1
        return token

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
        if is_model(value):
            return value
        raise ValueError(f"unknown type {name!r}")


def schema_model(
    spec: str, namespace: Mapping[str, Any] | None = None, *, multi: bool = False
) -> type:
    """The Pydantic model that DSL text (or a model's name in ``namespace``) means.

    Args:
        spec: DSL text, or the name of a Pydantic model class in ``namespace``.
        namespace: where model names are looked up (the notebook's variables).
        multi: a model with one field, ``items``, a list of such objects.

    Raises:
        SchemaError: the text does not parse (the message names the field), or
            the name is not a Pydantic model.
    """
    import pydantic

    namespace = namespace or {}
    text = spec.strip().strip("'\"")
    base: type
    if text.isidentifier() and text not in _BASIC:
        value = namespace.get(text)
        if is_model(value):
            base = value
        elif value is not None:
            raise SchemaError(f"schema {text}: {text} is not a Pydantic model class")
        else:
            raise SchemaError(
                f"schema {text}: no Pydantic model named {text!r}; or write fields: "
                "'name, age int, bio: a description'"
            )
    else:
        definitions: dict[str, Any] = {
            name: (kind, pydantic.Field(..., description=description or None))
            for name, kind, description in _fields(text, namespace)
        }
        base = pydantic.create_model("Answer", **definitions)
    if not multi:
        return base
    items: Any = list[base]  # type: ignore[valid-type]
    model: type = pydantic.create_model("Answers", items=(items, ...))
    return model


def _without_titles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_titles(v) for k, v in value.items()
                if not (k == "title" and isinstance(v, str)) and v is not None}
    if isinstance(value, list):
        return [_without_titles(v) for v in value]
    return value


def _multi(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"items": {"type": "array", "items": schema}},
            "required": ["items"]}


def schema_dsl(text: str, multi: bool = False) -> dict[str, Any]:
    """The JSON schema for DSL text: ``nl.schema_dsl("name, age int, bio: a description")``.

    For llm's form the result equals llm's ``schema_dsl`` for the same text;
    ``multi=True`` wraps it as ``{"items": [...]}`` (llm's ``--schema-multi``).

    Raises:
        SchemaError: the text does not parse; the message names the field.
    """
    bare = text.strip()
    # One bare field name is a string field (as llm reads it), not a model's name.
    model: Any = _one_field(bare) if bare.isidentifier() else schema_model(bare)
    schema: dict[str, Any] = _without_titles(model.model_json_schema())
    return _multi(schema) if multi else schema


def _one_field(text: str) -> type:
    import pydantic

    fields: dict[str, Any] = {text.strip(): (str, ...)}
    model: type = pydantic.create_model("Answer", **fields)
    return model


def json_schema_of(schema: Any) -> dict[str, Any] | None:
    """The JSON schema inside a ``response_format`` value, or ``None`` (plain JSON, none)."""
    if schema is None or schema == "json":
        return None
    if is_model(schema):
        result: dict[str, Any] = schema.model_json_schema()  # type: ignore[attr-defined]
        return result
    if isinstance(schema, dict):
        if schema.get("type") == "json_schema":
            inner = schema.get("json_schema") or {}
            found = inner.get("schema") if isinstance(inner, dict) else None
            return found if isinstance(found, dict) else None
        if schema.get("type") in ("json_object", "text"):
            return None
        return schema
    return None


def response_format(
    schema: Any, namespace: Mapping[str, Any] | None = None, *, multi: bool = False
) -> Any:
    """What ``response_format=`` takes, from any schema this package accepts.

    A Pydantic model class, ``"json"`` and wire-format dicts pass through; a
    bare JSON schema (``{"type": "object", "properties": ...}``) is wrapped
    for the wire; a string is DSL text or a model's name in ``namespace``.
    ``multi`` asks for a list of such objects (``{"items": [...]}``).
    """
    if schema is None:
        return None
    if isinstance(schema, str) and schema.strip().startswith("{"):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise SchemaError(f"the schema is not valid JSON: {exc}") from None
    elif isinstance(schema, str) and schema.strip().isidentifier() and namespace and isinstance(
            namespace.get(schema.strip()), dict):
        schema = namespace[schema.strip()]  # a notebook variable holding a JSON schema
    if isinstance(schema, str) and schema != "json":
        return schema_model(schema, namespace, multi=multi)
    if is_model(schema):
        if not multi:
            return schema
        import pydantic

        items: Any = list[schema]
        wrapped: type = pydantic.create_model("Answers", items=(items, ...))
        return wrapped
    if isinstance(schema, dict):
        plain = json_schema_of(schema)
        if plain is schema:  # a bare JSON schema
            body = _multi(schema) if multi else schema
            return {"type": "json_schema",
                    "json_schema": {"name": "Answer", "schema": body, "strict": False}}
        if multi:
            raise SchemaError("multi= needs a schema of one object, not a response format")
        return schema
    if schema == "json":
        return schema
    raise SchemaError(
        f"a schema must be a Pydantic model class, a JSON schema dict or DSL text, not "
        f"{type(schema).__name__}"
    )


def _inline(value: Any, definitions: Mapping[str, Any], depth: int = 0) -> Any:
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and depth < 20:
            return _inline(definitions.get(ref[len("#/$defs/"):], {}), definitions, depth + 1)
        # additionalProperties: false is what strict mode adds on the way out.
        return {k: _inline(v, definitions, depth) for k, v in value.items()
                if k != "$defs" and not (k == "additionalProperties" and v is False)}
    if isinstance(value, list):
        return [_inline(v, definitions, depth) for v in value]
    return value


def schema_id(schema: Mapping[str, Any]) -> str:
    """A stable id for a JSON schema: 32 hex digits of its canonical JSON (references
    inlined, titles and strict mode's ``additionalProperties: false`` dropped), so a
    Pydantic model, DSL text and llm's JSON for the same fields share one id."""
    canonical = _without_titles(_inline(dict(schema), schema.get("$defs") or {}))
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
