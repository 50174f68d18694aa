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
from notebook_llm.core.types import Message, Tool, ToolCall

__all__ = [
    "as_tools",
    "function_tool",
    "normalise_response_format",
    "parse_structured",
    "run_tool_calls",
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


def as_tools(tools: Sequence[Any] | None) -> list[Tool] | None:
    """Accept functions, Tool objects or OpenAI-style tool dicts."""
    if not tools:
        return None
    result: list[Tool] = []
    for tool in tools:
        if isinstance(tool, Tool):
            result.append(tool)
        elif callable(tool):
            result.append(function_tool(tool))
        elif isinstance(tool, dict):
            spec = tool.get("function", tool)
            result.append(
                Tool(
                    name=spec["name"],
                    description=spec.get("description", ""),
                    parameters=spec.get("parameters") or spec.get("input_schema") or {},
                )
            )
        else:
            raise InvalidRequestError(f"Cannot use {tool!r} as a tool: pass a function or a dict")
    return result


async def run_tool_calls(calls: list[ToolCall], tools: list[Tool]) -> list[Message]:
    """Run each call's function and return the ``tool`` messages to send back.

    A function that raises reports the error to the model instead of failing the
    whole exchange, as a person at the keyboard would want.
    """
    by_name = {tool.name: tool for tool in tools}
    messages: list[Message] = []
    for call in calls:
        tool = by_name.get(call.name)
        if tool is None or tool.function is None:
            content = f"Error: no function named {call.name!r} is available"
        else:
            try:
                value = tool.function(**call.arguments)
                if inspect.isawaitable(value):
                    value = await value
                content = value if isinstance(value, str) else json.dumps(value, default=str)
            except Exception as exc:  # noqa: BLE001 - the model is told what went wrong
                content = f"Error: {type(exc).__name__}: {exc}"
        messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
    return messages


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
