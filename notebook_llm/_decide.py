"""From a comparison to a decision: the quality/cost frontier and a recommendation.

``cmp.frontier()`` and ``cmp.recommend()`` (methods of
:class:`~notebook_llm.Comparison`) delegate here. Everything is computed from
the comparison's cells:

- **quality**: the mean score per sampled row (a row's runs averaged first) on
  the library's 0-1 scale. An answer that failed, or that the judge could not
  score, counts as 0: a model that errors does not pass by leaving rows out.
- **confidence interval**: a 95% percentile bootstrap of that mean over the
  sampled rows (2,000 resamples, a fixed seed, so the same comparison gives
  the same interval). It says how far the sample could be from the full data;
  it does not cover the judge's own error.
- **cost**: the mean cost of one answer (the models' calls only, never the
  judge's), times 1,000 for the frontier and times ``rows`` for a projection.
- **latency**: the median (p50) of the answers' total latency.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from notebook_llm.core.errors import NoModelQualifiesError
from notebook_llm.core.money import format_usd

if TYPE_CHECKING:
    import pandas as pd

    from notebook_llm._compare import Comparison

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "INTERVAL_METHOD",
    "Recommendation",
    "bootstrap_interval",
    "frontier",
    "frontier_table",
    "pareto_mask",
    "recommend",
]

BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the bootstrap interval."""

INTERVAL_METHOD = "95% percentile bootstrap over the sampled rows"
"""How :attr:`Recommendation.ci_low` / :attr:`Recommendation.ci_high` are computed."""

_SEED = 20240607


def bootstrap_interval(
    values: Sequence[float], *, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean of ``values`` (fixed seed).

    One value gives ``(value, value)``; none gives ``(nan, nan)``.
    """
    import numpy as np

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (math.nan, math.nan)
    if data.size == 1:
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(_SEED)
    means = rng.choice(data, size=(resamples, data.size), replace=True).mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (float(low), float(high))


def pareto_mask(quality: Sequence[float], cost: Sequence[float]) -> list[bool]:
    """Which points no other point beats: at least as good and as cheap, better in one.

    A point with an unknown (NaN) quality or cost is never on the front.
    """
    points = list(zip(quality, cost, strict=True))
    mask = []
    for i, (q, c) in enumerate(points):
        if math.isnan(q) or math.isnan(c):
            mask.append(False)
            continue
        dominated = any(
            j != i and not (math.isnan(q2) or math.isnan(c2))
            and q2 >= q and c2 <= c and (q2 > q or c2 < c)
            for j, (q2, c2) in enumerate(points)
        )
        mask.append(not dominated)
    return mask


def _row_scores(comparison: Comparison, model: str) -> list[float]:
    """One score per sampled row (prompt): the mean of its runs, failures as 0."""
    scores = []
    for p in range(len(comparison.prompts)):
        runs = [c for c in comparison.cells if c.model == model and c.prompt_index == p]
        scores.append(sum(c.score or 0.0 for c in runs) / len(runs) if runs else 0.0)
    return scores


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def frontier_table(comparison: Comparison) -> pd.DataFrame:
    """One row per model: quality (with its interval), $ per 1,000 rows, p50 latency,
    errors, and whether it is on the quality/cost and quality/latency Pareto fronts."""
    import pandas as pd

    if not comparison.scored:
        raise ValueError(
            "this comparison has no scores: run compare(..., scorer=f) or "
            "compare(..., judge='provider:model') to measure quality first"
        )
    rows = []
    for model in comparison.models:
        cells = [c for c in comparison.cells if c.model == model]
        done = [c.completion for c in cells if c.completion is not None and c.error is None]
        costs = [c.cost_usd for c in done]
        known = bool(costs) and all(cost is not None for cost in costs)
        per_row = sum(cost or 0.0 for cost in costs) / len(costs) if known else math.nan
        latency = [c.latency_s for c in done if c.latency_s is not None]
        scores = _row_scores(comparison, model)
        low, high = bootstrap_interval(scores)
        rows.append({
            "model": model,
            "quality": sum(scores) / len(scores) if scores else math.nan,
            "quality_low": low,
            "quality_high": high,
            "cost_per_1k_rows_usd": per_row * 1000,
            "latency_p50_s": _median(latency),
            "sampled_rows": len(scores),
            "errors": sum(c.error is not None for c in cells),
        })
    frame = pd.DataFrame(rows)
    frame["pareto"] = pareto_mask(list(frame["quality"]), list(frame["cost_per_1k_rows_usd"]))
    frame["pareto_latency"] = pareto_mask(list(frame["quality"]), list(frame["latency_p50_s"]))
    return frame.set_index("model")


def frontier(comparison: Comparison, *, plot: bool = True, ax: Any = None) -> pd.DataFrame:
    """:func:`frontier_table`, drawn with :func:`notebook_llm._plots.plot_frontier`
    when ``plot`` (into ``ax``, a pair of Axes, when given)."""
    table = frontier_table(comparison)
    if plot:
        from notebook_llm._plots import plot_frontier

        plot_frontier(table, axes=ax)
    return table


@dataclass(frozen=True)
class Recommendation:
    """The cheapest model that meets the bar, with the evidence.

    ``nl.batch(df, model=rec.model, ...)`` runs it.
    """

    model: str
    """``provider:model``: pass it as ``model=``."""
    score: float
    """Mean quality over the sampled rows, 0-1."""
    ci_low: float
    """Lower end of the 95% interval of :attr:`score` (see :attr:`interval_method`)."""
    ci_high: float
    """Upper end of the 95% interval of :attr:`score`."""
    sampled_rows: int
    """How many rows the comparison scored."""
    cost_per_1k_rows_usd: float | None
    """Dollars per 1,000 rows (the model's calls only; ``None``: not priced)."""
    latency_p50_s: float | None
    """Median latency of one answer, in seconds."""
    rows: int | None
    """The full data's size, when ``rows=`` was given."""
    projected_cost_usd: float | None
    """:attr:`cost_per_1k_rows_usd` scaled to :attr:`rows` (``None`` without ``rows=``)."""
    min_quality: float
    max_latency_s: float | None
    reason: str
    """Why this model: one sentence."""
    interval_method: str = INTERVAL_METHOD
    table: Any = field(default=None, repr=False, compare=False)
    """The frontier table the choice was made from (a DataFrame)."""

    def __str__(self) -> str:
        cost = (format_usd(self.cost_per_1k_rows_usd)
                if self.cost_per_1k_rows_usd is not None else "unpriced")
        parts = [
            f"{self.model}: quality {self.score:.2f} "
            f"(95% CI {self.ci_low:.2f}-{self.ci_high:.2f}, {self.sampled_rows} rows)",
            f"{cost} per 1,000 rows",
        ]
        if self.latency_p50_s is not None and not math.isnan(self.latency_p50_s):
            parts.append(f"p50 {self.latency_p50_s:.2f}s")
        if self.rows is not None:
            projected = (format_usd(self.projected_cost_usd)
                         if self.projected_cost_usd is not None else "unpriced")
            parts.append(f"projected {projected} for {self.rows:,} rows")
        return " · ".join(parts) + f". {self.reason}"

    def _repr_html_(self) -> str:
        return f"<p><b>Recommended</b>: {html.escape(str(self))}</p>"


def _rows_of(rows: Any) -> int | None:
    if rows is None:
        return None
    if isinstance(rows, bool):
        raise TypeError("rows= takes the full data's row count (an int) or the data itself")
    if isinstance(rows, int):
        if rows < 0:
            raise ValueError("rows= must be 0 or more")
        return rows
    try:
        return len(rows)
    except TypeError:
        raise TypeError(
            "rows= takes the full data's row count (an int) or the data itself "
            f"(a DataFrame or a list), not {type(rows).__name__}"
        ) from None


def _num(value: Any) -> float | None:
    return None if value is None or math.isnan(float(value)) else float(value)


def recommend(
    comparison: Comparison,
    *,
    min_quality: float = 0.9,
    max_latency_s: float | None = None,
    rows: Any = None,
    strict: bool = False,
) -> Recommendation:
    """The cheapest model whose quality is at least ``min_quality``.

    Args:
        min_quality: the bar, 0-1, on the mean score (``strict=True``: on the
            lower end of its 95% interval, so a small lucky sample does not pass).
        max_latency_s: also require a p50 latency at most this.
        rows: the full data's size (an int, or the data itself) for
            :attr:`Recommendation.projected_cost_usd`.

    Among the models that pass, the cheapest per row wins; a tie (free local
    models) goes to the better score, then the lower latency. A model whose
    price is unknown is only chosen when no priced model passes, and the
    reason says so.

    Raises:
        NoModelQualifiesError: no model passes; the message names the closest.
    """
    if not 0.0 <= min_quality <= 1.0:
        raise ValueError(f"min_quality is on the 0-1 score scale, not {min_quality!r}")
    if max_latency_s is not None and max_latency_s <= 0:
        raise ValueError("max_latency_s must be a positive number of seconds")
    full_rows = _rows_of(rows)
    table = frontier_table(comparison)
    measure = "quality_low" if strict else "quality"
    fast = table if max_latency_s is None else table[table["latency_p50_s"] <= max_latency_s]
    passing = fast[fast[measure] >= min_quality]
    if passing.empty:
        pool = fast if not fast.empty else table
        closest = str(pool[measure].idxmax()) if pool[measure].notna().any() else None
        raise NoModelQualifiesError(
            _none_message(table, closest, min_quality, max_latency_s, strict),
            closest=closest, min_quality=min_quality,
        )
    priced = passing[passing["cost_per_1k_rows_usd"].notna()]
    pool = priced if not priced.empty else passing
    ordered = pool.assign(_neg_quality=-pool["quality"]).sort_values(
        ["cost_per_1k_rows_usd", "_neg_quality", "latency_p50_s"], na_position="last"
    )
    best = str(ordered.index[0])
    row = table.loc[best]
    per_1k = _num(row["cost_per_1k_rows_usd"])
    bar = f"{'the lower end of its interval' if strict else 'its score'} ≥ {min_quality:g}"
    if priced.empty:
        reason = (f"No model that passes is priced; {best} has the best score among "
                  f"{len(passing)} that pass ({bar}).")
    elif len(passing) == 1:
        reason = f"The only model of {len(table)} with {bar}."
    else:
        reason = f"The cheapest per row of {len(passing)} models with {bar}."
    return Recommendation(
        model=best,
        score=float(row["quality"]),
        ci_low=float(row["quality_low"]),
        ci_high=float(row["quality_high"]),
        sampled_rows=int(row["sampled_rows"]),
        cost_per_1k_rows_usd=per_1k,
        latency_p50_s=_num(row["latency_p50_s"]),
        rows=full_rows,
        projected_cost_usd=(None if per_1k is None or full_rows is None
                            else per_1k * full_rows / 1000),
        min_quality=min_quality,
        max_latency_s=max_latency_s,
        reason=reason,
        table=table,
    )


def _none_message(
    table: pd.DataFrame, closest: str | None, min_quality: float,
    max_latency_s: float | None, strict: bool,
) -> str:  # fmt: skip
    bar = f"quality {'(lower 95% bound) ' if strict else ''}≥ {min_quality:g}"
    if max_latency_s is not None:
        bar += f" with p50 latency ≤ {max_latency_s:g}s"
    if closest is None:
        return f"No model reaches {bar}: no answer was scored. Check the comparison's errors"
    row = table.loc[closest]
    cost = _num(row["cost_per_1k_rows_usd"])
    latency = _num(row["latency_p50_s"])
    return (
        f"No model reaches {bar}. The closest is {closest!r} at {row['quality']:.2f} "
        f"(95% CI {row['quality_low']:.2f}-{row['quality_high']:.2f}), "
        f"{format_usd(cost) if cost is not None else 'unpriced'} per 1,000 rows"
        f"{f', p50 {latency:.2f}s' if latency is not None else ''}. Lower min_quality"
        f"{' or raise max_latency_s' if max_latency_s is not None else ''}, improve the "
        "prompt, or compare more models"
    )
