"""The OpenAI chat-completions protocol: OpenAI itself and every compatible server.

Two transports share one request builder and one response parser:

- ``transport="fast"`` (the default): the lean keep-alive client in
  ``_http.py`` (httptools parsing). It reads SSE lines and decodes each chunk
  with ``json.loads`` instead of building SDK model objects, which is several
  times faster on streams and at high concurrency (see ``bench/``).
- ``transport="aiohttp"``: the same over ``aiohttp.ClientSession`` (used
  automatically when a proxy is configured in the environment).
- ``transport="sdk"``: the official ``openai`` SDK (``AsyncOpenAI``), the
  reference for behaviour. The recorded-traffic tests run on both.

Presets (ollama, vllm, llamacpp, groq, ...) are this class with another base
URL, key variable and a few quirks (``PRESET_QUIRKS``).

Three APIs, chosen per call with the provider keyword ``api=`` or per provider
with the setting ``api`` (``Client(provider_settings={"openai": {"api":
"responses"}})``); the per-call keyword wins:

- ``"chat"`` (the default): ``POST /chat/completions``.
- ``"responses"``: the Responses API, ``POST /responses`` (request building
  and parsing live in ``_responses.py``). A background-mode answer that is
  still ``queued``/``in_progress`` raises ``ResponsePendingError``; poll it with
  :meth:`OpenAIProvider.retrieve_response`.
- ``"completions"``: the legacy ``POST /completions`` with a plain ``prompt``
  made from the messages (base models, vLLM and Azure completion deployments).

Besides completions: :meth:`OpenAIProvider.retrieve_model` (``GET
/models/{id}``) and :meth:`OpenAIProvider.count_tokens` (``POST
/responses/input_tokens``). Files and moderations are not part of this client
(batch mode uses files through the SDK).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from notebook_llm.core.capture_hooks import mark_own
from notebook_llm.core.errors import (
    ConnectionError as LLMConnectionError,
    InvalidRequestError,
    LLMError,
    ProviderError,
    TimeoutError as LLMTimeoutError,
)
from notebook_llm.core.ratelimit import RateLimitInfo
from notebook_llm.core.secrets import SecretHeaders, check_header
from notebook_llm.core.types import (
    Chunk,
    Completion,
    EmbeddingResponse,
    ModelInfo,
    Request,
    Usage,
)
from notebook_llm.providers._chat import (
    chat_body,
    check_payload,
    completion_prompt,
    completions_body,
    decode_embedding,
    parse_chat_completion,
    parse_chunk,
    parse_text_completion,
    parse_text_completion_chunk,
    status_in,
    usage_of,
)
from notebook_llm.providers._errors import error_from_exception, error_from_status
from notebook_llm.providers._responses import (
    INPUT_TOKENS_FIELDS,
    ResponsePendingError,
    ResponsesStreamParser,
    parse_response,
    responses_body,
)
from notebook_llm.providers.base import Provider

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "APIS",
    "OpenAIProvider",
    "ResponsePendingError",
    "chat_body",
    "completion_prompt",
    "completions_body",
    "parse_chat_completion",
    "parse_chunk",
    "parse_text_completion",
    "parse_text_completion_chunk",
]

APIS = ("chat", "responses", "completions")
"""The APIs this provider speaks (``api=`` per call, or the ``api`` setting)."""
_API_ALIASES = {"chat_completions": "chat", "chat.completions": "chat", "legacy": "completions"}

ChunkParser = Callable[[dict[str, Any]], "Chunk | None"]

# Per-preset differences from OpenAI's own API.
PRESET_QUIRKS: dict[str, dict[str, Any]] = {
    # OpenAI's newer models reject max_tokens; compatible servers mostly want it.
    "openai": {"max_tokens_field": "max_completion_tokens"},
    # llama-cpp-python's server rejects json_schema with a 500 but accepts
    # {"type": "json_object", "schema": ...}.
    # Its chat templates read every message's content: a tool-calling turn's
    # null content is a 500 there, "" is fine.
    "llamacpp": {"schema_as_json_object": True, "tool_call_content": ""},
    "mistral": {"stream_usage": False},
}


class _AiohttpResponse:
    """aiohttp's response behind the same small interface as ``_http.Response``."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        # Lower-cased like the fast transport's, so both are read the same way.
        self.headers = {name.lower(): value for name, value in response.headers.items()}

    async def read(self, timeout: float | None = None) -> bytes:
        try:
            return await self._response.read()
        finally:
            self._response.release()

    async def lines(self, timeout: float | None = None) -> AsyncIterator[bytes]:
        async for line in self._response.content:
            yield line

    def close(self) -> None:
        self._response.close()


class OpenAIProvider(Provider):
    """OpenAI and OpenAI-compatible servers.

    Settings: ``transport`` (``"fast"``, the default; ``"aiohttp"``; or
    ``"sdk"``), ``max_connections`` (default 256), plus the preset quirks.
    """

    def __init__(
        self, info: Any, *, api_key: str | None = None, api_base: str | None = None, **settings: Any
    ) -> None:
        super().__init__(info, api_key=api_key, api_base=api_base, **settings)
        from notebook_llm.providers._http import proxy_configured

        transport = settings.get("transport", "fast")
        if transport == "fast" and proxy_configured():
            transport = "aiohttp"  # the lean client speaks no proxy protocol
        self.transport = transport
        self.quirks = {**PRESET_QUIRKS.get(info.name, {}), **settings}
        self._base = (self.api_base or "").rstrip("/")
        self._session: Any = None
        self._pool: Any = None
        self._sdk: Any = None
        self._headers = SecretHeaders(
            {"Content-Type": "application/json", "Accept": "application/json"}
        )
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._stream_headers = SecretHeaders({**self._headers, "Accept": "text/event-stream"})
        from notebook_llm.providers._http import HeaderBlock

        self._raw_headers = HeaderBlock(_encode_headers(self._headers))
        self._raw_stream_headers = HeaderBlock(_encode_headers(self._stream_headers))

    # -- transports ------------------------------------------------------

    def _aiohttp(self) -> Any:
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.settings.get("max_connections", 256)),
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("User-Agent",),
                trust_env=True,
            )
        return self._session

    def _client(self) -> Any:
        if self._sdk is None:
            import openai

            self._sdk = mark_own(openai.AsyncOpenAI(
                api_key=self._api_key or "not-needed",
                base_url=self._base,
                max_retries=0,
            ))
        return self._sdk

    async def _send(self, method: str, path: str, body: dict[str, Any] | None,
                    timeout: float | None, stream: bool,
                    headers: dict[str, str] | None = None) -> Any:
        """Send a request; a 4xx/5xx answer raises the matching error.

        The timeout bounds connecting and each wait for data, not the whole
        answer: a long stream that keeps coming is fine, a stalled server is not.
        """
        data = json.dumps(body).encode() if body is not None else b""
        try:
            if self.transport == "fast":
                if self._pool is None:
                    from notebook_llm.providers._http import Pool

                    self._pool = Pool(self._base, self.settings.get("max_connections", 256))
                block = self._raw_stream_headers if stream else self._raw_headers
                if headers:
                    block += _encode_headers(headers)
                response: Any = await self._pool.request(method, path, block, data, timeout)
            else:
                import aiohttp

                raw = await self._aiohttp().request(
                    method, self._base + path, data=data if body is not None else None,
                    headers={**(self._stream_headers if stream else self._headers),
                             **(headers or {})},
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout,
                                                  sock_read=timeout),
                )
                response = _AiohttpResponse(raw)
        except BaseException as exc:
            raise self._map(exc) from exc
        if response.status >= 400:
            try:
                text = (await response.read(timeout)).decode("utf-8", "replace")
            except Exception:  # noqa: BLE001 - the status says enough
                text = ""
                response.close()
            raise error_from_status(
                self.name, response.status, _json_or_text(text), response.headers, None
            )
        return response

    async def _json(self, method: str, path: str, body: dict[str, Any] | None,
                    timeout: float | None) -> Any:
        response = await self._send(method, path, body, timeout, False)
        return await self._read_json(response, timeout)

    async def _read_json(self, response: Any, timeout: float | None) -> Any:
        try:
            raw = await response.read(timeout)
        except BaseException as exc:
            response.close()
            raise self._map(exc) from exc
        return _decode_json(raw, self.name)

    def _map(self, exc: BaseException) -> BaseException:
        import asyncio

        from notebook_llm.providers._http import HTTPError

        if isinstance(exc, (asyncio.CancelledError, LLMError)):
            return exc
        if isinstance(exc, HTTPError):
            if exc.kind == "timeout":
                return LLMTimeoutError(str(exc), provider=self.name, original=exc)
            if exc.kind == "protocol":
                return ProviderError(str(exc), provider=self.name, original=exc)
            return LLMConnectionError(f"{exc} ({self._base})", provider=self.name, original=exc)
        return error_from_exception(self.name, exc)

    # -- operations ------------------------------------------------------

    def _select_api(self, request: Request) -> tuple[str, Request]:
        """The API for this call (``api=`` keyword, else the ``api`` setting, else chat).

        The keyword is taken out of a copy of ``request.extra`` (the request is
        reused as it is when the call is retried), so it never reaches the body.
        """
        api = self.settings.get("api") or "chat"
        if "api" in request.extra:
            extra = dict(request.extra)
            api = extra.pop("api") or api
            request = dataclasses.replace(request, extra=extra)
        api = _API_ALIASES.get(str(api), str(api))
        if api not in APIS:
            raise InvalidRequestError(
                f"Unknown api={api!r}: use one of {', '.join(repr(a) for a in APIS)}",
                provider=self.name,
                model=request.model,
            )
        return api, request

    async def complete(self, request: Request) -> Completion:
        """One completion: chat (the default), Responses or legacy completions (``api=``).

        The answer's rate-limit headers come back as ``completion.rate_limits``.
        """
        api, request = self._select_api(request)
        parse: Callable[[Any, str], Completion]
        if api == "responses":
            body, path, parse = responses_body(request, False), "/responses", parse_response
        elif api == "completions":
            body = completions_body(request, False, self.quirks)
            path, parse = "/completions", parse_text_completion
        else:
            body = chat_body(request, False, self.quirks)
            path, parse = "/chat/completions", parse_chat_completion
        if self.transport == "sdk":
            # The raw response keeps the headers; parse() builds what create() returns.
            raw = await self._sdk_call(self._sdk_resource(api).with_raw_response.create, body,
                                       request.timeout, request.headers)
            data = self._sdk_parse(raw)
            limits = RateLimitInfo.from_headers(raw.headers)
        else:
            response = await self._send("POST", path, body, request.timeout, False,
                                        request.headers)
            data = await self._read_json(response, request.timeout)
            limits = RateLimitInfo.from_headers(response.headers, lower_case=True)
        completion = parse(data, self.name)
        completion.rate_limits = limits
        return completion

    def _sdk_resource(self, api: str) -> Any:
        client = self._client()
        if api == "responses":
            return client.responses
        if api == "completions":
            return client.completions
        return client.chat.completions

    @staticmethod
    def _sdk_kwargs(
        body: dict[str, Any], timeout: float | None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        # The SDK insists on its required arguments by name; the rest goes as extra_body.
        kwargs: dict[str, Any] = {"model": body.pop("model"), "timeout": timeout}
        for required in ("messages", "input", "prompt"):
            if required in body:
                kwargs[required] = body.pop(required)
        kwargs["extra_body"] = body
        if headers:
            kwargs["extra_headers"] = SecretHeaders(headers)
        return kwargs

    async def _sdk_call(
        self,
        method: Any,
        body: dict[str, Any],
        timeout: float | None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        return await self._sdk_run(method, **self._sdk_kwargs(body, timeout, headers))

    async def _sdk_run(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call an SDK method; its errors become ours, a model result a plain dict
        (a ``with_raw_response`` result comes back as it is)."""
        import openai

        try:
            result = await method(*args, **kwargs)
        except openai.APIStatusError as exc:
            raise error_from_status(
                self.name, exc.status_code, exc.body, dict(exc.response.headers), exc
            ) from exc
        except openai.APIError as exc:
            raise self._map_sdk(exc) from exc
        except ValueError as exc:  # the SDK lets json.JSONDecodeError through
            raise ProviderError(
                "The server's answer is not valid JSON", provider=self.name, original=exc
            ) from exc
        return result.model_dump() if hasattr(result, "model_dump") else result

    def _sdk_parse(self, raw: Any) -> Any:
        """A ``with_raw_response`` result's payload as a plain dict."""
        try:
            result = raw.parse()
        except ValueError as exc:  # the body is not JSON
            raise ProviderError(
                "The server's answer is not valid JSON", provider=self.name, original=exc
            ) from exc
        return result.model_dump() if hasattr(result, "model_dump") else result

    def _map_sdk(self, exc: Any) -> LLMError:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return LLMTimeoutError("The request timed out", provider=self.name, original=exc)
        if isinstance(exc, openai.APIConnectionError):
            return LLMConnectionError(
                f"Could not reach {self._base}", provider=self.name, original=exc
            )
        body = getattr(exc, "body", None)
        if isinstance(body, dict):
            return error_from_status(
                self.name, status_in(body.get("error", body)), body, None, exc
            )
        return ProviderError(str(exc), provider=self.name, original=exc)

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        """Stream a completion (any ``api=``); closing the generator closes the response.

        A stream that ends before its terminal event (``finish_reason`` in chat
        and legacy completions, ``response.completed``/``response.incomplete``
        in the Responses API) raises :class:`~notebook_llm.errors.ConnectionError`.
        """
        api, request = self._select_api(request)
        provider = self.name
        parse: ChunkParser
        if api == "responses":
            body = responses_body(request, True)
            path = "/responses"
            parse = ResponsesStreamParser(provider).feed
        elif api == "completions":
            body = completions_body(request, True, self.quirks)
            path = "/completions"
            parse = functools.partial(parse_text_completion_chunk, provider=provider)
        else:
            body = chat_body(request, True, self.quirks)
            path = "/chat/completions"
            parse = functools.partial(parse_chunk, provider=provider)
        source = (
            self._sdk_stream(body, request.timeout, api, parse, request.headers)
            if self.transport == "sdk"
            else self._http_stream(body, request.timeout, path, parse, request.headers)
        )
        finished = False
        try:
            async for chunk in source:
                if chunk.finish_reason is not None:
                    finished = True
                yield chunk
        finally:
            await source.aclose()
        if not finished:
            raise LLMConnectionError(
                "The stream ended before the model finished (connection dropped or truncated)",
                provider=self.name,
                model=request.model,
            )

    async def _http_stream(
        self,
        body: dict[str, Any],
        timeout: float | None,
        path: str = "/chat/completions",
        parse: ChunkParser | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        response = await self._send("POST", path, body, timeout, True, headers)
        provider = self.name
        if parse is None:
            parse = functools.partial(parse_chunk, provider=provider)
        limits = RateLimitInfo.from_headers(response.headers, lower_case=True)
        event = ""
        loads = json.loads
        try:
            async for line in response.lines(timeout):
                if line.startswith(b"data:"):
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        break
                    if not payload:
                        continue
                    try:
                        data = loads(payload)
                    except ValueError as exc:
                        raise ProviderError(
                            f"Malformed stream data: {payload[:200]!r}",
                            provider=provider,
                            original=exc,
                        ) from exc
                    if event == "error":
                        raise error_from_status(
                            provider, status_in(data.get("error", data)), data, None, None
                        )
                    chunk = parse(data)
                    if chunk is not None:
                        if limits is not None:
                            chunk.rate_limits, limits = limits, None
                        yield chunk
                elif line.startswith(b"event:"):
                    event = line[6:].strip().decode()
                elif line in (b"\n", b"\r\n"):
                    event = ""
        except (LLMError, GeneratorExit):
            raise
        except BaseException as exc:
            import asyncio

            if isinstance(exc, asyncio.CancelledError):
                raise
            raise self._map(exc) from exc
        finally:
            # On an early exit this drops the connection, so the server sees
            # it go away and stops generating; after a full read it is reused.
            response.close()

    async def _sdk_stream(
        self,
        body: dict[str, Any],
        timeout: float | None,
        api: str = "chat",
        parse: ChunkParser | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        import openai

        method = self._sdk_resource(api).create
        if parse is None:
            parse = functools.partial(parse_chunk, provider=self.name)
        body.pop("stream", None)
        kwargs = self._sdk_kwargs(body, timeout, headers)
        try:
            stream = await method(stream=True, **kwargs)
        except openai.APIStatusError as exc:
            raise error_from_status(
                self.name, exc.status_code, exc.body, dict(exc.response.headers), exc
            ) from exc
        except openai.APIError as exc:
            raise self._map_sdk(exc) from exc
        limits = RateLimitInfo.from_headers(stream.response.headers)
        try:
            async for item in stream:
                chunk = parse(item.model_dump() if hasattr(item, "model_dump") else item)
                if chunk is not None:
                    if limits is not None:
                        chunk.rate_limits, limits = limits, None
                    yield chunk
        except openai.APIError as exc:
            raise self._map_sdk(exc) from exc
        except (LLMError, GeneratorExit):
            raise
        except Exception as exc:
            raise self._map(exc) from exc
        finally:
            await stream.close()

    async def embed(self, texts: list[str], model: str, **kwargs: Any) -> EmbeddingResponse:
        """``POST /embeddings``; base64-encoded answers are decoded."""
        body = {"model": model, "input": texts, **kwargs}
        if self.transport == "sdk":
            data = await self._sdk_call(self._client().embeddings.create, body, None)
        else:
            data = await self._json("POST", "/embeddings", body, kwargs.get("timeout"))
        items = sorted(data.get("data") or [], key=lambda item: item.get("index", 0))
        usage = usage_of(data.get("usage")) or Usage()
        return EmbeddingResponse(
            vectors=[decode_embedding(item) for item in items], usage=usage, raw=data
        )

    async def list_models(self) -> list[ModelInfo]:
        """``GET /models``."""
        data = await self._json("GET", "/models", None, 10)
        items = data.get("data") if isinstance(data, dict) else data
        if isinstance(data, dict) and "models" in data and not items:  # Ollama's /api/tags shape
            items = [{"id": m.get("name") or m.get("model")} for m in data["models"]]
        return [
            ModelInfo(
                id=item.get("id", ""),
                provider=self.name,
                owned_by=item.get("owned_by"),
                created=item.get("created"),
            )
            for item in items or []
            if isinstance(item, dict)
        ]

    async def retrieve_model(self, model_id: str, timeout: float | None = 10) -> ModelInfo:
        """``GET /models/{id}``: one model's record (a 404 raises ``ModelNotFoundError``)."""
        if self.transport == "sdk":
            data = await self._sdk_run(self._client().models.retrieve, model_id, timeout=timeout)
        else:
            data = await self._json("GET", "/models/" + quote(model_id, safe="/:@"), None,
                                    timeout)
        check_payload(data, self.name)
        return ModelInfo(
            id=data.get("id") or model_id,
            provider=self.name,
            owned_by=data.get("owned_by"),
            created=data.get("created"),
        )

    async def count_tokens(self, request: Request) -> int:
        """Input tokens ``request`` would use, from ``POST /responses/input_tokens``.

        Costs nothing and generates nothing: useful for budgets before a call.
        The body is the Responses body without the fields the endpoint
        refuses (sampling, output limits, ``stream``).
        """
        _, request = self._select_api(request)
        body = {
            key: value
            for key, value in responses_body(request, False).items()
            if key in INPUT_TOKENS_FIELDS
        }
        if self.transport == "sdk":
            data = await self._sdk_call(
                self._client().responses.input_tokens.count, body, request.timeout
            )
        else:
            data = await self._json("POST", "/responses/input_tokens", body, request.timeout)
        count = data.get("input_tokens") if isinstance(data, dict) else None
        if not isinstance(count, int):
            raise ProviderError("The token count has no input_tokens", provider=self.name,
                                body=data)
        return count

    async def retrieve_response(self, response_id: str, timeout: float | None = None) -> Completion:
        """``GET /responses/{id}``: a stored or background response, as a Completion.

        Raises :class:`ResponsePendingError` while it is still ``queued`` or
        ``in_progress``; poll again later.
        """
        if self.transport == "sdk":
            data = await self._sdk_run(
                self._client().responses.retrieve, response_id, timeout=timeout
            )
        else:
            data = await self._json("GET", "/responses/" + quote(response_id, safe=""), None,
                                    timeout)
        return parse_response(data, self.name)

    async def aclose(self) -> None:
        """Close the connections and the SDK client."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None


def _encode_headers(headers: dict[str, str]) -> bytes:
    """Header lines for the lean transport, each checked: a CR or LF in a value
    would inject a header (the client checks first; this is the last line)."""
    for name, value in headers.items():
        check_header(name, value)
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _decode_json(raw: bytes, provider: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        stripped = raw.lstrip()
        if stripped.startswith(b"data:"):
            # An event stream served as application/json (seen in the wild).
            return _fold_sse(stripped, provider)
        raise ProviderError(
            f"The server's answer is not valid JSON: {raw[:200]!r}", provider=provider, original=exc
        ) from exc


def _fold_sse(raw: bytes, provider: str) -> dict[str, Any]:
    from notebook_llm.core.stream import CompletionBuilder

    builder = CompletionBuilder()
    for line in raw.splitlines():
        if line.startswith(b"data:") and line[5:].strip() not in (b"", b"[DONE]"):
            builder.add(parse_chunk(json.loads(line[5:]), provider))
    completion = builder.build()
    return {
        "id": completion.id,
        "model": completion.response_model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": completion.usage.input_tokens,
            "completion_tokens": completion.usage.output_tokens,
        },
    }

