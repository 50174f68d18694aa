"""OpenAI's JSON shapes, both ways: requests in, completions, chunks and errors out.

The server speaks the wire format of OpenAI's API, so that its SDK and every
tool built on it (simonw/llm, editor extensions, other notebooks) work
unchanged. Requests become the keyword arguments of ``Client.acomplete`` /
``astream``; completions, stream chunks, embeddings and errors become the
JSON bodies OpenAI sends. Nothing here does I/O.

What a caller may set is an allow-list: ``api_key``, ``api_base``,
``extra_headers`` and the other client options never come from a request, so
a caller cannot point the server's keys at a host of its choosing.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from notebook_llm.core.errors import (
    AuthenticationError,
    BudgetExceededError,
    CancelledError,
    ConnectionError,
    ContentFilterError,
    ContextLengthError,
    InvalidRequestError,
    LLMError,
    MissingKeyError,
    ModelNotFoundError,
    ProviderError,
    RateLimitError,
    TimeoutError,
    UnsupportedError,
    redact,
)
from notebook_llm.core.types import Chunk, Completion, Usage

__all__ = [
    "ChatCall",
    "WireError",
    "chat_call",
    "chunk_json",
    "completion_json",
    "embedding_input",
    "embeddings_json",
    "error_body",
    "error_for",
    "model_json",
    "responses_call",
    "responses_events",
    "responses_json",
    "usage_chunk_json",
]

# Sampling options passed through to the provider untouched when a request sets them.
_PASSTHROUGH = frozenset(
    {"top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
     "logprobs", "top_logprobs", "parallel_tool_calls", "top_k", "min_p", "repeat_penalty",
     "service_tier", "prediction", "modalities", "audio", "verbosity"}
)
# Fields OpenAI accepts that change nothing here (or are handled separately).
_IGNORED = frozenset(
    {"model", "messages", "stream", "stream_options", "user", "store", "metadata", "n",
     "temperature", "max_tokens", "max_completion_tokens", "tools", "tool_choice",
     "response_format", "reasoning_effort", "functions", "function_call", "safety_identifier",
     "prompt_cache_key", "web_search_options"}
)

_FINISH = {"cancelled": "stop", "error": "stop"}


class WireError(Exception):
    """A request the server refuses, with OpenAI's status, type and code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """``{"error": {...}}`` as OpenAI sends it."""
        return error_body(self.message, self.type, self.code, self.param)


def error_body(
    message: str, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": redact(message), "type": type, "param": param, "code": code}}


def error_for(error: BaseException) -> WireError:
    """The OpenAI-shaped error for an error raised by a call (secrets redacted).

    Upstream errors keep their meaning: a rate limit is 429 with ``Retry-After``,
    an unknown model 404, a bad request 400, an upstream failure 502, a
    timeout 504. Anything that is not an ``LLMError`` is an internal error
    whose text is not shown (it may hold anything).
    """
    if isinstance(error, WireError):
        return error
    if not isinstance(error, LLMError):
        return WireError(500, "The server failed to answer; see its log", type="server_error",
                         code="internal_error")
    text = str(error)
    if isinstance(error, BudgetExceededError):
        return WireError(429, text, type="insufficient_quota", code="insufficient_quota")
    if isinstance(error, RateLimitError):
        headers = {}
        if error.retry_after:
            headers["Retry-After"] = str(max(1, round(error.retry_after)))
        return WireError(429, text, type="rate_limit_error", code="rate_limit_exceeded",
                         headers=headers)
    if isinstance(error, MissingKeyError):
        return WireError(401, f"The server has no key for this provider: {text}",
                         type="authentication_error", code="missing_key")
    if isinstance(error, AuthenticationError):
        return WireError(401, f"The upstream provider refused the server's key: {text}",
                         type="authentication_error", code="invalid_api_key")
    if isinstance(error, ModelNotFoundError):
        return WireError(404, text, code="model_not_found", param="model")
    if isinstance(error, ContextLengthError):
        return WireError(400, text, code="context_length_exceeded", param="messages")
    if isinstance(error, ContentFilterError):
        return WireError(400, text, code="content_filter")
    if isinstance(error, UnsupportedError):
        return WireError(400, text, code="unsupported")
    if isinstance(error, InvalidRequestError):
        return WireError(400, text, code=None)
    if isinstance(error, TimeoutError):
        return WireError(504, text, type="server_error", code="timeout")
    if isinstance(error, (ConnectionError, ProviderError)):
        return WireError(502, text, type="server_error", code="upstream_error")
    if isinstance(error, CancelledError):
        return WireError(499, text, type="server_error", code="cancelled")
    return WireError(500, text, type="server_error", code="internal_error")


# -- requests ---------------------------------------------------------------------


@dataclass
class ChatCall:
    """One chat request as ``Client.acomplete`` / ``astream`` arguments."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    """The keyword arguments of the call (CallOptions and provider options)."""


def _need(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if value is None:
        raise WireError(400, f"Missing required parameter: '{name}'.", param=name,
                        code="missing_required_parameter")
    if not isinstance(value, kind):
        raise WireError(400, f"Invalid type for '{name}'.", param=name, code="invalid_type")
    return value


def _number(body: dict[str, Any], name: str, kind: type = float) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WireError(400, f"Invalid type for '{name}': expected a number.", param=name,
                        code="invalid_type")
    return kind(value)


def chat_call(body: Any) -> ChatCall:
    """The call a ``/v1/chat/completions`` body asks for.

    Raises:
        WireError: a malformed request (400), before anything is sent.
    """
    if not isinstance(body, dict):
        raise WireError(400, "The request body must be a JSON object.")
    model = _need(body, "model", str)
    messages = _need(body, "messages", list)
    if not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise WireError(400, "'messages' must be a non-empty list of {role, content} objects.",
                        param="messages")
    n = body.get("n")
    if n not in (None, 1):
        raise WireError(400, "Only n=1 is supported.", param="n", code="unsupported_value")
    options: dict[str, Any] = {}
    temperature = _number(body, "temperature")
    if temperature is not None:
        options["temperature"] = temperature
    max_tokens = _number(body, "max_completion_tokens", int)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", int)
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    tools = body.get("tools") or body.get("functions")
    if tools:
        if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("function", t).get("name"), str)
            for t in tools
        ):
            raise WireError(400, "'tools' must be a list of {type: function, function: {name, "
                            "parameters}} objects.", param="tools")
        options["tools"] = tools
    choice = body.get("tool_choice", body.get("function_call"))
    if choice is not None:
        options["tool_choice"] = _tool_choice(choice)
    response_format = body.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict) or "type" not in response_format:
            raise WireError(400, "'response_format' must be an object with a 'type'.",
                            param="response_format")
        if response_format["type"] != "text":
            options["response_format"] = response_format
    effort = body.get("reasoning_effort")
    if isinstance(effort, str):
        options["reasoning_effort"] = effort
    for name in body.keys() & _PASSTHROUGH:
        if body[name] is not None:
            options[name] = body[name]
    stream_options = body.get("stream_options") or {}
    return ChatCall(
        model=model,
        messages=messages,
        stream=bool(body.get("stream")),
        include_usage=bool(isinstance(stream_options, dict)
                           and stream_options.get("include_usage")),
        options=options,
    )


def _tool_choice(choice: Any) -> Any:
    # {"type": "function", "function": {"name": ...}} and {"name": ...} name one tool.
    if isinstance(choice, dict):
        name = (choice.get("function") or choice).get("name")
        if isinstance(name, str):
            return name
    return choice


def embedding_input(body: Any) -> tuple[str, list[str], dict[str, Any], str]:
    """``(model, texts, provider options, encoding_format)`` of a ``/v1/embeddings`` body."""
    if not isinstance(body, dict):
        raise WireError(400, "The request body must be a JSON object.")
    model = _need(body, "model", str)
    given = body.get("input")
    if isinstance(given, str):
        texts = [given]
    elif isinstance(given, list) and all(isinstance(t, str) for t in given) and given:
        texts = list(given)
    else:
        raise WireError(400, "'input' must be a string or a non-empty list of strings (token "
                        "arrays are not supported).", param="input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise WireError(400, "'encoding_format' must be 'float' or 'base64'.",
                        param="encoding_format")
    options = {}
    if body.get("dimensions") is not None:
        options["dimensions"] = _number(body, "dimensions", int)
    return model, texts, options, encoding


def responses_call(body: Any) -> ChatCall:
    """The chat call a ``/v1/responses`` body asks for (text input and output only)."""
    if not isinstance(body, dict):
        raise WireError(400, "The request body must be a JSON object.")
    model = _need(body, "model", str)
    given = body.get("input")
    if isinstance(given, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": given}]
    elif isinstance(given, list) and given:
        messages = [_response_message(item) for item in given]
    else:
        raise WireError(400, "'input' must be a string or a list of messages.", param="input")
    if isinstance(body.get("instructions"), str):
        messages.insert(0, {"role": "system", "content": body["instructions"]})
    options: dict[str, Any] = {}
    temperature = _number(body, "temperature")
    if temperature is not None:
        options["temperature"] = temperature
    max_tokens = _number(body, "max_output_tokens", int)
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    if body.get("top_p") is not None:
        options["top_p"] = body["top_p"]
    return ChatCall(model=model, messages=messages, stream=bool(body.get("stream")),
                    options=options)


def _response_message(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        raise WireError(400, "Only message items (text) are supported in 'input'.",
                        param="input", code="unsupported_value")
    content = item.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in (
                "input_text", "output_text", "text"
            ):
                raise WireError(400, "Only text content is supported in 'input'.",
                                param="input", code="unsupported_value")
            parts.append(str(part.get("text", "")))
        content = "".join(parts)
    if not isinstance(content, str):
        raise WireError(400, "A message in 'input' needs text content.", param="input")
    role = item.get("role", "user")
    return {"role": "system" if role == "developer" else role, "content": content}


# -- responses --------------------------------------------------------------------


_ID_STEM = secrets.token_hex(8)
_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """An id in OpenAI's style, unique in this process and unlikely to repeat
    across processes: ``chatcmpl-<random><counter>`` (a tenth of a uuid4's cost)."""
    return f"{prefix}{_ID_STEM}{next(_ids):08x}"


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def completion_json(completion: Completion, model: str, call_id: str) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": completion.text or None,
                               "refusal": completion.refusal}
    if completion.reasoning:
        message["reasoning_content"] = completion.reasoning
    if completion.tool_calls:
        message["tool_calls"] = [call.to_message_part() for call in completion.tool_calls]
    return {
        "id": call_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": _FINISH.get(completion.finish_reason, completion.finish_reason),
        }],
        "usage": _usage(completion.usage),
    }


def chunk_json(chunk: Chunk, model: str, call_id: str, created: int,
               *, first: bool = False) -> dict[str, Any] | None:
    """A ``chat.completion.chunk`` for one streamed increment (``None``: nothing to send)."""
    delta: dict[str, Any] = {}
    if first:
        delta["role"] = "assistant"
    if chunk.text:
        delta["content"] = chunk.text
    if chunk.reasoning:
        delta["reasoning_content"] = chunk.reasoning
    if chunk.tool_calls:
        calls = []
        for part in chunk.tool_calls:
            entry: dict[str, Any] = {"index": part.get("index", 0)}
            if part.get("id"):
                entry["id"] = part["id"]
                entry["type"] = "function"
            function = {}
            if part.get("name"):
                function["name"] = part["name"]
            if part.get("arguments") is not None:
                function["arguments"] = part["arguments"]
            entry["function"] = function
            calls.append(entry)
        delta["tool_calls"] = calls
    finish = chunk.finish_reason
    if not delta and finish is None and not first:
        return None
    if first and "content" not in delta:
        delta["content"] = ""
    return {
        "id": call_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": None if finish is None else _FINISH.get(finish, finish),
        }],
    }


def usage_chunk_json(usage: Usage, model: str, call_id: str, created: int) -> dict[str, Any]:
    """The last chunk of a stream asked with ``stream_options.include_usage``."""
    return {"id": call_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [], "usage": _usage(usage)}


def _vector(values: Any, encoding: str) -> Any:
    if encoding == "base64":
        floats = [float(v) for v in values]
        return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode("ascii")
    return [float(v) for v in values]


def embeddings_json(vectors: Any, model: str, usage: Usage, encoding: str) -> dict[str, Any]:
    """A ``list`` of ``embedding`` objects, in input order."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _vector(row, encoding)}
            for i, row in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
    }


def model_json(model_id: str, owned_by: str, created: int) -> dict[str, Any]:
    """One ``model`` object of ``/v1/models``."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def _response_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def responses_json(
    text: str, model: str, response_id: str, message_id: str, created: int,
    usage: Usage | None, *, status: str = "completed",
) -> dict[str, Any]:
    """A ``response`` object with one assistant message of text."""
    output = [] if status == "in_progress" else [{
        "type": "message", "id": message_id, "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }]
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "usage": None if usage is None else _response_usage(usage),
    }


def responses_events(kind: str, **fields: Any) -> bytes:
    """One server-sent event of a streamed response (``event:`` and ``data:`` lines)."""
    payload = {"type": kind, **fields}
    return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
