"""The OpenAI wire format of chat and legacy completions: request bodies from a
:class:`~notebook_llm.core.types.Request`, and answers (whole or streamed) back
into the library's types. Pure: no I/O, no SDK.

The Responses API has its own module (``_responses.py``); the provider and its
transports are ``openai.py``.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from notebook_llm.core.errors import ProviderError, UnsupportedError
from notebook_llm.core.types import Chunk, Completion, Request, Usage, normalise_finish_reason
from notebook_llm.providers._errors import error_from_status

__all__ = [
    "chat_body",
    "check_payload",
    "completion_prompt",
    "completions_body",
    "decode_embedding",
    "parse_chat_completion",
    "parse_chunk",
    "parse_text_completion",
    "parse_text_completion_chunk",
    "status_in",
    "usage_of",
]


def usage_of(data: dict[str, Any] | None) -> Usage | None:
    if not data:
        return None
    prompt_details = data.get("prompt_tokens_details") or {}
    output_details = data.get("completion_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") or data.get("prompt_cache_hit_tokens") or 0
    return Usage(
        input_tokens=data.get("prompt_tokens") or data.get("input_tokens") or 0,
        output_tokens=data.get("completion_tokens") or data.get("output_tokens") or 0,
        cached_input_tokens=cached,
        reasoning_tokens=output_details.get("reasoning_tokens") or 0,
    )


def _reasoning(message: dict[str, Any]) -> str:
    # DeepSeek and vLLM: reasoning_content; OpenRouter, Ollama, Groq: reasoning;
    # OpenRouter also sends structured reasoning_details.
    text = message.get("reasoning_content") or message.get("reasoning")
    if text:
        return text if isinstance(text, str) else json.dumps(text)
    details = message.get("reasoning_details")
    if details:
        return "".join(
            str(item.get("text") or item.get("summary") or "")
            for item in details
            if isinstance(item, dict)
        )
    return ""


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # Some servers answer with a list of parts.
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def check_payload(data: Any, provider: str) -> None:
    """Raise unless ``data`` is a JSON object without an ``error`` in it."""
    if not isinstance(data, dict):
        raise ProviderError(
            "The server's answer is not a JSON object", provider=provider, body=data
        )
    if data.get("error"):
        raise error_from_status(provider, status_in(data["error"]), data, None, None)


def parse_chat_completion(data: dict[str, Any], provider: str = "") -> Completion:
    """A ``chat.completion`` JSON object as a :class:`Completion`."""
    from notebook_llm.core.stream import make_tool_call

    check_payload(data, provider)
    choices = data.get("choices") or []
    choice = choices[0] if choices else {}
    message = choice.get("message") or {}
    tool_calls = [
        make_tool_call(
            call.get("id") or "",
            (call.get("function") or {}).get("name") or "",
            (call.get("function") or {}).get("arguments") or "",
        )
        for call in message.get("tool_calls") or []
    ]
    if message.get("function_call") and not tool_calls:
        # The legacy single-function form. Some servers send it beside
        # tool_calls, as a copy of the first call: it must not run twice.
        function = message["function_call"]
        tool_calls.append(
            make_tool_call("", function.get("name") or "", function.get("arguments") or "")
        )
    return Completion(
        text=_content_text(message.get("content")),
        response_model=data.get("model"),
        reasoning=_reasoning(message) or None,
        tool_calls=tool_calls,
        finish_reason=normalise_finish_reason(choice.get("finish_reason"))
        or ("tool_calls" if tool_calls else "stop"),
        usage=usage_of(data.get("usage")) or Usage(),
        refusal=message.get("refusal"),
        id=data.get("id"),
        raw=data,
    )


def status_in(error: Any) -> int:
    # Errors inside a 200 stream carry their real status here and there.
    if isinstance(error, dict):
        for key in ("status_code", "code", "status"):
            value = error.get(key)
            if isinstance(value, int) and 400 <= value < 600:
                return value
            if isinstance(value, str) and value.isdigit() and 400 <= int(value) < 600:
                return int(value)
    return 500


def parse_chunk(data: dict[str, Any], provider: str = "") -> Chunk:
    """One ``chat.completion.chunk`` as a :class:`Chunk`; an error object raises."""
    if data.get("error"):
        raise error_from_status(provider, status_in(data["error"]), data, None, None)
    usage = data.get("usage")
    choices = data.get("choices")
    if not choices:
        return Chunk(
            usage=usage_of(usage), response_model=data.get("model"), id=data.get("id"), raw=data
        )
    choice = choices[0]
    if len(choices) > 1 or choice.get("index", 0) != 0:
        # n > 1: follow the first choice only.
        choice = next((c for c in choices if c.get("index", 0) == 0), None)
        if choice is None:
            return Chunk(usage=usage_of(usage), raw=data)
    delta = choice.get("delta") or {}
    fragments = None
    calls = delta.get("tool_calls")
    if calls:
        fragments = []
        for position, call in enumerate(calls):
            function = call.get("function") or {}
            fragments.append(
                {
                    "index": call.get("index", position),
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                }
            )
    elif delta.get("function_call"):
        function = delta["function_call"]
        fragments = [
            {
                "index": 0,
                "name": function.get("name"),
                "arguments": function.get("arguments"),
                "legacy": True,
            }
        ]
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    if not isinstance(reasoning, str):
        reasoning = ""
    finish = choice.get("finish_reason")
    return Chunk(
        text=delta.get("content") or "",
        reasoning=reasoning,
        tool_calls=fragments,
        usage=usage_of(usage) if usage else None,
        finish_reason=normalise_finish_reason(finish) if finish else None,
        response_model=data.get("model"),
        id=data.get("id"),
        raw=data,
    )


def chat_body(request: Request, stream: bool, quirks: dict[str, Any]) -> dict[str, Any]:
    """The JSON body for ``POST /chat/completions``."""
    messages = list(request.messages)
    if "tool_call_content" in quirks:  # a server that wants text where OpenAI takes null
        messages = [{**m, "content": quirks["tool_call_content"]}
                    if m.get("tool_calls") and m.get("content", "") is None else m
                    for m in messages]
    if request.system:
        messages.insert(0, {"role": "system", "content": request.system})
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body[quirks.get("max_tokens_field", "max_tokens")] = request.max_tokens
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in request.tools
        ]
    if request.tool_choice is not None:
        choice = request.tool_choice
        if isinstance(choice, str) and choice not in ("auto", "none", "required"):
            choice = {"type": "function", "function": {"name": choice}}
        body["tool_choice"] = choice
    if request.response_format is not None:
        body["response_format"] = request.response_format
        if (
            quirks.get("schema_as_json_object")
            and request.response_format.get("type") == "json_schema"
        ):
            schema = request.response_format["json_schema"].get("schema", {})
            body["response_format"] = {"type": "json_object", "schema": schema}
    if request.reasoning_effort is not None:
        body["reasoning_effort"] = request.reasoning_effort
    return _finish_body(body, request, stream, quirks)


def _finish_body(
    body: dict[str, Any], request: Request, stream: bool, quirks: dict[str, Any]
) -> dict[str, Any]:
    # Streaming asks for the usage chunk (unless the server cannot take
    # stream_options); the caller's extra keys go last and win.
    if stream:
        body["stream"] = True
        if quirks.get("stream_usage", True):
            body["stream_options"] = {"include_usage": True}
    body.update(request.extra)
    return body


def completion_prompt(request: Request) -> str:
    """A plain prompt for the legacy completions API, made from the messages.

    A lone user message is sent as it is; otherwise the system prompt and the
    messages' texts are joined by blank lines (no chat template is applied:
    legacy completions are for base models, which continue the text).
    """
    messages = request.messages
    if not request.system and len(messages) == 1 and messages[0].get("role", "user") == "user":
        return _content_text(messages[0].get("content"))
    parts = [request.system] if request.system else []
    parts.extend(_content_text(message.get("content")) for message in messages)
    return "\n\n".join(part for part in parts if part)


def completions_body(request: Request, stream: bool, quirks: dict[str, Any]) -> dict[str, Any]:
    """The JSON body for the legacy ``POST /completions``; it has no tools or formats."""
    if request.tools or request.response_format is not None:
        raise UnsupportedError(
            "The legacy completions API (api='completions') has no tools or response "
            "formats; use api='chat' or api='responses'"
        )
    body: dict[str, Any] = {"model": request.model, "prompt": completion_prompt(request)}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    return _finish_body(body, request, stream, quirks)


def parse_text_completion(data: dict[str, Any], provider: str = "") -> Completion:
    """A legacy ``text_completion`` object as a :class:`Completion` (``choices[0].text``)."""
    check_payload(data, provider)
    choices = data.get("choices") or []
    choice = next((c for c in choices if c.get("index", 0) == 0), choices[0] if choices else {})
    return Completion(
        text=choice.get("text") or "",
        response_model=data.get("model"),
        finish_reason=normalise_finish_reason(choice.get("finish_reason")) or "stop",
        usage=usage_of(data.get("usage")) or Usage(),
        id=data.get("id"),
        raw=data,
    )


def parse_text_completion_chunk(data: dict[str, Any], provider: str = "") -> Chunk:
    """One streamed legacy ``text_completion`` chunk as a :class:`Chunk`."""
    if data.get("error"):
        raise error_from_status(provider, status_in(data["error"]), data, None, None)
    usage = usage_of(data.get("usage")) if data.get("usage") else None
    choice = next((c for c in data.get("choices") or [] if c.get("index", 0) == 0), None)
    if choice is None:
        return Chunk(usage=usage, response_model=data.get("model"), id=data.get("id"), raw=data)
    finish = choice.get("finish_reason")
    return Chunk(
        text=choice.get("text") or "",
        usage=usage,
        finish_reason=normalise_finish_reason(finish) if finish else None,
        response_model=data.get("model"),
        id=data.get("id"),
        raw=data,
    )


def decode_embedding(item: dict[str, Any]) -> list[float]:
    vector = item.get("embedding")
    if isinstance(vector, str):  # encoding_format="base64": little-endian float32
        raw = base64.b64decode(vector)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return list(vector or [])
