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
import atexit
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

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
#
# Three ways of calling notebook_llm, all against the same server, model
# "openai:gpt-4o-mini" (so pricing finds a real price), measured in the same
# interleaved rounds as the plain clients:
#
# - "nl log on": ``nl.Client()`` as users get it: every standard middleware
#   and the call log writing to a real SQLite file in a temporary directory.
#   Each batch ends with a flush of the log inside the timing, so the rate
#   includes committing every row.
# - "nl log off": the same client with ``log=False``.
# - "nl.acomplete": the module-level functions (the default client, built from
#   the environment: OPENAI_API_KEY, OPENAI_BASE_URL, NOTEBOOK_LLM_DB), log on.

MODEL = "openai:gpt-4o-mini"
_tmp: tempfile.TemporaryDirectory[str] | None = None


def bench_dir() -> Path:
    """A temporary directory for the benchmark's SQLite files (removed at exit)."""
    global _tmp
    if _tmp is None:
        _tmp = tempfile.TemporaryDirectory(prefix="nl-bench-")
        atexit.register(_tmp.cleanup)
    return Path(_tmp.name)


def _nl_ops(client: Any, log_path: Path | None,
            complete: Any = None, stream_: Any = None) -> AsyncOps:
    complete = complete or client.acomplete
    stream_ = stream_ or client.astream

    async def request() -> str:
        return (await complete("Say hello", MODEL)).text

    async def stream() -> str:
        # The provider asks for the usage chunk itself (stream_options.include_usage).
        return "".join([chunk.text async for chunk in stream_("Say hello", MODEL)])

    settle = None
    if log_path is not None:
        from notebook_llm.store.log import call_log

        log = call_log(log_path)

        async def settle() -> None:
            log.flush(timeout=60)

    return AsyncOps(request, stream, client.aclose, settle)


async def log_on_ops(url: str) -> AsyncOps:
    """``nl.Client()`` with the call log on (the default), to a temporary SQLite file."""
    import notebook_llm as nl

    path = bench_dir() / "client.db"
    client = nl.Client(api_keys={"openai": "sk-bench"}, api_bases={"openai": url + "/v1"},
                       db_path=path)
    return _nl_ops(client, path)


async def log_off_ops(url: str) -> AsyncOps:
    """The same client with ``log=False``."""
    import notebook_llm as nl

    client = nl.Client(api_keys={"openai": "sk-bench"}, api_bases={"openai": url + "/v1"},
                       log=False)
    return _nl_ops(client, None)


async def module_ops(url: str) -> AsyncOps:
    """``nl.acomplete`` / ``nl.astream``: the default client, configured by the environment."""
    import notebook_llm as nl

    os.environ.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=url + "/v1",
                      NOTEBOOK_LLM_DB=str(bench_dir() / "default.db"))
    client = nl.default_client()
    return _nl_ops(client, bench_dir() / "default.db", nl.acomplete, nl.astream)


async def notebook_llm_ops(url: str) -> AsyncOps:
    """notebook_llm's default path (``nl.Client()``, call log on); see :func:`log_on_ops`."""
    return await log_on_ops(url)


CANDIDATES: dict[str, Client] = {
    "on": Client("nl log on", log_on_ops, True, "candidate"),
    "off": Client("nl log off", log_off_ops, True, "candidate"),
    "module": Client("nl.acomplete log on", module_ops, True, "candidate"),
}
NOTEBOOK_LLM = CANDIDATES["on"]


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


def print_default_path(results: list[Measurement], modes: Iterable[Mode]) -> None:
    """Each notebook_llm variant against aiohttp, and log on against log off."""
    by = {(r.client, r.mode): r for r in results}
    names = [n for n in dict.fromkeys(r.client for r in results) if n.startswith("nl")]
    if not names or not any(("aiohttp", m) in by for m in modes):
        return
    print("\nrate ratio against aiohttp (same rounds; >= 0.9 is the goal for seq and c64):")
    print(f"  {'mode':<7}{'aiohttp':>10}" + "".join(f"{n:>30}" for n in names)
          + f"{'on / off':>10}")
    for mode in modes:
        a = by.get(("aiohttp", mode))
        if a is None:
            continue
        cells = []
        for n in names:
            r = by.get((n, mode))
            cells.append(f"{r.rate:>10,.0f} ({r.rate / a.rate:.3f}x)" if r else "-")
        on, off = by.get(("nl log on", mode)), by.get(("nl log off", mode))
        ratio = f"{on.rate / off.rate:.3f}" if on and off else "-"
        print(f"  {mode:<7}{a.rate:>10,.0f}" + "".join(f"{c:>30}" for c in cells)
              + f"{ratio:>10}")


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
    p.add_argument("--candidates", default="on,off,module",
                   help="notebook_llm variants: on (nl.Client(), log on), off (log=False), "
                        "module (nl.acomplete)")
    p.add_argument("--baselines", default="",
                   help="comma list of plain clients to measure (default: all; aiohttp is "
                        "always measured)")
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

        wanted = {n.strip() for n in args.baselines.split(",") if n.strip()}
        clients = [c for c in CLIENTS if not wanted or c.name in wanted or c.name == "aiohttp"]
        if notebook_llm_ready(url):
            clients += [CANDIDATES[k] for k in args.candidates.split(",") if k]
        else:
            print("notebook_llm: skipped (notebook_llm_ops in bench/run_core.py not implemented)")
        check_outputs(url, clients)  # every client, notebook_llm included, gets the same texts
        results = [m for mode in modes for m in measure_interleaved(clients, url, mode, cfg)]
        roles = {c.name: c.role for c in clients}
        print_table(results, modes, args.chunks, roles)
        base = pick_baselines(results, {c.name for c in clients if c.role == "plain"})
        print("\nbaseline per mode: " + ", ".join(
            f"{m} = {b.client} {b.rate:,.0f} {UNITS[m]}" for m, b in base.items()))
        floor_s = 1 / wrk["c1"] if wrk.get("c1") else None
        if floor_s and "seq" in base:
            print(f"seq: server round trip (1 / wrk c1) {floor_s * 1e6:.0f} µs of the baseline's "
                  f"{1e6 / base['seq'].rate:.0f} µs per request")
        plain_async = {c.name for c in clients if c.role == "plain" and c.is_async}
        for name in [c.name for c in clients if c.role == "candidate"]:
            nl = {r.mode: r for r in results if r.client == name}
            print(f"\n[{name}]", end="")
            print_ratios(nl, base, floor_s, pick_baselines(results, plain_async))
        print_default_path(results, modes)
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
