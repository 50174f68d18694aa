"""Cards: what a model is told about a Python object, in a token budget.

``context=[df]``, ``%%llm --with df`` and ``{df}`` in a prompt send a card
instead of the object's repr (pandas' repr of 200 rows is 30 lines of ``...``):

- a DataFrame (pandas; polars through pandas where it converts) gets its
  shape, each column's dtype and null count, ``describe()``, its first rows
  and a stratified sample (rows from every class of its lowest-cardinality
  column, else rows spread evenly through the frame);
- a Series, dict, list, tuple, set or NumPy array gets a bounded summary;
- a matplotlib Figure or Axes becomes a PNG (an :class:`ImagePart`), as does
  a PIL image;
- anything else its ``repr``, cut to the budget.

A card never exceeds its budget (estimated with :mod:`notebook_llm.core.tokens`):
it first drops rows, then columns, then cuts the text, and says what it left out.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from notebook_llm.core.errors import InvalidRequestError
from notebook_llm.core.parts import PART_TYPES
from notebook_llm.core.tokens import CHARS_PER_TOKEN, estimate_tokens
from notebook_llm.core.types import ContentPart, ImagePart, TextPart

__all__ = [
    "DEFAULT_CONTEXT_TOKENS",
    "card",
    "card_text",
    "context_parts",
    "has_card",
    "is_figure",
]

DEFAULT_CONTEXT_TOKENS = 2_000
"""The budget of all context cards of one call together, unless set."""

MIN_CARD_TOKENS = 60
"""No card gets less than this, however many share the budget."""

_CELL_CHARS = 40  # longest cell value shown in a table


def _module(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def is_figure(obj: Any) -> bool:
    """A matplotlib Figure or Axes, or a PIL image (sent as a PNG)."""
    module = _module(obj)
    if module == "matplotlib":
        return hasattr(obj, "savefig") or hasattr(obj, "get_figure")
    return module == "PIL" and hasattr(obj, "save") and hasattr(obj, "mode")


def has_card(obj: Any) -> bool:
    """True for objects whose card says more than their repr: frames, series, arrays."""
    module = _module(obj)
    name = type(obj).__name__
    return (module in ("pandas", "polars") and name in ("DataFrame", "Series", "LazyFrame")) or (
        module == "numpy" and name == "ndarray"
    )


def figure_png(obj: Any, label: str = "") -> ImagePart:
    """A matplotlib Figure/Axes (or PIL image) as a PNG image part."""
    buffer = io.BytesIO()
    if _module(obj) == "PIL":
        obj.save(buffer, format="PNG")
        return ImagePart("image/png", buffer.getvalue(), label=label or "image")
    figure = obj if hasattr(obj, "savefig") else obj.get_figure()
    while figure is not None and not hasattr(figure, "savefig"):  # a SubFigure
        figure = getattr(figure, "figure", None)
    if figure is None:
        raise InvalidRequestError(f"{label or 'the Axes'} belongs to no figure: nothing to send")
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return ImagePart("image/png", buffer.getvalue(), label=label or "figure")


# -- tables -------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 1] + "…"


def _cell(value: Any, missing: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return missing
    if isinstance(value, float):
        return f"{value:.4g}"
    return _short(value)


def _table(frame: Any, missing: str = "NaN") -> str:
    """``frame`` as aligned text: floats to four significant digits, long cells cut."""
    apply = getattr(frame, "map", None) or frame.applymap  # DataFrame.map: pandas 2.1+
    try:
        shown = apply(lambda value: _cell(value, missing))
    except (TypeError, ValueError):
        shown = frame.astype(str)
    text: str = shown.to_string()
    return text


def _rows(frame: Any) -> str:
    """Rows as a table; with more than four columns turned on their side, so that
    each (often long) column name is written once."""
    if frame.shape[1] <= 4:
        return _table(frame)
    rotated = frame.T
    rotated.columns = [f"[{label}]" for label in frame.index]
    return _table(rotated)


def _stratified(frame: Any, rows: int) -> tuple[Any, str]:
    """``rows`` rows from every class of the lowest-cardinality column, else spread evenly."""
    if rows <= 0 or len(frame) <= rows:
        return frame.iloc[:0], ""
    best = None
    for column in frame.columns:
        series = frame[column]
        try:
            unique = series.nunique(dropna=True)
        except TypeError:  # unhashable cells (lists, dicts)
            continue
        if 1 < unique <= min(12, rows * 2) and (best is None or unique < best[1]):
            best = (column, unique)
    if best is not None:
        column, unique = best
        per = max(1, rows // unique)
        import numpy as np
        import pandas as pd

        codes, _ = pd.factorize(frame[column], sort=True)  # -1: a missing value
        order = np.random.default_rng(0).permutation(len(frame))
        shuffled = codes[order]
        positions = sorted(int(p) for code in range(unique)
                           for p in order[shuffled == code][:per])
        picked = frame.iloc[positions]
        return picked.iloc[: max(rows, unique)], f"sampled across {column!r}"
    step = len(frame) / rows
    positions = sorted({min(len(frame) - 1, int(i * step + step / 2)) for i in range(rows)})
    return frame.iloc[positions], "spread evenly"


def _columns_table(part: Any, stats: bool) -> str:
    """One row per column: dtype, nulls and (with ``stats``) ``describe()``."""
    import pandas as pd

    table = pd.DataFrame({"dtype": part.dtypes.astype(str), "nulls": part.isna().sum()})
    if stats and len(part):
        try:
            described = part.describe(include="all").T
        except ValueError:
            described = None
        if described is not None and len(described):
            keep = [c for c in ("unique", "top", "mean", "std", "min", "50%", "max")
                    if c in described.columns]
            table = table.join(described[keep].dropna(axis=1, how="all"))
    return _table(table, missing="")


def _frame_card(frame: Any, name: str, columns: int, rows: int) -> str:
    import pandas as pd

    n_rows, n_cols = frame.shape
    shown_cols = list(frame.columns[:columns])
    more_cols = n_cols - len(shown_cols)
    part = frame[shown_cols]
    lines = [f"{name}: pandas DataFrame, {n_rows:,} rows x {n_cols:,} columns"]
    if not isinstance(frame.index, pd.RangeIndex):
        lines.append(f"index: {frame.index.name or '(unnamed)'} ({frame.index.dtype})")
    stats = rows > 0
    lines += [f"columns ({'dtype, nulls, describe()' if stats else 'dtype, nulls'}):",
              _columns_table(part, stats)]
    if more_cols:
        lines.append(f"... {more_cols:,} more columns not shown: "
                     f"{', '.join(_short(c) for c in frame.columns[columns:columns + 8])}"
                     f"{', ...' if more_cols > 8 else ''}")
    if rows > 0 and n_rows:
        import pandas as pd

        head = min(rows, n_rows)
        sample, how = _stratified(part.iloc[head:], rows)
        picked = pd.concat([part.head(head), sample]) if len(sample) else part.head(head)
        what = f"first {head}" + (f", then {len(sample)} {how}" if len(sample) else "")
        rotated = " (one line per column)" if len(shown_cols) > 4 else ""
        lines += [f"rows ({what}){rotated}:", _rows(picked)]
    return "\n".join(lines)


def _fit(build: Callable[[int, int], str], columns: int, budget: int) -> str:
    """The richest card ``build(columns, rows)`` makes within ``budget`` tokens."""
    # No card shows more than 40 columns: their dtypes alone would fill most budgets.
    for rows, cols in ((5, 40), (3, 40), (3, 25), (2, 16), (1, 12), (0, 12), (0, 6)):
        text = build(min(cols, columns), rows)
        if estimate_tokens(text) <= budget:
            return text
    return _cut(build(min(6, columns), 0), budget)


def _cut(text: str, budget: int) -> str:
    limit = budget * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    note = f"\n[... cut to fit {budget} tokens]"
    return text[: max(0, limit - len(note))] + note


def _series_card(series: Any, name: str, budget: int) -> str:
    frame = series.to_frame(name=series.name if series.name is not None else "value")

    def build(columns: int, rows: int) -> str:
        head = (f"{name}: pandas Series {series.name!r}, {len(series):,} values, "
                f"dtype {series.dtype}, {int(series.isna().sum())} null")
        body = _frame_card(frame, name, 1, rows).split("\n", 1)[1]
        return head + "\n" + body

    return _fit(build, 1, budget)


def _array_card(array: Any, name: str, budget: int) -> str:
    import numpy as np

    lines = [f"{name}: numpy array, shape {array.shape}, dtype {array.dtype}"]
    if array.size and np.issubdtype(array.dtype, np.number) and not np.issubdtype(
            array.dtype, np.complexfloating):
        values = array.astype(float, copy=False)
        nan = int(np.isnan(values).sum())
        if nan < values.size:
            lines.append(f"min {np.nanmin(values):.4g}, max {np.nanmax(values):.4g}, "
                         f"mean {np.nanmean(values):.4g}, std {np.nanstd(values):.4g}, "
                         f"{nan} NaN")
    with np.printoptions(threshold=200, edgeitems=4, precision=4, linewidth=100):
        lines.append(repr(array))
    return _cut("\n".join(lines), budget)


def _listing(head: str, lines: Iterable[str], total: int, what: str, budget: int) -> str:
    """``head`` then as many ``lines`` as fit in ``budget``, then how many were left out."""
    out = [head]
    limit = budget * CHARS_PER_TOKEN - 40
    used = len(head)
    for shown, line in enumerate(lines):
        if used + len(line) > limit:
            out.append(f"  ... {total - shown:,} more {what}")
            break
        out.append(line)
        used += len(line) + 1
    return _cut("\n".join(out), budget)


def _mapping_card(mapping: Mapping[Any, Any], name: str, budget: int) -> str:
    head = f"{name}: {type(mapping).__name__} with {len(mapping):,} keys"
    lines = (f"  {key!r}: {_short_repr(value)}" for key, value in mapping.items())
    return _listing(head, lines, len(mapping), "keys", budget)


def _short_repr(value: Any, chars: int = 120) -> str:
    if has_card(value):
        shape = getattr(value, "shape", None)
        return f"<{type(value).__name__} shape={shape}>"
    text = repr(value).replace("\n", " ")
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _sequence_card(items: Iterable[Any], kind: str, name: str, budget: int) -> str:
    values = list(items)
    types: dict[str, int] = {}
    for value in values:
        types[type(value).__name__] = types.get(type(value).__name__, 0) + 1
    kinds = ", ".join(f"{count:,} {t}" for t, count in sorted(types.items(), key=lambda x: -x[1]))
    head = f"{name}: {kind} of {len(values):,} items ({kinds or 'empty'})"
    lines = (f"  [{i}] {_short_repr(value)}" for i, value in enumerate(values))
    return _listing(head, lines, len(values), "items", budget)


def _polars_as_pandas(obj: Any) -> Any:
    """A polars DataFrame or Series as pandas: through pyarrow when installed, else
    column by column through NumPy (no copy for numbers)."""
    import pandas as pd

    if type(obj).__name__ == "LazyFrame":
        obj = obj.collect()
    try:
        return obj.to_pandas()
    except ImportError:  # polars without pyarrow
        pass
    try:
        if type(obj).__name__ == "Series":
            return pd.Series(obj.to_numpy(), name=obj.name)
        return pd.DataFrame({name: obj.get_column(name).to_numpy() for name in obj.columns})
    except Exception:  # noqa: BLE001 - an exotic dtype: the card falls back to the repr
        return None


def card_text(obj: Any, name: str = "value", max_tokens: int = 1_000) -> str:
    """The card of ``obj`` as text, at most ``max_tokens`` tokens (estimated)."""
    budget = max(MIN_CARD_TOKENS, int(max_tokens))
    module = _module(obj)
    kind = type(obj).__name__
    if module == "polars":
        converted = _polars_as_pandas(obj)
        if converted is None:
            return _cut(f"{name}: polars {kind}, shape {getattr(obj, 'shape', '?')}\n{obj!r}",
                        budget)
        text = card_text(converted, name, budget)  # the same card, said to be polars
        return text.replace(f"{name}: pandas ", f"{name}: polars ", 1)
    if module == "pandas" and kind == "DataFrame":
        frame = obj
        return _fit(lambda cols, rows: _frame_card(frame, name, cols, rows), frame.shape[1],
                    budget)
    if module == "pandas" and kind == "Series":
        return _series_card(obj, name, budget)
    if module == "numpy" and kind == "ndarray":
        return _array_card(obj, name, budget)
    if isinstance(obj, Mapping):
        return _mapping_card(obj, name, budget)
    if isinstance(obj, (list, tuple, set, frozenset)):
        return _sequence_card(obj, kind, name, budget)
    if isinstance(obj, str):
        return _cut(f"{name}: str of {len(obj):,} characters\n{obj}", budget)
    try:
        text = repr(obj)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not fail the call
        text = f"<{kind}: repr failed: {type(exc).__name__}>"
    return _cut(f"{name}: {kind}\n{text}", budget)


def card(obj: Any, name: str | None = None, max_tokens: int = 1_000) -> ContentPart:
    """What the model is sent for ``obj``: a text card, or a PNG for a figure.

    Args:
        obj: a DataFrame, Series, dict, list, array, matplotlib Figure/Axes,
            PIL image or any object.
        name: what to call it in the card (a variable name).
        max_tokens: the most tokens the text card may take.
    """
    label = name or type(obj).__name__
    if isinstance(obj, PART_TYPES):
        return obj
    if is_figure(obj):
        return figure_png(obj, label)
    return TextPart(card_text(obj, label, max_tokens), label=label)


def context_parts(items: Any, max_tokens: int | None = None) -> list[ContentPart]:
    """``context=`` as parts: a list of objects, or a ``{name: object}`` mapping.

    The text cards share ``max_tokens`` (default :data:`DEFAULT_CONTEXT_TOKENS`)
    evenly; figures are images and do not count against it.
    """
    if items is None:
        return []
    named: list[tuple[str | None, Any]]
    if isinstance(items, Mapping):
        named = [(str(k), v) for k, v in items.items()]
    elif isinstance(items, (list, tuple)):
        named = [(None, v) for v in items]
    else:
        named = [(None, items)]
    budget = DEFAULT_CONTEXT_TOKENS if max_tokens is None else max_tokens
    if budget <= 0:
        raise InvalidRequestError(f"context_tokens must be positive, not {budget}")
    text_items = sum(1 for _, v in named if not is_figure(v) and not isinstance(v, PART_TYPES))
    each = max(MIN_CARD_TOKENS, math.floor(budget / max(text_items, 1)))
    parts: list[ContentPart] = []
    for position, (name, value) in enumerate(named):
        label = name or (f"context[{position}]" if len(named) > 1 else "context")
        parts.append(card(value, label, each))
    return parts
