"""Full-text search over a call log of 100,000 calls: ``nl.logs(q=...)`` per query.

Fills a fresh SQLite file through the real call log writer (the rows of
``bench_usage.fake_calls``: 60 days, 8 models, 1-5 messages, answers of
100-1,500 characters), with prose drawn from a 5,000-word vocabulary in
Zipf's proportions (a few words everywhere, most words rare), so that queries
range from rare to very common. Then, for each query, in this process:

- ``search``: ``nl.logs(20, q=...)``, the public path (ranked rowids, their
  rows, the excerpts with marks, the DataFrame), best of ``--repeats``;
- ``baseline``: the same 20 calls found without the index, by
  ``LIKE '%word%'`` over prompts and answers (what a log without FTS does),
  also best of ``--repeats``; the ratio is search / baseline.

Run: ``.venv/bin/python bench/bench_fts.py [--rows 100000] [--repeats 5] [--keep FILE]``.
The target is under 50 ms per query. Results go to ``bench/results/fts-<time>.json``
as well as stdout.

``--writer`` measures instead what the index costs, in CPU time per row
(``pthread_getcpuclockid`` / ``thread_time``, so other processes on the
machine do not count), best of ``--repeats``: the call log's writer thread
(the call path: the index is not written there), and catching the index up
(``store.search.catch_up``: the writer when idle, or a search), for the
benchmark server's call (``run_core.py``: "Say hello", a short answer) and a
realistic one (a 400-character question, a 1,000-character answer).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_usage import fake_calls  # noqa: E402

TARGET_MS = 50.0
COMMON = ("the of and to in is it that for you with on as are this be at or by from".split())
# (query, what it shows); the words come from the vocabulary built below.
QUERIES = [
    ("refund", "a rare word (about 1 call in 200)"),
    ("w0042", "a common word (about 1 call in 5)"),
    ("w0003", "a very common word (most calls)"),
    ('"w0042 w0043"', "a phrase"),
    ("refund OR invoice", "OR of two rare words"),
    ("refun*", "a prefix (refund, refunds...)"),
    ("w004*", "a broad prefix: 10 words, 9 calls in 10"),
    ("refund NOT invoice", "NOT"),
]
FILTERED = [
    ({"q": "w0042", "model": "openai:gpt-4o-mini"}, "a common word, one model"),
    ({"q": "w0042", "since": "7d"}, "a common word, the last 7 days"),
    ({"q": "refund", "tag": "prod"}, "a rare word, one tag"),
]


def _vocabulary() -> tuple[list[str], list[float]]:
    words = [*COMMON, *(f"w{i:04d}" for i in range(5000))]
    weights = [1.0 / (rank + 1) for rank in range(len(words))]  # Zipf
    return words, weights


def _prose(rng: random.Random, words: list[str], cum: list[float], chars: int) -> str:
    # Words average about 5 characters with their space.
    return " ".join(rng.choices(words, cum_weights=cum, k=max(1, chars // 5)))


def fill(path: Path, rows: int, seed: int = 0) -> float:
    """Write ``rows`` calls through the call log writer; seconds taken."""
    from itertools import accumulate

    from notebook_llm.store.log import CallLog

    rng = random.Random(seed)
    words, weights = _vocabulary()
    cum = list(accumulate(weights))
    calls = fake_calls(rows, seed)
    for call in calls:
        for message in call["messages_json"]:
            message["content"] = _prose(rng, words, cum, len(message["content"]))
        if call.get("response_text"):
            text = _prose(rng, words, cum, len(call["response_text"]))
            if rng.random() < 0.005:
                text += " refund"
            if rng.random() < 0.005:
                text += " invoice"
            call["response_text"] = text
    started = time.perf_counter()
    log = CallLog(path, register_atexit=False)
    for call in calls:
        log.record(call)
    if not log.flush(timeout=1200) or log.dropped or log.errors:
        raise RuntimeError(f"the call log lost rows: {log.dropped}, {list(log.errors)[:3]}")
    log.close()
    return time.perf_counter() - started


def best(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times) * 1000, result


def _like_baseline(path: Path, word: str) -> Callable[[], Any]:
    """The 20 newest calls that mention ``word``, found by scanning the text."""
    from notebook_llm.store.log import call_log

    store = call_log(path).store
    pattern = f"%{word}%"
    return lambda: store.tuples(
        "SELECT rowid FROM calls WHERE response_text LIKE ? OR messages_json LIKE ?"
        " ORDER BY created_at DESC LIMIT 20", (pattern, pattern))


def _writer_cpu_per_row(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Microseconds of CPU per row: the writer thread, then catching the index up."""
    import threading

    from notebook_llm.store.log import CallLog
    from notebook_llm.store.search import catch_up_all

    with tempfile.TemporaryDirectory() as tmp:
        log = CallLog(Path(tmp) / "w.db", register_atexit=False)
        log.record(rows[0])
        log.flush()
        catch_up_all(log.store)
        writer = next(t for t in threading.enumerate() if t.name == "notebook-llm-call-log")
        clock = time.pthread_getcpuclockid(writer.ident or 0)
        started = time.clock_gettime(clock)
        for row in rows:
            log.record(row)
        log.flush(timeout=600)
        written = time.clock_gettime(clock) - started
        started = time.thread_time()
        catch_up_all(log.store)
        indexed = time.thread_time() - started
        log.close()
    return written / len(rows) * 1e6, indexed / len(rows) * 1e6


def writer_cost(repeats: int, count: int = 20_000) -> list[dict[str, Any]]:
    rng = random.Random(1)
    words, weights = _vocabulary()
    from itertools import accumulate

    cum = list(accumulate(weights))
    shapes = {
        "run_core call": lambda: {
            "model": "openai:gpt-4o-mini", "provider": "openai",
            "messages_json": [{"role": "user", "content": "Say hello"}],
            "response_text": "Hello! How can I help you today? " * 2, "input_tokens": 9,
            "output_tokens": 18, "cost_usd": 1e-5, "cost_status": "priced"},
        "realistic call": lambda: {
            "model": "openai:gpt-4o-mini", "provider": "openai",
            "messages_json": [{"role": "user", "content": _prose(rng, words, cum, 400)}],
            "response_text": _prose(rng, words, cum, 1000), "input_tokens": 100,
            "output_tokens": 250, "cost_usd": 1e-4, "cost_status": "priced"},
    }
    out = []
    print(f"writer thread CPU per row, best of {repeats}, {count:,} rows each\n")
    print(f"{'row':<16} {'writer us':>10} {'catch-up us':>12}")
    for name, make in shapes.items():
        rows = [make() for _ in range(count)]
        measured = [_writer_cpu_per_row(rows) for _ in range(repeats)]
        a, b = min(m[0] for m in measured), min(m[1] for m in measured)
        print(f"{name:<16} {a:10.1f} {b:12.1f}")
        out.append({"row": name, "writer_us": a, "catch_up_us": b})
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--keep", type=Path, default=None, help="use or keep this database file")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--writer", action="store_true",
                   help="measure what the index costs the call log writer instead")
    args = p.parse_args(argv)
    if args.writer:
        results = writer_cost(args.repeats)
        out = args.out or HERE / "results" / (
            f"fts-writer-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {out}")
        return

    import pandas  # noqa: F401 - loaded before timing, as in any notebook that shows frames

    import notebook_llm as nl
    from notebook_llm.store.log import call_log

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "calls.db"
        if not path.exists():
            seconds = fill(path, args.rows)
            print(f"filled {args.rows:,} calls in {seconds:.1f} s "
                  f"({path.stat().st_size / 2**20:.0f} MiB)")
        store = call_log(path).store
        from notebook_llm.store.search import catch_up_all

        started = time.perf_counter()
        indexed = catch_up_all(store)  # what the writer does when idle, or the first search
        if indexed:
            print(f"indexed {indexed:,} calls in {time.perf_counter() - started:.1f} s")
        total = store.tuples("SELECT COUNT(*) FROM calls")[0][0]
        print(f"{total:,} calls; best of {args.repeats}; target < {TARGET_MS:.0f} ms per query\n")
        print(f"{'query':<34} {'hits':>7} {'search ms':>10} {'LIKE ms':>9} {'ratio':>7}  what")
        results = []
        for query, what in [*QUERIES, *FILTERED]:
            options = query if isinstance(query, dict) else {"q": query}
            hits = store.tuples("SELECT COUNT(*) FROM calls_fts WHERE calls_fts MATCH ?",
                                (options["q"],))[0][0]
            ms, found = best(functools.partial(nl.logs, 20, db_path=path, **options),
                             args.repeats)
            word = str(options["q"]).split()[0].strip('"*')
            base_ms = None
            if isinstance(query, str) and query.isalnum():
                base_ms, _ = best(_like_baseline(path, word), max(1, args.repeats // 2))
            label = json.dumps(options) if isinstance(query, dict) else query
            ratio = f"{ms / base_ms:.3f}" if base_ms else "-"
            flag = "" if ms < TARGET_MS else "  OVER"
            base = f"{base_ms:9.1f}" if base_ms else f"{'-':>9}"
            print(f"{label:<34} {hits:>7,} {ms:10.1f} {base} {ratio:>7}  {what}{flag}")
            results.append({"query": options, "hits": hits, "search_ms": ms,
                            "like_ms": base_ms, "rows_returned": len(found)})
        out = args.out or HERE / "results" / (
            f"fts-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rows": total, "results": results}, indent=2))
        print(f"\nwrote {out}")
        call_log(path).close()


if __name__ == "__main__":
    main()
