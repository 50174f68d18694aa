"""The live comparison dashboard: one column per model, streaming side by side.

``show_compare(prompt, models, ...)`` runs :func:`notebook_llm.acompare`
on the library's background loop and shows, in the current cell:

- a row of core ipywidgets Buttons ("Stop all" and one Stop per model), which
  need no custom widget manager (Colab, VS Code, JupyterLab alike);
- one HTML display handle holding every column (a flex box that wraps on
  narrow screens): the model name and status, the sanitised Markdown streamed
  so far, and a footer with TTFT, latency, tokens, tokens/s and cost;
- at the end, the summary table below, and the buttons replaced by one line
  of text, so a saved notebook holds no widget output.

As in :mod:`notebook_llm.notebook._display`, the display is only ever updated
from the main thread, in the cell that asked: ``on_update`` (called on the
library loop as chunks arrive) only marks the dashboard dirty; the main thread
re-renders at most ~15 times a second and, between renders, lets widget
clicks in (:class:`~notebook_llm.notebook._uipoll.UIEvents`). The kernel's
Interrupt stops every column and keeps the partial text.

Without a kernel (terminal IPython, a script) the same run prints the
comparison as a Markdown table and the summary as text at the end.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from notebook_llm import _render
from notebook_llm._compare import Cell, Comparison, acompare, prompts_from
from notebook_llm.core import loop as _loop
from notebook_llm.core.money import format_usd
from notebook_llm.core.shell import current_kernel
from notebook_llm.notebook._uipoll import UIEvents, deferred_sigint
from notebook_llm.notebook._widgets import widget_bundle

__all__ = ["CompareRun", "Dashboard", "TextDashboard", "compare", "run_compare", "show_compare"]

_POLL_INTERVAL_S = 0.05
_CANCEL_GRACE_S = 5.0
_TICK_S = 1.0
"""Re-render at least this often while a column waits (its elapsed time moves)."""

_COLOURS = {
    "pending": "#888888",
    "running": "#1f77b4",
    "stopping": "#e07b00",
    "done": "#2e8b57",
    "error": "#d62728",
    "stopped": "#e07b00",
}
_ICONS = {
    "pending": "…",
    "running": "●",
    "stopping": "⏹",
    "done": "✓",
    "error": "✗",
    "stopped": "⏹",
}
_GRID_STYLE = "display:flex;flex-wrap:wrap;gap:12px;align-items:stretch;width:100%"
_COLUMN_STYLE = (
    "flex:1 1 280px;min-width:0;box-sizing:border-box;display:flex;flex-direction:column;"
    "border:1px solid rgba(128,128,128,0.35);border-radius:6px;padding:6px 10px"
)


@dataclass
class CompareRun:
    """What running a comparison in a cell left behind."""

    comparison: Comparison
    interrupted: bool = False
    """The kernel was interrupted (Ctrl-C): every column was stopped."""
    error: BaseException | None = None
    """An error of the comparison as a whole (one model's error stays in its cell)."""


# -- what a column shows -------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return f"{value:.2f}s" if value is not None else ""


def _cell_footer(cell: Cell, status: str, started: float | None, first: float | None) -> str:
    """TTFT · latency · tokens · tokens/s · cost · status, as plain text."""
    c = cell.completion
    if c is not None:
        speed = cell.tokens_per_s
        parts = [
            f"TTFT {c.ttft_s:.2f}s" if c.ttft_s is not None else "",
            _seconds(c.latency_s),
            f"{c.usage.input_tokens}+{c.usage.output_tokens} tok",
            f"{speed:.0f} tok/s" if speed else "",
            format_usd(c.cost_usd, c.cost_status),
            c.finish_note if c.finish_note and c.finish_note != status else "",
            status,
        ]
    else:
        now = time.monotonic()
        parts = [
            f"TTFT {first - started:.2f}s" if started is not None and first is not None else "",
            f"{now - started:.1f}s" if started is not None and status == "running" else "",
            status,
        ]
    return " · ".join(p for p in parts if p)


def _column_status(statuses: list[str]) -> str:
    if len(set(statuses)) == 1:
        return statuses[0]
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return " · ".join(f"{status} {n}" for status, n in counts.items())


def _badge(status: str) -> str:
    word = status.split(" ", 1)[0]
    colour = _COLOURS.get(word, "#888888")
    return (
        f'<span style="font-size:0.85em;font-weight:normal;color:{colour};'
        f'white-space:nowrap">{_ICONS.get(word, "")} {_render.html_escape(status)}</span>'
    )


class _Timings:
    """When each cell started and first showed text (for the live footer)."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.first_text: dict[int, float] = {}

    def note(self, index: int, cell: Cell) -> None:
        now = time.monotonic()
        if cell.status == "running":
            self.started.setdefault(index, now)
        if cell.text:
            self.first_text.setdefault(index, now)


# -- the views ----------------------------------------------------------------------------


class _View:
    """Shared bookkeeping: which models were asked to stop, what changed."""

    def __init__(self, comparison: Comparison) -> None:
        self.comparison = comparison
        self.dirty = True
        self.stop_all = False
        self.stopped_models: set[str] = set()
        self.timings = _Timings()
        self._index = {id(cell): i for i, cell in enumerate(comparison.cells)}

    def on_update(self, comparison: Comparison, cell: Cell) -> None:
        """``acompare``'s callback (library loop thread): note the change, nothing more."""
        index = self._index.get(id(cell))
        if index is not None:
            self.timings.note(index, cell)
        self.dirty = True

    def request_stop(self, model: str | None = None) -> None:
        """Stop every column (``model=None``) or one model's; partial text is kept."""
        if model is None:
            self.stop_all = True
            self.comparison.stop("button")  # through the registry of work in flight
        else:
            self.stopped_models.add(model)
            self.comparison.cancel(model, by="button")  # each stream's registry entry
        self.dirty = True

    def apply_stops(self) -> None:
        """Cancel again what should be stopped: a stream created after the click."""
        for cell in self.comparison.cells:
            if cell.status in ("pending", "running") and self._stopping(cell.model):
                cell.cancel("button")

    def _stopping(self, model: str) -> bool:
        return self.stop_all or model in self.stopped_models

    def status(self, cell: Cell) -> str:
        """The status word shown for ``cell`` (``stopping`` while a stop is under way)."""
        if cell.status in ("pending", "running") and self._stopping(cell.model):
            return "stopping"
        return cell.status

    def start(self) -> None:
        """Show the empty dashboard."""

    def render(self) -> None:
        """Show the current state (called at most ~15 times a second)."""

    def finish(self, elapsed: float, note: str = "", throttle: Any = None) -> None:
        """Show the final state and the summary; remove the buttons.

        ``throttle`` (a :class:`~notebook_llm._render.Throttle`) paces the final
        updates so that they too stay within the update rate.
        """


class TextDashboard(_View):
    """No display at all until the end; then the Markdown table and summary as text."""

    def __init__(self, comparison: Comparison, write: Callable[[str], Any] | None = None) -> None:
        super().__init__(comparison)
        self._write = write or print

    def finish(self, elapsed: float, note: str = "", throttle: Any = None) -> None:
        # Printed as it is to a terminal: nothing a model sent may drive it.
        self._write(_render.terminal_text(self.comparison._repr_markdown_()))
        summary = _summary(self.comparison)
        if summary is not None:
            self._write("")
            self._write(_render.terminal_text(summary.to_string()))
        if note:
            self._write(_render.terminal_text(f"-- {note}"))


class Dashboard(_View):
    """The live dashboard in a cell: buttons, one HTML handle of columns, a summary.

    Args:
        comparison: the comparison whose cells are shown (one column per model).
        widgets: show Stop buttons (only where clicks can reach the running cell).
        display: ``IPython.display.display`` (injected by tests).
    """

    def __init__(
        self,
        comparison: Comparison,
        *,
        widgets: bool = True,
        display: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(comparison)
        self.widgets = widgets
        self.updates = 0
        """How many times the columns were re-rendered (display updates)."""
        self._display = display
        self._grid: Any = None
        self._controls: Any = None
        self._box: Any = None
        self._buttons: dict[str | None, Any] = {}
        self._cache: dict[int, tuple[tuple[Any, ...], str]] = {}

    # -- output -----------------------------------------------------------

    def _show(self, obj: Any, **kwargs: Any) -> Any:
        if self._display is not None:
            return self._display(obj, **kwargs)
        from notebook_llm.notebook._ipython import display

        return display(obj, **kwargs)

    def start(self) -> None:
        box = self._make_buttons() if self.widgets else None
        if box is not None:
            self._box = box
            line = f"comparing {len(self.comparison.models)} models… (Stop in a live kernel)"
            self._controls = self._show(widget_bundle(box, _note_bundle(line)), raw=True,
                                        display_id=True)
        else:
            line = f"comparing {len(self.comparison.models)} models… (interrupt the kernel to stop)"
            self._controls = self._show(_note_bundle(line), raw=True, display_id=True)
        self._grid = self._show(self.bundle(final=False), raw=True, display_id=True)
        self.dirty = False

    def render(self) -> None:
        self.dirty = False
        self._sync_buttons()
        self.updates += 1
        self._grid.update(self.bundle(final=False), raw=True)

    def finish(self, elapsed: float, note: str = "", throttle: Any = None) -> None:
        """Final columns, then the summary below; the buttons become one line of text."""
        _wait_for(throttle)
        self.updates += 1
        self._grid.update(self.bundle(final=True), raw=True)
        statuses = _column_status([c.status for c in self.comparison.cells])
        line = f"compared {len(self.comparison.models)} models in {elapsed:.1f}s · {statuses}"
        if note:
            line = f"{line} · {note}"
        _wait_for(throttle)
        self._controls.update(_note_bundle(line), raw=True)
        self._close_buttons()
        summary = _summary(self.comparison)
        if summary is not None:
            self._show(
                {
                    "text/html": "<strong>Summary</strong>" + summary.to_html(na_rep="",
                                                                         escape=True),
                    "text/plain": _render.terminal_text(summary.to_string(na_rep="")),
                },
                raw=True,
            )

    # -- buttons ------------------------------------------------------------

    def _make_buttons(self) -> Any:
        try:
            import ipywidgets
        except ImportError:
            return None

        # ipywidgets (7 and 8) show a Button's description as a text node and
        # its tooltip as a title attribute: a model name needs no escaping.
        def button(description: str, tooltip: str, style: str, model: str | None) -> Any:
            widget = ipywidgets.Button(
                description=description, icon="stop", button_style=style, tooltip=tooltip,
                layout=ipywidgets.Layout(width="auto", margin="2px 6px 2px 0"),
            )
            widget.on_click(lambda _widget: self.request_stop(model))
            self._buttons[model] = widget
            return widget

        children = [button("Stop all", "Stop every model (partial text is kept)", "danger",
                           None)]
        for model in self.comparison.models:
            children.append(button(f"Stop {model}", f"Stop {model} only", "warning", model))
        return ipywidgets.HBox(
            children, layout=ipywidgets.Layout(flex_flow="row wrap", align_items="center")
        )

    def _sync_buttons(self) -> None:
        """Grey out the buttons of models that finished or were asked to stop."""
        if not self._buttons:
            return
        for model, widget in self._buttons.items():
            cells = [c for c in self.comparison.cells if model is None or c.model == model]
            over = all(c.status not in ("pending", "running") for c in cells)
            if (over or self.stop_all or model in self.stopped_models) and not widget.disabled:
                widget.disabled = True

    def _close_buttons(self) -> None:
        buttons, self._buttons = self._buttons, {}
        for widget in buttons.values():
            widget.close()
        if self._box is not None:
            box, self._box = self._box, None
            box.close()

    # -- HTML --------------------------------------------------------------

    def bundle(self, *, final: bool) -> dict[str, Any]:
        """The columns as a MIME bundle (HTML; Markdown and text at the end)."""
        html = self.html(final=final)
        if final:
            markdown = self.comparison._repr_markdown_()
            return {"text/html": html, "text/markdown": markdown,
                    "text/plain": _render.terminal_text(markdown)}
        return {"text/html": html, "text/plain": self.plain()}

    def plain(self) -> str:
        """One line per cell: model, status and how much text arrived."""
        return _render.terminal_text("\n".join(
            f"{cell.model}: {self.status(cell)} ({len(cell.text.split())} words)"
            for cell in self.comparison.cells
        ))

    def html(self, *, final: bool = False) -> str:
        """Every column as HTML; model text is sanitised Markdown."""
        comparison = self.comparison
        several = len(comparison.prompts) * comparison.runs > 1
        columns = []
        for model in comparison.models:
            sections = []
            statuses = []
            for index, cell in enumerate(comparison.cells):
                if cell.model != model:
                    continue
                status = self.status(cell)
                statuses.append(status)
                sections.append(self._cell_html(index, cell, status, several, final))
            header = (
                '<div style="display:flex;justify-content:space-between;gap:8px;'
                'align-items:baseline;border-bottom:1px solid rgba(128,128,128,0.25);'
                'padding-bottom:4px;margin-bottom:4px">'
                f'<strong style="overflow-wrap:anywhere">{_render.html_escape(model)}</strong>'
                f"{_badge(_column_status(statuses))}</div>"
            )
            columns.append(f'<div style="{_COLUMN_STYLE}">{header}{"".join(sections)}</div>')
        return f'<div class="notebook-llm-compare" style="{_GRID_STYLE}">{"".join(columns)}</div>'

    def _cell_html(self, index: int, cell: Cell, status: str, several: bool, final: bool) -> str:
        started = self.timings.started.get(index)
        first = self.timings.first_text.get(index)
        footer = _cell_footer(cell, status, started, first)
        key = (status, len(cell.text), cell.completion is not None, cell.error is not None, final)
        cached = self._cache.get(index)
        if cached is not None and cached[0] == key:
            body = cached[1]
        else:
            body = self._body_html(cell, final)
            self._cache[index] = (key, body)
        label = ""
        if several:
            prompt = cell.prompt[:60] + ("…" if len(cell.prompt) > 60 else "")
            run = f" (run {cell.run + 1})" if self.comparison.runs > 1 else ""
            label = (
                f'<div style="font-size:0.85em;opacity:0.7;margin-top:6px">'
                f"{_render.html_escape(prompt)}{run}</div>"
            )
        return (
            f"{label}<div style=\"flex:1 1 auto;overflow-wrap:anywhere;overflow-x:auto\">{body}"
            f'</div><div style="margin-top:4px"><small style="opacity:0.75">'
            f"{_render.html_escape(footer)}</small></div>"
        )

    @staticmethod
    def _body_html(cell: Cell, final: bool) -> str:
        parts = []
        text = cell.text
        if cell.completion is not None and cell.completion.text:
            text = cell.completion.text
        if text:
            parts.append(_render.render_markdown(text) if final
                         else _render.render_streaming(text))
        if cell.error is not None:
            parts.append(
                f'<div style="color:{_COLOURS["error"]}"><strong>'
                f"{_render.html_escape(type(cell.error).__name__)}</strong>: "
                f"{_render.html_escape(str(cell.error))}</div>"
            )
        if not parts:
            waiting = "no answer" if final else "waiting…"
            parts.append(f"<em style=\"opacity:0.6\">{waiting}</em>")
        return "".join(parts)


def _note_bundle(line: str) -> dict[str, Any]:
    return {
        "text/html": f'<small style="opacity:0.75">{_render.html_escape(line)}</small>',
        "text/plain": _render.terminal_text(line),
    }


def _summary(comparison: Comparison) -> Any:
    """``Comparison.summary()`` rounded, without percentiles of a single call."""
    try:
        summary = comparison.summary()
    except ImportError:  # no pandas: the columns and the Markdown table say it all
        return None
    if len(comparison.prompts) * comparison.runs <= 1:
        summary = summary[[c for c in summary.columns if not c.endswith(("_p50_s", "_p95_s"))]]
    digits = {c: 3 for c in summary.columns if c.endswith("_s")}
    digits.update({"tokens_per_s": 1, "cost_usd": 6})
    return summary.round(digits)


def _wait_for(throttle: Any) -> None:
    """Sleep until ``throttle`` allows an update (keeps the final flush within the rate)."""
    if throttle is None:
        return
    while not throttle.ready():
        time.sleep(0.01)


# -- running ------------------------------------------------------------------------------


def _drive(
    comparison: Comparison,
    options: dict[str, Any],
    view: _View,
    events: UIEvents | None,
    *,
    max_per_second: float = 15,
) -> CompareRun:
    """Run ``acompare`` on the library loop; render and poll clicks on this thread."""
    started = time.monotonic()
    throttle = _render.Throttle(max_per_second)
    future = _loop.get_loop().submit(
        acompare(None, comparison.models, comparison=comparison, on_update=view.on_update,
                 **options)
    )
    interrupted = False
    deadline: float | None = None
    next_poll = 0.0
    last_render = time.monotonic()
    with deferred_sigint():
        view.start()
    throttle.force()
    while not future.done():
        try:
            concurrent.futures.wait([future], timeout=_POLL_INTERVAL_S)
            now = time.monotonic()
            if events is not None and now >= next_poll:
                next_poll = now + _POLL_INTERVAL_S
                events.poll()
            if view.stop_all or view.stopped_models:
                view.apply_stops()
            waiting = now - last_render > _TICK_S and not comparison.done
            if (view.dirty or waiting) and not future.done() and throttle.ready(now):
                with deferred_sigint():
                    view.render()
                throttle.force()  # count from when the update went out
                last_render = time.monotonic()
            if deadline is not None and now > deadline:
                future.cancel()  # the streams did not wind down: stop the task itself
                break
        except KeyboardInterrupt:
            interrupted = True
            view.request_stop(None)
            if deadline is None:
                deadline = time.monotonic() + _CANCEL_GRACE_S
    error: BaseException | None = None
    with contextlib.suppress(concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
        error = future.exception(timeout=1.0)
    if error is not None:
        comparison.cancel()  # one failure ended the gather: stop the others too
    for cell in comparison.cells:
        if cell.status in ("pending", "running"):
            cell.status = "stopped"
    note = "interrupted: every model was stopped" if interrupted else ""
    if error is not None:
        note = f"{type(error).__name__}: {error}"
    elapsed = time.monotonic() - started
    with deferred_sigint():
        view.finish(elapsed, note, throttle=throttle)
    return CompareRun(comparison, interrupted, error)


def _new_comparison(
    prompt: str | None, models: Sequence[str], kwargs: dict[str, Any]
) -> Comparison:
    if isinstance(models, str):
        models = [models]
    if not models:
        raise ValueError("models= needs at least one model string")
    prompts, variables = prompts_from(
        prompt, kwargs.pop("prompts", None), kwargs.pop("template", None), kwargs.pop("data", None)
    )
    return Comparison(prompts, list(models), kwargs.pop("runs", 1), variables)


def run_compare(
    prompt: str | None = None,
    models: Sequence[str] = (),
    *,
    display: Callable[..., Any] | None = None,
    **kwargs: Any,
) -> CompareRun:
    """Run a comparison with the live dashboard; report how it ended.

    The same as :func:`show_compare`, but an interrupt or an error of the
    comparison as a whole is reported in the returned :class:`CompareRun`
    instead of being raised (the magics turn them into a short cell error).
    """
    comparison = _new_comparison(prompt, models, kwargs)
    kernel = current_kernel()
    if kernel is None and display is None:
        return _drive(comparison, kwargs, TextDashboard(comparison), None)
    events = UIEvents.for_kernel(kernel)
    # Without a way for clicks to arrive, Stop buttons would only mislead.
    view = Dashboard(comparison, widgets=events is not None, display=display)
    try:
        return _drive(comparison, kwargs, view, events)
    finally:
        if events is not None:
            events.close()


def show_compare(
    prompt: str | None = None, models: Sequence[str] = (), **kwargs: Any
) -> Comparison:
    """Compare models side by side, live in the cell; returns the :class:`Comparison`.

    Each model gets a column that streams its answer (sanitised Markdown) with
    a footer of TTFT, latency, tokens, tokens/s, cost and status; "Stop all"
    and per-model Stop buttons, or the kernel's Interrupt, stop the streams and
    keep the partial text. The summary table appears below when all are done.

    Args:
        prompt: the prompt (or ``prompts=[...]``, or ``template=`` with ``data=``).
        models: model strings, one column each.
        **kwargs: as for :func:`notebook_llm.compare` (``runs``, ``system``,
            ``temperature``, ``max_tokens``, ``client``, ``scorer``, ...).

    Returns:
        The comparison (interrupted cells are ``stopped``, partial text kept).

    Raises:
        Whatever ends the comparison as a whole (a bad argument, a failing
        scorer); one model's error stays in its column.
    """
    run = run_compare(prompt, models, **kwargs)
    if run.error is not None:
        raise run.error
    return run.comparison


def compare(prompt: str | None = None, models: Sequence[str] = (), **kwargs: Any) -> Comparison:
    """:func:`notebook_llm.compare` with the live dashboard, for Python cells.

    ``result = notebook_llm.notebook.compare("prompt", ["a:x", "b:y"])``; see
    :func:`show_compare`.
    """
    return show_compare(prompt, models, **kwargs)

