"""Plain Python functions as tools, and structured-output formats.

A function with type hints and a docstring becomes a :class:`Tool` whose JSON
schema comes from its signature. ``response_format`` accepts a Pydantic model,
``"json"``, or a raw OpenAI-style dict.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from notebook_llm.core.errors import InvalidRequestError
from notebook_llm.core.types import Tool

__all__ = [
    "as_tools",
    "function_tool",
    "normalise_response_format",
    "parse_structured",
    "tool",
]

_SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    dict: {"type": "object"},
    list: {"type": "array"},
    type(None): {"type": "null"},
}


def _schema_for(annotation: Any) -> dict[str, Any]:
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    if annotation in _SIMPLE:
        return dict(_SIMPLE[annotation])
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, set, frozenset, Sequence):
        return {"type": "array", "items": _schema_for(args[0]) if args else {}}
    if origin is dict:
        return {"type": "object"}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_for(arg) for arg in args]}
    if hasattr(annotation, "model_json_schema"):  # a pydantic model
        schema: dict[str, Any] = annotation.model_json_schema()
        return schema
    return {}


def _param_docs(doc: str) -> dict[str, str]:
    # Google-style "Args:" sections: "name: description" or "name (type): description".
    docs: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.lower() in ("args:", "arguments:", "parameters:"):
            in_args = True
            continue
        if in_args:
            match = re.match(r"(\w+)(?:\s*\([^)]*\))?\s*:\s*(.+)", stripped)
            if match:
                docs[match.group(1)] = match.group(2)
            elif stripped and not line.startswith((" ", "\t")):
                in_args = False
    return docs


def function_tool(function: Callable[..., Any]) -> Tool:
    """Describe ``function`` as a tool from its signature, type hints and docstring."""
    signature = inspect.signature(function)
    hints = typing.get_type_hints(function)
    doc = inspect.getdoc(function) or ""
    described = _param_docs(doc)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        schema = _schema_for(hints.get(name, parameter.annotation))
        if name in described:
            schema["description"] = described[name]
        properties[name] = schema
        if parameter.default is inspect.Parameter.empty:
            required.append(name)
    summary = doc.split("\n\n", 1)[0].strip()
    return Tool(
        name=function.__name__,
        description=summary,
        parameters={"type": "object", "properties": properties, "required": required},
        function=function,
    )


def tool(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    dangerous: bool = False,
    timeout: float | None = None,
) -> Any:
    """Make a function a :class:`Tool` with settings: ``@nl.tool`` or
    ``@nl.tool(dangerous=True, timeout=10)``.

    The result still calls the function (``tool(...)`` runs it). ``dangerous``
    tools are asked about before each run unless the call passes ``approve=``;
    ``timeout`` (seconds) abandons a run that takes longer.
    """

    def make(target: Callable[..., Any]) -> Tool:
        described = function_tool(target)
        described.name = name or described.name
        described.description = described.description if description is None else description
        described.dangerous = dangerous
        described.timeout = timeout
        return described

    return make if function is None else make(function)


def _toolbox(box: Any) -> list[Tool]:
    # A class instance: each public method is a tool (a connection to an MCP
    # server, or anything else with as_tools(), says which itself).
    as_tools_method = getattr(box, "as_tools", None)
    if callable(as_tools_method):
        listed: list[Tool] = list(as_tools_method())
        return listed
    methods = [
        getattr(box, attribute) for attribute in dir(type(box))
        if not attribute.startswith("_") and inspect.isfunction(getattr(type(box), attribute))
    ]
    return [function_tool(method) for method in methods]


def as_tools(tools: Sequence[Any] | None) -> list[Tool] | None:
    """Accept functions, Tool objects, OpenAI-style tool dicts and toolboxes (an
    object whose public methods are tools, or that has ``as_tools()``)."""
    if not tools:
        return None
    if isinstance(tools, (str, bytes, dict)) or callable(tools):
        raise InvalidRequestError("tools= takes a list: tools=[my_function]")
    result: list[Tool] = []
    for item in tools:
        if isinstance(item, Tool):
            result.append(item)
        elif callable(item):
            result.append(function_tool(item))
        elif isinstance(item, dict):
            spec = item.get("function", item)
            result.append(
                Tool(
                    name=spec["name"],
                    description=spec.get("description", ""),
                    parameters=spec.get("parameters") or spec.get("input_schema") or {},
                )
            )
        elif not isinstance(item, (str, bytes, int, float, list, tuple)) and _toolbox(item):
            result.extend(_toolbox(item))
        else:
            raise InvalidRequestError(
                f"Cannot use {item!r} as a tool: pass a function, a Tool, a tool dict, or an "
                "object whose public methods are tools"
            )
    names = [t.name for t in result]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidRequestError(
            f"Two tools are named {', '.join(duplicates)}: rename one (nl.tool(name=...))"
        )
    return result


def _strict_ready(schema: Any) -> bool:
    # OpenAI strict mode needs every property required and no extra keys allowed.
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            if set(schema.get("required", [])) != set(schema["properties"]):
                return False
            schema.setdefault("additionalProperties", False)
        return all(_strict_ready(value) for value in schema.values())
    if isinstance(schema, list):
        return all(_strict_ready(value) for value in schema)
    return True


def normalise_response_format(response_format: Any) -> tuple[dict[str, Any] | None, Any]:
    """``(format_dict, model_class)`` from a Pydantic model, ``"json"`` or a dict."""
    if response_format is None:
        return None, None
    if response_format == "json":
        return {"type": "json_object"}, None
    if isinstance(response_format, dict):
        return response_format, None
    if isinstance(response_format, type) and hasattr(response_format, "model_json_schema"):
        schema = response_format.model_json_schema()
        strict = _strict_ready(schema)
        return (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": response_format.__name__,
                    "schema": schema,
                    "strict": strict,
                },
            },
            response_format,
        )
    raise InvalidRequestError(
        "response_format must be a Pydantic model class, 'json', or a dict like "
        "{'type': 'json_schema', 'json_schema': {...}}"
    )


def parse_structured(text: str, model_class: Any) -> Any:
    """Decode ``text`` into ``model_class`` (or plain JSON when it is None)."""
    body = text.strip()
    if body.startswith("```"):
        # Some servers wrap JSON in a code fence despite being asked not to.
        body = body.strip("`").removeprefix("json").strip()
    if model_class is None:
        return json.loads(body)
    return model_class.model_validate_json(body)
