"""The routes of ``nl.serve()``: an aiohttp.web handler over one ``Client``.

Every request becomes a call of the client (``acomplete``, ``astream``,
``nl.aembed``), so it goes through the same middlewares as the notebook's own
calls: logged with the tags ``serve`` and ``serve:<caller's address>``,
priced, cached, budgeted, tracked. The handlers run on the loop the server
was started on (the library's background loop), where the client's providers
and their connections live.

In front of the routes, the handler checks, in order: the route, the bearer key
(401), the body size (413), and the number of requests in flight (429 with
``Retry-After``). Every refusal and every failed call answers with OpenAI's
error JSON (:mod:`notebook_llm._serve._wire`), secrets redacted.

A client that goes away cancels its handler (``handler_cancellation``), which
cancels the call: an in-process model stops within a token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from notebook_llm._serve._wire import (
    ChatCall,
    WireError,
    chat_call,
    chunk_json,
    completion_json,
    embedding_input,
    embeddings_json,
    error_for,
    model_json,
    new_id,
    responses_call,
    responses_events,
    responses_json,
    usage_chunk_json,
)
from notebook_llm.core.errors import LLMError, ProviderError
from notebook_llm.core.registry import get_spec
from notebook_llm.core.types import Completion, Usage

if TYPE_CHECKING:
    from notebook_llm._client import Client
    from notebook_llm.core.models import ModelRef

__all__ = ["Settings", "Traffic", "build_handler"]

logger = logging.getLogger("notebook_llm.serve")

_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", "[::1]", "[::]"}
_MODELS_TTL_S = 60.0


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _json_response(data: Any) -> web.Response:
    return web.Response(body=_dumps(data).encode(), content_type=_JSON)


@dataclass
class Traffic:
    """What the server has done so far (shown by the handle's repr and ``/health``)."""

    requests: int = 0
    """Requests answered, refusals included."""
    errors: int = 0
    """Requests answered with an error status."""
    in_flight: int = 0
    streams: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    by_model: dict[str, int] = field(default_factory=dict)
    by_peer: dict[str, int] = field(default_factory=dict)

    def add(self, model: str, usage: Usage, cost_usd: float | None) -> None:
        """Count one answered call."""
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cost_usd += cost_usd or 0.0
        self.by_model[model] = self.by_model.get(model, 0) + 1


@dataclass
class Settings:
    """How one server answers: its client, models, key and limits."""

    client: Client
    models: Sequence[str] | None = None
    """Model strings (or aliases) offered; ``None``: every model the client can reach."""
    api_key: str | None = field(default=None, repr=False)
    """The bearer key callers must send (never shown in a repr)."""
    max_concurrent: int = 128
    max_body_bytes: int = 16 * 1024 * 1024
    own_addresses: set[tuple[str, int]] = field(default_factory=set)
    """``(host, port)`` this server listens on: a call routed there is refused."""
    traffic: Traffic = field(default_factory=Traffic)
    started_at: float = field(default_factory=time.time)


class _Routes:
    """The handlers, sharing one :class:`Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.client = settings.client
        self._allowed: set[str] | None = None
        self._listing: tuple[float, list[dict[str, Any]]] | None = None

    # -- checks ---------------------------------------------------------------

    def _allowed_refs(self) -> set[str] | None:
        if self.s.models is None:
            return None
        if self._allowed is None:
            self._allowed = {str(self.client.resolve(m)) for m in self.s.models}
        return self._allowed

    def check_model(self, name: str) -> ModelRef:
        """The model a request names, once it is offered and does not lead back here."""
        try:
            ref = self.client.resolve(name)
        except LLMError as exc:
            raise WireError(404, f"The model '{name}' does not exist: {exc}",
                            code="model_not_found", param="model") from None
        allowed = self._allowed_refs()
        if allowed is not None and str(ref) not in allowed:
            raise WireError(404, f"The model '{name}' is not served here; GET /v1/models "
                            "lists the models that are.", code="model_not_found", param="model")
        base = self._base_url(ref.provider)
        if base is not None and self._is_self(base):
            raise WireError(400, f"'{name}' would route back to this server ({base}); "
                            "serve a model that is not this server's own.",
                            code="routing_loop", param="model")
        return ref

    def _base_url(self, provider: str) -> str | None:
        try:
            info = get_spec(provider).info
        except LLMError:
            return None
        if info.protocol != "openai":
            return None
        return (self.client.api_bases.get(info.name)
                or (os.environ.get(info.base_url_env) if info.base_url_env else None)
                or info.default_base_url)

    def _is_self(self, base: str) -> bool:
        try:
            parts = urlsplit(base)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        for own_host, own_port in self.s.own_addresses:
            if port != own_port:
                continue
            if host == own_host or (host in _LOOPBACK and own_host in _LOOPBACK):
                return True
        return False

    # -- routes ---------------------------------------------------------------

    async def chat(self, request: web.BaseRequest) -> web.StreamResponse:
        call = chat_call(await _body(request, self.s.max_body_bytes))
        _developer_is_system(call)
        self.check_model(call.model)
        if call.stream:
            return await self._stream_chat(request, call)
        completion = await self._complete(request, call)
        return _json_response(completion_json(completion, call.model, new_id("chatcmpl-")))

    async def _complete(self, request: web.BaseRequest, call: ChatCall) -> Completion:
        try:
            completion = await self.client.acomplete(
                call.messages, call.model, tags=_tags(request), **call.options
            )
        except ProviderError as exc:
            # An answer that fails its response_format is still the model's
            # answer: the caller gets it, as OpenAI would send it.
            if exc.completion is None:
                raise
            completion = exc.completion
        self.s.traffic.add(call.model, completion.usage, completion.cost_usd)
        return completion

    async def _stream_chat(self, request: web.BaseRequest, call: ChatCall) -> web.StreamResponse:
        stream = self.client.astream(call.messages, call.model, tags=_tags(request),
                                     **call.options)
        call_id, created = new_id("chatcmpl-"), int(time.time())
        try:
            # The first chunk before the headers: an error before any text
            # (a bad key, an unknown model) is still an HTTP error status.
            first = await _first(stream)
            response = web.StreamResponse(headers=_SSE_HEADERS)
            await response.prepare(request)
            self.s.traffic.streams += 1
            opening = True
            chunk = first
            while chunk is not None:
                data = chunk_json(chunk, call.model, call_id, created, first=opening)
                opening = False
                if data is not None:
                    await response.write(f"data: {_dumps(data)}\n\n".encode())
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    chunk = None
                except LLMError as exc:
                    if isinstance(exc, ProviderError) and exc.completion is not None:
                        # The stream ended but its text fails response_format: the
                        # caller has the model's answer, as OpenAI would send it.
                        chunk = None
                        continue
                    # Headers are out: report in the stream, as OpenAI does.
                    body = error_for(exc).body()
                    await response.write(f"data: {_dumps(body)}\n\n".encode())
                    break
            completion = stream.completion
            if completion is not None:
                self.s.traffic.add(call.model, completion.usage, completion.cost_usd)
                if call.include_usage:
                    data = usage_chunk_json(completion.usage, call.model, call_id, created)
                    await response.write(f"data: {_dumps(data)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        finally:
            # A caller that went away (this task cancelled, or a write that
            # failed) stops the call here: the model stops within a token.
            await stream.aclose()

    async def responses(self, request: web.BaseRequest) -> web.StreamResponse:
        call = responses_call(await _body(request, self.s.max_body_bytes))
        self.check_model(call.model)
        response_id, message_id = new_id("resp_"), new_id("msg_")
        created = int(time.time())
        if not call.stream:
            completion = await self._complete(request, call)
            return _json_response(responses_json(
                completion.text, call.model, response_id, message_id, created, completion.usage
            ))
        stream = self.client.astream(call.messages, call.model, tags=_tags(request),
                                     **call.options)
        try:
            chunk = await _first(stream)
            response = web.StreamResponse(headers=_SSE_HEADERS)
            await response.prepare(request)
            self.s.traffic.streams += 1
            started = responses_json("", call.model, response_id, message_id, created, None,
                                     status="in_progress")
            item = {"type": "message", "id": message_id, "status": "in_progress",
                    "role": "assistant", "content": []}
            part = {"type": "output_text", "text": "", "annotations": []}
            sequence = 0
            for kind, fields in (
                ("response.created", {"response": started}),
                ("response.in_progress", {"response": started}),
                ("response.output_item.added", {"output_index": 0, "item": item}),
                ("response.content_part.added", {"output_index": 0, "content_index": 0,
                                                 "item_id": message_id, "part": part}),
            ):
                await response.write(responses_events(kind, sequence_number=sequence, **fields))
                sequence += 1
            while chunk is not None:
                if chunk.text:
                    await response.write(responses_events(
                        "response.output_text.delta", sequence_number=sequence,
                        item_id=message_id, output_index=0, content_index=0,
                        delta=chunk.text, logprobs=[],
                    ))
                    sequence += 1
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    chunk = None
            completion = stream.completion or Completion(text=stream.text)
            self.s.traffic.add(call.model, completion.usage, completion.cost_usd)
            text = completion.text
            done = responses_json(text, call.model, response_id, message_id, created,
                                  completion.usage)
            output = done["output"][0]
            for kind, fields in (
                ("response.output_text.done", {"item_id": message_id, "output_index": 0,
                                               "content_index": 0, "text": text,
                                               "logprobs": []}),
                ("response.content_part.done", {"item_id": message_id, "output_index": 0,
                                                "content_index": 0,
                                                "part": output["content"][0]}),
                ("response.output_item.done", {"output_index": 0, "item": output}),
                ("response.completed", {"response": done}),
            ):
                await response.write(responses_events(kind, sequence_number=sequence, **fields))
                sequence += 1
            await response.write_eof()
            return response
        finally:
            await stream.aclose()

    async def embeddings(self, request: web.BaseRequest) -> web.Response:
        body = await _body(request, self.s.max_body_bytes)
        model, texts, options, encoding = embedding_input(body)
        self.check_model(model)
        from notebook_llm.embeddings import aembed

        result = await aembed(texts, model, client=self.client, progress=False, **options)
        self.s.traffic.add(model, result.usage, result.cost_usd)
        return _json_response(embeddings_json(result.vectors, model, result.usage, encoding))

    async def models(self, request: web.BaseRequest) -> web.Response:
        now = time.monotonic()
        if self._listing is None or now - self._listing[0] > _MODELS_TTL_S:
            self._listing = (now, await self._list_models())
        return _json_response({"object": "list", "data": self._listing[1]})

    async def _list_models(self) -> list[dict[str, Any]]:
        created = int(self.s.started_at)
        rows: dict[str, dict[str, Any]] = {}

        def add(name: str, owner: str) -> None:
            rows.setdefault(name, model_json(name, owner, created))

        if self.s.models is not None:
            for name in self.s.models:
                add(name, self.client.resolve(name).provider)
        else:
            for name in await self._reachable():
                add(name, name.partition(":")[0])
        allowed = self._allowed_refs()
        for alias, target in self.client.aliases.items():
            try:
                ref = str(self.client.resolve(target))
            except LLMError:
                continue
            if allowed is None or ref in allowed:
                add(alias, ref.partition(":")[0])
        return list(rows.values())

    async def _reachable(self) -> list[str]:
        """Every model the client can reach: in-process ones, local servers, and the
        providers with a key (each listed with a short timeout; one that fails is
        left out)."""
        names: list[str] = []
        providers = ["offline", "local"]
        for status in self.client.key_status():
            if status.found and status.provider not in providers:
                providers.append(status.provider)
        from notebook_llm.providers.discovery import afind_local_servers

        servers = await afind_local_servers()
        for server in servers:
            if not self._is_self(server.base_url):
                names.extend(server.model_strings)

        async def listing(provider: str) -> list[str]:
            try:
                found = await asyncio.wait_for(self.client.alist_models(provider), 5.0)
            except (LLMError, asyncio.TimeoutError, OSError):
                return []
            if self._base_url(provider) is not None and self._is_self(
                self._base_url(provider) or ""
            ):
                return []
            return [model.model_string for model in found]

        for found in await asyncio.gather(*(listing(p) for p in providers)):
            names.extend(found)
        return names

    async def health(self, request: web.BaseRequest) -> web.Response:
        return _json_response(health(self.s))


def health(settings: Settings) -> dict[str, Any]:
    """``/health``: the server, the models in memory with their idle clocks, memory."""
    traffic = settings.traffic
    loaded = []
    if "notebook_llm.providers.local._registry" in sys.modules:
        from notebook_llm.local import loaded as loaded_rows

        for row in loaded_rows():
            idle_for = max(0.0, time.time() - row["last_used"].timestamp())
            idle_s = float(row["idle_s"])
            loaded.append({
                "model": f"local:{row['name']}",
                "backend": row["backend"],
                "size_bytes": row["size"],
                "n_ctx": row["n_ctx"],
                "busy": row["busy"],
                "requests": row["requests"],
                "idle_s": idle_s,
                "idle_for_s": round(idle_for, 3),
                "unloads_in_s": None if idle_s <= 0 or row["busy"]
                else round(max(0.0, idle_s - idle_for), 3),
            })
    return {
        "status": "ok",
        "uptime_s": round(time.time() - settings.started_at, 3),
        "loaded_models": loaded,
        "memory": _memory(),
        "traffic": {
            "requests": traffic.requests, "errors": traffic.errors,
            "in_flight": traffic.in_flight, "max_concurrent": settings.max_concurrent,
            "input_tokens": traffic.input_tokens, "output_tokens": traffic.output_tokens,
            "cost_usd": round(traffic.cost_usd, 6),
        },
    }


def _memory() -> dict[str, int | None]:
    """This process's resident memory and the machine's available memory, in bytes."""
    rss = available = None
    try:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = peak if sys.platform == "darwin" else peak * 1024
    return {"rss_bytes": rss, "available_bytes": available}


def _tags(request: web.BaseRequest) -> list[str]:
    return ["serve", f"serve:{_peer(request)}"]


def _peer(request: web.BaseRequest) -> str:
    return request.remote or "unknown"


def _developer_is_system(call: ChatCall) -> None:
    # OpenAI's newer name for the system role; other providers know only "system".
    for message in call.messages:
        if message.get("role") == "developer":
            message["role"] = "system"


async def _first(stream: Any) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


async def _body(request: web.BaseRequest, limit: int) -> Any:
    """The JSON body, read up to ``limit`` bytes (413 beyond, also without a length)."""
    raw = bytearray()
    async for piece in request.content.iter_any():
        raw += piece
        if len(raw) > limit:
            raise WireError(413, f"The request body is too large (the limit is {limit} "
                            "bytes).", code="request_too_large")
    try:
        return json.loads(raw)
    except ValueError:
        raise WireError(400, "The request body is not valid JSON.", code="invalid_json") from None


def _error_response(error: WireError) -> web.Response:
    return web.Response(status=error.status, body=_dumps(error.body()).encode(),
                        content_type=_JSON, headers=error.headers)


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def build_handler(settings: Settings) -> Handler:
    """The request handler for aiohttp's low-level server: the routes behind the
    guard (key, size, concurrency), errors as OpenAI's error JSON.

    A dispatch table rather than ``web.Application``: the server has ten fixed
    routes, and the application's router, middleware chain and signals cost
    more per request than the table (``bench/bench_serve.py``).
    """
    routes = _Routes(settings)
    expected = f"Bearer {settings.api_key}".encode() if settings.api_key else None
    traffic = settings.traffic
    table: dict[tuple[str, str], Handler] = {}
    for path, method, route in (
        ("/chat/completions", "POST", routes.chat),
        ("/embeddings", "POST", routes.embeddings),
        ("/models", "GET", routes.models),
        ("/responses", "POST", routes.responses),
        ("/health", "GET", routes.health),
    ):
        table[(method, path)] = table[(method, "/v1" + path)] = route
    paths = {path for _, path in table}

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        traffic.requests += 1
        peer = _peer(request)
        traffic.by_peer[peer] = traffic.by_peer.get(peer, 0) + 1
        path = request.path.rstrip("/") or "/"
        try:
            route = table.get((request.method, path))
            if route is None:
                status, reason = (405, "Method Not Allowed") if path in paths else (404,
                                                                                   "Not Found")
                raise WireError(status, f"{reason}: {request.method} {request.path}",
                                code="not_found" if status == 404 else None)
            if expected is not None and route is not routes.health:
                given = request.headers.get("Authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    raise WireError(401, "Incorrect or missing API key: send "
                                    "'Authorization: Bearer <key>' with the server's key.",
                                    code="invalid_api_key")
            length = request.content_length
            if length is not None and length > settings.max_body_bytes:
                raise WireError(413, f"The request body is too large ({length} bytes; the "
                                f"limit is {settings.max_body_bytes}).",
                                code="request_too_large")
            if traffic.in_flight >= settings.max_concurrent:
                raise WireError(429, f"The server is busy ({settings.max_concurrent} requests "
                                "in flight); retry shortly.", type="rate_limit_error",
                                code="too_many_requests", headers={"Retry-After": "1"})
            traffic.in_flight += 1
            try:
                return await route(request)
            finally:
                traffic.in_flight -= 1
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:
            error = error_for(exc)
            if error.status >= 500 and not isinstance(exc, LLMError):
                logger.exception("serve: %s %s failed", request.method, request.path)
        traffic.errors += 1
        return _error_response(error)

    return handle
