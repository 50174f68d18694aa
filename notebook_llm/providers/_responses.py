"""The OpenAI Responses API (``POST /responses``): pure request building and parsing.

No I/O and no SDK import: ``openai.py`` sends what :func:`responses_body` builds
over any of its transports and hands the answers to :func:`parse_response`
(a whole response) or :class:`ResponsesStreamParser` (typed SSE events).

How a response maps onto :class:`~notebook_llm.core.types.Completion`:

- ``message`` items: their ``output_text`` parts, concatenated with nothing in
  between (as the SDK's ``output_text`` does), are the text; ``refusal`` parts
  are the refusal. Input-side parts (``input_text`` in a compaction's echo of
  the conversation) are not output and are ignored.
- ``reasoning`` items: the summary texts (``summary[].text``), or where there
  is no summary the raw ``reasoning_text`` content (DeepSeek, OpenRouter), are
  the reasoning, one paragraph each, joined by a blank line. ``encrypted_content``
  is opaque and ignored.
- ``function_call`` items are tool calls (``call_id`` is the id the tool result
  must answer). Every other item type (``code_interpreter_call``,
  ``file_search_call``, ``web_search_call``, ``tool_search_call``,
  ``custom_tool_call``, ``compaction``, ...) is skipped: those run on the
  provider's side or are not function tools, so there is nothing to do here.
- ``status``: ``completed`` -> ``stop`` (``tool_calls`` when there are function
  calls); ``incomplete`` -> ``length`` (``content_filter`` when
  ``incomplete_details.reason`` says so); ``cancelled`` -> ``cancelled``;
  ``failed`` raises the mapped error from ``response.error``.
- **Background mode** (``background=True``) answers ``queued`` or
  ``in_progress`` with no output. Returning an empty completion would look like
  an empty answer, so :class:`ResponsePendingError` (an ``UnsupportedError``
  carrying ``response_id`` and ``status``) is raised instead; poll with
  ``OpenAIProvider.retrieve_response(response_id)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from notebook_llm.core.errors import ProviderError, UnsupportedError
from notebook_llm.core.types import Chunk, Completion, FinishReason, Request, ToolCall, Usage
from notebook_llm.providers._errors import error_from_status

__all__ = [
    "INPUT_TOKENS_FIELDS",
    "PENDING_STATUSES",
    "OutputSummary",
    "ResponsePendingError",
    "ResponsesStreamParser",
    "input_items",
    "parse_output",
    "parse_response",
    "response_finish_reason",
    "response_usage",
    "responses_body",
]

PENDING_STATUSES = frozenset({"queued", "in_progress"})
"""Statuses of a background-mode response that has not finished."""

INPUT_TOKENS_FIELDS = frozenset(
    {
        "conversation", "input", "instructions", "model", "parallel_tool_calls",
        "previous_response_id", "reasoning", "text", "tool_choice", "tools", "truncation",
    }
)  # fmt: skip
"""The body fields ``POST /responses/input_tokens`` accepts (no sampling, no stream)."""

_REASONING_DELTAS = frozenset(
    {"response.reasoning_summary_text.delta", "response.reasoning_text.delta"}
)


class ResponsePendingError(UnsupportedError):
    """A background-mode response that has not finished (``queued`` / ``in_progress``).

    notebook_llm returns finished responses only. ``response_id`` and
    ``status`` say which response to poll (``retrieve_response``) and where it is.
    """

    response_id: str | None = None
    status: str | None = None


# -- requests ----------------------------------------------------------------


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return json.dumps(content)


def _input_part(part: Any, role: str) -> Any:
    """One chat-style content part in the Responses shape."""
    if not isinstance(part, dict):
        return {"type": "input_text", "text": str(part)}
    kind = part.get("type")
    if kind == "text":
        return {
            "type": "output_text" if role == "assistant" else "input_text",
            "text": part.get("text", ""),
        }
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        converted: dict[str, Any] = {"type": "input_image", "image_url": url}
        if isinstance(image, dict) and image.get("detail"):
            converted["detail"] = image["detail"]
        return converted
    if kind == "file" and isinstance(part.get("file"), dict):
        return {"type": "input_file", **part["file"]}
    if kind == "input_audio":
        raise UnsupportedError(
            "The Responses API (api='responses') takes no audio input; nothing was sent. "
            "Use api='chat' with an audio model (openai:gpt-4o-audio-preview)"
        )
    return part  # already a Responses part (input_text, input_image, ...)


def _message_content(content: Any, role: str) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return [_input_part(part, role) for part in content]
    return str(content)


def input_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages (the library's lingua franca) as Responses ``input`` items.

    User and system/developer messages keep their role; an assistant message
    becomes its text (when it has any) followed by one ``function_call`` item
    per tool call; a ``tool`` message becomes a ``function_call_output``.
    Items already in the Responses shape (they have a ``type``) pass through.
    """
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if "role" not in message and message.get("type"):
            items.append(message)
            continue
        if role == "tool":
            content = message.get("content")
            output = content if isinstance(content, str) else _text_of(content)
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id") or "",
                    "output": output,
                }
            )
            continue
        if role == "assistant":
            content = message.get("content")
            if content:
                items.append({"role": "assistant", "content": _message_content(content, role)})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                arguments = function.get("arguments")
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments or {})
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id") or "",
                        "name": function.get("name") or "",
                        "arguments": arguments,
                    }
                )
            continue
        items.append(
            {"role": role or "user", "content": _message_content(message.get("content"), "user")}
        )
    return items


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "name": choice}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        # The chat shape {"type": "function", "function": {"name": ...}}.
        return {"type": "function", "name": choice["function"].get("name")}
    return choice


def _text_format(response_format: dict[str, Any]) -> dict[str, Any] | None:
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        converted: dict[str, Any] = {
            "type": "json_schema",
            "name": spec.get("name", "response"),
            "schema": spec.get("schema", {}),
        }
        if "strict" in spec:
            converted["strict"] = spec["strict"]
        if spec.get("description"):
            converted["description"] = spec["description"]
        return converted
    if kind == "json_object":
        return {"type": "json_object"}
    return None


def responses_body(
    request: Request, stream: bool, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON body for ``POST /responses``.

    ``request.system`` becomes ``instructions``; messages become ``input``
    items (:func:`input_items`); ``max_tokens`` is ``max_output_tokens``; tools
    are flat ``{"type": "function", "name", "description", "parameters"}``;
    a ``json_schema`` response format goes to ``text.format``; the reasoning
    effort to ``reasoning.effort``. ``extra`` (default ``request.extra``) is
    merged last, so any Responses field can be passed through.
    """
    body: dict[str, Any] = {"model": request.model, "input": input_items(request.messages)}
    if request.system:
        body["instructions"] = request.system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            }
            for tool in request.tools
        ]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    if request.response_format is not None:
        text_format = _text_format(request.response_format)
        if text_format is not None:
            body["text"] = {"format": text_format}
    if request.reasoning_effort is not None:
        body["reasoning"] = {"effort": request.reasoning_effort}
    if stream:
        body["stream"] = True
    body.update(request.extra if extra is None else extra)
    return body


# -- responses ---------------------------------------------------------------


def response_usage(usage: Any) -> Usage | None:
    """A Responses ``usage`` object as :class:`Usage` (``None`` when absent)."""
    if not isinstance(usage, dict):
        return None
    input_details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    return Usage(
        input_tokens=usage.get("input_tokens") or 0,
        output_tokens=usage.get("output_tokens") or 0,
        cached_input_tokens=input_details.get("cached_tokens") or 0,
        cache_write_tokens=input_details.get("cache_write_tokens") or 0,
        reasoning_tokens=output_details.get("reasoning_tokens") or 0,
    )


def _reasoning_parts(item: dict[str, Any]) -> list[str]:
    summary = [
        str(part.get("text") or "") for part in item.get("summary") or [] if isinstance(part, dict)
    ]
    summary = [text for text in summary if text]
    if summary:
        return summary
    content = [
        str(part.get("text") or "")
        for part in item.get("content") or []
        if isinstance(part, dict) and part.get("type") == "reasoning_text"
    ]
    return [text for text in content if text]


def _message_parts(item: dict[str, Any]) -> tuple[str, str | None]:
    text, refusal = [], []
    for part in item.get("content") or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "output_text":
            text.append(str(part.get("text") or ""))
        elif part.get("type") == "refusal":
            refusal.append(str(part.get("refusal") or ""))
    return "".join(text), ("".join(refusal) or None)


@dataclass(slots=True)
class OutputSummary:
    """What a list of ``output`` items says: text, reasoning, refusal and tool calls."""

    text: str = ""
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Types of the items skipped (server-side tools, compaction, ...)."""


def parse_output(output: Any) -> OutputSummary:
    """Fold ``output`` items into an :class:`OutputSummary`; unknown items are skipped."""
    from notebook_llm.core.stream import make_tool_call

    summary = OutputSummary()
    texts: list[str] = []
    reasoning: list[str] = []
    refusals: list[str] = []
    for item in output or []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            text, refusal = _message_parts(item)
            texts.append(text)
            if refusal:
                refusals.append(refusal)
        elif kind == "reasoning":
            reasoning.extend(_reasoning_parts(item))
        elif kind == "function_call":
            arguments = item.get("arguments")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments) if arguments is not None else ""
            summary.tool_calls.append(
                make_tool_call(
                    item.get("call_id") or item.get("id") or "", item.get("name") or "", arguments
                )
            )
        else:
            summary.skipped.append(str(kind))
    summary.text = "".join(texts)
    summary.reasoning = "\n\n".join(reasoning) or None
    summary.refusal = "".join(refusals) or None
    return summary


def response_finish_reason(response: dict[str, Any], has_tool_calls: bool) -> FinishReason:
    """The finish reason for a finished response's ``status``."""
    status = response.get("status")
    if status == "incomplete":
        details = response.get("incomplete_details") or {}
        return "content_filter" if details.get("reason") == "content_filter" else "length"
    if status == "cancelled":
        return "cancelled"
    if status == "failed":
        return "error"
    return "tool_calls" if has_tool_calls else "stop"


def _failure(provider: str, response: dict[str, Any]) -> Exception:
    error = response.get("error")
    if isinstance(error, dict) and error:
        return error_from_status(provider, 200, {"error": error}, None, None)
    return ProviderError(
        f"The response failed ({response.get('status')}) without an error object",
        provider=provider,
        body=response,
    )


def _pending(provider: str, response: dict[str, Any]) -> ResponsePendingError:
    response_id = response.get("id")
    status = response.get("status")
    error = ResponsePendingError(
        f"The response {response_id} is still {status} (background mode); notebook_llm "
        "returns finished responses only: call without background=True, or poll with "
        f"retrieve_response({response_id!r})",
        provider=provider,
        body=response,
    )
    error.response_id = response_id
    error.status = status
    return error


def parse_response(data: Any, provider: str = "") -> Completion:
    """A Responses API ``response`` object as a :class:`Completion`.

    Raises the mapped error for ``status: failed`` or an error envelope, and
    :class:`ResponsePendingError` for a background response still ``queued`` or
    ``in_progress``.
    """
    if not isinstance(data, dict):
        raise ProviderError(
            "The server's answer is not a JSON object", provider=provider, body=data
        )
    status = data.get("status")
    if status == "failed" or (data.get("error") and "output" not in data):
        raise _failure(provider, data)
    if status in PENDING_STATUSES:
        raise _pending(provider, data)
    summary = parse_output(data.get("output"))
    return Completion(
        text=summary.text,
        response_model=data.get("model"),
        reasoning=summary.reasoning,
        tool_calls=summary.tool_calls,
        finish_reason=response_finish_reason(data, bool(summary.tool_calls)),
        usage=response_usage(data.get("usage")) or Usage(),
        refusal=summary.refusal,
        id=data.get("id"),
        raw=data,
    )


class ResponsesStreamParser:
    """Turns the typed events of a Responses stream into :class:`Chunk` deltas.

    One parser per stream (it keeps per-output-item state). :meth:`feed` takes
    one decoded ``data:`` payload and returns a chunk, or ``None`` for events
    that carry nothing for the caller (``response.in_progress``,
    ``*.done`` events already covered by their deltas, server-tool progress).

    - ``response.output_text.delta`` -> text;
      ``response.reasoning_summary_text.delta`` / ``response.reasoning_text.delta``
      -> reasoning, a blank line between parts (as :func:`parse_response` joins them).
    - ``response.output_item.added`` for a ``function_call`` gives its call id
      and name at ``output_index``; ``response.function_call_arguments.delta``
      adds argument fragments at the same index.
    - ``response.output_item.done`` fills in whatever a server sent whole,
      without deltas (text, reasoning or arguments).
    - ``response.completed`` / ``response.incomplete``: usage and the finish
      reason (the chunk with ``finish_reason`` set; ``finished`` becomes True).
    - ``response.failed`` and ``error`` events raise the mapped error.
    """

    def __init__(self, provider: str = "") -> None:
        self.provider = provider
        self.finished = False
        self.response_id: str | None = None
        self.model: str | None = None
        self._calls: dict[int, bool] = {}  # output_index -> arguments streamed
        self._text_seen: set[int] = set()
        self._reasoning_seen: set[int] = set()
        self._reasoning_key: tuple[int, int] | None = None
        self._reasoning_started = False

    def _reasoning(self, key: tuple[int, int], text: str) -> str:
        if not text:
            return ""
        if key != self._reasoning_key and self._reasoning_started:
            text = "\n\n" + text
        self._reasoning_key = key
        self._reasoning_started = True
        return text

    def _chunk(self, event: dict[str, Any], **fields: Any) -> Chunk:
        return Chunk(id=self.response_id, response_model=self.model, raw=event, **fields)

    def feed(self, event: dict[str, Any]) -> Chunk | None:
        """One event in, a chunk (or ``None``) out; failures raise."""
        kind = event.get("type")
        index = event.get("output_index", 0)
        if kind == "response.output_text.delta":
            self._text_seen.add(index)
            delta = event.get("delta") or ""
            return self._chunk(event, text=delta) if delta else None
        if kind in _REASONING_DELTAS:
            self._reasoning_seen.add(index)
            part = event.get("summary_index", event.get("content_index", 0)) or 0
            text = self._reasoning((index, part), event.get("delta") or "")
            return self._chunk(event, reasoning=text) if text else None
        if kind == "response.function_call_arguments.delta":
            self._calls[index] = True
            fragment = {"index": index, "arguments": event.get("delta") or ""}
            return self._chunk(event, tool_calls=[fragment])
        if kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") != "function_call":
                return None
            self._calls.setdefault(index, bool(item.get("arguments")))
            fragment = {
                "index": index,
                "id": item.get("call_id") or item.get("id"),
                "name": item.get("name"),
                "arguments": item.get("arguments") or None,
            }
            return self._chunk(event, tool_calls=[fragment])
        if kind == "response.output_item.done":
            return self._item_done(event, index)
        if kind in ("response.created", "response.in_progress", "response.queued"):
            response = event.get("response") or {}
            self.response_id = response.get("id") or self.response_id
            self.model = response.get("model") or self.model
            return None
        if kind in ("response.completed", "response.incomplete"):
            response = event.get("response") or {}
            self.response_id = response.get("id") or self.response_id
            self.model = response.get("model") or self.model
            has_calls = bool(self._calls) or any(
                isinstance(item, dict) and item.get("type") == "function_call"
                for item in response.get("output") or []
            )
            self.finished = True
            return self._chunk(
                event,
                usage=response_usage(response.get("usage")),
                finish_reason=response_finish_reason(response, has_calls),
            )
        if kind == "response.failed":
            raise _failure(self.provider, event.get("response") or {})
        if kind == "error" or (kind is None and event.get("error")):
            error = event.get("error") if isinstance(event.get("error"), dict) else event
            raise error_from_status(self.provider, 200, {"error": error}, None, None)
        return None

    def _item_done(self, event: dict[str, Any], index: int) -> Chunk | None:
        item = event.get("item") or {}
        kind = item.get("type")
        if kind == "function_call" and not self._calls.get(index):
            new = index not in self._calls
            self._calls[index] = True
            arguments = item.get("arguments")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments) if arguments is not None else ""
            fragment: dict[str, Any] = {"index": index, "arguments": arguments}
            if new:
                fragment.update(id=item.get("call_id") or item.get("id"), name=item.get("name"))
            return self._chunk(event, tool_calls=[fragment])
        if kind == "message" and index not in self._text_seen:
            self._text_seen.add(index)
            text, _ = _message_parts(item)
            return self._chunk(event, text=text) if text else None
        if kind == "reasoning" and index not in self._reasoning_seen:
            self._reasoning_seen.add(index)
            pieces = [
                self._reasoning((index, position), text)
                for position, text in enumerate(_reasoning_parts(item))
            ]
            joined = "".join(pieces)
            return self._chunk(event, reasoning=joined) if joined else None
        return None
