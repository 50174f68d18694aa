"""A lean HTTP/1.1 client for the hot path: a keep-alive pool over asyncio.

``httptools`` (the llhttp parser uvicorn uses) does the parsing; this module
only manages connections. It does what the OpenAI-compatible providers need
(POST/GET with a JSON or SSE answer, TLS, timeouts, closing a stream so the
server stops) and nothing else: no redirects, cookies or proxies. Measured in
``bench/``, it costs about half of what ``aiohttp.ClientSession`` costs per
request; when a proxy is configured the providers use aiohttp instead.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

__all__ = ["HTTPError", "HeaderBlock", "Pool", "Response", "proxy_configured"]


class HTTPError(Exception):
    """A transport failure: ``kind`` is ``connect``, ``timeout``, ``closed`` or ``protocol``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class HeaderBlock:
    """Encoded header lines (``b"Name: value\\r\\n"...``) that hold the key, so
    their ``repr`` (a traceback's local variables, a debugger) never shows them."""

    __slots__ = ("data",)

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def __add__(self, more: bytes) -> HeaderBlock:
        return HeaderBlock(self.data + more)

    def __repr__(self) -> str:
        return f"<HeaderBlock, {len(self.data)} bytes>"


def proxy_configured() -> bool:
    """True when the environment asks for an HTTP proxy (this client has none)."""
    import os

    return any(os.environ.get(name) for name in
               ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"))


class Response:
    """Status, headers and body; for streams, ``lines()`` reads the body as it comes."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: _Connection, status: int, headers: dict[str, str]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers

    async def read(self, timeout: float | None = None) -> bytes:
        """The whole body."""
        conn = self._conn
        await conn.wait_complete(timeout)
        body = b"".join(conn.chunks)
        conn.release()
        return body

    async def lines(self, timeout: float | None = None) -> AsyncIterator[bytes]:
        """The body line by line (for server-sent events), each with its newline."""
        conn = self._conn
        pending = b""
        while True:
            chunk = await conn.next_chunk(timeout)
            if chunk is None:
                if pending:
                    yield pending
                return
            if pending:
                chunk = pending + chunk
            start = 0
            while True:
                end = chunk.find(b"\n", start)
                if end < 0:
                    break
                yield chunk[start : end + 1]
                start = end + 1
            pending = chunk[start:]

    def close(self) -> None:
        """Give the connection back if the body was read, else drop it (the server sees it go)."""
        self._conn.finish()


class _Connection(asyncio.Protocol):
    """One keep-alive connection with its own parser."""

    def __init__(self, pool: Pool) -> None:
        import httptools

        self.pool = pool
        self.loop = pool.loop
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: dict[str, str] = {}
        self.header_name = b""
        self.chunks: deque[bytes] = deque()
        self.headers_done: asyncio.Future[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.error: HTTPError | None = None
        self.closed = False
        self.released = True
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection's transport (the protocol API types it as a base transport).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HTTPError("protocol", f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(HTTPError("closed", "the server closed the connection mid-response"))
        self.pool.forget(self)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        # Read now: llhttp resets this state once the message is complete.
        self.keep_alive = self.parser.should_keep_alive()
        waiter = self.headers_done
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # helpers
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: HTTPError) -> None:
        if self.error is None:
            self.error = error
        for future in (self.headers_done, self.waiter):
            if future is not None and not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    async def _wait(self, future: asyncio.Future[None], timeout: float | None) -> None:
        if timeout is None:
            await future
            return
        handle = self.loop.call_later(timeout, self._timeout, future)
        try:
            await future
        finally:
            handle.cancel()

    def _timeout(self, future: asyncio.Future[None]) -> None:
        if not future.done():
            self._fail(HTTPError("timeout", "no answer from the server in time"))

    def start(self, head: bytes, headers: HeaderBlock, body: bytes) -> None:
        self.headers = {}
        self.chunks.clear()
        self.complete = False
        self.released = False
        self.headers_done = self.loop.create_future()
        assert self.transport is not None
        self.transport.write(head + headers.data + b"\r\n" + body)

    async def wait_headers(self, timeout: float | None) -> None:
        assert self.headers_done is not None
        await self._wait(self.headers_done, timeout)

    async def wait_complete(self, timeout: float | None) -> None:
        while not self.complete:
            if self.error is not None:
                raise self.error
            self.waiter = self.loop.create_future()
            await self._wait(self.waiter, timeout)

    async def next_chunk(self, timeout: float | None) -> bytes | None:
        while not self.chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self.waiter = self.loop.create_future()
            await self._wait(self.waiter, timeout)
        return self.chunks.popleft()

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self.complete and self.error is None and not self.closed and self.keep_alive:
            self.pool.put_back(self)
        else:
            self.close()

    def finish(self) -> None:
        if not self.complete:
            self.close()
        self.release()

    def close(self) -> None:
        self.released = True
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
        self.pool.forget(self)


class Pool:
    """Keep-alive connections to one origin (scheme, host, port)."""

    def __init__(self, base_url: str, max_connections: int = 256) -> None:
        parts = urlsplit(base_url)
        self.loop = asyncio.get_running_loop()
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        default_port = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.slots = asyncio.Semaphore(max_connections)
        self._ssl: ssl.SSLContext | None = None

    def forget(self, conn: _Connection) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
            self.slots.release()
        if conn in self.idle:
            self.idle.remove(conn)

    def put_back(self, conn: _Connection) -> None:
        if conn in self.busy:
            self.busy.discard(conn)
            self.slots.release()
            self.idle.append(conn)

    async def _connect(self, timeout: float | None) -> _Connection:
        if self.tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            connecting = self.loop.create_connection(
                lambda: _Connection(self), self.host, self.port,
                ssl=self._ssl if self.tls else None,
                server_hostname=self.host if self.tls else None,
            )
            _transport, conn = await asyncio.wait_for(connecting, timeout)
        except asyncio.TimeoutError as exc:
            raise HTTPError("timeout", f"no connection to {self.host}:{self.port} in time") from exc
        except OSError as exc:
            message = f"could not connect to {self.host}:{self.port}: {exc}"
            raise HTTPError("connect", message) from exc
        return conn

    async def request(self, method: str, path: str, headers: HeaderBlock, body: bytes,
                      timeout: float | None) -> Response:
        """Send a request; returns once the status and headers have arrived.

        ``headers`` is the pre-encoded header block (``b"Name: value\\r\\n..."``)
        without Host and Content-Length.
        """
        head = (f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
                f"Content-Length: {len(body)}\r\n").encode("latin-1")
        await self.slots.acquire()
        conn: _Connection | None = None
        try:
            while self.idle:
                candidate = self.idle.pop()
                if not candidate.closed:
                    conn = candidate
                    break
            reused = conn is not None
            if conn is None:
                conn = await self._connect(timeout)
            self.busy.add(conn)
        except BaseException:
            self.slots.release()
            raise
        conn.start(head, headers, body)
        try:
            await conn.wait_headers(timeout)
        except HTTPError as exc:
            if reused and exc.kind == "closed" and not conn.chunks:
                # The server closed an idle keep-alive connection just as we
                # used it: nothing was processed, so send it again once.
                return await self.request(method, path, headers, body, timeout)
            raise
        except BaseException:
            conn.close()
            raise
        return Response(conn, conn.parser.get_status_code(), conn.headers)

    async def aclose(self) -> None:
        """Close every connection."""
        for conn in [*self.idle, *self.busy]:
            conn.close()
        self.idle.clear()
