"""Matplotlib charts: DataFrames or arrays in, Axes out. A leaf: it imports nothing
from the package, and the features compute what is drawn.

matplotlib is imported inside each function. Functions draw into ``ax`` when
given, else into a new figure, and return the Axes (as pandas' ``.plot`` does,
so an inline backend shows the figure once). They never call ``plt.show()``
and never choose a backend: set ``MPLBACKEND=Agg`` (or ``matplotlib.use``)
for headless use.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "bar_panels",
    "new_axes",
    "plot_costs",
    "plot_embeddings",
    "plot_similarity",
    "plot_usage_over_time",
]


def new_axes(ax: Axes | None = None, figsize: tuple[float, float] = (7.0, 3.5)) -> Axes:
    """``ax`` itself, or the Axes of a new pyplot figure of ``figsize`` inches."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _figure, created = plt.subplots(
        figsize=figsize, layout="constrained", subplot_kw={"axes_class": _quiet_classes()[0]}
    )
    return created


@functools.cache
def _quiet_classes() -> tuple[type[Axes], type[Figure]]:
    """An Axes and a Figure that show as their picture, once, never as a repr.

    A notebook displays the value of a cell's last line: for a plain Axes
    that is ``<Axes: title=...>`` printed above the figure, and a returned
    pyplot Figure is drawn twice (as the value, and again by the inline
    backend at the end of the cell). These subclasses' ``_ipython_display_``
    (see `_display_figure`) shows the picture once instead. Everything else
    is plain matplotlib.
    """
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    class QuietAxes(Axes):
        def _ipython_display_(self) -> None:
            _display_figure(self.get_figure(root=True))

    class QuietFigure(Figure):
        def _ipython_display_(self) -> None:
            _display_figure(self)

    QuietAxes.__name__ = QuietAxes.__qualname__ = "Axes"
    QuietFigure.__name__ = QuietFigure.__qualname__ = "Figure"
    return QuietAxes, QuietFigure


def _display_figure(figure: Any) -> None:
    """Show ``figure`` once in a notebook.

    With an interactive backend (a window, ipympl) the backend already shows
    it. With the inline backend it is drawn here and handed back from pyplot,
    so the end of the cell does not draw it again.
    """
    if figure is None:
        return
    import io

    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib import _pylab_helpers

    managed = any(m.canvas.figure is figure for m in _pylab_helpers.Gcf.get_all_fig_managers())
    if managed:
        if "inline" not in matplotlib.get_backend().lower():
            return
        plt.close(figure)
    from IPython.display import Image, display

    png = io.BytesIO()
    figure.savefig(png, format="png", bbox_inches="tight")
    display(Image(data=png.getvalue(), format="png"))  # type: ignore[no-untyped-call]


def _empty(ax: Axes, title: str, message: str = "No calls logged") -> Axes:
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_costs(
    frame: pd.DataFrame, by: str, *, title: str | None = None, ax: Axes | None = None
) -> Axes:
    """Bar chart of a costs table: one bar per ``frame[by]``, heights ``cost_usd``.

    Groups with unpriced calls (``unpriced_calls``) are hatched and labelled
    ``+N unpriced``, so an unknown cost never looks like a free one.

    Args:
        frame: :func:`notebook_llm.costs`'s table (``by``, ``cost_usd``,
            ``unpriced_calls``).
        by: the column that names the groups.
        title: the chart's title (default: "Cost by <by>").
        ax: draw into these Axes instead of a new figure.

    Returns:
        The Axes (``ax.figure`` is the Figure).
    """
    ax = new_axes(ax)
    title = title or f"Cost by {by}"
    if frame.empty:
        return _empty(ax, title)
    if not frame["cost_usd"].fillna(0.0).any() and not frame["unpriced_calls"].any():
        return _empty(ax, title, "No priced calls yet: every call so far was free")
    if by == "day":
        frame = frame.sort_values("day")
    labels = [str(value) for value in frame[by]]
    values = frame["cost_usd"].fillna(0.0).tolist()
    bars = ax.bar(labels, values, color="#4c72b0")
    for bar, unpriced in zip(bars, frame["unpriced_calls"].tolist(), strict=True):
        if unpriced:
            bar.set_hatch("//")
            ax.annotate(f"+{unpriced} unpriced", (bar.get_x() + bar.get_width() / 2,
                                                  bar.get_height()),
                        ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                        textcoords="offset points")  # fmt: skip
    ax.set_title(title)
    ax.set_ylabel("cost (USD)")
    ax.tick_params(axis="x", labelrotation=30 if len(labels) > 3 else 0)
    ax.margins(y=0.15)
    ax.set_ylim(bottom=0)  # no negative dollars, even when every bar is 0
    return ax


def plot_usage_over_time(frame: pd.DataFrame, freq: str = "D", *, ax: Axes | None = None) -> Axes:
    """Cost (bars, left axis) and tokens (line, right axis) per period of a usage table.

    Args:
        frame: :func:`notebook_llm.usage`'s table (``time``, ``cost_usd``,
            ``total_tokens``).
        freq: a pandas offset alias for the period: ``"h"``, ``"D"``, ``"W"``, ``"MS"``...
        ax: draw into these Axes instead of a new figure.

    Returns:
        The cost Axes; the tokens are on its twin (``ax.right_ax``).
    """
    ax = new_axes(ax)
    title = "Cost and tokens over time"
    if frame.empty:
        return _empty(ax, title)
    series = (
        frame.set_index("time")[["cost_usd", "total_tokens"]]
        .resample(freq)
        .agg({"cost_usd": "sum", "total_tokens": "sum"})
    )
    x = series.index.to_pydatetime()
    # Bars as wide as 80% of one period (matplotlib date units are days).
    if len(series) > 1:
        width = (series.index[1] - series.index[0]).total_seconds() / 86400 * 0.8
    else:
        width = 0.8
    ax.bar(x, series["cost_usd"].tolist(), width=width, color="#4c72b0", label="cost (USD)",
           align="edge")
    ax.set_ylabel("cost (USD)")
    ax.set_ylim(bottom=0)
    tokens_ax = ax.twinx()
    tokens_ax.plot(x, series["total_tokens"].tolist(), color="#dd8452", marker="o",
                   label="tokens")
    tokens_ax.set_ylabel("tokens")
    tokens_ax.set_ylim(bottom=0)
    ax.right_ax = tokens_ax  # type: ignore[attr-defined]  # pandas' name for the twin; Axes lacks it
    ax.set_title(title)
    ax.figure.autofmt_xdate()
    return ax


def bar_panels(
    df: pd.DataFrame,
    panels: list[tuple[str, str]],
    *,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """One small bar chart per column of ``df``, side by side, the index on each x axis.

    Used by ``compare(...).plot()``. A missing column or value (``None``/NaN)
    draws no bar and is labelled ``n/a``, so unknown never looks like zero.

    Args:
        df: one row per bar (e.g. per model), indexed by the bar labels.
        panels: ``(column, axis title)`` pairs, one panel each.
        title: the figure's title.
        figsize: inches; by default about 3.2 wide per panel.

    Returns:
        The Figure (``figure.axes`` holds one Axes per panel).
    """
    import matplotlib.pyplot as plt

    count = max(len(panels), 1)
    quiet_axes, quiet_figure = _quiet_classes()
    figure, grid = plt.subplots(1, count, figsize=figsize or (3.2 * count, 3.2),
                                layout="constrained", squeeze=False, FigureClass=quiet_figure,
                                subplot_kw={"axes_class": quiet_axes})
    labels = [_short(str(label)) for label in df.index]
    for ax, (column, label) in zip(grid[0], panels, strict=False):
        values = list(df[column]) if column in df.columns else [None] * len(labels)
        known = [_number(value) for value in values]
        bars = ax.bar(labels, [0.0 if value is None else value for value in known],
                      color="#4c72b0")
        for bar, value in zip(bars, known, strict=True):
            if value is None:
                ax.annotate("n/a", (bar.get_x() + bar.get_width() / 2, 0), ha="center",
                            va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30 if len(labels) > 2 else 0, labelsize=8)
    if title:
        figure.suptitle(title)
    return figure


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN is unknown


# -- embeddings -------------------------------------------------------------------


def _short(text: str, limit: int = 24) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_embeddings(
    coords: Any,
    labels: Sequence[str] | None = None,
    colors: Sequence[Any] | None = None,
    *,
    title: str | None = None,
    color_label: str | None = None,
    ax: Axes | None = None,
    annotate: bool | None = None,
    **scatter_kwargs: Any,
) -> Axes:
    """A 2D map of points, e.g. embedded texts (what :meth:`Embeddings.plot` draws).

    Plain data in, Axes out: the caller projects its vectors to 2D and lines
    up the colour values with the points.

    Args:
        coords: ``n × 2`` coordinates, one row per point.
        labels: one text per point, drawn next to it (cut to 24 characters)
            when annotating.
        colors: one value per point: categories get a legend, more than 10
            distinct numbers a colour bar.
        title: the Axes' title.
        color_label: the legend's title or the colour bar's label.
        ax: draw into these Axes instead of a new figure.
        annotate: label points with ``labels`` (default: up to 40 points).
        **scatter_kwargs: passed to ``Axes.scatter``.

    Returns:
        The Axes.
    """
    import numpy as np

    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be n × 2; got shape {coords.shape}")
    values = None if colors is None else list(colors)
    if values is not None and len(values) != len(coords):
        raise ValueError(f"colors has {len(values)} values for {len(coords)} points")
    ax = new_axes(ax, figsize=(7.0, 6.0))
    numeric = values is not None and all(
        isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values
    )
    if values is None:
        ax.scatter(coords[:, 0], coords[:, 1], **scatter_kwargs)
    elif numeric and len(set(values)) > 10:
        points = ax.scatter(coords[:, 0], coords[:, 1], c=values, **scatter_kwargs)
        ax.figure.colorbar(points, ax=ax, label=color_label)
    else:
        keys = np.asarray([str(v) for v in values])
        for category in dict.fromkeys(keys.tolist()):
            mask = keys == category
            ax.scatter(coords[mask, 0], coords[mask, 1], label=category, **scatter_kwargs)
        ax.legend(title=color_label, fontsize="small")
    if annotate is None:
        annotate = len(coords) <= 40
    if annotate and labels is not None:
        for (x, y), text in zip(coords, labels, strict=True):
            ax.annotate(_short(text), (x, y), fontsize=7, alpha=0.8,
                        xytext=(3, 3), textcoords="offset points")
    if title is not None:
        ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_similarity(matrix: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """A similarity matrix (a labelled DataFrame) as a heat map; returns the Axes.

    Tick labels are shown up to 40 rows or columns.
    """
    size = min(12.0, 3.0 + 0.3 * max(matrix.shape))
    ax = new_axes(ax, figsize=(size + 1.5, size))
    values = matrix.to_numpy()
    low = min(0.0, float(values.min())) if values.size else 0.0
    image = ax.imshow(values, vmin=low, vmax=1.0, cmap="viridis", aspect="auto")
    ax.figure.colorbar(image, ax=ax, label="cosine similarity")
    if len(matrix.index) <= 40:
        ax.set_yticks(range(len(matrix.index)), [str(label) for label in matrix.index])
    else:
        ax.set_yticks([])
    if len(matrix.columns) <= 40:
        ax.set_xticks(range(len(matrix.columns)), [str(label) for label in matrix.columns])
        ax.tick_params(axis="x", labelrotation=90)
    else:
        ax.set_xticks([])
    return ax
