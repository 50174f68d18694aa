"""A progress display for long jobs: ipywidgets in a kernel, a text bar elsewhere.

:class:`Progress` takes plain numbers (done, total, cached, failed, retrying,
requests, tokens, cost) so any feature can drive it. In a Jupyter kernel with
ipywidgets it shows a live bar, a line of figures and a Stop button; without
widgets (a terminal, nbconvert, CI) it writes a text bar, one line updated in
place with ``\\r`` on a terminal or in a kernel, or a line every
``line_interval_s`` seconds otherwise. Updates are throttled to
``max_rate_hz`` (10 a second by default). Nothing here raises because there
is no frontend.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

__all__ = ["Progress", "format_duration"]

Backend = Literal["auto", "widget", "text", "none"]


def format_duration(seconds: float | None) -> str:
    """``mm:ss`` or ``h:mm:ss``; ``--:--`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _rate(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def _money(value: float | None) -> str:
    if value is None:
        return "?"
    return f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def _in_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - any odd IPython state means "no kernel"
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class Progress:
    """Live progress of a job over ``total`` items.

    Args:
        total: items to finish (cached ones included).
        title: shown before the figures (e.g. the job name).
        on_stop: called once, from the frontend's thread, when Stop is pressed
            (widget) or :meth:`stop` is called.
        backend: ``"auto"`` (widgets in a kernel that has ipywidgets, else text),
            ``"widget"``, ``"text"`` or ``"none"``.
        stream: where the text bar goes (default ``sys.stderr``).
        max_rate_hz: most redraws a second.
        line_interval_s: seconds between lines when the text cannot be redrawn in place.

    ``update()`` takes running totals, never deltas, so a caller can pass its
    counters as they are. Rates (requests and tokens per minute), the ETA and
    the projected cost are worked out here from ``done - cached`` over the
    time since :meth:`start`.
    """

    def __init__(
        self,
        total: int,
        *,
        title: str = "",
        on_stop: Callable[[], None] | None = None,
        backend: Backend = "auto",
        stream: TextIO | None = None,
        max_rate_hz: float = 10.0,
        line_interval_s: float = 10.0,
    ) -> None:
        self.total = total
        self.title = title
        self.on_stop = on_stop
        self.stream = stream
        self.min_interval = 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0
        self.line_interval = line_interval_s
        self.done = self.cached = self.failed = self.retrying = 0
        self.requests = self.tokens = 0
        self.cost_usd: float | None = 0.0
        self.state = "running"
        self.stopped = False
        """True once Stop was pressed."""
        self.started_at: float | None = None
        self._last_draw = 0.0
        self._last_line = 0.0
        self._lock = threading.Lock()
        self._backend = self._choose(backend)
        self._widgets: dict[str, Any] = {}
        self.renders = 0
        """How many times the display was redrawn (for tests of throttling)."""

    # -- figures -----------------------------------------------------------

    @property
    def elapsed_s(self) -> float:
        """Seconds since :meth:`start`."""
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def figures(self) -> dict[str, Any]:
        """Everything shown, as numbers: counts, rates, ETA and projected cost."""
        elapsed = self.elapsed_s
        fresh = max(self.done - self.cached, 0)
        per_s = fresh / elapsed if elapsed > 0 else 0.0
        remaining = max(self.total - self.done, 0)
        eta = remaining / per_s if per_s > 0 else (0.0 if remaining == 0 else None)
        projected = None
        if self.cost_usd is not None and fresh:
            projected = self.cost_usd + self.cost_usd / fresh * remaining
        elif self.cost_usd is not None and not remaining:
            projected = self.cost_usd
        return {
            "done": self.done,
            "total": self.total,
            "cached": self.cached,
            "failed": self.failed,
            "retrying": self.retrying,
            "requests_per_min": self.requests / elapsed * 60 if elapsed > 0 else 0.0,
            "tokens_per_min": self.tokens / elapsed * 60 if elapsed > 0 else 0.0,
            "elapsed_s": elapsed,
            "eta_s": eta,
            "cost_usd": self.cost_usd,
            "projected_cost_usd": projected,
            "state": self.state,
        }

    def line(self) -> str:
        """The one-line text form."""
        f = self.figures()
        total = max(f["total"], 1)
        share = min(f["done"] / total, 1.0)
        width = 20
        filled = int(share * width)
        bar = "█" * filled + "░" * (width - filled)
        head = f"{self.title} " if self.title else ""
        parts = [
            f"{head}{bar} {f['done']}/{f['total']} {share:4.0%}",
            f"cached {f['cached']} failed {f['failed']} retrying {f['retrying']}",
            f"{_rate(f['requests_per_min'])} req/min {_rate(f['tokens_per_min'])} tok/min",
            f"{format_duration(f['elapsed_s'])}<{format_duration(f['eta_s'])}",
            f"{_money(f['cost_usd'])} (~{_money(f['projected_cost_usd'])} total)",
        ]
        if self.state != "running":
            parts.append(self.state)
        return " | ".join(parts)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Progress:
        """Show the display and start the clock."""
        self.started_at = time.monotonic()
        if self._backend == "widget":
            try:
                self._build_widgets()
            except Exception:  # noqa: BLE001 - widgets broken: fall back to text
                self._backend = "text"
        self._draw(force=True)
        return self

    def update(
        self,
        *,
        done: int | None = None,
        cached: int | None = None,
        failed: int | None = None,
        retrying: int | None = None,
        requests: int | None = None,
        tokens: int | None = None,
        cost_usd: float | None = None,
        total: int | None = None,
        force: bool = False,
    ) -> None:
        """Set running totals and redraw if the last redraw is old enough."""
        if total is not None:
            self.total = total
        if done is not None:
            self.done = done
        if cached is not None:
            self.cached = cached
        if failed is not None:
            self.failed = failed
        if retrying is not None:
            self.retrying = retrying
        if requests is not None:
            self.requests = requests
        if tokens is not None:
            self.tokens = tokens
        if cost_usd is not None:
            self.cost_usd = cost_usd
        self._draw(force=force)

    def close(self, state: str = "done") -> None:
        """Draw the final state and end the line (no more updates after this)."""
        self.state = state
        self._draw(force=True)
        if self._backend == "text":
            self._write("\n" if self._in_place else "")
        elif self._backend == "widget" and self._widgets:
            self._widgets["stop"].disabled = True

    def stop(self) -> None:
        """Press Stop: mark stopped and call ``on_stop`` (once)."""
        if self.stopped:
            return
        self.stopped = True
        if self._widgets:
            self._widgets["stop"].description = "Stopping..."
            self._widgets["stop"].disabled = True
        if self.on_stop is not None:
            self.on_stop()

    # -- drawing ---------------------------------------------------------------

    def _choose(self, backend: Backend) -> str:
        if backend != "auto":
            return backend
        if _in_kernel():
            try:
                import ipywidgets  # noqa: F401
            except ImportError:
                return "text"
            return "widget"
        return "text"

    @property
    def _in_place(self) -> bool:
        stream = self.stream or sys.stderr
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        return tty or _in_kernel()

    def _draw(self, force: bool = False) -> None:
        if self._backend == "none":
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_draw < self.min_interval:
                return
            self._last_draw = now
        self.renders += 1
        try:
            if self._backend == "widget":
                self._draw_widgets()
            elif self._in_place:
                self._write("\r" + self.line().ljust(120))
            elif force or now - self._last_line >= self.line_interval:
                self._last_line = now
                self._write(self.line() + "\n")
        except Exception:  # noqa: BLE001 - a display must never break the job
            pass

    def _write(self, text: str) -> None:
        if not text:
            return
        stream = self.stream or sys.stderr
        stream.write(text)
        stream.flush()

    def _build_widgets(self) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        bar = widgets.IntProgress(value=0, min=0, max=max(self.total, 1),
                                  layout=widgets.Layout(width="40%"))
        label = widgets.HTML()
        stop = widgets.Button(description="Stop", button_style="danger",
                              tooltip="Stop the job; finished rows are kept",
                              layout=widgets.Layout(width="90px"))
        stop.on_click(lambda _button: self.stop())
        figures = widgets.HTML()
        box = widgets.VBox([widgets.HBox([bar, label, stop]), figures])
        self._widgets = {"bar": bar, "label": label, "stop": stop, "figures": figures, "box": box}
        display(box)

    def _draw_widgets(self) -> None:
        import html

        f = self.figures()
        w = self._widgets
        w["bar"].max = max(f["total"], 1)
        w["bar"].value = min(f["done"], w["bar"].max)
        if self.state in ("stopped", "failed", "interrupted"):
            w["bar"].bar_style = "warning"
        elif self.state == "done":
            w["bar"].bar_style = "success"
        title = html.escape(self.title)
        w["label"].value = f"<b>{title}</b> {f['done']:,}/{f['total']:,} {html.escape(self.state)}"
        w["figures"].value = (
            f"<small>cached {f['cached']:,} · failed {f['failed']:,} · retrying "
            f"{f['retrying']:,} · {_rate(f['requests_per_min'])} req/min · "
            f"{_rate(f['tokens_per_min'])} tok/min · elapsed {format_duration(f['elapsed_s'])}"
            f" · ETA {format_duration(f['eta_s'])} · cost {_money(f['cost_usd'])}"
            f" (projected {_money(f['projected_cost_usd'])})</small>"
        )
