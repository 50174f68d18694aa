"""Plain HTTP clients doing the benchmark requests, and the timing harness.

Every client does exactly the same work per request:

- ``request``: POST :data:`CHAT` (serialised with ``json.dumps`` on every call)
  to ``/v1/chat/completions``, read the whole body, ``json.loads`` it and take
  ``choices[0].message.content``.
- ``stream``: POST :data:`STREAM_CHAT` (``"stream": true`` with
  ``include_usage``), read the SSE body to its end, ``json.loads`` every
  ``data:`` payload but ``[DONE]`` and join ``choices[0].delta.content``.

Modes (:data:`MODES`):

- ``seq``: one request after another (async clients await each one in turn).
- ``c64``: :data:`CONCURRENCY` requests in flight: 64 worker tasks sharing one
  client (async), or 64 threads (sync clients; ``http.client`` gets one
  connection per thread).
- ``stream``: one 50-chunk stream after another; rate is streams/s (multiply
  by the chunk count for chunks/s).

Timing (:func:`measure_async`, :func:`measure_sync`): a warm-up batch of at
least :attr:`Config.warmup_s`, which also sizes the timed batches to about
:attr:`Config.target_s` each; then :attr:`Config.repeats` timed batches. The
reported rate is the **median** of the repeats; the spread (min, max) is kept.

To add a client, write a factory returning :class:`AsyncOps` or
:class:`SyncOps` (see :func:`aiohttp_ops` for the shape) and list it in
:data:`ASYNC_CLIENTS` / :data:`SYNC_CLIENTS`.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import statistics
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["seq", "c64", "stream"]
MODES: tuple[Mode, ...] = ("seq", "c64", "stream")
CONCURRENCY = 64
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello"}]
CHAT: dict[str, Any] = {"model": MODEL, "messages": MESSAGES}
STREAM_CHAT: dict[str, Any] = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
CHAT_PATH = "/v1/chat/completions"
HEADERS = {"Authorization": "Bearer sk-bench"}


@dataclass
class Config:
    """How long and how often to measure."""

    warmup_s: float = 0.3
    target_s: float = 0.4
    repeats: int = 5
    stream_chunks: int = 50  # must match the server's --chunks


@dataclass
class Measurement:
    """Rate of one client in one mode: median of ``samples`` (per second)."""

    client: str
    mode: Mode
    rate: float
    samples: list[float] = field(default_factory=list)

    @property
    def spread(self) -> float:
        """(max - min) / median of the samples: a rough noise figure."""
        return (max(self.samples) - min(self.samples)) / self.rate if self.rate else 0.0


@dataclass
class AsyncOps:
    """What an async client can do; ``request``/``stream`` return the text."""

    request: Callable[[], Awaitable[str]]
    stream: Callable[[], Awaitable[str]]
    aclose: Callable[[], Awaitable[None]]


@dataclass
class SyncOps:
    """What a sync client can do; must be safe to call from many threads."""

    request: Callable[[], str]
    stream: Callable[[], str]
    close: Callable[[], None]


class SSEText:
    """Incremental SSE reader: feed raw body bytes, get ``delta.content`` joined."""

    __slots__ = ("buf", "done", "parts")

    def __init__(self) -> None:
        self.buf = b""
        self.parts: list[str] = []
        self.done = False

    def feed(self, data: bytes) -> None:
        lines = (self.buf + data).split(b"\n")
        self.buf = lines.pop()
        for line in lines:
            if not line.startswith(b"data:") or self.done:
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            choices = json.loads(payload)["choices"]
            if choices:
                content = choices[0]["delta"].get("content")
                if content:
                    self.parts.append(content)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _content(body: bytes | str) -> str:
    return json.loads(body)["choices"][0]["message"]["content"]


def _check(status: int) -> None:
    if status != 200:
        raise RuntimeError(f"HTTP {status}")


# --------------------------------------------------------------------- clients


async def aiohttp_ops(url: str) -> AsyncOps:
    """aiohttp: one ClientSession, TCPConnector(limit=100)."""
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), headers=HEADERS)
    endpoint = url + CHAT_PATH

    async def request() -> str:
        async with session.post(endpoint, json=CHAT) as r:
            _check(r.status)
            return _content(await r.read())

    async def stream() -> str:
        sse = SSEText()
        async with session.post(endpoint, json=STREAM_CHAT) as r:
            _check(r.status)
            async for data in r.content.iter_any():
                sse.feed(data)
        return sse.text

    return AsyncOps(request, stream, session.close)


def _httpx_async(module: str) -> Callable[[str], Awaitable[AsyncOps]]:
    async def factory(url: str) -> AsyncOps:
        mod = __import__(module)
        client = mod.AsyncClient(
            base_url=url, headers=HEADERS, timeout=30,
            limits=mod.Limits(max_connections=100, max_keepalive_connections=100),
        )

        async def request() -> str:
            r = await client.post(CHAT_PATH, json=CHAT)
            _check(r.status_code)
            return _content(r.content)

        async def stream() -> str:
            sse = SSEText()
            async with client.stream("POST", CHAT_PATH, json=STREAM_CHAT) as r:
                _check(r.status_code)
                async for data in r.aiter_raw():
                    sse.feed(data)
            return sse.text

        return AsyncOps(request, stream, client.aclose)

    factory.__doc__ = f"{module}.AsyncClient, limits 100 connections / 100 keep-alive."
    return factory


async def openai_ops(url: str) -> AsyncOps:
    """The official openai SDK: one AsyncOpenAI(max_retries=0) (reference only)."""
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-bench", max_retries=0)

    async def request() -> str:
        r = await client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        return r.choices[0].message.content or ""

    async def stream() -> str:
        parts: list[str] = []
        s = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        async for chunk in s:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return "".join(parts)

    return AsyncOps(request, stream, client.close)


def _httpx_sync(module: str) -> Callable[[str], SyncOps]:
    def factory(url: str) -> SyncOps:
        mod = __import__(module)
        client = mod.Client(
            base_url=url, headers=HEADERS, timeout=30,
            limits=mod.Limits(max_connections=100, max_keepalive_connections=100),
        )

        def request() -> str:
            r = client.post(CHAT_PATH, json=CHAT)
            _check(r.status_code)
            return _content(r.content)

        def stream() -> str:
            sse = SSEText()
            with client.stream("POST", CHAT_PATH, json=STREAM_CHAT) as r:
                _check(r.status_code)
                for data in r.iter_raw():
                    sse.feed(data)
            return sse.text

        return SyncOps(request, stream, client.close)

    factory.__doc__ = f"{module}.Client, limits 100 connections / 100 keep-alive."
    return factory


def http_client_ops(url: str) -> SyncOps:
    """Stdlib http.client: one keep-alive HTTPConnection per thread."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    local = threading.local()
    conns: list[http.client.HTTPConnection] = []
    headers = {**HEADERS, "Content-Type": "application/json"}

    def post(payload: dict[str, Any]) -> http.client.HTTPResponse:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, port, timeout=30)
            conns.append(conn)
        conn.request("POST", CHAT_PATH, body=json.dumps(payload).encode(), headers=headers)
        r = conn.getresponse()
        _check(r.status)
        return r

    def request() -> str:
        return _content(post(CHAT).read())

    def stream() -> str:
        r = post(STREAM_CHAT)
        sse = SSEText()
        while data := r.read1(65536):
            sse.feed(data)
        return sse.text

    def close() -> None:
        for c in conns:
            c.close()

    return SyncOps(request, stream, close)


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


#: Plain async clients (candidates for the baseline), by display name.
ASYNC_CLIENTS: dict[str, Callable[[str], Awaitable[AsyncOps]]] = {
    name: f for name, f, mod in [
        ("aiohttp", aiohttp_ops, "aiohttp"),
        ("httpx.AsyncClient", _httpx_async("httpx"), "httpx"),
        ("httpx2.AsyncClient", _httpx_async("httpx2"), "httpx2"),
    ] if _available(mod)
}
#: Plain sync clients (candidates for the baseline); c64 uses 64 threads.
SYNC_CLIENTS: dict[str, Callable[[str], SyncOps]] = {
    name: f for name, f, mod in [
        ("http.client", http_client_ops, "http"),
        ("httpx.Client", _httpx_sync("httpx"), "httpx"),
        ("httpx2.Client", _httpx_sync("httpx2"), "httpx2"),
    ] if _available(mod)
}
#: Reference clients: measured and shown, never picked as the baseline.
REFERENCE_CLIENTS: dict[str, Callable[[str], Awaitable[AsyncOps]]] = (
    {"openai.AsyncOpenAI": openai_ops} if _available("openai") else {}
)


# --------------------------------------------------------------------- harness


def _next_size(n: int, elapsed: float, cfg: Config) -> int:
    return max(n * 2, int(n * cfg.warmup_s / max(elapsed, 1e-6) * 1.2))


def _batch_size(n: int, elapsed: float, cfg: Config) -> int:
    return max(CONCURRENCY, int(n * cfg.target_s / elapsed))


def _batches(run: Callable[[int], float], cfg: Config) -> list[float]:
    """Warm up and size batches with ``run(n) -> seconds``; return timed rates."""
    n = 8
    while (elapsed := run(n)) < cfg.warmup_s:
        n = _next_size(n, elapsed, cfg)
    n = _batch_size(n, elapsed, cfg)
    return [n / run(n) for _ in range(cfg.repeats)]


async def _abatches(run: Callable[[int], Awaitable[float]], cfg: Config) -> list[float]:
    """:func:`_batches` for an async ``run``."""
    n = 8
    while (elapsed := await run(n)) < cfg.warmup_s:
        n = _next_size(n, elapsed, cfg)
    n = _batch_size(n, elapsed, cfg)
    return [n / await run(n) for _ in range(cfg.repeats)]


def _result(client: str, mode: Mode, rates: list[float]) -> Measurement:
    return Measurement(client, mode, statistics.median(rates), rates)


async def _async_batch(ops: AsyncOps, mode: Mode, n: int) -> float:
    start = time.perf_counter()
    if mode == "seq":
        for _ in range(n):
            await ops.request()
    elif mode == "stream":
        for _ in range(n):
            await ops.stream()
    else:
        it: Iterator[int] = iter(range(n))

        async def worker() -> None:
            for _ in it:  # shared iterator: n requests in total
                await ops.request()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - start


def measure_async(name: str, factory: Callable[[str], Awaitable[AsyncOps]], url: str,
                  mode: Mode, cfg: Config | None = None) -> Measurement:
    """Measure an async client in ``mode`` on a fresh stdlib event loop."""
    cfg = cfg or Config()

    async def main() -> list[float]:
        ops = await factory(url)
        try:
            return await _abatches(lambda n: _async_batch(ops, mode, n), cfg)
        finally:
            await ops.aclose()

    return _result(name, mode, asyncio.run(main()))


def measure_sync(name: str, factory: Callable[[str], SyncOps], url: str, mode: Mode,
                 cfg: Config | None = None) -> Measurement:
    """Measure a sync client; ``c64`` runs 64 threads sharing the client."""
    cfg = cfg or Config()
    ops = factory(url)
    pool = ThreadPoolExecutor(CONCURRENCY) if mode == "c64" else None

    def run(n: int) -> float:
        start = time.perf_counter()
        if pool is not None:
            it = iter(range(n))  # shared: next() on a range iterator is atomic under the GIL

            def worker() -> None:
                for _ in it:
                    ops.request()

            for f in [pool.submit(worker) for _ in range(CONCURRENCY)]:
                f.result()
        else:
            call = ops.stream if mode == "stream" else ops.request
            for _ in range(n):
                call()
        return time.perf_counter() - start

    try:
        return _result(name, mode, _batches(run, cfg))
    finally:
        if pool is not None:
            pool.shutdown()
        ops.close()


def check_outputs(url: str) -> None:
    """Make sure every client gets the same texts (catches a broken client early)."""

    async def one(factory: Callable[[str], Awaitable[AsyncOps]]) -> tuple[str, str]:
        ops = await factory(url)
        try:
            return await ops.request(), await ops.stream()
        finally:
            await ops.aclose()

    results: dict[str, tuple[str, str]] = {}
    for name, af in {**ASYNC_CLIENTS, **REFERENCE_CLIENTS}.items():
        results[name] = asyncio.run(one(af))
    for name, sf in SYNC_CLIENTS.items():
        ops = sf(url)
        results[name] = (ops.request(), ops.stream())
        ops.close()
    distinct = set(results.values())
    if len(distinct) != 1:
        raise AssertionError(f"clients disagree: {results}")


def measure_all(url: str, modes: Iterable[Mode] = MODES,
                cfg: Config | None = None) -> list[Measurement]:
    """Every baseline and reference client in every mode."""
    out: list[Measurement] = []
    for mode in modes:
        for name, af in {**ASYNC_CLIENTS, **REFERENCE_CLIENTS}.items():
            out.append(measure_async(name, af, url, mode, cfg))
        for name, sf in SYNC_CLIENTS.items():
            out.append(measure_sync(name, sf, url, mode, cfg))
    return out
