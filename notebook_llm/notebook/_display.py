"""Streaming a completion into a cell: one throttled display handle, a Stop button.

Two threads and no queue, as in the compare dashboard: the stream is read on
the library's loop thread, which appends each piece of text to a list; the
cell's own (main) thread waits on that reading in short slices, re-renders
what has arrived at most ~15 times a second, and between slices lets widget
clicks in (:mod:`notebook_llm.notebook._uipoll`). Only the main thread touches
the display: ipykernel routes output from other threads to the most recent
cell.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from notebook_llm import _render
from notebook_llm.core import loop as _loop
from notebook_llm.core.stream import AsyncStream
from notebook_llm.core.types import Completion, FinishReason, ToolRun
from notebook_llm.notebook._uipoll import UIEvents, deferred_sigint
from notebook_llm.notebook._widgets import widget_bundle

__all__ = ["Format", "StreamResult", "View", "consume", "final_bundle", "first_code_block"]

Format = Literal["markdown", "text", "code", "code_last", "json", "html"]
"""How an answer is shown; ``code_last`` (the last code block) is what a template
with llm's ``extract_last`` asks for, and has no ``-f`` flag of its own."""

_POLL_INTERVAL_S = 0.05
_CANCEL_GRACE_S = 10.0


@dataclass
class StreamResult:
    """What consuming a stream left behind."""

    completion: Completion | None
    error: BaseException | None = None
    interrupted: bool = False
    stopped: bool = False
    """Cancelled, by the Stop button, ``cancel()`` or an interrupt."""


async def _read(stream: AsyncStream, parts: list[str], runs: list[ToolRun]) -> None:
    # On the library loop: each text piece (and tool event) is appended where
    # the cell's thread can see it (a list append is atomic under the GIL).
    async for chunk in stream:
        if chunk.text:
            parts.append(chunk.text)
        elif chunk.tool_run is not None:
            runs.append(chunk.tool_run)


def consume(
    stream: AsyncStream,
    on_text: Callable[[str], None],
    *,
    max_per_second: float = 15,
    events: UIEvents | None = None,
    on_tools: Callable[[list[ToolRun]], None] | None = None,
    tick: Callable[[], None] | None = None,
) -> StreamResult:
    """Read ``stream`` to the end on the library loop, calling ``on_text(full_text)``
    from this thread at most ``max_per_second`` times, and dispatching widget
    events if given.

    KeyboardInterrupt (the kernel's Interrupt) cancels the stream; the text so
    far is kept and the function returns normally with ``interrupted=True``.
    ``on_tools(runs)`` hears the tool events so far; ``tick()`` runs every
    slice (approval questions are served there).
    """
    parts: list[str] = []
    runs: list[ToolRun] = []
    shown_runs = 0
    future = _loop.get_loop().submit(_read(stream, parts, runs))
    throttle = _render.Throttle(max_per_second)
    shown = 0
    interrupted = False
    deadline: float | None = None
    next_poll = 0.0
    interval = _POLL_INTERVAL_S if events is not None else min(0.25, 1 / max_per_second)
    while not future.done():
        try:
            concurrent.futures.wait((future,), timeout=interval)
            if future.done():
                break
            now = time.monotonic()
            if len(parts) != shown and throttle.ready(now):
                shown = len(parts)
                with deferred_sigint():
                    on_text("".join(parts))
                # Count from when the update went out, not from when it was
                # decided: rendering a long answer takes a while.
                throttle.force()
            if on_tools is not None and len(runs) != shown_runs:
                shown_runs = len(runs)
                with deferred_sigint():
                    on_tools(runs[:shown_runs])
            if tick is not None:
                tick()
            if events is not None and now >= next_poll:
                next_poll = now + _POLL_INTERVAL_S
                events.poll()
            if deadline is not None and now > deadline:
                future.cancel()  # the stream did not wind down: give the cell back anyway
                break
        except KeyboardInterrupt:
            interrupted = True
            stream.stop("interrupt")
            if deadline is None:
                deadline = time.monotonic() + _CANCEL_GRACE_S
    if on_tools is not None and len(runs) != shown_runs:
        on_tools(runs[:])
    error: BaseException | None = None
    if future.done() and not future.cancelled():
        error = future.exception()
    completion = stream.completion
    stopped = stream.cancelled or interrupted
    if completion is None and (stopped or parts):
        reason: FinishReason = "cancelled" if stopped else "error"
        completion = Completion(text="".join(parts), finish_reason=reason)
    return StreamResult(completion, error, interrupted, stopped)


# -- rendering ---------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n(.*?)^ {0,3}\1[`~]*[ \t]*$", re.M | re.S)


def first_code_block(text: str, *, last: bool = False) -> str:
    """The body of the first (``last=True``: the last) fenced code block, or the
    whole text without one."""
    matches = list(_FENCE.finditer(text)) if last else [m for m in [_FENCE.search(text)] if m]
    if matches:
        return matches[-1].group(2).rstrip("\n")
    unclosed = re.search(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n(.*)", text, re.M | re.S)
    return (unclosed.group(2) if unclosed else text).strip("\n")


def _fenced(code: str, language: str = "python") -> str:
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{code}\n{fence}"


def streaming_html(text: str, fmt: Format) -> str:
    """The partial text as safe HTML: Markdown (fences closed) or escaped text."""
    if fmt in ("markdown", "code", "code_last"):
        return _render.render_streaming(text)
    return _render.plain_html(text)


def final_bundle(completion: Completion, fmt: Format, *, colab: bool = False) -> dict[str, Any]:
    """The finished content as a MIME bundle (always with ``text/plain``).

    The ``text/plain`` form, which a terminal frontend prints as it is, has
    its control characters neutralised (`terminal_text`).
    """
    bundle = _final_bundle(completion, fmt)
    if isinstance(bundle.get("text/plain"), str):
        bundle["text/plain"] = _render.terminal_text(bundle["text/plain"])
    return bundle


def _final_bundle(completion: Completion, fmt: Format) -> dict[str, Any]:
    """`final_bundle` before its ``text/plain`` is made terminal-safe."""
    text = completion.text
    if completion.parsed is not None and not isinstance(completion.parsed, (dict, list)):
        parsed = completion.parsed
        bundle: dict[str, Any] = {"text/plain": repr(parsed)}
        dump = getattr(parsed, "model_dump", None)
        if dump is not None:
            bundle["application/json"] = dump(mode="json")
        return bundle
    if fmt == "json" and completion.parsed is not None:
        return {
            "application/json": completion.parsed,
            "text/plain": json.dumps(completion.parsed, indent=2, ensure_ascii=False),
        }
    if fmt == "text" or (fmt == "json"):
        return {"text/html": _render.plain_html(text), "text/plain": text}
    if fmt == "html":
        return {"text/html": _render.sandboxed_html(text), "text/plain": text}
    if fmt in ("code", "code_last"):
        code = first_code_block(text, last=fmt == "code_last")
        return {"text/html": _render.render_markdown(_fenced(code)), "text/plain": code}
    return {"text/html": _render.render_markdown(text), "text/plain": text}


def footer_bundle(completion: Completion | None, note: str = "") -> dict[str, Any]:
    """The footer line (model, tokens, TTFT, latency, cost) as HTML and text."""
    line = completion.footer() if completion is not None else ""
    if note:
        line = f"{note} · {line}" if line else note
    return {
        "text/html": f'<small style="opacity:0.7">{_render.html_escape(line)}</small>',
        "text/plain": _render.terminal_text(line),
    }


# -- views -------------------------------------------------------------------


class View:
    """Where a streamed answer goes: a cell's display handles, or a terminal."""

    def __init__(self, fmt: Format = "markdown") -> None:
        self.fmt = fmt

    def start(self, stop: Callable[[], None] | None) -> None:
        """Show the empty output (and a Stop button calling ``stop``)."""

    def update(self, text: str) -> None:
        """Show the text received so far."""

    def tools(self, runs: list[ToolRun]) -> None:
        """Show the tool calls so far (:mod:`~notebook_llm.notebook._tool_view`)."""

    def finish(self, bundle: dict[str, Any], footer: dict[str, Any]) -> None:
        """Show the final content and footer; remove the Stop button."""


class CellView(View):
    """Two display handles in the cell: the content, then the footer.

    While streaming, the footer slot holds the Stop button (a core ipywidgets
    Button, so Colab needs no custom widget manager); at the end it is
    replaced by the footer, so a saved notebook holds no widget output and
    frontends without widgets see only text.
    """

    def __init__(self, fmt: Format = "markdown", *, widgets: bool = True,
                 display: Callable[..., Any] | None = None) -> None:
        super().__init__(fmt)
        self.widgets = widgets
        self.updates = 0
        self._display = display
        self._content: Any = None
        self._footer: Any = None
        self._button: Any = None
        self._text = ""
        self._tools_html = ""
        self._tools_text = ""

    @property
    def started(self) -> bool:
        """True once :meth:`start` has shown the output slots."""
        return self._content is not None

    def _show(self, obj: Any, **kwargs: Any) -> Any:
        if self._display is not None:
            return self._display(obj, **kwargs)
        from notebook_llm.notebook._ipython import display

        return display(obj, **kwargs)

    def start(self, stop: Callable[[], None] | None) -> None:
        self._content = self._show(
            {"text/html": "<em>…</em>", "text/plain": "…"}, raw=True, display_id=True
        )
        button = _stop_button(stop) if (self.widgets and stop is not None) else None
        if button is not None:
            self._button = button
            self._footer = self._show(
                widget_bundle(button, footer_bundle(None, "streaming… (Stop in a live kernel)")),
                raw=True, display_id=True,
            )
        else:
            self._footer = self._show(
                footer_bundle(None, "streaming… (interrupt the kernel to stop)"),
                raw=True, display_id=True,
            )

    def slot(self, bundle: dict[str, Any]) -> Any:
        """A new display slot below (an approval question), to update later."""
        return self._show(bundle, raw=True, display_id=True)

    def update(self, text: str) -> None:
        self.updates += 1
        self._text = text
        self._content.update({"text/html": self._tools_html + streaming_html(text, self.fmt),
                              "text/plain": _render.terminal_text(text)}, raw=True)

    def tools(self, runs: list[ToolRun]) -> None:
        from notebook_llm.notebook._tool_view import tool_blocks_html, tool_blocks_text

        self._tools_html, self._tools_text = tool_blocks_html(runs), tool_blocks_text(runs)
        self.update(self._text)

    def finish(self, bundle: dict[str, Any], footer: dict[str, Any]) -> None:
        if self._tools_html:
            bundle = dict(bundle)
            if isinstance(bundle.get("text/html"), str):
                bundle["text/html"] = self._tools_html + bundle["text/html"]
            if isinstance(bundle.get("text/plain"), str):
                bundle["text/plain"] = f"{self._tools_text}\n{bundle['text/plain']}"
        self._content.update(bundle, raw=True)
        self._footer.update(footer, raw=True)
        if self._button is not None:
            button, self._button = self._button, None
            button.close()


def _stop_button(stop: Callable[[], None]) -> Any:
    try:
        import ipywidgets
    except ImportError:
        return None
    button = ipywidgets.Button(
        description="Stop", icon="stop", button_style="warning", tooltip="Stop generating",
        layout=ipywidgets.Layout(width="auto"),
    )
    button.on_click(lambda _button: stop())
    return button


class TerminalView(View):
    """Plain text to stdout as it arrives (terminal IPython).

    Model text goes through `~notebook_llm._render.terminal_text`, so it
    cannot drive the terminal with escape sequences.
    """

    def __init__(self, fmt: Format = "markdown") -> None:
        super().__init__(fmt)
        self._printed = ""
        self._runs_printed = 0

    def tools(self, runs: list[ToolRun]) -> None:
        from notebook_llm.notebook._tool_view import tool_blocks_text

        for run in runs[self._runs_printed:]:
            if run.done or run.status == "running":
                sys.stdout.write(f"\n{tool_blocks_text([run])}\n")
        self._runs_printed = len(runs)
        sys.stdout.flush()

    def update(self, text: str) -> None:
        sys.stdout.write(_render.terminal_text(text[len(self._printed) :]))
        sys.stdout.flush()
        self._printed = text

    def finish(self, bundle: dict[str, Any], footer: dict[str, Any]) -> None:
        # Compared as printed: terminal_text works character by character.
        text = _render.terminal_text(str(bundle.get("text/plain", "")))
        printed = _render.terminal_text(self._printed)
        if text.startswith(printed):
            rest = text[len(printed) :]
        else:  # code, JSON or a parsed object: show the result on its own
            rest = ("\n" if printed else "") + text
        sys.stdout.write(f"{rest}\n")
        if footer.get("text/plain"):
            sys.stdout.write(_render.terminal_text(f"-- {footer['text/plain']}\n"))
        sys.stdout.flush()
