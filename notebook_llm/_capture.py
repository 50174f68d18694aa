"""One ledger: calls made through official ``openai`` and ``anthropic`` SDK clients
that other code created (LangChain, LlamaIndex, DSPy, instructor, a colleague's
helper) land in the library's call log, trackers and budgets.

Turn it on with ``nl.capture()`` (for the session; ``.stop()`` or
``nl.capture(False)`` ends it) or for one block with
``with nl.track(capture=True):``.

The one place that patches the SDKs
-----------------------------------
While capture is on, and only then, two things are installed:

1. A ``request`` method on the SDK client classes ``openai.OpenAI``,
   ``openai.AsyncOpenAI``, ``anthropic.Anthropic`` and
   ``anthropic.AsyncAnthropic`` (their subclasses, such as ``AzureOpenAI``,
   inherit it). It runs once per SDK call, before the SDK's own retry loop:
   it checks budgets (a refused call raises
   :class:`~notebook_llm.errors.BudgetExceededError`, nothing sent), then
   calls the SDK's ``request`` unchanged. Clients built before capture was
   turned on are covered too: the patch is on the class.
2. A transport wrapper around the client's httpx transport (put there at the
   client's first captured call). It passes every request and response
   through untouched and reads a copy of the response bytes as the SDK
   consumes them; when the body ends (a stream included) it records the call:
   model, tokens, latency, time to first byte, cost.

Stopping capture removes the class attribute and puts each wrapped client's
transport back. The SDK's return values, streams, retries (each HTTP attempt
is logged as it happens) and async use are unchanged.

What is covered: chat completions, the Responses API, legacy completions and
embeddings (``openai``), Messages (``anthropic``), whole or streamed, sync or
async. Other endpoints (files, batches, models, token counting) pass through
unrecorded. The library's own SDK clients are never captured (they are logged
already; see :mod:`notebook_llm.core.capture_hooks`). An OpenAI stream sent
without ``stream_options={"include_usage": True}`` carries no token counts:
its tokens are estimated (about four characters a token) and the call is
tagged ``estimated-usage``.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
import weakref
import zlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from notebook_llm._middleware import LogMiddleware, PricingMiddleware
from notebook_llm._tracking import BudgetMiddleware, TrackingMiddleware, current_trackers
from notebook_llm.core.capture_hooks import is_own
from notebook_llm.core.client import CallContext
from notebook_llm.core.errors import ConnectionError as LLMConnectionError
from notebook_llm.core.models import ModelRef
from notebook_llm.core.registry import get_spec
from notebook_llm.core.tokens import estimated_usage
from notebook_llm.core.types import Completion, Request, Usage, normalise_finish_reason
from notebook_llm.providers._chat import usage_of
from notebook_llm.providers._errors import error_from_status
from notebook_llm.providers._responses import response_usage
from notebook_llm.providers.anthropic import usage_from

__all__ = ["Capture", "acquire", "capture", "capturing", "release"]

CAPTURE_TAG = "captured"
"""Every captured call carries this tag (``nl.usage(tag="captured")``)."""

_SDK_CLASSES = (("openai", "OpenAI", False), ("openai", "AsyncOpenAI", True),
                ("anthropic", "Anthropic", False), ("anthropic", "AsyncAnthropic", True))

_lock = threading.RLock()
_users = 0
_session: Capture | None = None
_patched: list[tuple[type, Any]] = []  # (class, its own "request" before, or _MISSING)
_wrapped: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_MISSING = object()
_METHOD = "request"  # the SDK client method patched (one call, before its retry loop)
_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "notebook_llm_captured_call", default=None
)
_budget = BudgetMiddleware()
_pricing = PricingMiddleware()
_tracking = TrackingMiddleware()


@dataclass
class _Call:
    """One captured SDK call: its context, and what its HTTP attempts did."""

    ctx: CallContext
    endpoint: str
    stream: bool
    log: LogMiddleware
    sent: bool = False
    tags: list[str] = field(default_factory=list)


def _now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a middleware hook that never awaits (budget, pricing, trackers, log) right
    here, in sync or async code alike, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a capture hook awaited something")


# -- switching it on and off ----------------------------------------------------------------


class Capture:
    """Session-wide capture (``nl.capture()``); ``.stop()`` ends it, as does
    leaving it as a context manager."""

    def __init__(self, db_path: Any = None) -> None:
        self.db_path = db_path
        self.active = False

    def stop(self) -> None:
        """Stop capturing (the SDKs are restored when no tracker captures either)."""
        global _session
        with _lock:
            if self.active:
                self.active = False
                if _session is self:
                    _session = None
                release()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<notebook_llm capture: {'on' if self.active else 'off'}>"


def capture(enabled: bool = True, *, db_path: Any = None) -> Capture:
    """Record calls made through ``openai`` / ``anthropic`` SDK clients that other
    code created, in the call log, trackers and budgets, for the session.

    ``nl.capture(False)`` (or ``.stop()`` on the returned object) turns it off.
    See :mod:`notebook_llm._capture` for what is patched and covered.

    Args:
        enabled: turn it on (the default) or off.
        db_path: the call log's database (default: the library's).
    """
    global _session
    with _lock:
        if not enabled:
            if _session is not None:
                _session.stop()
            return Capture(db_path)
        if _session is not None:
            _session.db_path = db_path
            return _session
        _session = Capture(db_path)
        _session.active = True
        acquire()
        return _session


def capturing() -> bool:
    """Whether a call made here now would be captured."""
    if _users == 0:
        return False
    if _session is not None:
        return True
    return any(getattr(t, "capture", False) for t in current_trackers())


def acquire() -> None:
    """One more user of capture (a session or a ``track(capture=True)`` block)."""
    global _users
    with _lock:
        _users += 1
        if _users == 1:
            _install()


def release() -> None:
    """One user fewer; the last one restores the SDKs."""
    global _users
    with _lock:
        _users = max(_users - 1, 0)
        if _users == 0:
            _uninstall()


def _install() -> None:
    import importlib

    for module_name, class_name, is_async in _SDK_CLASSES:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue  # that SDK is not installed: nothing of it to capture
        before = cls.__dict__.get(_METHOD, _MISSING)
        original = cls.request
        setattr(cls, _METHOD, _async_request(original) if is_async else _sync_request(original))
        _patched.append((cls, before))


def _uninstall() -> None:
    while _patched:
        cls, before = _patched.pop()
        if before is _MISSING:
            delattr(cls, _METHOD)
        else:
            setattr(cls, _METHOD, before)
    for http_client, transport in list(_wrapped.items()):
        if isinstance(getattr(http_client, "_transport", None), (_Transport, _AsyncTransport)):
            http_client._transport = transport
    _wrapped.clear()


# -- the request patch ------------------------------------------------------------------------


def _sync_request(original: Any) -> Any:
    def request(self: Any, cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        call = _begin(self, options, kwargs)
        if call is None:
            return original(self, cast_to, options, *args, **kwargs)
        token = _call.set(call)
        try:
            return original(self, cast_to, options, *args, **kwargs)
        except BaseException as exc:
            _unsent(call, exc)
            raise
        finally:
            _call.reset(token)

    request.__doc__ = original.__doc__
    request.__wrapped__ = original  # type: ignore[attr-defined]
    return request


def _async_request(original: Any) -> Any:
    async def request(self: Any, cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        call = _begin(self, options, kwargs)
        if call is None:
            return await original(self, cast_to, options, *args, **kwargs)
        token = _call.set(call)
        try:
            return await original(self, cast_to, options, *args, **kwargs)
        except BaseException as exc:
            _unsent(call, exc)
            raise
        finally:
            _call.reset(token)

    request.__doc__ = original.__doc__
    request.__wrapped__ = original  # type: ignore[attr-defined]
    return request


def _endpoint(provider: str, url: str) -> str | None:
    path = url.split("?", 1)[0].rstrip("/")
    if provider == "anthropic":
        return "messages" if path.endswith("/messages") else None
    for suffix, kind in (("/chat/completions", "chat"), ("/responses", "responses"),
                         ("/completions", "completions"), ("/embeddings", "embeddings")):
        if path.endswith(suffix):
            return kind
    return None


def _begin(client: Any, options: Any, kwargs: dict[str, Any]) -> _Call | None:
    """The captured call for this SDK request, after the budget check; ``None``
    when it is not captured (capture off here, the library's own client, an
    endpoint without usage)."""
    if not capturing() or is_own(client):
        return None
    provider = "anthropic" if type(client).__module__.startswith("anthropic") else "openai"
    endpoint = _endpoint(provider, str(getattr(options, "url", "") or ""))
    body = getattr(options, "json_data", None)
    if endpoint is None or str(getattr(options, "method", "post")).lower() != "post":
        return None
    body = body if isinstance(body, dict) else {}
    ctx = _context(provider, endpoint, body)
    ctx.trackers = current_trackers()
    stream = bool(kwargs.get("stream") or body.get("stream"))
    ctx.kind = "embed" if endpoint == "embeddings" else "stream" if stream else "complete"
    _now(_budget.before(ctx))  # raises BudgetExceededError: nothing is sent
    _wrap_transport(client)
    db_path = _session.db_path if _session is not None else None
    return _Call(ctx, endpoint, stream, LogMiddleware(db_path))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_text(part.get("text", "") if isinstance(part, dict) else part)
                         for part in value)
    return "" if value is None else str(value)


def _context(provider: str, endpoint: str, body: dict[str, Any]) -> CallContext:
    model = str(body.get("model") or "unknown")
    if endpoint in ("chat", "messages"):
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    else:
        prompt = body.get("input") if endpoint != "completions" else body.get("prompt")
        messages = ([m for m in prompt if isinstance(m, dict) and "role" in m]
                    if isinstance(prompt, list) else [])
        if not messages:
            messages = [{"role": "user", "content": _text(prompt)}]
    max_tokens = (body.get("max_tokens") or body.get("max_completion_tokens")
                  or body.get("max_output_tokens"))
    system = body.get("system") if provider == "anthropic" else body.get("instructions")
    request = Request(
        model=model, messages=messages, system=_text(system) if system else None,
        temperature=body.get("temperature"),
        max_tokens=int(max_tokens) if isinstance(max_tokens, int) else None,
    )
    return CallContext(
        kind="complete", ref=ModelRef(provider, model), info=get_spec(provider).info,
        request=request, tags=[CAPTURE_TAG, f"sdk:{provider}"],
    )


def _unsent(call: _Call, error: BaseException) -> None:
    """A call that raised before any response arrived: log it (and free its budget hold)."""
    if not call.sent:
        _record(call, None, error, [])


# -- the transport wrapper ---------------------------------------------------------------


def _wrap_transport(client: Any) -> None:
    http_client = getattr(client, "_client", None)
    transport = getattr(http_client, "_transport", None)
    if http_client is None or transport is None:
        return
    if isinstance(transport, (_Transport, _AsyncTransport)):
        return
    with _lock:
        wrapper: Any = (_AsyncTransport(transport) if hasattr(transport, "handle_async_request")
                        else _Transport(transport))
        _wrapped[http_client] = transport
        http_client._transport = wrapper


class _Transport:
    """Passes every request to the real transport; records captured calls' responses."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def handle_request(self, request: Any) -> Any:
        call = _call.get()
        if call is None:
            return self._inner.handle_request(request)
        started = time.perf_counter()
        try:
            response = self._inner.handle_request(request)
        except Exception as exc:
            _record(call, None, LLMConnectionError(str(exc) or type(exc).__name__), [])
            raise
        call.sent = True
        response.stream = _tee(response, call, started, is_async=False)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> Any:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._inner.__exit__(*exc_info)


class _AsyncTransport:
    """The async twin of :class:`_Transport`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def handle_async_request(self, request: Any) -> Any:
        call = _call.get()
        if call is None:
            return await self._inner.handle_async_request(request)
        started = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as exc:
            _record(call, None, LLMConnectionError(str(exc) or type(exc).__name__), [])
            raise
        call.sent = True
        response.stream = _tee(response, call, started, is_async=True)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Any:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)


def _tee(response: Any, call: _Call, started: float, *, is_async: bool) -> Any:
    """``response.stream`` wrapped: the same bytes, a copy kept, the call recorded at the end.

    The wrapper subclasses the httpx flavour's own stream class (``httpx`` or
    ``httpx2``), as the client checks it.
    """
    import importlib

    lib = importlib.import_module(type(response).__module__.split(".")[0])
    inner = response.stream
    reader = _Reader(response, call, started)
    if is_async:

        class AsyncTee(lib.AsyncByteStream):  # type: ignore[name-defined,misc]
            async def __aiter__(self) -> Any:
                try:
                    async for chunk in inner:
                        reader.feed(chunk)
                        yield chunk
                finally:
                    reader.done()

            async def aclose(self) -> None:
                try:
                    await inner.aclose()
                finally:
                    reader.done()

        return AsyncTee()

    class Tee(lib.SyncByteStream):  # type: ignore[name-defined,misc]
        def __iter__(self) -> Any:
            try:
                for chunk in inner:
                    reader.feed(chunk)
                    yield chunk
            finally:
                reader.done()

        def close(self) -> None:
            try:
                inner.close()
            finally:
                reader.done()

    return Tee()


class _Reader:
    """A copy of one response body, decoded and turned into a log record at its end."""

    def __init__(self, response: Any, call: _Call, started: float) -> None:
        self.status = int(response.status_code)
        self.headers = {k.lower(): v for k, v in response.headers.items()}
        self.call = call
        self.started = started
        self.first: float | None = None
        self.parts: list[bytes] = []
        self.finished = False
        encoding = self.headers.get("content-encoding", "").strip().lower()
        self.decoder: Any = None
        if encoding in ("gzip", "deflate"):
            self.decoder = zlib.decompressobj(wbits=47)  # gzip or zlib, detected
        elif encoding not in ("", "identity"):
            self.decoder = _other_decoder(encoding)

    def feed(self, chunk: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.parts.append(chunk)

    def done(self) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            self._finish()
        except Exception:
            import logging

            logging.getLogger("notebook_llm.capture").warning(
                "could not record a captured call", exc_info=True
            )

    def _body(self) -> str:
        raw = b"".join(self.parts)
        if self.decoder is False:
            return ""
        if self.decoder is not None:
            raw = self.decoder.decompress(raw)
        return raw.decode("utf-8", errors="replace")

    def _finish(self) -> None:
        call = self.call
        ended = time.perf_counter()
        body = self._body()
        if self.status >= 400:
            try:
                payload: Any = json.loads(body)
            except ValueError:
                payload = body
            error = error_from_status(call.ctx.ref.provider, self.status, payload, self.headers)
            _record(call, None, error, [])
            return
        # Some servers send a stream labelled application/json: the body decides too.
        event_stream = ("text/event-stream" in self.headers.get("content-type", "")
                        or body.lstrip().startswith(("data:", "event:")))
        try:
            completion, tags = (_from_sse(call, body) if event_stream
                                else _from_json(call, body))
        except (ValueError, TypeError, AttributeError, KeyError, IndexError):
            # An answer of an unexpected shape: logged all the same, without tokens.
            completion, tags = Completion(text=""), ["unparsed-usage"]
        completion.latency_s = ended - self.started
        if call.stream and self.first is not None:
            completion.ttft_s = self.first - self.started
        _record(call, completion, None, tags)


def _other_decoder(encoding: str) -> Any:
    """A decoder for ``br`` or ``zstd`` when its package is installed, else ``False``
    (the body is not read: the call is logged without tokens)."""
    import importlib

    try:
        if encoding == "br":
            brotli = importlib.import_module("brotli")
            return type("Br", (), {"decompress": staticmethod(brotli.decompress)})()
        if encoding == "zstd":
            return importlib.import_module("zstandard").ZstdDecompressor().decompressobj()
    except ImportError:
        pass
    return False


def _record(call: _Call, completion: Completion | None, error: BaseException | None,
            tags: list[str]) -> None:  # fmt: skip
    ctx = call.ctx
    if tags:
        ctx.tags = [*dict.fromkeys([*ctx.tags, *tags])]
    if completion is not None:
        completion.model, completion.provider = ctx.model, ctx.ref.provider
        _now(_pricing.after(ctx, completion, error))
    _now(_tracking.after(ctx, completion, error))
    _now(call.log.after(ctx, completion, error))


# -- bodies to completions ------------------------------------------------------------------


def _usage(provider: str, endpoint: str, data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    if provider == "anthropic":
        return usage_from(data)
    if endpoint == "responses":
        return response_usage(data)
    return usage_of(data)


def _from_json(call: _Call, body: str) -> tuple[Completion, list[str]]:
    data = json.loads(body) if body else {}
    provider, endpoint = call.ctx.ref.provider, call.endpoint
    usage = _usage(provider, endpoint, data.get("usage")) or Usage()
    text, finish = "", None
    if provider == "anthropic":
        text = "".join(b.get("text", "") for b in data.get("content") or []
                       if isinstance(b, dict))
        finish = data.get("stop_reason")
    elif endpoint == "responses":
        text = "".join(
            part.get("text", "") for item in data.get("output") or [] if isinstance(item, dict)
            for part in item.get("content") or [] if isinstance(part, dict)
        )
    elif endpoint in ("chat", "completions"):
        choice = (data.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        text = message.get("content") or choice.get("text") or ""
        finish = choice.get("finish_reason")
    completion = Completion(
        text=text if isinstance(text, str) else "", usage=usage,
        response_model=data.get("model"),
        finish_reason=normalise_finish_reason(finish) or "stop",
    )
    return completion, []


def _sse_events(body: str) -> list[Any]:
    events = []
    for line in body.splitlines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            if payload and payload != "[DONE]":
                try:
                    events.append(json.loads(payload))
                except ValueError:
                    continue
    return events


def _from_sse(call: _Call, body: str) -> tuple[Completion, list[str]]:
    provider, endpoint = call.ctx.ref.provider, call.endpoint
    text: list[str] = []
    usage: Usage | None = None
    model: str | None = None
    finish: str | None = None
    input_usage: dict[str, Any] = {}
    for event in _sse_events(body):
        if not isinstance(event, dict):
            continue
        kind = event.get("type")
        if provider == "anthropic":
            if kind == "message_start":
                message = event.get("message") or {}
                model = message.get("model")
                input_usage = dict(message.get("usage") or {})
            elif kind == "content_block_delta":
                text.append(str((event.get("delta") or {}).get("text") or ""))
            elif kind == "message_delta":
                finish = (event.get("delta") or {}).get("stop_reason") or finish
                usage = usage_from({**input_usage, **(event.get("usage") or {})})
        elif endpoint == "responses":
            if kind == "response.output_text.delta":
                text.append(str(event.get("delta") or ""))
            elif kind == "response.completed":
                response = event.get("response") or {}
                model, usage = response.get("model"), response_usage(response.get("usage"))
        else:
            model = event.get("model") or model
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                text.append(str(delta.get("content") or choice.get("text") or ""))
                finish = choice.get("finish_reason") or finish
            if event.get("usage"):
                usage = usage_of(event["usage"])
    joined = "".join(text)
    tags: list[str] = []
    if usage is None:
        usage = estimated_usage(call.ctx.request, joined)
        tags.append("estimated-usage")
    completion = Completion(text=joined, usage=usage, response_model=model,
                            finish_reason=normalise_finish_reason(finish) or "stop")
    return completion, tags
