"""Tool calls on in-process models, through constrained JSON.

Small local models rarely follow a function-calling chat template, and many
GGUF files have none. So the model is told about the tools in the system
prompt and its answer is held to a JSON schema (llama.cpp turns it into a
grammar): either ``{"tool": NAME, "arguments": {...}}``, whose arguments
follow that tool's own schema, or ``{"answer": TEXT}``. Any model, however
small, then answers with a well-formed call or a plain answer; the answer is
turned back into :class:`~notebook_llm.core.types.ToolCall` objects here.
Earlier calls and results in the conversation become text the model can read;
right after tool results the model may only answer (one round of calls per
message: small models otherwise repeat the call they just made).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from notebook_llm.core.stream import make_tool_call
from notebook_llm.core.types import Chunk, Completion, Message, Request, Tool, ToolCall

__all__ = ["answer_schema", "as_chunks", "parse_answer", "tool_messages", "tools_prompt"]


def _offered(request: Request) -> list[Tool]:
    tools = list(request.tools or [])
    choice = request.tool_choice
    if choice == "none" or (request.messages and request.messages[-1].get("role") == "tool"):
        # With the results in hand, a small model answers: left free to call
        # again, it tends to repeat the same call until the rounds run out.
        return []
    name = choice if isinstance(choice, str) and choice not in ("auto", "required") else (
        (choice or {}).get("function", {}).get("name") if isinstance(choice, dict) else None)
    if name:
        tools = [tool for tool in tools if tool.name == name]
    return tools


def tools_prompt(request: Request) -> str:
    """The system prompt's part about the tools."""
    offered = _offered(request)
    if not offered:
        return 'Reply with JSON only: {"answer": "<text>"}.'
    lines = ["You can call these tools:"]
    for tool in offered:
        schema = json.dumps(tool.parameters or {"type": "object"}, ensure_ascii=False)
        lines.append(f"- {tool.name}: {tool.description} Arguments (JSON schema): {schema}")
    lines.append('Reply with JSON only: {"tool": "<name>", "arguments": {...}} to call a tool, '
                 'or {"answer": "<text>"} to answer the user.')
    return "\n".join(lines)


def answer_schema(request: Request) -> dict[str, Any]:
    """The JSON schema (so the grammar) the answer is held to."""
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": tool.name},
                           "arguments": tool.parameters or {"type": "object"}},
            "required": ["tool", "arguments"],
        }
        for tool in _offered(request)
    ]
    if request.tool_choice != "required" or not options:
        options.append({"type": "object", "properties": {"answer": {"type": "string"}},
                        "required": ["answer"]})
    return options[0] if len(options) == 1 else {"anyOf": options}


def tool_messages(messages: list[Message]) -> list[Message]:
    """Tool calls and results as text a model without a tool template can read."""
    names: dict[str, str] = {}
    converted: list[Message] = []
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = call.get("function", {})
                names[call.get("id", "")] = function.get("name", "")
                calls.append(f'{{"tool": {json.dumps(function.get("name", ""))}, '
                             f'"arguments": {function.get("arguments") or "{}"}}}')
            converted.append({"role": "assistant", "content": "\n".join(calls)})
        elif role == "tool":
            name = names.get(message.get("tool_call_id", ""), "the tool")
            converted.append({"role": "user",
                              "content": f"{name} returned: {message.get('content')}\n"
                                         "Answer the question with this result."})
        else:
            converted.append(message)
    return converted


def parse_answer(text: str) -> tuple[str, list[ToolCall]]:
    """``(answer text, tool calls)`` from the model's JSON; text that is not the
    expected JSON is kept as the answer."""
    try:
        data = json.loads(text)
    except ValueError:
        return text, []
    if isinstance(data, dict) and isinstance(data.get("tool"), str):
        arguments = json.dumps(data.get("arguments") or {}, ensure_ascii=False)
        return "", [make_tool_call(f"call_{uuid.uuid4().hex[:12]}", data["tool"], arguments)]
    if isinstance(data, dict) and "answer" in data:
        return str(data["answer"]), []
    return text, []


async def as_chunks(completion: Completion) -> AsyncIterator[Chunk]:
    """A finished completion as a stream (text, tool calls, then the end)."""
    yield Chunk(response_model=completion.response_model)
    if completion.text:
        yield Chunk(text=completion.text)
    for index, call in enumerate(completion.tool_calls):
        yield Chunk(tool_calls=[{"index": index, "id": call.id, "name": call.name,
                                 "arguments": call.arguments_json}])
    yield Chunk(finish_reason=completion.finish_reason, usage=completion.usage)
