"""Tool calls in the cell: a collapsible block per call, and approval questions.

Blocks show the tool's name, its arguments, the result (or why there is none,
with the traceback of a tool that raised) and the time it took; all of it
comes from the model or the tool, so all of it is escaped. Questions
(``approve="ask"``) come from the library's loop through :class:`Approvals`
and are answered on the cell's main thread: Approve/Deny buttons with a
widget frontend, ``input()`` where a person has a prompt, and a refusal that
says so where no one can answer (nbval, papermill: no stdin, no click within
a few seconds).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from notebook_llm import _render
from notebook_llm.core.types import Tool, ToolRun

__all__ = ["Approvals", "Question", "tool_blocks_html", "tool_blocks_text"]

ASK_WAIT_S = 5.0
"""How long a question waits for a click where no stdin says a person is there."""

_ICONS = {"ok": "✓", "error": "✗", "denied": "⊘", "timeout": "⏱", "invalid": "✗",
          "unknown": "?", "limit": "⊘", "cancelled": "⏹", "asking": "…", "running": "…"}
_ARGS_LIMIT = 2000
_OUTPUT_LIMIT = 4000


def _arguments(run: ToolRun) -> str:
    text = json.dumps(run.call.arguments, ensure_ascii=False, indent=1, default=str)
    return text if len(text) <= _ARGS_LIMIT else text[:_ARGS_LIMIT] + "…"


def _summary(run: ToolRun) -> str:
    seconds = "" if run.duration_s is None else f" · {run.duration_s:.2f}s"
    return f"{_ICONS.get(run.status, '')} {run.call.name} · {run.status}{seconds}"


def _latest(runs: list[ToolRun]) -> list[ToolRun]:
    """One entry per call (the stream sends a call's start, then its end)."""
    latest: dict[tuple[int, str], ToolRun] = {}
    for run in runs:
        latest[(run.round, run.call.id)] = run
    return list(latest.values())


def tool_blocks_html(runs: list[ToolRun]) -> str:
    """Each call as a ``<details>`` block, everything escaped."""
    blocks = []
    for run in _latest(runs):
        output = run.output if len(run.output) <= _OUTPUT_LIMIT else (
            run.output[:_OUTPUT_LIMIT] + "…")
        parts = [
            f"<summary><code>{_render.html_escape(_summary(run))}</code></summary>",
            f"<pre>{_render.html_escape(_arguments(run))}</pre>",
        ]
        if run.done:
            parts.append(f"<pre>{_render.html_escape(output)}</pre>")
        if run.traceback:
            parts.append(f"<pre style=\"color:#b00\">{_render.html_escape(run.traceback)}</pre>")
        blocks.append(f'<details class="nl-tool">{"".join(parts)}</details>')
    return "".join(blocks)


def tool_blocks_text(runs: list[ToolRun]) -> str:
    """The calls as plain lines (terminal-safe)."""
    lines = []
    for run in _latest(runs):
        arguments = json.dumps(run.call.arguments, ensure_ascii=False, default=str)[:200]
        line = f"[tool] {_summary(run)} {arguments}"
        if run.done:
            line += f" -> {run.output[:300]}"
        lines.append(line)
        if run.traceback:
            lines.append(run.traceback.rstrip())
    return _render.terminal_text("\n".join(lines))


@dataclass
class Question:
    """One approval asked for, waiting on the library's loop for an answer."""

    tool: Tool
    run: ToolRun
    future: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop
    asked_at: float = 0.0
    handle: Any = None

    def answer(self, allowed: bool, note: str = "") -> None:
        """Answer from any thread (a click, a prompt, a timeout); later answers
        are ignored."""
        if note and not allowed:
            self.run.output = note

        def settle() -> None:
            if not self.future.done():
                self.future.set_result(allowed)

        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(settle)

    @property
    def answered(self) -> bool:
        """True once an answer was given (or the exchange was stopped)."""
        return self.future.done()


class Approvals:
    """Questions from the loop's asker, for the cell's thread to put on screen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._new: list[Question] = []
        self.open: list[Question] = []
        """Questions on screen, not yet answered."""

    async def ask(self, tool: Tool, run: ToolRun) -> bool:
        """The asker (``core._toolloop.asking``): wait for the cell to answer.
        Stop cancels the wait, and so the whole loop."""
        loop = asyncio.get_running_loop()
        question = Question(tool, run, loop.create_future(), loop)
        with self._lock:
            self._new.append(question)
        return await question.future

    def take(self) -> list[Question]:
        """New questions (on the cell's thread)."""
        with self._lock:
            new, self._new = self._new, []
        return new


def ask_line(question: Question) -> str:
    """The question as one line (terminal-safe)."""
    arguments = json.dumps(question.run.call.arguments, ensure_ascii=False, default=str)
    return _render.terminal_text(f"Run tool {question.tool.name}({arguments[:500]})?")


def approval_widget(question: Question, on_answer: Any) -> Any:
    """Approve and Deny buttons (core ipywidgets, so Colab needs nothing more)."""
    try:
        import ipywidgets
    except ImportError:
        return None
    # A Label shows text as text: the model's arguments cannot become markup.
    label = ipywidgets.Label(value=ask_line(question)[:300])
    approve = ipywidgets.Button(description="Approve", button_style="success",
                                layout=ipywidgets.Layout(width="auto"))
    deny = ipywidgets.Button(description="Deny", button_style="danger",
                             layout=ipywidgets.Layout(width="auto"))
    approve.on_click(lambda _b: on_answer(question, True))
    deny.on_click(lambda _b: on_answer(question, False))
    return ipywidgets.HBox([label, approve, deny])


def no_answer_note(tool: Tool, waited: float | None) -> str:
    """What the model is told when no one could answer."""
    how = "no one answered" if waited is None else f"no one answered within {waited:g} s"
    return (f"Denied: {tool.name} needs approval and {how} (no stdin and no widget click, "
            "as when the notebook runs unattended); pass approve=... to decide in code")


def expired(question: Question, now: float, wait: float = ASK_WAIT_S) -> bool:
    """True when an unattended question has waited long enough."""
    return not question.answered and now - question.asked_at > wait


def now() -> float:
    """The clock questions are timed with."""
    return time.monotonic()


class QuestionServer:
    """Puts the loop's questions on screen and turns the answers back in, from
    the cell's thread (``tick()`` runs between stream slices).

    ``slot(bundle)`` makes a display slot (a cell view); ``widgets`` says
    clicks can arrive while the cell runs; ``stdin`` says a person has a prompt
    (the kernel allows input, or a terminal). Without either, a question is
    refused at once; with buttons but no stdin, after :data:`ASK_WAIT_S`.
    """

    def __init__(self, approvals: Approvals, slot: Any, *, widgets: bool, stdin: bool,
                 wait: float = ASK_WAIT_S) -> None:
        self.approvals = approvals
        self.slot = slot
        self.widgets = widgets
        self.stdin = stdin
        self.wait = wait
        self.open: list[Question] = []
        self._widgets: dict[int, Any] = {}

    def tick(self) -> None:
        """Show new questions; settle the answered and the expired ones."""
        for question in self.approvals.take():
            question.asked_at = now()
            self._present(question)
        for question in list(self.open):
            if not question.answered and not self.stdin and expired(question, now(), self.wait):
                question.answer(False, no_answer_note(question.tool, self.wait))
            if question.answered:
                self.open.remove(question)
                self._show_outcome(question)

    def close(self) -> None:
        """The stream ended: settle what is still on screen."""
        for question in self.open:
            self._show_outcome(question)
        self.open.clear()

    def _present(self, question: Question) -> None:
        widget = approval_widget(question, self._clicked) if (
            self.widgets and self.slot is not None) else None
        if widget is not None:
            from notebook_llm.notebook._widgets import widget_bundle

            self._widgets[id(question)] = widget
            question.handle = self.slot(widget_bundle(widget))
            self.open.append(question)
            return
        allowed = False
        if self.stdin:
            try:
                answer = input(f"{ask_line(question)} [y/N] ")
            except (EOFError, RuntimeError, OSError) as exc:  # StdinNotImplementedError too
                question.answer(False, no_answer_note(question.tool, None) + f" ({exc})")
            else:
                allowed = answer.strip().lower() in ("y", "yes")
                question.answer(allowed)
        else:
            question.answer(False, no_answer_note(question.tool, None))
        if self.slot is not None:
            question.handle = self.slot(_outcome_bundle(question, allowed))

    def _clicked(self, question: Question, allowed: bool) -> None:
        question.answer(allowed)

    def _show_outcome(self, question: Question) -> None:
        widget = self._widgets.pop(id(question), None)
        if question.handle is not None:
            question.handle.update(_outcome_bundle(question, None), raw=True)
        if widget is not None:
            widget.close()


def _outcome_bundle(question: Question, allowed: bool | None) -> dict[str, Any]:
    if allowed is None:
        future = question.future
        if future.done() and not future.cancelled():
            allowed = future.result()
    if question.future.cancelled():
        verdict = "stopped"
    else:
        verdict = "approved" if allowed else "denied"
    line = f"{ask_line(question)} {verdict}"
    return {"text/plain": line,
            "text/html": f"<small><code>{_render.html_escape(line)}</code></small>"}
