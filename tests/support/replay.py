"""A loopback HTTP server that replays recorded provider traffic and injects faults.

Tests point a real client (the openai/anthropic SDKs, httpx, aiohttp) at
``ReplayServer().url``. Each request is answered by the next queued spec, else by
``handler(request)`` if set, else by ``default``. A spec is a :class:`Reply`
(or a :class:`Fixture`, replayed with :meth:`Reply.from_fixture`); the
:class:`Fault` constructors return Replies that misbehave on purpose.

The server runs its own event loop in a background thread, so it works from
plain synchronous tests and from async tests alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from tests.support.loopback import LoopbackServer

__all__ = [
    "FIXTURES_DIR",
    "SHARED",
    "Fault",
    "Fixture",
    "RecordedRequest",
    "ReplayServer",
    "Reply",
    "Spec",
    "load_fixture",
    "load_fixtures",
    "split_sse",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("NOTEBOOK_LLM_SHARED") or _REPO_ROOT.parent / "shared")
FIXTURES_DIR = SHARED / "fixtures" / "recorded"

# Recorded bodies are already decoded, and aiohttp frames the body itself.
_DROPPED_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


@dataclass
class Fixture:
    """One recorded HTTP interaction (see ``fixtures/recorded/README.md``)."""

    name: str
    provider: str
    endpoint: str
    endpoint_kind: str
    method: str
    status: int
    response_headers: dict[str, str]
    response_body: str
    streaming: bool
    request_json: Any = None
    tags: list[str] = field(default_factory=list)
    query: dict[str, str] | None = None


def load_fixture(name: str) -> Fixture:
    """Load the fixture whose file stem is ``name``."""
    raw = json.loads((FIXTURES_DIR / f"{name}.json").read_text(encoding="utf-8"))
    names = {f.name for f in dataclasses.fields(Fixture)} - {"name"}
    return Fixture(name=name, **{k: v for k, v in raw.items() if k in names})


def load_fixtures() -> list[Fixture]:
    """Load every recorded fixture, sorted by name."""
    return [load_fixture(p.stem) for p in sorted(FIXTURES_DIR.glob("*.json"))]


def split_sse(body: str) -> list[str]:
    """Split an event stream into events, each keeping its blank-line separator."""
    return [part for part in re.split(r"(?<=\n\n)|(?<=\r\n\r\n)", body) if part]


@dataclass
class Reply:
    """What the server sends for one request.

    ``delay_s``, ``abort_after`` and ``drip_s`` are fault knobs: sleep before
    sending anything, reset the TCP connection after that many events
    (``None``: never), and send the body one byte every ``drip_s`` seconds.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str | bytes = ""
    sse: bool = False
    chunk_delay: float = 0.0
    delay_s: float = 0.0
    abort_after: int | None = None
    drip_s: float = 0.0

    @classmethod
    def from_fixture(cls, fx: Fixture, chunk_delay: float = 0.0) -> Reply:
        """Replay ``fx`` as recorded: status, recorded headers, body as-is."""
        headers = {
            k: v for k, v in fx.response_headers.items() if k.lower() not in _DROPPED_HEADERS
        }
        return cls(fx.status, headers, fx.response_body, fx.streaming, chunk_delay)

    @classmethod
    def from_json(
        cls, data: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Reply:
        """A JSON reply built from ``data``."""
        return cls(
            status, {"content-type": "application/json", **(headers or {})}, json.dumps(data)
        )

    def chunks(self) -> list[bytes]:
        """The body as the writes the server makes: one per SSE event, else one
        (one per byte when dripping)."""
        if self.drip_s:
            data = self.body.encode("utf-8") if isinstance(self.body, str) else self.body
            return [data[i : i + 1] for i in range(len(data))]
        body = self.body.decode("utf-8") if isinstance(self.body, bytes) and self.sse else self.body
        parts = split_sse(body) if isinstance(body, str) and self.sse else [body]
        return [p.encode("utf-8") if isinstance(p, str) else p for p in parts]


Spec = Reply | Fixture
"""Anything that can answer a request."""

_SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8"}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}  # fmt: skip


def _as_reply(spec: Spec) -> Reply:
    return Reply.from_fixture(spec) if isinstance(spec, Fixture) else spec


def _synthetic_sse(n: int) -> Reply:
    """A made-up stream of ``n`` numbered events then ``[DONE]``, for faults without a reply."""
    body = "".join(f'data: {{"index": {i}}}\n\n' for i in range(n)) + "data: [DONE]\n\n"
    return Reply(200, dict(_SSE_HEADERS), body, sse=True)


class Fault:
    """Constructors for misbehaving replies. None of these were recorded; error
    bodies follow the providers' public documentation."""

    @staticmethod
    def status(
        code: int,
        body: str | bytes | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        *,
        provider: Literal["openai", "anthropic"] | None = None,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> Reply:
        """An error status with a provider-shaped JSON error body (unless ``body`` is given).

        ``provider`` defaults to ``"anthropic"`` for 529 and ``"openai"`` otherwise;
        ``retry_after`` adds a ``retry-after`` header.
        """
        provider = provider or ("anthropic" if code == 529 else "openai")
        if body is None:
            message = message or ("Overloaded" if code == 529 else f"Injected fault: HTTP {code}")
            if provider == "anthropic":
                kind = _ANTHROPIC_ERROR_TYPES.get(code, "api_error")
                body = {"type": "error", "error": {"type": kind, "message": message}}
            else:
                kind, err_code = (
                    ("server_error", None) if code >= 500
                    else ("requests", "rate_limit_exceeded") if code == 429
                    else ("invalid_request_error", None)
                )  # fmt: skip
                error = {"message": message, "type": kind, "param": None, "code": err_code}
                body = {"error": error}
        all_headers = {"content-type": "application/json", **(headers or {})}
        if retry_after is not None:
            all_headers["retry-after"] = f"{retry_after:g}"
        return Reply(code, all_headers, json.dumps(body) if isinstance(body, dict) else body)

    @staticmethod
    def reset(after_events: int = 0, reply: Spec | None = None) -> Reply:
        """Send headers and ``after_events`` events of ``reply``, then reset the TCP connection."""
        return dataclasses.replace(
            _as_reply(reply or _synthetic_sse(after_events + 1)),
            abort_after=after_events,
        )

    @staticmethod
    def truncated(after_events: int, reply: Spec | None = None) -> Reply:
        """Send ``after_events`` events of ``reply``, then end cleanly (so no ``[DONE]``)."""
        base = _as_reply(reply or _synthetic_sse(after_events + 1))
        return dataclasses.replace(base, body=b"".join(base.chunks()[:after_events]))

    @staticmethod
    def sse_error(
        after_events: int = 0, reply: Spec | None = None, event: str | None = None
    ) -> Reply:
        """Send ``after_events`` events of ``reply``, then an error event and end cleanly.

        The default event is Anthropic's documented mid-stream ``overloaded_error``.
        """
        base = _as_reply(reply or _synthetic_sse(after_events))
        if event is None:
            error = {"type": "overloaded_error", "message": "Overloaded"}
            event = f"event: error\ndata: {json.dumps({'type': 'error', 'error': error})}\n\n"
        body = b"".join(base.chunks()[:after_events]) + event.encode("utf-8")
        return dataclasses.replace(base, body=body, sse=True)

    @staticmethod
    def slow_headers(delay_s: float, reply: Spec | None = None) -> Reply:
        """Wait ``delay_s`` seconds before sending anything, then send ``reply``."""
        return dataclasses.replace(_as_reply(reply or Reply.from_json({})), delay_s=delay_s)

    @staticmethod
    def drip(interval_s: float, reply: Spec | None = None) -> Reply:
        """Send ``reply`` one byte every ``interval_s`` seconds: each read gets
        data in time, so only a deadline on the whole call ends it."""
        return dataclasses.replace(_as_reply(reply or Reply.from_json({})), drip_s=interval_s)

    @staticmethod
    def invalid_json() -> Reply:
        """A 200 that claims to be JSON but is not."""
        return Reply(200, {"content-type": "application/json"}, '{"id": "chatcmpl-x", "choices": [')


@dataclass
class RecordedRequest:
    """A request as the server received it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class ReplayServer(LoopbackServer):
    """An aiohttp server on 127.0.0.1 in a background thread; answers any method and path.

    ``handler`` is called on the server's loop thread, so it must not block for long.
    """

    def __init__(self, handler: Callable[[RecordedRequest], Spec] | None = None) -> None:
        super().__init__()
        self.handler = handler
        self.default: Spec = Fault.status(404, message="ReplayServer: no reply queued")
        self._queue: deque[Spec] = deque()
        self._requests: list[RecordedRequest] = []
        self._disconnects = 0
        self._cond = threading.Condition()

    def start(self) -> ReplayServer:
        """Start serving; returns self once the port is bound."""
        super().start()
        return self

    def __enter__(self) -> ReplayServer:
        return self.start()

    # -- test-facing state -------------------------------------------------------

    def enqueue(self, *specs: Spec) -> None:
        """Queue replies, answered first-in first-out."""
        with self._cond:
            self._queue.extend(specs)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far."""
        with self._cond:
            return list(self._requests)

    @property
    def client_disconnects(self) -> int:
        """How many times a client went away before its response was fully written."""
        with self._cond:
            return self._disconnects

    def wait_for_disconnects(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until ``client_disconnects >= count``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._disconnects >= count, timeout)

    def clear(self) -> None:
        """Forget queued replies, recorded requests and the disconnect count."""
        with self._cond:
            self._queue.clear()
            self._requests.clear()
            self._disconnects = 0

    # -- serving -----------------------------------------------------------------

    def _choose(self, rec: RecordedRequest) -> Reply:
        with self._cond:
            self._requests.append(rec)
            spec = self._queue.popleft() if self._queue else None
        if spec is None:
            spec = self.handler(rec) if self.handler is not None else self.default
        return _as_reply(spec)

    def _note_disconnect(self) -> None:
        with self._cond:
            self._disconnects += 1
            self._cond.notify_all()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Record the request and answer with the next queued reply."""
        rec = RecordedRequest(
            request.method,
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
        )
        reply = self._choose(rec)
        chunks = reply.chunks()
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        if not reply.sse:
            response.content_length = sum(len(chunk) for chunk in chunks)
        try:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            await response.prepare(request)
            for i, chunk in enumerate(chunks):
                if reply.abort_after is not None and i >= reply.abort_after:
                    break
                if i and (reply.chunk_delay or reply.drip_s):
                    await asyncio.sleep(reply.drip_s or reply.chunk_delay)
                await response.write(chunk)
            if reply.abort_after is not None:
                await self._reset(request)
            else:
                await response.write_eof()
        except ConnectionError:
            self._note_disconnect()
        return response

    @staticmethod
    async def _reset(request: web.Request) -> None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client already gone")
        while transport.get_write_buffer_size():  # let the events already written reach the client
            await asyncio.sleep(0.001)
        sock = transport.get_extra_info("socket")
        # Linger 0: close with a TCP RST, as a dropped connection looks, not a polite FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
