"""The Anthropic Messages API through the official ``anthropic`` SDK.

One ``AsyncAnthropic`` client per provider instance, built on first use and
reused; the SDK's own retries are off (the core's retry policy decides).
Requests arrive in the OpenAI chat shape and are translated here:

- assistant ``tool_calls`` become ``tool_use`` blocks, ``role: "tool"``
  messages become ``tool_result`` blocks in a user turn, ``image_url`` parts
  become ``image`` blocks (data URLs and http URLs), consecutive turns of one
  role are merged, and system messages join the ``system`` prompt;
- ``response_format`` with a JSON schema uses structured output
  (``output_config.format``), so the answer's text is the JSON;
- ``reasoning_effort`` turns on extended thinking with a token budget
  (adaptive thinking plus ``output_config.effort`` for models that prefer it);
- ``temperature`` and unknown ``extra`` keys go in the request body as they are.

Responses are read as plain dicts, so block types this code does not know
(server tools, MCP, code execution results, ...) are skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Collection
from datetime import datetime
from typing import Any

from notebook_llm.core.capture_hooks import mark_own
from notebook_llm.core.errors import (
    ConnectionError as LLMConnectionError,
    InvalidRequestError,
    LLMError,
    ProviderError,
)
from notebook_llm.core.ratelimit import RateLimitInfo
from notebook_llm.core.secrets import SecretHeaders
from notebook_llm.core.types import (
    Chunk,
    Completion,
    Message,
    ModelInfo,
    ProviderInfo,
    Request,
    ToolCall,
    Usage,
    normalise_finish_reason,
)
from notebook_llm.providers._errors import error_from_exception, error_from_status
from notebook_llm.providers.base import Provider

__all__ = ["AnthropicProvider", "anthropic_params", "parse_message", "usage_from"]

DEFAULT_MAX_TOKENS = 4096
"""Sent when the request sets no ``max_tokens`` (Anthropic requires one)."""

DEFAULT_TIMEOUT = 600.0

THINKING_BUDGETS: dict[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 24576,
    "max": 32000,
}
"""``reasoning_effort`` to ``thinking.budget_tokens`` (1024 is the API's minimum)."""

_EFFORTS = {"low": "low", "minimal": "low", "medium": "medium", "high": "high",
            "xhigh": "xhigh", "max": "max"}  # fmt: skip

REDACTED_THINKING = "[redacted thinking]"
"""Stands in for a ``redacted_thinking`` block's encrypted content in ``reasoning``."""


# -- request translation -----------------------------------------------------


def _data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 data)`` of a ``data:...;base64,...`` URL."""
    if not url.startswith("data:"):
        return None
    header, _, data = url[5:].partition(",")
    media_type = header.split(";")[0] or "application/octet-stream"
    return media_type, data


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content (a string or parts) as Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
            continue
        kind = part.get("type")
        if kind in ("text", "input_text"):
            block = {"type": "text", "text": part.get("text", "")}
            if part.get("cache_control"):
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
        elif kind in ("image_url", "input_image"):
            image = part.get("image_url", part)
            url = image.get("url") if isinstance(image, dict) else image
            url = url or part.get("url") or ""
            decoded = _data_url(url)
            if decoded:
                media_type, data = decoded
                source: dict[str, Any] = {"type": "base64", "media_type": media_type, "data": data}
            else:
                source = {"type": "url", "url": url}
            blocks.append({"type": "image", "source": source})
        elif kind == "file":
            # OpenAI's file part: {"file": {"file_data": "data:application/pdf;base64,..."}}.
            file = part.get("file") or {}
            decoded = _data_url(file.get("file_data") or "")
            if decoded:
                media_type, data = decoded
                source = {"type": "base64", "media_type": media_type, "data": data}
            elif file.get("file_id"):
                source = {"type": "file", "file_id": file["file_id"]}
            else:
                raise InvalidRequestError(
                    "A file part needs file_data (a data: URL) or file_id", provider="anthropic"
                )
            blocks.append({"type": "document", "source": source})
        else:
            # Already an Anthropic block (image, document, tool_result, ...): as is.
            blocks.append(dict(part))
    return blocks


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        return json.loads(arguments)
    except (TypeError, ValueError):
        return {"_raw": arguments}


def convert_messages(messages: list[Message]) -> tuple[list[dict[str, Any]], list[str]]:
    """OpenAI-style messages as ``(anthropic_messages, extra_system_texts)``.

    Consecutive turns of the same role are merged (Anthropic alternates user
    and assistant); ``system``/``developer`` messages are returned separately.
    """
    result: list[dict[str, Any]] = []
    system: list[str] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = (
                content
                if isinstance(content, str)
                else "".join(block.get("text", "") for block in _content_blocks(content))
            )
            if text:
                system.append(text)
            continue
        if role == "tool":
            result_block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id") or "",
                "content": content if isinstance(content, str) else _content_blocks(content),
            }
            if message.get("is_error"):
                result_block["is_error"] = True
            blocks = [result_block]
            role = "user"
        elif role == "assistant":
            blocks = _content_blocks(content)
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id") or "",
                        "name": function.get("name") or call.get("name") or "",
                        "input": _tool_input(function.get("arguments", call.get("arguments"))),
                    }
                )
        else:
            role = "user"
            blocks = _content_blocks(content)
        if not blocks:
            continue
        if result and result[-1]["role"] == role:
            result[-1]["content"].extend(blocks)
        else:
            result.append({"role": role, "content": blocks})
    return result, system


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        if choice.get("type") in ("auto", "any", "tool", "none"):
            return choice
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if name:
            return {"type": "tool", "name": name}
        raise InvalidRequestError(f"Cannot read tool_choice {choice!r}", provider="anthropic")
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice in ("required", "any"):
        return {"type": "any"}
    return {"type": "tool", "name": str(choice)}


def _json_schema(response_format: dict[str, Any]) -> dict[str, Any] | None:
    if response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema", spec) if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise InvalidRequestError(
            "response_format json_schema needs a schema: {'type': 'json_schema', "
            "'json_schema': {'name': ..., 'schema': {...}}}",
            provider="anthropic",
        )
    from anthropic import transform_schema

    # Anthropic accepts a subset of JSON Schema; the SDK's helper adapts one
    # (additionalProperties: false, unsupported constraints moved to descriptions).
    return transform_schema(schema)


def _prefers_adaptive(model: str) -> bool:
    try:
        from anthropic.resources.messages import messages
    except ImportError:
        return False
    # The SDK's list of such models: not a public name (newer SDKs import it
    # into that module from anthropic._data), and absent from older ones.
    models: Collection[str] = getattr(messages, "MODELS_TO_WARN_WITH_THINKING_ENABLED", ())
    return model in models


def anthropic_params(
    request: Request, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The ``messages.create`` arguments for ``request``, as one body dict.

    Keys the SDK does not name (``temperature``, unknown ``extra``) are left in
    the dict; :meth:`AnthropicProvider.complete` moves them to ``extra_body``.
    """
    messages, more_system = convert_messages(request.messages)
    system_parts = ([request.system] if request.system else []) + more_system
    params: dict[str, Any] = {"model": request.model, "messages": messages}
    max_tokens = request.max_tokens or default_max_tokens
    output_config: dict[str, Any] = {}

    effort = (request.reasoning_effort or "").lower()
    if effort and effort not in ("none", "off", "disabled"):
        if _prefers_adaptive(request.model):
            params["thinking"] = {"type": "adaptive"}
            output_config["effort"] = _EFFORTS.get(effort, "medium")
        else:
            budget = THINKING_BUDGETS.get(effort)
            if budget is None:
                raise InvalidRequestError(
                    f"Unknown reasoning_effort {request.reasoning_effort!r}; use one of "
                    f"{', '.join(THINKING_BUDGETS)} or 'none'",
                    provider="anthropic",
                )
            if request.max_tokens is None:
                # The budget counts against max_tokens: leave room for the answer.
                max_tokens = budget + default_max_tokens
            else:
                budget = max(1024, min(budget, request.max_tokens - 1))
            params["thinking"] = {"type": "enabled", "budget_tokens": budget}
    params["max_tokens"] = max_tokens

    if request.response_format:
        schema = _json_schema(request.response_format)
        if schema is not None:
            output_config["format"] = {"type": "json_schema", "schema": schema}
        elif request.response_format.get("type") == "json_object":
            # Anthropic has no JSON mode without a schema: ask in the system prompt.
            system_parts.append(
                "Answer with one JSON object and nothing else: no prose, no code fence."
            )
    if output_config:
        params["output_config"] = output_config
    if system_parts:
        params["system"] = "\n\n".join(system_parts)
    if request.tools:
        params["tools"] = [
            {
                "name": tool.name,
                "description": tool.description or "",
                "input_schema": tool.parameters or {"type": "object", "properties": {}},
            }
            for tool in request.tools
        ]
        choice = _tool_choice(request.tool_choice)
        if choice is not None:
            params["tool_choice"] = choice
    if request.temperature is not None:
        params["temperature"] = request.temperature
    params.update(request.extra)
    return params


# -- response translation ----------------------------------------------------


def usage_from(data: dict[str, Any] | None) -> Usage | None:
    """Anthropic ``usage`` as :class:`Usage`; input includes cache reads and writes."""
    if not data:
        return None
    cache_read = data.get("cache_read_input_tokens") or 0
    cache_write = data.get("cache_creation_input_tokens") or 0
    details = data.get("output_tokens_details") or {}
    return Usage(
        input_tokens=(data.get("input_tokens") or 0) + cache_read + cache_write,
        output_tokens=data.get("output_tokens") or 0,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=details.get("thinking_tokens") or 0,
    )


def parse_message(data: dict[str, Any]) -> Completion:
    """An Anthropic ``message`` object (as a dict) as a :class:`Completion`."""
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[ToolCall] = []
    for block in data.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            if block.get("thinking"):
                reasoning.append(block["thinking"])
        elif kind == "redacted_thinking":
            reasoning.append(REDACTED_THINKING)
        elif kind == "tool_use":
            arguments = block.get("input")
            if not isinstance(arguments, dict):
                arguments = {} if arguments is None else {"value": arguments}
            tool_calls.append(
                ToolCall(
                    id=block.get("id") or "",
                    name=block.get("name") or "",
                    arguments=arguments,
                    arguments_json=json.dumps(arguments),
                )
            )
        # Everything else (server_tool_use, web_search_tool_result, mcp_tool_use,
        # *_code_execution_tool_result, ...) ran on Anthropic's side: skipped.
    stop_reason = data.get("stop_reason")
    refusal = "".join(texts) if stop_reason == "refusal" else None
    return Completion(
        text="".join(texts),
        response_model=data.get("model"),
        reasoning="\n\n".join(reasoning) or None,
        tool_calls=tool_calls,
        finish_reason=normalise_finish_reason(stop_reason)
        or ("tool_calls" if tool_calls else "stop"),
        usage=usage_from(data.get("usage")) or Usage(),
        refusal=refusal or None,
        id=data.get("id"),
        raw=data,
    )


class _StreamState:
    """What one stream remembers between events."""

    __slots__ = ("finished", "reasoning_blocks", "tool_slots", "usage")

    def __init__(self) -> None:
        self.finished = False
        self.usage: dict[str, Any] = {}
        self.reasoning_blocks = 0
        self.tool_slots: dict[int, int] = {}
        """Anthropic block index to tool-call index (0, 1, ... in order)."""


# -- the provider ------------------------------------------------------------


class AnthropicProvider(Provider):
    """Claude models through ``anthropic.AsyncAnthropic``.

    Args:
        info: the provider's record.
        api_key: the Anthropic key.
        api_base: the base URL (``https://api.anthropic.com`` by default).
        timeout: the default timeout in seconds when a request sets none.
        max_tokens: the ``max_tokens`` sent when a request sets none.
        **settings: passed to ``AsyncAnthropic`` (``default_headers``, ``http_client``, ...).
    """

    def __init__(
        self,
        info: ProviderInfo,
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(info, api_key=api_key, api_base=api_base, **settings)
        self.timeout = float(settings.pop("timeout", DEFAULT_TIMEOUT))
        self.default_max_tokens = int(settings.pop("max_tokens", DEFAULT_MAX_TOKENS))
        self._client_options = settings
        self._sdk: Any = None
        self._create_names: frozenset[str] | None = None

    @property
    def client(self) -> Any:
        """The ``AsyncAnthropic`` client, built on first use (about 40 ms) and reused."""
        if self._sdk is None:
            import anthropic

            self._sdk = mark_own(anthropic.AsyncAnthropic(
                api_key=self._api_key,
                base_url=self.api_base,
                max_retries=0,  # the core's retry policy retries
                timeout=self.timeout,
                **self._client_options,
            ))
        return self._sdk

    def _split(self, params: dict[str, Any]) -> dict[str, Any]:
        """Arguments this SDK version names stay; the rest go in ``extra_body``
        (SDK 2.x, for one, has no ``temperature`` argument; 0.x has)."""
        if self._create_names is None:
            signature = inspect.signature(self.client.messages.create)
            self._create_names = frozenset(signature.parameters) - {"extra_body"}
        kwargs = {k: v for k, v in params.items() if k in self._create_names}
        extra = {k: v for k, v in params.items() if k not in self._create_names}
        if "extra_body" in params:
            extra.update(params["extra_body"])
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    def _kwargs(self, request: Request) -> dict[str, Any]:
        kwargs = self._split(anthropic_params(request, self.default_max_tokens))
        kwargs["timeout"] = request.timeout if request.timeout is not None else self.timeout
        if request.headers:
            kwargs["extra_headers"] = SecretHeaders(request.headers)
        return kwargs

    def _error(self, exc: BaseException) -> LLMError:
        """An SDK or transport exception as a ``notebook_llm`` error."""
        import anthropic

        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, anthropic.APIStatusError):
            return error_from_status(
                self.name, exc.status_code, exc.body, dict(exc.response.headers), exc
            )
        if isinstance(exc, anthropic.APIResponseValidationError):
            return ProviderError(
                "Anthropic's answer did not have the expected shape",
                provider=self.name,
                status_code=exc.status_code,
                original=exc,
                body=exc.body,
            )
        if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
            return ProviderError(
                f"Anthropic's answer is not valid JSON ({exc}); this is usually a proxy or "
                "server fault, retry later or check the base URL",
                provider=self.name,
                original=exc,
            )
        return error_from_exception(self.name, exc)

    async def complete(self, request: Request) -> Completion:
        """One message, not streamed; its rate-limit headers as ``rate_limits``."""
        kwargs = self._kwargs(request)
        try:
            # The raw response, read as JSON: no SDK model objects to build, and
            # block types the SDK does not know yet arrive intact.
            response = await self.client.messages.with_raw_response.create(**kwargs)
            http = response.http_response  # httpx (SDK 0.x) or httpx2 (SDK 2.x)
            data = json.loads(await http.aread())
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        if not isinstance(data, dict):
            raise ProviderError(
                "Anthropic's answer is not a JSON object", provider=self.name, body=data
            )
        if data.get("type") == "error":
            raise error_from_status(self.name, 200, data, dict(http.headers), None)
        completion = parse_message(data)
        completion.rate_limits = RateLimitInfo.from_headers(http.headers)
        return completion

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        """Stream one message as chunks; closing the generator closes the response.

        Raises ``ConnectionError`` when the stream ends without ``message_stop``
        (a dropped connection or a truncated body), never ending silently. The
        first chunk carries the response's rate-limit headers (``rate_limits``).
        """
        from anthropic import AsyncStream

        kwargs = self._kwargs(request)
        try:
            stream = await self.client.messages.create(stream=True, **kwargs)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        state = _StreamState()
        limits = RateLimitInfo.from_headers(stream.response.headers)
        try:
            # The SDK's SSE decoder over the HTTP response, each event's JSON as
            # a dict: unknown block and event types pass through unharmed.
            async for event in AsyncStream.raw_events(stream.response):
                if not event.data:
                    continue
                data = json.loads(event.data)
                if event.event == "error" and data.get("type") != "error":
                    data = {"type": "error", "error": data}
                chunk = self._chunk(data, state)
                if chunk is not None:
                    if limits is not None:
                        chunk.rate_limits, limits = limits, None
                    yield chunk
            if not state.finished:
                raise LLMConnectionError(
                    "The stream ended before Anthropic's message_stop event: the connection "
                    "dropped or the response was cut short; retry the request",
                    provider=self.name,
                    model=request.model,
                )
        except (LLMError, asyncio.CancelledError, GeneratorExit):
            raise
        except json.JSONDecodeError as exc:
            raise ProviderError(
                f"Anthropic sent an event that is not valid JSON: {exc}",
                provider=self.name,
                original=exc,
            ) from exc
        except Exception as exc:
            raise self._error(exc) from exc
        finally:
            # On any early exit the server must see the connection go, and stop.
            try:
                await stream.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def _chunk(self, data: dict[str, Any], state: _StreamState) -> Chunk | None:
        kind = data.get("type")
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            delta_kind = delta.get("type")
            if delta_kind == "text_delta":
                return Chunk(text=delta.get("text") or "", raw=data)
            if delta_kind == "thinking_delta":
                return Chunk(reasoning=delta.get("thinking") or "", raw=data)
            if delta_kind == "input_json_delta":
                slot = state.tool_slots.get(data.get("index", 0))
                if slot is None:
                    return None  # the input of a server tool (web search, ...): skipped
                return Chunk(
                    tool_calls=[{"index": slot, "arguments": delta.get("partial_json") or ""}],
                    raw=data,
                )
            return Chunk(raw=data)  # signature_delta, citations_delta, ...
        if kind == "content_block_start":
            return self._block_start(data, state)
        if kind == "message_start":
            message = data.get("message") or {}
            state.usage.update(message.get("usage") or {})
            usage = usage_from(state.usage)
            return Chunk(
                usage=usage, response_model=message.get("model"), id=message.get("id"), raw=data
            )
        if kind == "message_delta":
            delta = data.get("delta") or {}
            # message_delta's counts are cumulative and may repeat (or, with server
            # tools, raise) the input side: the latest value of each field wins.
            state.usage.update(data.get("usage") or {})
            return Chunk(
                usage=usage_from(state.usage),
                finish_reason=normalise_finish_reason(delta.get("stop_reason")),
                raw=data,
            )
        if kind == "message_stop":
            state.finished = True
            return Chunk(raw=data)
        if kind == "error":
            raise error_from_status(self.name, 200, data, None, None)
        if kind in ("ping", "content_block_stop"):
            return None
        return Chunk(raw=data)  # event types added after this code was written

    def _block_start(self, data: dict[str, Any], state: _StreamState) -> Chunk:
        block = data.get("content_block") or {}
        block_kind = block.get("type")
        if block_kind == "tool_use":
            slot = state.tool_slots[data.get("index", 0)] = len(state.tool_slots)
            fragment: dict[str, Any] = {
                "index": slot, "id": block.get("id") or "", "name": block.get("name") or "",
            }  # fmt: skip
            if block.get("input"):
                # Normally {} here, with the arguments in input_json_delta events.
                fragment["arguments"] = json.dumps(block["input"])
            return Chunk(tool_calls=[fragment], raw=data)
        if block_kind in ("thinking", "redacted_thinking"):
            # Blocks of reasoning are separated as parse_message() joins them.
            text = (
                REDACTED_THINKING
                if block_kind == "redacted_thinking"
                else block.get("thinking") or ""
            )
            separator = "\n\n" if state.reasoning_blocks else ""
            state.reasoning_blocks += 1
            return Chunk(reasoning=separator + text if text or separator else "", raw=data)
        if block_kind == "text" and block.get("text"):
            return Chunk(text=block["text"], raw=data)
        return Chunk(raw=data)

    async def count_tokens(self, request: Request) -> int:
        """How many input tokens ``request`` would use (``messages/count_tokens``), for budgets."""
        params = anthropic_params(request, self.default_max_tokens)
        for unused in ("max_tokens", "temperature", "stream", "metadata", "stop_sequences"):
            params.pop(unused, None)
        signature = inspect.signature(self.client.messages.count_tokens)
        names = frozenset(signature.parameters) - {"extra_body"}
        kwargs = {k: v for k, v in params.items() if k in names}
        extra = {k: v for k, v in params.items() if k not in names}
        if extra:
            kwargs["extra_body"] = extra
        kwargs["timeout"] = request.timeout if request.timeout is not None else self.timeout
        try:
            result = await self.client.messages.count_tokens(**kwargs)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        return int(result.input_tokens)

    async def list_models(self) -> list[ModelInfo]:
        """The models the key may use (``GET /v1/models``, every page)."""
        models: list[ModelInfo] = []
        try:
            async for model in self.client.models.list():
                created = getattr(model, "created_at", None)
                models.append(
                    ModelInfo(
                        id=model.id,
                        provider=self.name,
                        owned_by="anthropic",
                        created=int(created.timestamp()) if isinstance(created, datetime) else None,
                    )
                )
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        return models

    async def aclose(self) -> None:
        """Close the SDK client's connections."""
        client, self._sdk = self._sdk, None
        if client is not None:
            await client.close()
