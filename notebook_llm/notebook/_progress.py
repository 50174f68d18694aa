"""The widget view of a :class:`~notebook_llm.progress.Progress`, and a wait
that lets its Stop button work during a blocking call.

``notebook_llm.progress`` holds the state and the text form; it reaches this
module only through :func:`notebook_llm.progress.register_ui`, which the
package root calls with a loader (so features never import the notebook
layer). Two functions make up that UI:

- :func:`view` shows an ipywidgets bar, a line of figures and a Stop button
  for a ``Progress``, or returns None when ipywidgets is missing (the
  ``Progress`` then writes text).
- :func:`wait` blocks the cell's (main) thread until a job running on the
  library loop is done, polling :class:`~notebook_llm.notebook._uipoll.UIEvents`
  every ~50 ms as the streaming display and the dashboard do: a click on Stop
  is dispatched while ``nl.batch(...)`` is still running, instead of waiting
  for the cell to end. Without a kernel whose messages can be polled it is a
  plain wait.
"""

from __future__ import annotations

import html
from concurrent.futures import Future
from typing import Any, TypeVar

from notebook_llm.core.loop import wait as wait_done
from notebook_llm.core.money import format_usd
from notebook_llm.core.shell import current_kernel
from notebook_llm.notebook._uipoll import UIEvents, deferred_sigint
from notebook_llm.notebook._widgets import widget_bundle
from notebook_llm.progress import Progress, format_duration, format_rate

__all__ = ["WidgetView", "view", "wait"]

T = TypeVar("T")

_POLL_INTERVAL_S = 0.05


class WidgetView:
    """ipywidgets for one :class:`Progress`: bar, title and counts, Stop, figures."""

    def __init__(self, progress: Progress) -> None:
        import ipywidgets as widgets

        self.progress = progress
        self.bar = widgets.IntProgress(value=0, min=0, max=max(progress.total, 1),
                                       layout=widgets.Layout(width="40%"))
        self.label = widgets.HTML()
        self.stop = widgets.Button(description="Stop", button_style="danger",
                                   tooltip="Stop the job; finished rows are kept",
                                   layout=widgets.Layout(width="90px"))
        self.stop.on_click(lambda _button: progress.stop())
        self.figures = widgets.HTML()
        self.box = widgets.VBox([widgets.HBox([self.bar, self.label, self.stop]), self.figures])
        self.handle: Any = None

    def show(self) -> WidgetView:
        """Display the widgets in the current cell, with a static fallback beside them.

        The output carries ``text/plain`` and ``text/html`` forms of the bar
        too, and when the job ends the widgets are replaced by that static
        form, so a saved notebook shows the bar without a kernel.
        """
        from notebook_llm.notebook._ipython import display

        self.handle = display(widget_bundle(self.box, self.static_bundle()), raw=True,
                              display_id=True)
        return self

    def label_html(self) -> str:
        f = self.progress.figures()
        title = html.escape(self.progress.title)
        return f"<b>{title}</b> {f['done']:,}/{f['total']:,} {html.escape(self.progress.state)}"

    def figures_html(self) -> str:
        f = self.progress.figures()
        return (
            f"<small>cached {f['cached']:,} · failed {f['failed']:,} · retrying "
            f"{f['retrying']:,} · {format_rate(f['requests_per_min'])} req/min · "
            f"{format_rate(f['tokens_per_min'])} tok/min · elapsed "
            f"{format_duration(f['elapsed_s'])} · ETA {format_duration(f['eta_s'])} · cost "
            f"{format_usd(f['cost_usd'])} (projected {format_usd(f['projected_cost_usd'])})"
            "</small>"
        )

    def static_bundle(self) -> dict[str, str]:
        """The bar as HTML (a ``<progress>`` element) and as the text line."""
        f = self.progress.figures()
        total = max(f["total"], 1)
        bar = (f'<progress value="{min(f["done"], total)}" max="{total}" '
               'style="width:40%;vertical-align:middle"></progress>')
        return {
            "text/html": f'<div class="notebook-llm-progress">{bar} {self.label_html()}'
                         f"<br>{self.figures_html()}</div>",
            "text/plain": self.progress.line(),
        }

    def draw(self) -> None:
        progress = self.progress
        f = progress.figures()
        self.bar.max = max(f["total"], 1)
        self.bar.value = min(f["done"], self.bar.max)
        if progress.state in ("stopped", "failed", "interrupted"):
            self.bar.bar_style = "warning"
        elif progress.state == "done":
            self.bar.bar_style = "success"
        self.label.value = self.label_html()
        self.figures.value = self.figures_html()

    def stopping(self) -> None:
        # The job stops within moments; "Stopping..." would not fit the button.
        self.stop.description = "Stopped"
        self.stop.disabled = True

    def close(self) -> None:
        """The job has ended: Stop goes away, and the widgets give way to their static form
        (the bar and the figures as HTML, with no button)."""
        self.stop.disabled = True
        self.stop.layout.display = "none"
        handle = getattr(self, "handle", None)
        if handle is not None:
            handle.update(self.static_bundle(), raw=True)
            for widget in (self.bar, self.label, self.stop, self.figures, self.box):
                widget.close()


def view(progress: Progress) -> WidgetView | None:
    """Show ``progress`` as widgets; None when ipywidgets is not installed."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return None
    return WidgetView(progress).show()


def wait(future: Future[T]) -> T:
    """Block until ``future`` is done, dispatching widget clicks meanwhile.

    Returns the future's result or raises its exception. A KeyboardInterrupt
    propagates (the caller cancels the job); messages other than comms that
    arrived meanwhile (the next cells of "Run all") are handed back to the
    kernel, in order, before this returns.
    """
    kernel = current_kernel()
    events = UIEvents.for_kernel(kernel)
    if events is None:
        return wait_done(future)
    try:
        return wait_done(future, interval=_POLL_INTERVAL_S, tick=events.poll)
    finally:
        with deferred_sigint():
            events.close()
