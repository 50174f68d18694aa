"""The arena's widgets: two anonymous columns streaming side by side, four vote buttons.

Registered as the ``"arena"`` view (:mod:`notebook_llm._views`) by the package root;
:func:`show` is called by ``Arena.run()`` inside a Jupyter kernel. The view
never blocks the cell: the answers stream on the library's loop and update
the columns from there, and each click is handled by the kernel when it
arrives. The buttons are plain ``<button>`` elements, so they work from the
keyboard (Tab to a button, Enter or Space to press it); they are enabled once
both answers are in. After a vote the names (and each answer's cost and
latency) are shown, and **Next** brings the next matchup. With no one to
click (nbval, papermill) the cell simply ends with the votes it has.

Every answer is model output: it is rendered through the sanitiser
(:func:`notebook_llm._render.render_streaming`), and names and prompts are
escaped.
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any

from notebook_llm._arena import CHOICES, Arena, Matchup
from notebook_llm._render import render_streaming
from notebook_llm.core.loop import get_loop
from notebook_llm.core.money import format_usd

__all__ = ["ArenaView", "show"]

_REDRAW_S = 0.1


class ArenaView:
    """The widgets of one arena, and the matchup they show."""

    def __init__(self, arena: Arena) -> None:
        import ipywidgets as widgets

        self.arena = arena
        self.matchup: Matchup | None = None
        self.future: Any = None
        """The current matchup's streaming (a ``concurrent.futures.Future``)."""
        self._drawn = 0.0
        self._lock = threading.Lock()
        self.header = widgets.HTML()
        self.label_a = widgets.HTML()
        self.label_b = widgets.HTML()
        self.answer_a = widgets.HTML()
        self.answer_b = widgets.HTML()
        columns = [
            widgets.VBox([label, answer], layout=widgets.Layout(
                flex="1 1 280px", min_width="0", border="1px solid #ccc", padding="6px"))
            for label, answer in ((self.label_a, self.answer_a), (self.label_b, self.answer_b))
        ]
        self.buttons: dict[str, Any] = {}
        for choice, label in CHOICES.items():
            button = widgets.Button(description=label, disabled=True,
                                    tooltip=f"Vote: {label} (Tab to focus, Enter to press)")
            button.on_click(lambda _button, choice=choice: self.vote(choice))
            self.buttons[choice] = button
        self.next = widgets.Button(description="Next ▶", tooltip="The next matchup",
                                   layout=widgets.Layout(display="none"))
        self.next.on_click(lambda _button: self.load_next())
        self.status = widgets.HTML()
        self.box = widgets.VBox([
            self.header,
            widgets.HBox(columns, layout=widgets.Layout(flex_flow="row wrap", width="100%")),
            widgets.HBox([*self.buttons.values(), self.next]),
            self.status,
        ])

    # -- one matchup --------------------------------------------------------------------

    def load_next(self) -> None:
        """Show the next matchup without a vote and start streaming its answers."""
        matchup = self.arena.next_matchup()
        self.next.layout.display = "none"
        if matchup is None:
            self.finish()
            return
        self.matchup = matchup
        total = len(self.arena.matchups)
        self.header.value = (
            f"<b>Matchup {matchup.index + 1} of {total}</b> · {self.arena.voted} voted"
            f"<div style='white-space:pre-wrap'>{html.escape(matchup.prompt)}</div>"
        )
        self.label_a.value, self.label_b.value = "<b>A</b>", "<b>B</b>"
        self.answer_a.value = self.answer_b.value = ""
        self.status.value = "<small>Both answers stream; the names show after your vote.</small>"
        for button in self.buttons.values():
            button.disabled = True
        self.future = get_loop().submit(self.arena.astream(matchup, self.draw))

    def draw(self, matchup: Matchup) -> None:
        """Redraw the columns (at most every 0.1 s while streaming); enable voting at the end."""
        if matchup is not self.matchup:
            return
        now = time.monotonic()
        if matchup.status != "ready" and now - self._drawn < _REDRAW_S:
            return
        with self._lock:
            self._drawn = now
            self.answer_a.value = render_streaming(matchup.answer("a"))
            self.answer_b.value = render_streaming(matchup.answer("b"))
            if matchup.status == "ready" and matchup.vote is None:
                for button in self.buttons.values():
                    button.disabled = False
                self.status.value = "<small>Which answer is better?</small>"

    def vote(self, choice: str) -> None:
        """Record the vote, reveal the names, offer Next."""
        matchup = self.matchup
        if matchup is None or matchup.vote is not None or matchup.status != "ready":
            return
        self.arena.vote(matchup, choice)
        for button in self.buttons.values():
            button.disabled = True
        self.label_a.value = _revealed("A", matchup.model_a, matchup.completion_a)
        self.label_b.value = _revealed("B", matchup.model_b, matchup.completion_b)
        self.status.value = f"<b>{html.escape(matchup.reveal())}</b>"
        if self.arena.next_matchup() is None:
            self.finish(keep_answers=True)
        else:
            self.next.layout.display = None

    def finish(self, keep_answers: bool = False) -> None:
        """Every matchup has a vote."""
        for button in self.buttons.values():
            button.disabled = True
        self.next.layout.display = "none"
        done = (f"Arena done: {self.arena.voted} votes. "
                "<code>arena.results()</code> shows the ratings.")
        if keep_answers:
            self.status.value += f"<br>{done}"
        else:
            self.header.value = f"<b>{html.escape(self.arena.id)}</b>"
            self.status.value = done


def _revealed(side: str, model: str, completion: Any) -> str:
    parts = [f"<b>{side}</b> · {html.escape(model)}"]
    if completion is not None:
        if completion.cost_usd is not None:
            parts.append(html.escape(format_usd(completion.cost_usd)))
        if completion.latency_s is not None:
            parts.append(f"{completion.latency_s:.2f}s")
    return " · ".join(parts)


def show(arena: Arena) -> ArenaView:
    """Display the arena's widgets in the current cell and start its first matchup."""
    from notebook_llm.notebook._ipython import display

    view = ArenaView(arena)
    display(view.box)
    view.load_next()
    return view
