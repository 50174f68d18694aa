"""A progress display for long jobs: the state and its text form.

:class:`Progress` takes plain numbers (done, total, cached, failed, retrying,
requests, tokens, cost) so any feature can drive it. It keeps the figures
(rates, ETA, projected cost), throttles redraws to ``max_rate_hz`` (10 a
second by default), holds the Stop state (:attr:`Progress.stopped`, the
``on_stop`` callback) and renders itself as text: one line updated in place
with ``\\r`` on a terminal or in a kernel, or a line every
``line_interval_s`` seconds otherwise (nbconvert, CI). Nothing here raises
because there is no frontend.

Widgets live in the notebook layer (``notebook_llm.notebook._progress``): a
feature never imports it. Instead that layer is *registered* here, from
above, by the package root (``notebook_llm/__init__.py``, which may import
any layer) calling :func:`register_ui` with a loader, a function that imports
the notebook layer when first called. Registering costs nothing: the loader is
called only by a ``Progress`` with the ``"auto"`` or ``"widget"`` backend,
or by :func:`run`, and only inside a Jupyter kernel (IPython already imported
and ``get_ipython().kernel`` set); elsewhere neither IPython nor ipywidgets is
imported. The UI it returns has two functions:

- ``view(progress)``: show a widget view of ``progress`` (an object with
  ``draw()``, ``stopping()`` and ``close()``), or None when widgets are
  unavailable; the text form is used then.
- ``wait(future)``: block until a :class:`concurrent.futures.Future` is done
  while letting widget clicks (comm messages) reach the kernel, so that the
  Stop button works during a blocking call such as ``nl.batch(...)``.

:func:`run` is how a sync feature blocks on the library loop with that UI:
the notebook layer's ``wait`` in a kernel, a plain wait everywhere else.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal, Protocol, TextIO, TypeVar

from notebook_llm.core.money import format_usd
from notebook_llm.core.shell import in_kernel

__all__ = [
    "Progress", "ProgressView", "format_duration", "format_rate",
    "register_ui", "run",
]

Backend = Literal["auto", "widget", "text", "none"]
T = TypeVar("T")

_CANCEL_GRACE_S = 5.0


class ProgressView(Protocol):
    """A rich view of a :class:`Progress` (the notebook layer's widgets)."""

    def draw(self) -> None:
        """Show the progress's current figures and state."""

    def stopping(self) -> None:
        """Stop was pressed: show that the job is winding down."""

    def close(self) -> None:
        """The job ended (final state drawn): no more updates."""


# The notebook layer's UI (see the module docstring): a loader registered from
# above, and what it returned once called.
_ui_loader: Callable[[], Any] | None = None
_ui: Any = None
_ui_lock = threading.Lock()


def register_ui(loader: Callable[[], Any] | None) -> None:
    """Register how to get the notebook UI (``view`` and ``wait``); None removes it.

    ``loader`` is called at most once, on first need inside a kernel.
    """
    global _ui_loader, _ui
    with _ui_lock:
        _ui_loader, _ui = loader, None


def _notebook_ui() -> Any:
    """The registered notebook UI when running in a Jupyter kernel, else None."""
    global _ui
    if not in_kernel():
        return None
    with _ui_lock:
        if _ui is None and _ui_loader is not None:
            try:
                _ui = _ui_loader()
            except Exception:  # noqa: BLE001 - a broken notebook layer: plain text
                return None
        return _ui


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the library loop and block until it finishes.

    In a kernel with the notebook UI registered, the wait lets widget clicks
    through (the Stop button works); elsewhere it is the library's plain wait.
    A KeyboardInterrupt cancels the coroutine, waits briefly for it to clean
    up, and is re-raised, as :func:`notebook_llm.core.loop.run` does.
    """
    from notebook_llm.core import loop as _loop

    ui = _notebook_ui()
    if ui is None or threading.current_thread() is not threading.main_thread():
        return _loop.run(coro)
    future = _loop.get_loop().submit(coro)
    try:
        result: T = ui.wait(future)
        return result
    except KeyboardInterrupt:
        future.cancel()
        with contextlib.suppress(BaseException):
            future.result(timeout=_CANCEL_GRACE_S)
        raise


def format_duration(seconds: float | None) -> str:
    """``mm:ss`` or ``h:mm:ss``; ``--:--`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_rate(value: float) -> str:
    """``950``, ``1.2k``, ``15k``."""
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


class Progress:
    """Live progress of a job over ``total`` items.

    Args:
        total: items to finish (cached ones included).
        title: shown before the figures (e.g. the job name).
        on_stop: called once, from the thread that pressed Stop (the widget's
            click handler, or whoever calls :meth:`stop`).
        backend: ``"auto"`` (the notebook layer's widgets in a kernel that has
            ipywidgets, else text), ``"widget"``, ``"text"`` or ``"none"``.
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
        on_stop: Callable[[], object] | None = None,
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
        self._view: ProgressView | None = None
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
            f"{format_rate(f['requests_per_min'])} req/min "
            f"{format_rate(f['tokens_per_min'])} tok/min",
            f"{format_duration(f['elapsed_s'])}<{format_duration(f['eta_s'])}",
            f"{format_usd(f['cost_usd'])} (~{format_usd(f['projected_cost_usd'])} total)",
        ]
        if self.state != "running":
            parts.append(self.state)
        return " | ".join(parts)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Progress:
        """Show the display and start the clock."""
        self.started_at = time.monotonic()
        if self._backend == "widget":
            ui = _notebook_ui()
            try:
                self._view = ui.view(self) if ui is not None else None
            except Exception:  # noqa: BLE001 - widgets broken: fall back to text
                self._view = None
            if self._view is None:
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
        elif self._view is not None:
            with contextlib.suppress(Exception):
                self._view.close()

    def stop(self) -> None:
        """Press Stop: mark stopped and call ``on_stop`` (once)."""
        if self.stopped:
            return
        self.stopped = True
        if self._view is not None:
            with contextlib.suppress(Exception):
                self._view.stopping()
        if self.on_stop is not None:
            self.on_stop()

    # -- drawing ---------------------------------------------------------------

    def _choose(self, backend: Backend) -> str:
        if backend != "auto":
            return backend
        return "widget" if _notebook_ui() is not None else "text"

    @property
    def _in_place(self) -> bool:
        stream = self.stream or sys.stderr
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        return tty or in_kernel()

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
                if self._view is not None:  # None until start() shows it
                    self._view.draw()
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
