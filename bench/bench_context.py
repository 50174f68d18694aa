"""Cards against pandas' repr: build time and size, in the same process.

    PYTHONPATH=. python bench/bench_context.py [--repeats 5] [--tokens 2000]

For each frame (scikit-learn's wine data, a long 200,000-row frame, a wide
50 x 600 frame, a small mixed-type frame) it times ``repr(df)`` (what ``{df}``
sent before cards: the baseline) and ``notebook_llm.card(df, max_tokens=N)``,
best of ``--repeats``, and prints the ratio card/repr, with the size of each
in estimated tokens. Also the figure path: a 6 x 4 inch matplotlib figure to
PNG through ``nl.card`` against ``fig.savefig`` to a buffer. Ratios, not
absolute times, are what compares across runs on these shared machines.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

import notebook_llm as nl
from notebook_llm.core.tokens import estimate_tokens


def best(function: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def frames() -> dict[str, pd.DataFrame]:
    from sklearn.datasets import load_wine

    rng = np.random.default_rng(0)
    n = 200_000
    return {
        "wine 178x14": load_wine(as_frame=True).frame,
        "long 200000x3": pd.DataFrame({
            "user": rng.integers(0, 5000, n),
            "plan": rng.choice(["free", "pro", "team"], n, p=[0.9, 0.09, 0.01]),
            "spend": rng.gamma(2.0, 10.0, n)}),
        "wide 50x600": pd.DataFrame(rng.normal(size=(50, 600)),
                                    columns=[f"f{i}" for i in range(600)]),
        "mixed 5x4": pd.DataFrame({"name": ["a", None, "c", "d", "e"],
                                   "when": pd.date_range("2024-01-01", periods=5),
                                   "x": [1.5, np.nan, 3.0, 4.0, 5.0],
                                   "tags": [["x"], [], None, ["y"], ["z"]]}),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=2000)
    args = parser.parse_args()
    print(f"{'frame':<16}{'repr ms':>9}{'card ms':>9}{'ratio':>7}{'repr tok':>10}{'card tok':>10}")
    for name, frame in frames().items():
        base = best(lambda frame=frame: repr(frame), args.repeats)
        card = best(lambda frame=frame: nl.card(frame, "df", args.tokens), args.repeats)
        text = nl.card(frame, "df", args.tokens).text  # type: ignore[union-attr]
        print(f"{name:<16}{base * 1e3:>9.1f}{card * 1e3:>9.1f}{card / base:>7.1f}"
              f"{estimate_tokens(repr(frame)):>10,}{estimate_tokens(text):>10,}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(np.arange(1000), np.sin(np.arange(1000) / 50))

    def savefig() -> None:
        figure.savefig(io.BytesIO(), format="png", dpi=100, bbox_inches="tight")

    base = best(savefig, args.repeats)
    card = best(lambda: nl.card(figure, "fig"), args.repeats)
    print(f"{'figure 6x4 in':<16}{base * 1e3:>9.1f}{card * 1e3:>9.1f}{card / base:>7.1f}"
          f"{'(savefig)':>10}{'(PNG)':>10}")


if __name__ == "__main__":
    main()
