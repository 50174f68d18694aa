"""``nl.usage()`` and ``nl.costs(by=...)`` over a log of 100,000 calls: time and memory.

    /tmp/dev/bin/python bench/bench_usage.py [--rows 100000] [--repeats 3] [--keep DB]

1. fills a fresh SQLite file in a temporary directory through the real call
   log writer (``CallLog.record``, so redaction, JSON encoding, ids and
   indexes are as in use) with realistic calls: 60 days, 8 models on 5
   providers (priced, free and unpriced), 1-6 messages with a system prompt
   now and then, answers of 100-1,500 characters, 0-3 tags, 6 notebooks,
   cache hits, errors and batch rows. The same seed gives the same log.
2. measures each reader in its own fresh interpreter (so one does not warm
   or bloat the next): ``usage()``, ``usage(since="7d")`` and ``costs(by=b)``
   for every ``b``. Per reader: the best of ``--repeats`` wall times, the
   peak of Python allocations during one call (tracemalloc), the growth of
   the process's peak RSS during the first call (``VmHWM`` after, reset
   through ``/proc/self/clear_refs`` just before, minus RSS before), and the
   size of the returned frame itself (``memory_usage(deep=True)``):
   ``usage()`` returns every prompt and answer, so its result alone can be
   well over 100 MB.

Targets: every reader under 0.3 s and 100 MB of extra memory. Results go to
stdout and ``bench/results/usage-<time>.json``. To measure another checkout
of the library, put it first on ``PYTHONPATH``: the script only uses
``notebook_llm``'s public readers and ``CallLog``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET_S = 0.3
TARGET_MB = 100.0
BYS = ("model", "provider", "day", "notebook", "tag")

MODELS = [  # (model, provider, weight, price per 1k input/output tokens or None: unpriced)
    ("openai:gpt-4o-mini", "openai", 30, (0.00015, 0.0006)),
    ("openai:gpt-4o", "openai", 10, (0.0025, 0.01)),
    ("anthropic:claude-sonnet-4-5", "anthropic", 12, (0.003, 0.015)),
    ("anthropic:claude-haiku-4-5", "anthropic", 10, (0.001, 0.005)),
    ("ollama:llama3.2", "ollama", 15, (0.0, 0.0)),
    ("offline:echo", "offline", 8, (0.0, 0.0)),
    ("groq:llama-3.3-70b-versatile", "groq", 8, (0.00059, 0.00079)),
    ("openai-compatible:my-finetune", "openai-compatible", 7, None),
]
TAGS = ["exp1", "exp2", "ablation", "prod", "eval", "summary", "extract", "rag", "draft", "qa"]
NOTEBOOKS = [f"/home/me/project/{name}.ipynb" for name in
             ("analysis", "eval", "scratch", "report", "rag", "batch")]
WORDS = ("the model answer data notebook cell token cost prompt table summary result "
         "python pandas frame value column row error retry stream batch cache provider "
         "language large small fast slow good bad first last next").split()


def _text(rng: random.Random, low: int, high: int) -> str:
    out: list[str] = []
    size = rng.randint(low, high)
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        out.append(word)
        length += len(word) + 1
    return " ".join(out).capitalize() + "."


def fake_calls(rows: int, seed: int = 0) -> list[dict[str, Any]]:
    """``rows`` realistic ``calls`` rows (dicts for ``CallLog.record``), oldest first."""
    rng = random.Random(seed)
    weights = [m[2] for m in MODELS]
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=60)
    span = (end - start).total_seconds()
    out = []
    for i in range(rows):
        model, provider, _w, price = rng.choices(MODELS, weights)[0]
        # Mostly in time order; a few out of order (several kernels, clocks).
        at = start + timedelta(seconds=span * (i + rng.random() * 50) / rows)
        messages: list[dict[str, Any]] = []
        for _ in range(rng.choice((0, 0, 0, 1, 2))):
            messages += [{"role": "user", "content": _text(rng, 30, 200)},
                         {"role": "assistant", "content": _text(rng, 50, 300)}]
        messages.append({"role": "user", "content": _text(rng, 50, 400)})
        input_tokens = sum(len(m["content"]) for m in messages) // 4 + rng.randint(0, 200)
        error = rng.random() < 0.03
        cached = not error and rng.random() < 0.05
        output_tokens = 0 if error else rng.randint(10, 800)
        row: dict[str, Any] = {
            "created_at": at.isoformat(timespec="microseconds"),
            "provider": provider,
            "model": model,
            "messages_json": messages,
            "system": "You are a concise assistant." if rng.random() < 0.3 else None,
            "params_json": {"temperature": 0.2} if rng.random() < 0.3 else {},
            "finish_reason": "error" if error else "stop",
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_input_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            "latency_s": rng.uniform(0.2, 8.0),
            "tags_json": rng.sample(TAGS, rng.choice((0, 0, 1, 1, 2, 3))),
            "conversation_id": f"conv-{rng.randint(1, 2000)}" if rng.random() < 0.2 else None,
            "batch_id": f"batch-{rng.randint(1, 40)}" if rng.random() < 0.1 else None,
            "notebook_path": rng.choice(NOTEBOOKS) if rng.random() < 0.8 else None,
            "cached": int(cached),
        }
        if error:
            row.update(error_class=rng.choice(("RateLimitError", "TimeoutError", "ProviderError")),
                       error_message="The provider answered 429: slow down and retry later")
        else:
            if cached:
                cost, status = 0.0, "cached"
            elif price is None:
                cost, status = None, "unpriced"
            elif price == (0.0, 0.0):
                cost, status = 0.0, "free"
            else:
                cost = input_tokens / 1000 * price[0] + output_tokens / 1000 * price[1]
                status = "priced"
            row.update(response_model=model.split(":", 1)[1], response_text=_text(rng, 100, 1500),
                       cost_usd=cost, cost_status=status, ttft_s=rng.uniform(0.05, 1.0))
        out.append(row)
    return out


def fill(path: Path, rows: int, seed: int = 0) -> float:
    """Write ``rows`` calls to ``path`` through the call log writer; seconds taken."""
    from notebook_llm.store.log import CallLog

    calls = fake_calls(rows, seed)
    started = time.perf_counter()
    log = CallLog(path, register_atexit=False)
    for row in calls:
        log.record(row)
    if not log.flush(timeout=600):
        raise RuntimeError("the call log did not finish writing")
    if log.dropped or log.errors:
        raise RuntimeError(f"rows dropped: {log.dropped}, {list(log.errors)[:3]}")
    log.close()
    return time.perf_counter() - started


# One reader in a fresh interpreter: prints a JSON line.
_CHILD = r"""
import json, resource, sys, time, tracemalloc
import pandas  # imported before measuring: every caller has it loaded
import notebook_llm as nl
from notebook_llm.store.log import call_log

path, call, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
call_log(path).store.conn  # open and migrate outside the measurement
kind, _, arg = call.partition(":")
import warnings
warnings.simplefilter("ignore")  # usage()'s note that its default limit left calls out
if kind == "costs":
    run = lambda: nl.costs(by=arg, db_path=path)
elif arg == "all":
    run = lambda: nl.usage(limit=None, db_path=path)
elif arg:
    run = lambda: nl.usage(since=arg, db_path=path)
else:
    run = lambda: nl.usage(db_path=path)

def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024

def peak_kib():
    # VmHWM, reset below: ru_maxrss would include the parent's peak before exec.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

before = rss_kib()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS to the current RSS
started = time.perf_counter()
result = run()
first = time.perf_counter() - started
peak_rss = peak_kib() - before
rows = len(result)
frame_mib = int(result.memory_usage(deep=True).sum()) / 2**20
del result
times = [first]
for _ in range(repeats - 1):
    started = time.perf_counter()
    run()
    times.append(time.perf_counter() - started)
tracemalloc.start()
run()
traced = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"call": call, "library": nl.__file__, "rows": rows, "best_s": min(times),
                  "times": times, "rss_mib": peak_rss / 1024, "traced_mib": traced / 2**20,
                  "frame_mib": frame_mib}))
"""


def measure(path: Path, call: str, repeats: int) -> dict[str, Any]:
    import notebook_llm

    # The child imports the same notebook_llm as this process (not one found
    # through its working directory or an editable install).
    root = str(Path(notebook_llm.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), call, str(repeats)],
                         capture_output=True, text=True, check=False, env=env, cwd=path.parent)
    if out.returncode:
        raise RuntimeError(f"{call} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per reader")
    p.add_argument("--keep", type=Path, default=None,
                   help="fill (or reuse, when it exists) this database file instead of a temp one")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nl-bench-usage-") as tmp:
        path = args.keep or Path(tmp) / "calls.db"
        if not path.exists():
            seconds = fill(path, args.rows)
            print(f"filled {path} with {args.rows:,} calls in {seconds:.1f} s "
                  f"({path.stat().st_size / 2**20:.0f} MiB)")
        calls = ["usage", "usage:7d", *(f"costs:{by}" for by in BYS), "usage:all"]
        results = [measure(path, call, args.repeats) for call in calls]
        print(f"library: {results[0]['library']}")
        print(f"\n{'reader':<16}{'rows out':>9}{'best s':>9}{'peak RSS +MiB':>15}"
              f"{'traced MiB':>12}{'result MiB':>12}  targets: {TARGET_S} s, {TARGET_MB:.0f} MB")
        for r in results:
            ok = r["best_s"] < TARGET_S and max(r["rss_mib"], r["traced_mib"]) < TARGET_MB
            if r["call"] == "usage:all":
                ok = None  # every call with its texts: reported, no target
            print(f"{r['call']:<16}{r['rows']:>9,}{r['best_s']:>9.3f}{r['rss_mib']:>15.1f}"
                  f"{r['traced_mib']:>12.1f}{r['frame_mib']:>12.1f}  "
                  f"{'(no target)' if ok is None else 'PASS' if ok else 'FAIL'}")
    report = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": args.rows,
              "python": sys.version.split()[0], "results": results}
    out = args.out or HERE / "results" / f"usage-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
