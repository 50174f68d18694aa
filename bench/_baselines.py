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

Timing (:func:`measure_async`, :func:`measure_sync`): warm-up batches until
one lasts :attr:`Config.warmup_s`, which also sizes the timed batches to about
:attr:`Config.target_s` each; then :attr:`Config.repeats` timed batches. The
reported rate is the **best** of the repeats (all samples are kept): on these
shared machines noise only ever slows a batch down (other jobs steal the CPU),
and across runs the best of 5 varied about half as much as the median of 5.
Async clients run on a fresh stdlib asyncio loop (not uvloop), as in Jupyter.

:func:`measure_interleaved` measures several clients in rounds (one batch
each per round) so that a noisy neighbour hits them all alike.

To add a client, write a factory returning :class:`AsyncOps` or
:class:`SyncOps` (see :func:`aiohttp_ops` for the shape) and add a
:class:`Client` to :data:`CLIENTS`.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
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
    """Rate of one client in one mode: the best of ``samples`` (per second)."""

    client: str
    mode: Mode
    rate: float
    samples: list[float] = field(default_factory=list)
    batch: int = 0  # operations per timed batch

    @property
    def spread(self) -> float:
        """(best - worst) / best of the samples: a rough noise figure."""
        return (max(self.samples) - min(self.samples)) / self.rate if self.rate else 0.0


@dataclass
class AsyncOps:
    """What an async client can do; ``request``/``stream`` return the text.

    ``settle``, when given, is awaited at the end of every batch *inside* the
    timing: work the client leaves behind (a call log's background writes)
    is charged to the batch that caused it, not to the next client measured.
    """

    request: Callable[[], Awaitable[str]]
    stream: Callable[[], Awaitable[str]]
    aclose: Callable[[], Awaitable[None]]
    settle: Callable[[], Awaitable[None]] | None = None


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


@dataclass(frozen=True)
class Client:
    """A client to measure. ``role``: ``plain`` clients compete for the baseline,
    ``reference`` ones (the openai SDK) are shown only, ``candidate`` is ours."""

    name: str
    factory: Callable[[str], Awaitable[AsyncOps]] | Callable[[str], SyncOps]
    is_async: bool
    role: Literal["plain", "reference", "candidate"] = "plain"


#: Every client measured by default (those whose module is importable).
CLIENTS: list[Client] = [
    c for c, mod in [
        (Client("aiohttp", aiohttp_ops, True), "aiohttp"),
        (Client("httpx.AsyncClient", _httpx_async("httpx"), True), "httpx"),
        (Client("httpx2.AsyncClient", _httpx_async("httpx2"), True), "httpx2"),
        (Client("http.client", http_client_ops, False), "http"),
        (Client("httpx.Client", _httpx_sync("httpx"), False), "httpx"),
        (Client("httpx2.Client", _httpx_sync("httpx2"), False), "httpx2"),
        (Client("openai.AsyncOpenAI", openai_ops, True, "reference"), "openai"),
    ] if _available(mod)
]


# --------------------------------------------------------------------- harness


def _calibrate(run: Callable[[int], float], cfg: Config) -> int:
    """Warm up with growing batches until one lasts ``warmup_s``; size the timed batch."""
    n = 8
    while (elapsed := run(n)) < cfg.warmup_s:
        n = max(n * 2, int(n * cfg.warmup_s / max(elapsed, 1e-6) * 1.2))
    return max(CONCURRENCY, int(n * cfg.target_s / elapsed))


async def _acalibrate(run: Callable[[int], Awaitable[float]], cfg: Config) -> int:
    """:func:`_calibrate` for an async ``run``."""
    n = 8
    while (elapsed := await run(n)) < cfg.warmup_s:
        n = max(n * 2, int(n * cfg.warmup_s / max(elapsed, 1e-6) * 1.2))
    return max(CONCURRENCY, int(n * cfg.target_s / elapsed))


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
    if ops.settle is not None:
        await ops.settle()
    return time.perf_counter() - start


def measure_async(name: str, factory: Callable[[str], Awaitable[AsyncOps]], url: str,
                  mode: Mode, cfg: Config | None = None, *, batch: int | None = None,
                  repeats: int | None = None) -> Measurement:
    """Measure an async client in ``mode`` on a fresh stdlib event loop.

    Without ``batch`` it calibrates (warm-up); with it, it warms up with a
    quarter batch. ``repeats`` defaults to ``cfg.repeats`` timed batches.
    """
    cfg = cfg or Config()
    reps = cfg.repeats if repeats is None else repeats

    async def main() -> Measurement:
        ops = await factory(url)
        try:
            def run(n: int) -> Awaitable[float]:
                return _async_batch(ops, mode, n)

            if batch is None:
                n = await _acalibrate(run, cfg)
            else:
                n = batch
                await run(max(CONCURRENCY, n // 4))
            rates = [n / await run(n) for _ in range(reps)]
        finally:
            await ops.aclose()
        return Measurement(name, mode, max(rates), rates, n)

    return asyncio.run(main())


def measure_sync(name: str, factory: Callable[[str], SyncOps], url: str, mode: Mode,
                 cfg: Config | None = None, *, batch: int | None = None,
                 repeats: int | None = None) -> Measurement:
    """Measure a sync client; ``c64`` runs 64 threads sharing the client."""
    cfg = cfg or Config()
    reps = cfg.repeats if repeats is None else repeats
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
        if batch is None:
            n = _calibrate(run, cfg)
        else:
            n = batch
            run(max(CONCURRENCY, n // 4))
        rates = [n / run(n) for _ in range(reps)]
    finally:
        if pool is not None:
            pool.shutdown()
        ops.close()
    return Measurement(name, mode, max(rates), rates, n)


def measure(client: Client, url: str, mode: Mode, cfg: Config | None = None, *,
            batch: int | None = None, repeats: int | None = None) -> Measurement:
    """Measure one :class:`Client` (async or sync)."""
    if client.is_async:
        return measure_async(client.name, client.factory, url, mode, cfg,  # type: ignore[arg-type]
                             batch=batch, repeats=repeats)
    return measure_sync(client.name, client.factory, url, mode, cfg,  # type: ignore[arg-type]
                        batch=batch, repeats=repeats)


def measure_interleaved(clients: Iterable[Client], url: str, mode: Mode,
                        cfg: Config | None = None) -> list[Measurement]:
    """Measure ``clients`` in rounds, one timed batch each per round.

    Round 1 calibrates each client's batch size; rounds 2..``cfg.repeats``
    reuse it. Noise from other processes (shared machines) thus hits every
    client alike, which keeps same-run ratios steadier than measuring each
    client's repeats back to back. The rate is the best over rounds.
    """
    cfg = cfg or Config()
    clients = list(clients)
    first = [measure(c, url, mode, cfg, repeats=1) for c in clients]
    samples = {m.client: list(m.samples) for m in first}
    for _ in range(cfg.repeats - 1):
        for c, m0 in zip(clients, first, strict=True):
            samples[c.name] += measure(c, url, mode, cfg, batch=m0.batch, repeats=1).samples
    return [Measurement(m.client, mode, max(samples[m.client]),
                        samples[m.client], m.batch) for m in first]


def check_outputs(url: str, clients: Iterable[Client] = CLIENTS) -> None:
    """Make sure every client gets the same texts (catches a broken client early)."""
    results: dict[str, tuple[str, str]] = {}
    for c in clients:
        if c.is_async:
            async def one(c: Client = c) -> tuple[str, str]:
                ops = await c.factory(url)  # type: ignore[misc]
                try:
                    return await ops.request(), await ops.stream()
                finally:
                    await ops.aclose()

            results[c.name] = asyncio.run(one())
        else:
            sops: SyncOps = c.factory(url)  # type: ignore[assignment]
            try:
                results[c.name] = (sops.request(), sops.stream())
            finally:
                sops.close()
    if len(set(results.values())) > 1:
        raise AssertionError(f"clients disagree: {results}")
