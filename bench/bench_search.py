"""Brute-force top-10 search over 100,000 × 384 float32 vectors.

Measures, in one run:

- ``core``: ``matrix @ query`` plus :func:`notebook_llm.embeddings.top_k`
  (``np.argpartition``, then a sort of the 10 winners);
- ``baseline``: the same product plus a full ``np.argsort`` (the naive way),
  so the figure that matters is the ratio between the two;
- ``collection``: :meth:`Collection.search` with a query vector, once cold
  (the matrix is read from SQLite) and then warm (the matrix cached in memory,
  a DataFrame built for the answer).

Run: ``.venv/bin/python bench/bench_search.py [--rows 100000] [--dims 384] [--queries 50]``.
The target is a warm top-10 search in under 0.2 s. Results go to
``bench/results/search-<time>.json`` as well as stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from notebook_llm.embeddings import collection, top_k
from notebook_llm.store.db import Store

TARGET_S = 0.2
K = 10


def _timed(function: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def _matrix(rows: int, dims: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((rows, dims), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def _fill_collection(store: Store, matrix: np.ndarray) -> None:
    """Write the vectors straight into a collection's rows (no embedding model involved)."""
    coll = collection("bench", "llamacpp:all-minilm-l6-v2", db_path=store)
    now = datetime.now(timezone.utc).isoformat()
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO collection_items "
            "(collection, id, content_hash, text, vector, metadata_json, updated_at) "
            "VALUES ('bench', ?, '', ?, ?, '{}', ?)",
            ((f"doc{i:06d}", f"document {i}", row.astype("<f4").tobytes(), now)
             for i, row in enumerate(matrix)),
        )
        conn.execute(
            "UPDATE collections SET dims = ?, meta_json = ? WHERE name = ?",
            (matrix.shape[1], json.dumps({"version": 1}), coll.name),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    matrix = _matrix(args.rows, args.dims)
    queries = _matrix(args.queries, args.dims, seed=1)
    print(f"matrix: {args.rows:,} × {args.dims} float32 = {matrix.nbytes / 1e6:.1f} MB "
          f"(numpy {np.__version__}, {args.queries} queries, k={K})")

    # Same answers both ways.
    for query in queries[:5]:
        scores = matrix @ query
        assert top_k(scores, K).tolist() == np.argsort(-scores, kind="stable")[:K].tolist()

    it = iter(range(10**9))

    def core() -> object:
        return top_k(matrix @ queries[next(it) % args.queries], K)

    def baseline() -> object:
        return np.argsort(-(matrix @ queries[next(it) % args.queries]))[:K]

    core()
    baseline()
    # Interleave rounds so both see the same machine load.
    core_times: list[float] = []
    base_times: list[float] = []
    for _ in range(5):
        core_times += _timed(core, args.queries // 5)
        base_times += _timed(baseline, args.queries // 5)

    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "bench.db") as store:
        _fill_collection(store, matrix)
        coll = collection("bench", db_path=store)
        start = time.perf_counter()
        coll.search(queries[0], k=K)
        cold = time.perf_counter() - start
        warm_times = _timed(lambda: coll.search(queries[next(it) % args.queries], k=K),
                            args.queries)
        loaded = coll._load().matrix
        assert loaded.dtype == np.float32 and loaded.shape == matrix.shape

    def stats(times: list[float]) -> dict[str, float]:
        return {"median_s": statistics.median(times), "min_s": min(times),
                "p90_s": sorted(times)[int(len(times) * 0.9) - 1]}

    results = {
        "rows": args.rows,
        "dims": args.dims,
        "k": K,
        "matrix_mb": matrix.nbytes / 1e6,
        "core": stats(core_times),
        "baseline_argsort": stats(base_times),
        "collection_cold_s": cold,
        "collection_warm": stats(warm_times),
        "ratio_baseline_over_core": statistics.median(base_times) / statistics.median(core_times),
        "target_s": TARGET_S,
    }
    core_med = results["core"]["median_s"]
    warm_med = results["collection_warm"]["median_s"]
    print(f"core   (matmul + argpartition): median {core_med * 1e3:7.2f} ms  "
          f"p90 {results['core']['p90_s'] * 1e3:7.2f} ms")
    print(f"baseline (matmul + full argsort): median "
          f"{results['baseline_argsort']['median_s'] * 1e3:7.2f} ms  "
          f"-> core is {results['ratio_baseline_over_core']:.1f}x faster")
    print(f"Collection.search cold (SQLite read + search): {cold * 1e3:7.1f} ms")
    print(f"Collection.search warm (cached matrix, DataFrame out): median "
          f"{warm_med * 1e3:7.2f} ms  p90 {results['collection_warm']['p90_s'] * 1e3:7.2f} ms")
    ok = warm_med < TARGET_S and core_med < TARGET_S
    print(f"target < {TARGET_S * 1e3:.0f} ms: {'met' if ok else 'MISSED'}")

    out = args.out or Path(__file__).parent / "results" / (
        f"search-{datetime.now():%Y%m%d-%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
