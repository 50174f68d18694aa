"""Core client benchmark: notebook_llm against the fastest plain Python HTTP client.

    /tmp/dev/bin/python bench/run_core.py [--quick] [--no-pin] [--no-wrk] [--modes seq,c64]

1. starts ``bench/fastserver.py`` in its own process (pinned to CPU 0; this
   process and wrk are pinned to CPU 1, unless ``--no-pin``);
2. measures the server's own capacity with ``wrk`` (skipped with a note when
   wrk is not installed);
3. checks that every client gets the same texts, then measures every plain
   client (and the openai SDK, for reference, and notebook_llm) in each mode
   of ``_baselines.MODES``, interleaved in rounds;
4. picks the fastest plain client per mode as the baseline and prints
   notebook_llm's ratio to it (when :func:`notebook_llm_ops` is implemented);
5. writes everything to ``bench/results/core-<time>.json`` (git-ignored).

Rates are the best of ``--repeats`` rounds of one timed batch per client
(see ``_baselines.measure_interleaved``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _baselines import (
    CLIENTS,
    MODES,
    AsyncOps,
    Client,
    Config,
    Measurement,
    Mode,
    check_outputs,
    measure_async,
    measure_interleaved,
)
from fastserver import start_server_process

HERE = Path(__file__).resolve().parent
SERVER_CPU, CLIENT_CPU = 0, 1

#: Targets checked later: (how the ratio is read, limit). ``seq`` is read as
#: time per request (baseline rate / notebook_llm rate, lower is better); the
#: others as rate ratio (notebook_llm / baseline, higher is better).
TARGETS: dict[Mode, tuple[str, float]] = {
    "seq": ("time ratio <=", 1.15),
    "c64": ("rate ratio >=", 0.9),
    "stream": ("rate ratio >=", 0.8),
}
UNITS: dict[Mode, str] = {"seq": "req/s", "c64": "req/s", "stream": "streams/s"}


# ------------------------------------------------------------- notebook_llm hook
async def notebook_llm_ops(url: str) -> AsyncOps:
    """notebook_llm's async client doing the benchmark requests.

    One ``notebook_llm.Client`` for the whole measurement, with the call log
    off: this measures the client core and its default (aiohttp) transport.
    """
    import notebook_llm

    client = notebook_llm.Client(
        api_keys={"openai-compatible": "sk-bench"},
        api_bases={"openai-compatible": url + "/v1"},
        log=False,
    )
    model = "openai-compatible:gpt-4o-mini"

    async def request() -> str:
        return (await client.acomplete("Say hello", model)).text

    async def stream() -> str:
        return "".join([chunk.text async for chunk in client.astream("Say hello", model)])

    return AsyncOps(request, stream, client.aclose)


NOTEBOOK_LLM = Client("notebook_llm", notebook_llm_ops, True, "candidate")


def notebook_llm_ready(url: str) -> bool:
    """Whether :func:`notebook_llm_ops` is implemented (builds and closes one client)."""

    async def probe() -> None:
        ops = await notebook_llm_ops(url)
        await ops.aclose()

    try:
        asyncio.run(probe())
    except NotImplementedError:
        return False
    return True


def measure_notebook_llm(url: str, mode: Mode, cfg: Config | None = None) -> Measurement | None:
    """notebook_llm's rate in ``mode`` on its own, or None while the hook is not implemented.

    ``main`` does not call this: it measures notebook_llm interleaved with the
    baselines (``measure_interleaved``) so that both see the same noise.
    """
    if not notebook_llm_ready(url):
        return None
    return measure_async("notebook_llm", notebook_llm_ops, url, mode, cfg)


# ------------------------------------------------------------------------ wrk


def wrk_capacity(url: str, connections: int, stream: bool, seconds: int) -> float | None:
    """Server requests/s measured by wrk (one thread), or None without wrk."""
    if shutil.which("wrk") is None:
        return None
    env = {**os.environ, "WRK_STREAM": "1" if stream else "0"}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(HERE / "wrk_chat.lua"), url],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else None


# ---------------------------------------------------------------------- report


def _fmt(x: float) -> str:
    return f"{x:>10,.0f}"


def print_table(results: list[Measurement], modes: Iterable[Mode], chunks: int,
                roles: dict[str, str]) -> None:
    modes = list(modes)
    names = list(dict.fromkeys(r.client for r in results))
    by = {(r.client, r.mode): r for r in results}
    print(f"\n{'client':<26}" + "".join(f"{m + ' (' + UNITS[m] + ')':>22}" for m in modes))
    for name in names:
        cells = [f"{r.rate:>10,.0f} ({r.spread:4.0%})" if (r := by.get((name, m))) else "-"
                 for m in modes]
        tag = {"reference": " (ref)", "candidate": " (ours)"}.get(roles.get(name, ""), "")
        print(f"{name + tag:<26}" + "".join(f"{c:>22}" for c in cells))
    if "stream" in modes:
        best = max((r.rate for r in results if r.mode == "stream"), default=0.0)
        print(f"(stream: {chunks} content chunks each; fastest = {best * chunks:,.0f} chunks/s)")
    print("rate = best of the rounds; spread = (best - worst) / best")


def pick_baselines(results: list[Measurement], plain: set[str]) -> dict[Mode, Measurement]:
    """Fastest plain (not reference, not notebook_llm) client per mode."""
    best: dict[Mode, Measurement] = {}
    for r in results:
        if r.client in plain and (r.mode not in best or r.rate > best[r.mode].rate):
            best[r.mode] = r
    return best


def print_ratios(nl: dict[Mode, Measurement], base: dict[Mode, Measurement],
                 floor_s: float | None = None,
                 base_async: dict[Mode, Measurement] | None = None) -> None:
    """notebook_llm / baseline per mode against TARGETS.

    ``floor_s``: the server round trip (1 / wrk c1); when given, the ``seq``
    line also compares client time per request with that floor taken out.
    ``base_async``: the fastest plain *async* client per mode, shown for context.
    """
    print("\nnotebook_llm vs baseline (fastest plain client, same run):")
    for mode, r in nl.items():
        b = base[mode]
        rate_ratio = r.rate / b.rate
        how, limit = TARGETS[mode]
        value = 1 / rate_ratio if how.startswith("time") else rate_ratio
        ok = value <= limit if "<=" in how else value >= limit
        print(f"  {mode:<7} {r.rate:>10,.0f} vs {b.client} {b.rate:>10,.0f}  "
              f"rate ratio {rate_ratio:.3f}  {how} {limit}: {value:.3f} "
              f"{'PASS' if ok else 'FAIL'}")
        a = (base_async or {}).get(mode)
        if a is not None and a.client != b.client:
            print(f"  {'':<7} (fastest async plain client: {a.client} {a.rate:,.0f}, "
                  f"rate ratio {r.rate / a.rate:.3f})")
        if mode == "seq" and floor_s:
            own, theirs = 1 / r.rate - floor_s, 1 / b.rate - floor_s
            if own > 0 and theirs > 0:
                print(f"  {'':<7} client time above the server round trip "
                      f"({floor_s * 1e6:.0f} µs): {own * 1e6:.0f} vs {theirs * 1e6:.0f} µs/req, "
                      f"ratio {own / theirs:.3f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modes", default=",".join(MODES), help="comma list of " + "/".join(MODES))
    p.add_argument("--repeats", type=int, default=5, help="rounds; the best is reported")
    p.add_argument("--target-s", type=float, default=0.4, help="seconds per timed batch")
    p.add_argument("--quick", action="store_true", help="3 repeats of 0.2 s (smoke test)")
    p.add_argument("--no-pin", action="store_true", help="do not pin server/client to CPUs")
    p.add_argument("--no-wrk", action="store_true", help="skip the wrk capacity check")
    p.add_argument("--wrk-seconds", type=int, default=4)
    p.add_argument("--chunks", type=int, default=50, help="content chunks per stream")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = p.parse_args(argv)
    modes: list[Mode] = [m for m in MODES if m in args.modes.split(",")]
    cfg = (Config(warmup_s=0.2, target_s=0.2, repeats=3, stream_chunks=args.chunks)
           if args.quick else
           Config(target_s=args.target_s, repeats=args.repeats, stream_chunks=args.chunks))

    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {CLIENT_CPU})  # wrk inherits this
    proc, url = start_server_process(chunks=args.chunks, cpu=SERVER_CPU if pin else None)
    report: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "python": sys.version.split()[0],
        "machine": platform.platform(), "cpus": os.cpu_count(), "pinned": pin,
        "config": asdict(cfg),
    }
    try:
        where = f"server on CPU {SERVER_CPU}, client and wrk on CPU {CLIENT_CPU}" if pin else "no"
        print(f"server {url}  pinning: {where}")
        wrk: dict[str, float | None] = {}
        if args.no_wrk:
            print("wrk: skipped (--no-wrk)")
        elif shutil.which("wrk") is None:
            print("wrk: not installed, server capacity not measured (apt-get install wrk)")
        else:
            for label, c, s in [("c1", 1, False), ("c64", 64, False), ("stream_c64", 64, True)]:
                wrk[label] = wrk_capacity(url, c, s, args.wrk_seconds)
            print("wrk capacity (req/s, 1 thread): " + ", ".join(
                f"{k} {v:,.0f}" for k, v in wrk.items() if v is not None))
        report["wrk"] = wrk

        clients = list(CLIENTS)
        if notebook_llm_ready(url):
            clients.append(NOTEBOOK_LLM)
        else:
            print("notebook_llm: skipped (notebook_llm_ops in bench/run_core.py not implemented)")
        check_outputs(url, clients)  # every client, notebook_llm included, gets the same texts
        results = [m for mode in modes for m in measure_interleaved(clients, url, mode, cfg)]
        roles = {c.name: c.role for c in clients}
        print_table(results, modes, args.chunks, roles)
        nl = {r.mode: r for r in results if roles[r.client] == "candidate"}
        base = pick_baselines(results, {c.name for c in clients if c.role == "plain"})
        print("\nbaseline per mode: " + ", ".join(
            f"{m} = {b.client} {b.rate:,.0f} {UNITS[m]}" for m, b in base.items()))
        floor_s = 1 / wrk["c1"] if wrk.get("c1") else None
        if floor_s and "seq" in base:
            print(f"seq: server round trip (1 / wrk c1) {floor_s * 1e6:.0f} µs of the baseline's "
                  f"{1e6 / base['seq'].rate:.0f} µs per request")
        if nl:
            plain_async = {c.name for c in clients if c.role == "plain" and c.is_async}
            print_ratios(nl, base, floor_s, pick_baselines(results, plain_async))
        report["results"] = [asdict(r) for r in results]
        report["baseline"] = {m: b.client for m, b in base.items()}
    finally:
        proc.terminate()
        proc.wait()
    out = args.out or HERE / "results" / f"core-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
