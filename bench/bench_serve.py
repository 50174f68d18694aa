"""``nl.serve()`` against bare echo servers, and local tokens/s through it.

Run by hand (never as a timed test)::

    python bench/bench_serve.py                 # ~2 min: offline c64 + latency, then local:smollm2
    python bench/bench_serve.py --no-local      # the offline part only
    python bench/bench_serve.py --rounds 3 --duration 1.5

Offline part: four servers, each in its own process (pinned to CPU 0 unless
``--no-pin``; the load generator runs here, on CPU 1):

- ``aiohttp echo``: a bare ``aiohttp.web`` app that parses the chat body and
  answers a ``chat.completion`` with the last message's text;
- ``starlette echo``: the same app on uvicorn + starlette (httptools, asyncio);
- ``nl.serve log on``: ``python -m notebook_llm serve --model offline:echo``,
  every call through the default client's middlewares and the SQLite call log;
- ``nl.serve log off``: the same with ``--no-log``.

Each round measures each server in turn (interleaved, so a noisy neighbour
hits them alike): requests/s with 64 clients in flight for ``--duration`` s
(aiohttp client, 64 worker tasks on one session) and the server process's CPU
time per request meanwhile; then ``--seq`` sequential requests per server on
one connection each, interleaved request by request. Reported: the best
requests/s over the rounds, the median server CPU per request, the median
latency, the ratio of nl.serve's requests/s to each echo server (and the
ratio their CPU per request implies), and nl.serve's median added latency
(the median of the paired differences).

Local part: ``local:smollm2`` answering the same prompt (128 tokens,
temperature 0) in-process (``Client.acomplete`` here) and through an
``nl.serve`` process (non-streaming and streaming over HTTP), alternating,
best of ``--local-rounds``; tokens/s is output tokens / wall time of the call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = 64
BODY = {"model": "offline:echo", "messages": [{"role": "user", "content": "Say hello"}]}


# -- the bare echo servers (run with --echo NAME in a child process) ------------------


def _echo_reply(body: dict[str, Any]) -> dict[str, Any]:
    text = body["messages"][-1]["content"]
    return {
        "id": "chatcmpl-echo", "object": "chat.completion", "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                             "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def run_echo(kind: str) -> None:
    """Serve the bare echo app on a free port; print ``READY <port>``."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    if kind == "aiohttp":
        from aiohttp import web

        async def chat(request: web.Request) -> web.Response:
            body = json.loads(await request.read())
            return web.Response(text=json.dumps(_echo_reply(body)),
                                content_type="application/json")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        print(f"READY {port}", flush=True)
        web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
    else:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def schat(request: Request) -> Response:
            body = json.loads(await request.body())
            return Response(json.dumps(_echo_reply(body)), media_type="application/json")

        app = Starlette(routes=[Route("/v1/chat/completions", schat, methods=["POST"])])
        print(f"READY {port}", flush=True)
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                    loop="asyncio", http="httptools")


# -- starting the servers -----------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    process: subprocess.Popen[str]
    rates: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    """Server CPU time per request in each c64 batch, microseconds."""


def _env(db_dir: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "NOTEBOOK_LLM_DB": os.path.join(db_dir, "log.db"),
        "NOTEBOOK_LLM_PROBE_PORTS": "none"}


def _pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def start(name: str, command: list[str], env: dict[str, str]) -> Target:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.startswith("READY"):
        url = f"http://127.0.0.1:{line.split()[1]}/v1"
    elif "serving on" in line:
        url = line.split("serving on ", 1)[1].split()[0]
    else:
        process.kill()
        raise RuntimeError(f"{name} did not start: {line!r}")
    return Target(name, url, process)


def start_offline(pin: int | None, db_dir: str) -> list[Target]:
    env = _env(db_dir)
    me = [sys.executable, str(Path(__file__).resolve())]
    serve = [sys.executable, "-m", "notebook_llm", "serve", "--model", "offline:echo"]
    return [
        start("aiohttp echo", [*_pin(pin), *me, "--echo", "aiohttp"], env),
        start("starlette echo", [*_pin(pin), *me, "--echo", "starlette"], env),
        start("nl.serve log on", [*_pin(pin), *serve], env),
        start("nl.serve log off", [*_pin(pin), *serve, "--no-log"], env),
    ]


# -- the load ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def c64(session: Any, url: str, duration: float) -> tuple[float, int]:
    """(requests/s, requests) with CONCURRENCY workers posting the chat body for ``duration`` s."""
    payload = json.dumps(BODY)
    headers = {"Content-Type": "application/json"}
    done = 0
    stop_at = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            async with session.post(f"{url}/chat/completions", data=payload,
                                    headers=headers) as response:
                data = json.loads(await response.read())
            assert data["choices"][0]["message"]["content"] == "Say hello", data
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done / (time.perf_counter() - started), done


async def one_request(session: Any, url: str) -> float:
    """Milliseconds for one request."""
    started = time.perf_counter()
    async with session.post(f"{url}/chat/completions", data=json.dumps(BODY),
                            headers={"Content-Type": "application/json"}) as response:
        json.loads(await response.read())
    return (time.perf_counter() - started) * 1000


async def measure_offline(targets: list[Target], rounds: int, duration: float,
                          seq: int) -> None:
    """Per round: each server's c64 rate (and its server CPU per request), then
    ``seq`` sequential requests per server, interleaved request by request (so
    that load from other jobs hits every server alike)."""
    import aiohttp

    def pool(limit: int) -> Any:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))

    for target in targets:  # warm up: connections, imports, the call log's file
        async with pool(CONCURRENCY) as session:
            await c64(session, target.url, 0.3)
    for round_ in range(rounds):
        for target in targets:
            async with pool(CONCURRENCY) as session:
                before = cpu_seconds(target.process.pid)
                rate, count = await c64(session, target.url, duration)
                target.cpu_us.append((cpu_seconds(target.process.pid) - before) / count * 1e6)
                target.rates.append(rate)
        sessions = [pool(1) for _ in targets]
        try:
            for target, session in zip(targets, sessions, strict=True):
                for _ in range(10):
                    await one_request(session, target.url)
            for _ in range(seq):
                for target, session in zip(targets, sessions, strict=True):
                    target.latencies_ms.append(await one_request(session, target.url))
        finally:
            for session in sessions:
                await session.close()
        print(f"  round {round_ + 1}: " + ", ".join(
            f"{t.name} {t.rates[-1]:,.0f}/s" for t in targets), flush=True)


def report_offline(targets: list[Target]) -> dict[str, Any]:
    by_name = {t.name: t for t in targets}
    print(f"\n{'server':<18} {'c64 req/s (best)':>17} {'spread':>7} {'server CPU us/req':>18} "
          f"{'seq median ms':>14}")
    for t in targets:
        best = max(t.rates)
        spread = (best - min(t.rates)) / best
        print(f"{t.name:<18} {best:>17,.0f} {spread:>7.0%} {statistics.median(t.cpu_us):>18,.0f} "
              f"{statistics.median(t.latencies_ms):>14.3f}")
    result: dict[str, Any] = {}
    print()
    for nl_name in ("nl.serve log on", "nl.serve log off"):
        for base in ("starlette echo", "aiohttp echo"):
            mine, theirs = by_name[nl_name], by_name[base]
            ratio = max(mine.rates) / max(theirs.rates)
            cpu_ratio = statistics.median(theirs.cpu_us) / statistics.median(mine.cpu_us)
            # Requests were interleaved one by one: pair them.
            added = statistics.median(
                a - b for a, b in zip(mine.latencies_ms, theirs.latencies_ms, strict=True))
            result[f"{nl_name} / {base}"] = {"c64_ratio": ratio, "cpu_ratio": cpu_ratio,
                                             "added_ms": added}
            print(f"{nl_name} vs {base}: c64 ratio {ratio:.2f} (target >= 0.8; by server CPU "
                  f"per request {cpu_ratio:.2f}), median added latency {added:+.3f} ms "
                  "(target < 2)")
    return result


# -- local:smollm2 ------------------------------------------------------------------


PROMPT = "Write a short story about a lighthouse keeper."
LOCAL_TOKENS = 128


async def local_in_process(client: Any) -> float:
    started = time.perf_counter()
    completion = await client.acomplete(PROMPT, "local:smollm2", max_tokens=LOCAL_TOKENS,
                                        temperature=0)
    return float(completion.usage.output_tokens) / (time.perf_counter() - started)


async def local_served(session: Any, url: str, stream: bool) -> float:
    body = {"model": "local:smollm2", "max_tokens": LOCAL_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": PROMPT}], "stream": stream,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    async with session.post(f"{url}/chat/completions", json=body) as response:
        if not stream:
            data = await response.json()
            tokens = data["usage"]["completion_tokens"]
        else:
            tokens = 0
            async for line in response.content:
                # Every event is read; only the usage chunk needs decoding.
                if line.startswith(b"data: {") and b'"usage"' in line:
                    tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    return float(tokens) / (time.perf_counter() - started)


async def measure_local(rounds: int, db_dir: str) -> dict[str, float]:
    import aiohttp

    import notebook_llm as nl

    target = start("nl.serve local", [sys.executable, "-m", "notebook_llm", "serve", "--model",
                                      "local:smollm2"], _env(db_dir))
    client = nl.Client()
    runs: dict[str, list[float]] = {"in-process": [], "served": [], "served stream": []}
    steps: dict[str, Callable[[Any], Any]] = {
        "in-process": lambda session: local_in_process(client),
        "served": lambda session: local_served(session, target.url, False),
        "served stream": lambda session: local_served(session, target.url, True),
    }
    try:
        async with aiohttp.ClientSession() as session:
            for step in steps.values():  # load the model in both processes
                await step(session)
            for round_ in range(rounds):
                for name, step in steps.items():
                    runs[name].append(await step(session))
                print(f"  round {round_ + 1}: " + ", ".join(
                    f"{name} {values[-1]:.1f} tok/s" for name, values in runs.items()),
                    flush=True)
    finally:
        target.process.terminate()
        target.process.communicate(timeout=10)
    best = {name: max(values) for name, values in runs.items()}
    print()
    for name, value in best.items():
        print(f"local:smollm2 {name:<14} {value:6.1f} tokens/s (best of {rounds})")
    for name in ("served", "served stream"):
        print(f"{name} / in-process: {best[name] / best['in-process']:.2f} (target >= 0.9)")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--echo", choices=("aiohttp", "starlette"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--seq", type=int, default=300, help="sequential requests per round")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--no-local", action="store_true")
    parser.add_argument("--no-offline", action="store_true")
    parser.add_argument("--local-rounds", type=int, default=3)
    args = parser.parse_args()
    if args.echo:
        run_echo(args.echo)
        return
    pin = None if args.no_pin or (os.cpu_count() or 1) < 2 else 0
    if pin is not None:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as db_dir:
        if not args.no_offline:
            targets = start_offline(pin, db_dir)
            try:
                print(f"offline:echo, {CONCURRENCY} clients in flight, "
                      f"{args.rounds} rounds x {args.duration}s")
                asyncio.run(measure_offline(targets, args.rounds, args.duration, args.seq))
            finally:
                for target in targets:
                    target.process.terminate()
                    target.process.communicate(timeout=10)
            report_offline(targets)
        if not args.no_local:
            if pin is not None:
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            print("\nlocal:smollm2, in-process vs through nl.serve")
            asyncio.run(measure_local(args.local_rounds, db_dir))


if __name__ == "__main__":
    main()
