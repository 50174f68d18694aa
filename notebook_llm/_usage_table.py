"""``%llm_usage``'s table: :func:`notebook_llm.costs` with a total row, as HTML
and as terminal text."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from notebook_llm._render import terminal_text
from notebook_llm._usage import costs
from notebook_llm.core.money import format_usd

if TYPE_CHECKING:
    import pandas as pd

    from notebook_llm.store.db import PathLike

__all__ = ["UsageTable", "usage_table"]


class UsageTable:
    """Cost totals as a small HTML table with a total row (what ``%llm_usage`` shows)."""

    def __init__(self, df: pd.DataFrame, by: str) -> None:
        self.df = df
        """The totals, as :func:`costs` returns them."""
        self.by = by

    def to_pandas(self) -> pd.DataFrame:
        """Same as :attr:`df`."""
        return self.df

    def _rows(self) -> tuple[list[str], list[list[object]]]:
        columns = [self.by, "calls", "input tokens", "output tokens", "cost", "unpriced",
                   "cached", "errors"]
        rows: list[list[object]] = []
        for row in self.df.itertuples(index=False):
            cost = row.cost_usd
            rows.append([getattr(row, self.by), row.calls, f"{row.input_tokens:,}",
                         f"{row.output_tokens:,}", "—" if cost != cost else format_usd(cost),
                         row.unpriced_calls or "", row.cached_calls or "", row.errors or ""])
        if len(self.df) > 1:
            df = self.df
            total = df["cost_usd"].sum(min_count=1)
            rows.append(["total", int(df["calls"].sum()), f"{int(df['input_tokens'].sum()):,}",
                         f"{int(df['output_tokens'].sum()):,}",
                         "—" if total != total else format_usd(float(total)),
                         int(df["unpriced_calls"].sum()) or "", int(df["cached_calls"].sum()) or "",
                         int(df["errors"].sum()) or ""])
        return columns, rows

    def _repr_html_(self) -> str:
        from notebook_llm._render import plain_table_html

        if self.df.empty:
            return "<p>No calls logged.</p>"
        columns, rows = self._rows()
        note = ""
        if int(self.df["unpriced_calls"].sum()):
            note = "<p><small>Unpriced calls (no known price) are not in the cost.</small></p>"
        return plain_table_html(columns, rows) + note

    def __repr__(self) -> str:
        if self.df.empty:
            return "No calls logged."
        columns, rows = self._rows()
        widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True))]
        lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
        return terminal_text("\n".join(line.rstrip() for line in lines))


def usage_table(
    by: str = "model",
    since: datetime | date | timedelta | str | None = None,
    until: datetime | date | timedelta | str | None = None,
    *,
    db_path: PathLike | None = None,
) -> UsageTable:
    """:func:`costs` as a displayable table with a total row (for ``%llm_usage``)."""
    return UsageTable(costs(by=by, since=since, until=until, db_path=db_path), by)
