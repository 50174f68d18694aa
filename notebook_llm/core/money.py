"""The library's one money format (every view, widget, table and message uses it).

Imports nothing: the progress display, which the package loads at import time,
formats money too.
"""

from __future__ import annotations

__all__ = ["format_usd"]


def format_usd(value: float | None, status: str = "priced") -> str:
    """The library's one money format, used by every view, widget and table.

    ``free`` and ``$0 (cached)`` for those statuses; ``unpriced`` when the price
    is unknown (``None``), never $0; dollars otherwise: six decimals under a
    cent (``$0.000123``), four under $100 (``$12.3456``), then cents with
    thousands separators (``$1,234.56``). A negative value keeps its sign.
    """
    if status == "free":
        return "free"
    if status == "cached":
        return "$0 (cached)"
    if value is None or value != value:  # None, or NaN from a DataFrame
        return "unpriced"
    sign, size = ("-", -value) if value < 0 else ("", value)
    if size == 0:
        return "$0"
    if size < 0.01:
        return f"{sign}${size:.6f}"
    if size < 100:
        return f"{sign}${size:.4f}"
    return f"{sign}${size:,.2f}"
