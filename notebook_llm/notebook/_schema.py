"""``--schema``: a Pydantic model from the user namespace, or the one-line DSL.

The parsing is :mod:`notebook_llm._schemas` (shared with ``nl.complete``);
this module only turns its errors into a cell's error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from notebook_llm._schemas import SchemaError, response_format
from notebook_llm.notebook._errors import CellError

__all__ = ["resolve_schema"]


def resolve_schema(spec: str, namespace: Mapping[str, Any], *, multi: bool = False) -> Any:
    """What ``--schema spec`` (``--schema-multi``) means: a Pydantic model class (a
    model's name, or DSL text), or a response-format dict (JSON schema text, or a
    variable holding a JSON schema).

    Raises:
        CellError: the name is not a model, or the DSL does not parse.
    """
    try:
        return response_format(spec.strip().strip("'\""), namespace, multi=multi)
    except SchemaError as exc:
        raise CellError(f"--schema: {exc}", title="SchemaError",
                        hint="Example: 'name, age int, bio: a description' or "
                             "'name: str, age: int, tags: list[str]'.") from None
