"""Batch-job benchmarks: throughput, peak memory, and what checkpointing costs.

Run by hand (about 3-5 minutes)::

    .venv/bin/python bench/bench_batch.py [--rows 5000] [--big 100000] [--rounds 3]

1. Throughput: ``--rows`` rows, 64 in flight, against ``bench/fastserver.py``
   in its own process. Rows/s of ``notebook_llm.batches`` versus, in the same
   run and interleaved in rounds (median reported): plain aiohttp with 64
   worker tasks doing the same requests (POST, read, ``json.loads``, take the
   text), litellm's ``batch_completion`` (its thread pool, as its docs show)
   and any-llm's ``acompletion`` under a 64-task semaphore (as its docs show
   for async use). litellm and any-llm are skipped with a note when not installed.
2. Memory: a ``--big``-row job (a DataFrame and a template) in a subprocess;
   the peak RSS of that process (``VmHWM``: ``ru_maxrss`` would report the
   parent's peak, kept across fork+exec), and the peak before the job started
   (imports, the DataFrame) for reference.
3. Checkpointing: a 20,000-row job with checkpoints and with the writer
   replaced by a no-op (``notebook_llm.batches._run._checkpoints_enabled =
   False``), interleaved in ``--rounds`` + 9 rounds (each run a new job in the
   same database); the median rows/s of each, the slowdown of the medians and
   the median of the per-round slowdowns. On a shared 2-core machine single
   runs swing by 10-20%, hence the many rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench.fastserver import start_server_process  # noqa: E402

CONCURRENCY = 64
MODEL = "gpt-4o-mini"


def prompts(n: int) -> list[str]:
    return [f"Classify this review #{i}: the product was fine, delivery slow." for i in range(n)]


# -- the contenders ---------------------------------------------------------------


def run_aiohttp(base: str, rows: list[str]) -> int:
    import aiohttp

    async def main() -> int:
        url = base + "/v1/chat/completions"
        headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
        texts: list[str] = [""] * len(rows)
        feed = iter(range(len(rows)))
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                for i in feed:
                    body = json.dumps({"model": MODEL, "messages": [
                        {"role": "user", "content": rows[i]}]}).encode()
                    async with session.post(url, data=body, headers=headers) as response:
                        data = json.loads(await response.read())
                    texts[i] = data["choices"][0]["message"]["content"]

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return sum(1 for text in texts if text)

    return asyncio.run(main())


_RUNS = itertools.count()


def run_notebook_llm(base: str, rows: list[str], db: str, checkpoints: bool = True) -> int:
    # A new job each run, as a user's new job would be: reusing one name with
    # resume=False would time deleting the previous run's rows as well.
    from notebook_llm.batches import _run, batch
    from notebook_llm.core import loop as library_loop
    from notebook_llm.core.client import CoreClient

    _run._checkpoints_enabled = checkpoints
    client = CoreClient(api_keys={"openai-compatible": "sk-bench"},
                        api_bases={"openai-compatible": base + "/v1"})
    try:
        result = batch(rows, f"openai-compatible:{MODEL}", client=client, concurrency=CONCURRENCY,
                       db_path=db, progress=False, job=f"bench-{next(_RUNS)}")
    finally:
        library_loop.run(client.aclose())
        _run._checkpoints_enabled = True
    return result.done if checkpoints else len(rows)


def run_litellm(base: str, rows: list[str]) -> int:
    import litellm

    answers = litellm.batch_completion(
        model=f"openai/{MODEL}",
        messages=[[{"role": "user", "content": row}] for row in rows],
        api_base=base + "/v1",
        api_key="sk-bench",
        max_workers=CONCURRENCY,
    )
    return sum(1 for a in answers if not isinstance(a, Exception) and a.choices[0].message.content)


def run_any_llm(base: str, rows: list[str]) -> int:
    from any_llm import acompletion

    async def main() -> int:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(row: str) -> str:
            async with gate:
                response = await acompletion(
                    model=MODEL, provider="openai", api_base=base + "/v1", api_key="sk-bench",
                    messages=[{"role": "user", "content": row}],
                )
                return response.choices[0].message.content or ""

        texts = await asyncio.gather(*(one(row) for row in rows))
        return sum(1 for text in texts if text)

    return asyncio.run(main())


def timed(function: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    done = function()
    return time.perf_counter() - started, done


def available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- the measurements -------------------------------------------------------------


def throughput(base: str, n: int, rounds: int, db: str) -> dict[str, Any]:
    rows = prompts(n)
    contenders: dict[str, Callable[[], int]] = {
        "aiohttp (64 tasks)": lambda: run_aiohttp(base, rows),
        "notebook_llm.batches": lambda: run_notebook_llm(base, rows, db),
    }
    notes = []
    for name, module, runner in (("litellm.batch_completion", "litellm", run_litellm),
                                 ("any_llm.acompletion (64)", "any_llm", run_any_llm)):
        if not available(module):
            notes.append(f"{module} not installed: skipped")
            continue
        small = rows[:500]  # they are slow: fewer rows, same rate measure
        try:
            seconds, done = timed(lambda r=runner, s=small: r(base, s))  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - report, do not abort the benchmark
            notes.append(f"{name} failed: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if done != len(small):
            notes.append(f"{name}: only {done}/{len(small)} rows answered")
        contenders[name] = lambda r=runner, s=small: r(base, s)  # type: ignore[misc]
        contenders[name].rows = len(small)  # type: ignore[attr-defined]
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, function in contenders.items():
            count = getattr(function, "rows", n)
            seconds, done = timed(function)
            assert done == count, f"{name}: {done}/{count} rows"
            rates[name].append(count / seconds)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    base_rate = medians["aiohttp (64 tasks)"]
    ours = medians["notebook_llm.batches"]
    return {
        "rows": n,
        "rows_per_s": {name: round(rate) for name, rate in medians.items()},
        "samples": {name: [round(v) for v in values] for name, values in rates.items()},
        "ratio_vs_aiohttp": round(ours / base_rate, 3),
        "ratio_vs_others": {name: round(ours / rate, 2) for name, rate in medians.items()
                            if name not in ("aiohttp (64 tasks)", "notebook_llm.batches")},
        "notes": notes,
    }


MEMORY_CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
from notebook_llm.batches import batch
from notebook_llm.core.client import CoreClient
import pandas as pd
base, n, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
reviews = [f"review number {{i}}: fine product, slow delivery" for i in range(n)]
df = pd.DataFrame({{"review": reviews}})
client = CoreClient(api_keys={{"openai-compatible": "sk"}},
                    api_bases={{"openai-compatible": base + "/v1"}})
def hwm():
    # VmHWM, not ru_maxrss: getrusage keeps the parent's peak across fork+exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
before = hwm()
started = time.perf_counter()
result = batch(df, "openai-compatible:gpt-4o-mini", template="Classify: {{review}}", client=client,
               concurrency=64, db_path=db, progress=False, job="memory")
seconds = time.perf_counter() - started
peak = hwm()
print(result.done, before, peak, seconds)
"""


def memory(base: str, n: int, db: str) -> dict[str, Any]:
    script = MEMORY_CHILD.format(root=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script, base, str(n), db], capture_output=True,
                         text=True, timeout=1200)
    if out.returncode:
        return {"error": out.stderr[-2000:]}
    done, before, peak, seconds = out.stdout.split()[-4:]
    return {
        "rows": n,
        "done": int(done),
        "rss_after_imports_and_inputs_mb": round(int(before) / 1024, 1),
        "peak_rss_mb": round(int(peak) / 1024, 1),
        "seconds": round(float(seconds), 1),
        "rows_per_s": round(int(done) / float(seconds)),
    }


def checkpoint_cost(base: str, n: int, rounds: int, db: str) -> dict[str, Any]:
    rows = prompts(n)
    rates: dict[str, list[float]] = {"checkpoints": [], "no checkpoints": []}
    for _ in range(rounds):
        for name, flag in (("checkpoints", True), ("no checkpoints", False)):
            seconds, done = timed(lambda f=flag: run_notebook_llm(base, rows, db, f))  # type: ignore[misc]
            assert done == n
            rates[name].append(n / seconds)
    on = statistics.median(rates["checkpoints"])
    off = statistics.median(rates["no checkpoints"])
    paired = [1 - a / b for a, b in zip(rates["checkpoints"], rates["no checkpoints"], strict=True)]
    return {
        "rows": n,
        "rows_per_s": {"checkpoints": round(on), "no checkpoints": round(off)},
        "samples": {name: [round(v) for v in values] for name, values in rates.items()},
        "slowdown_of_medians": round(1 - on / off, 4),
        "slowdown_median_of_pairs": round(statistics.median(paired), 4),
        "slowdown_best_vs_best": round(
            1 - max(rates["checkpoints"]) / max(rates["no checkpoints"]), 4
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["throughput", "memory", "checkpoints"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    proc, base = start_server_process(cpu=None)
    report: dict[str, Any] = {"python": sys.version.split()[0], "cores": os.cpu_count()}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "throughput" not in args.skip:
                report["throughput"] = throughput(base, args.rows, args.rounds, f"{tmp}/t.db")
                print(json.dumps(report["throughput"], indent=2), flush=True)
            if "checkpoints" not in args.skip:
                report["checkpoints"] = checkpoint_cost(base, max(args.rows, 20_000),
                                                        args.rounds + 9, f"{tmp}/c.db")
                print(json.dumps(report["checkpoints"], indent=2), flush=True)
            if "memory" not in args.skip:
                report["memory"] = memory(base, args.big, f"{tmp}/m.db")
                print(json.dumps(report["memory"], indent=2), flush=True)
    finally:
        proc.terminate()
        proc.wait()
    report["self_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
