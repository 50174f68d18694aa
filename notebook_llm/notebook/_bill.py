"""The bill before sending: tokens and dollars of a large call, then Send or Cancel.

A ``%%llm`` cell whose prompt and context come to more than the threshold
(2,000 tokens unless ``%llm_config confirm_tokens N`` says otherwise) first
shows what it will send and what that costs, priced by
:func:`notebook_llm.pricing.price` and written by
:func:`notebook_llm.core.money.format_usd`.

With a widget frontend it waits for Send or Cancel; the clicks reach the
running cell through :class:`~notebook_llm.notebook._uipoll.UIEvents`. Whether
anyone is there to click is told by the frontend itself: a widget frontend
reports each view it draws (the widget's ``_view_count``). When none is drawn
within :data:`ACK_SECONDS` (nbval, papermill, nbclient, a frontend without
widgets), or there is no kernel (terminal IPython), the bill is printed and the
call proceeds. ``--yes`` skips all of this; budgets refuse regardless.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from notebook_llm import pricing
from notebook_llm._render import html_escape
from notebook_llm._tracking import DEFAULT_MAX_OUTPUT_TOKENS, current_trackers
from notebook_llm.core.modalities import check_parts
from notebook_llm.core.money import format_usd
from notebook_llm.core.parts import attach_parts
from notebook_llm.core.registry import get_spec
from notebook_llm.core.tokens import estimate_prompt_tokens
from notebook_llm.core.types import ContentPart, Request, TextPart, Usage
from notebook_llm.notebook._errors import CellError

__all__ = ["ACK_SECONDS", "DEFAULT_CONFIRM_TOKENS", "Bill", "make_bill", "settle"]

DEFAULT_CONFIRM_TOKENS = 2_000
"""Calls estimated above this many input tokens show the bill first."""

ACK_SECONDS = 3.0
"""How long to wait for a frontend to draw the Send/Cancel buttons."""


@dataclass(frozen=True)
class Bill:
    """What one call will send and cost, estimated before sending."""

    model: str
    input_tokens: int
    output_tokens: int
    """The answer's tokens assumed: ``max_tokens``, else the budget default."""
    input_usd: float | None
    total_usd: float | None
    status: str
    parts: tuple[tuple[str, int], ...]
    """``(label, tokens)`` of each context card, figure and attachment."""

    def lines(self) -> list[str]:
        """The bill as short plain lines."""
        head = f"This call sends about {self.input_tokens:,} tokens to {self.model}: "
        if self.status in ("free", "unpriced"):
            head += f"{format_usd(None, self.status)}."
        else:
            head += (f"{format_usd(self.input_usd)} for the input, up to "
                     f"{format_usd(self.total_usd)} with a {self.output_tokens:,}-token answer.")
        return [head, *(f"  {label}: ~{tokens:,} tokens" for label, tokens in self.parts)]

    def text(self) -> str:
        return "\n".join(self.lines())

    def html(self) -> str:
        head, *rest = self.lines()
        items = "".join(f"<li>{html_escape(line.strip())}</li>" for line in rest)
        return f"<div><strong>{html_escape(head)}</strong><ul>{items}</ul></div>"


def _part_tokens(part: ContentPart) -> int:
    request = Request(model="", messages=attach_parts([], [part]))
    return estimate_prompt_tokens(request)


def make_bill(client: Any, prompt: str, model: str | None, options: dict[str, Any],
              parts: Sequence[ContentPart]) -> Bill:
    """Estimate the call ``client.astream(prompt, model, **options)`` with ``parts``.

    Also checks, before anything is shown or sent, that the model can take
    each part (:func:`~notebook_llm.core.modalities.check_parts`).
    """
    ref = client.resolve(model)
    info = get_spec(ref.provider).info
    check_parts(info, ref.name, parts)
    messages = attach_parts([{"role": "user", "content": prompt}], parts)
    tokens = estimate_prompt_tokens(
        Request(model=ref.name, messages=messages, system=options.get("system"))
    )
    output = int(options.get("max_tokens") or DEFAULT_MAX_OUTPUT_TOKENS)
    provider = info.pricing_id or ref.provider
    input_usd, status = pricing.price(provider, ref.name, Usage(input_tokens=tokens),
                                      free=info.free)
    total_usd, _ = pricing.price(provider, ref.name,
                                 Usage(input_tokens=tokens, output_tokens=output), free=info.free)
    labelled = tuple(
        (part.label or ("text" if isinstance(part, TextPart) else part.modality or "part"),
         _part_tokens(part))
        for part in parts
    )
    return Bill(str(ref), tokens, output, input_usd, total_usd, status, labelled)


def _refuse_over_budget(client: Any, bill: Bill) -> None:
    """A budget that this call could exceed refuses it here, with the figures."""
    if bill.total_usd is None or bill.status == "free":
        return
    own = getattr(client, "tracker", None)
    trackers = [*current_trackers(), *([own] if own is not None else [])]
    for tracker in trackers:
        remaining = tracker.remaining_usd
        if remaining is not None and bill.total_usd > remaining:
            label = f"the {tracker.name} budget" if tracker.name else "the budget"
            raise CellError(
                f"Not sent: this call could cost up to {format_usd(bill.total_usd)} "
                f"({bill.input_tokens:,} tokens in, up to {bill.output_tokens:,} out), and "
                f"{format_usd(tracker.cost_usd)} of {label} of "
                f"{format_usd(tracker.budget_usd)} is already spent.",
                title="BudgetExceededError",
                hint="Raise budget_usd, send less context (--context-tokens N), lower "
                     "--max-tokens, or use a cheaper model.",
            )


def settle(client: Any, bill: Bill, *, threshold: int, yes: bool, shell: Any) -> bool:
    """Show the bill when it is over ``threshold`` and decide: True to send.

    Budgets refuse (a :class:`CellError`) even with ``yes``.
    """
    _refuse_over_budget(client, bill)
    if yes or bill.input_tokens <= threshold:
        return True
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        print(bill.text())
        return True
    from notebook_llm.notebook._uipoll import UIEvents

    events = UIEvents.for_kernel(kernel)
    box = _buttons(bill) if events is not None else None
    if events is None or box is None:
        _show_text(bill, "sending (no widget frontend to ask)")
        if events is not None:
            events.close()
        return True
    try:
        return _ask(bill, box, events)
    finally:
        events.close()


def _show_text(bill: Bill, note: str, handle: Any = None) -> None:
    from notebook_llm.notebook._ipython import display

    bundle = {"text/plain": f"{bill.text()}\n({note})",
              "text/html": f"{bill.html()}<small>{html_escape(note)}</small>"}
    if handle is not None:
        handle.update(bundle, raw=True)
    else:
        display(bundle, raw=True)


@dataclass
class _Box:
    widget: Any
    choice: list[bool]


def _buttons(bill: Bill) -> _Box | None:
    try:
        import ipywidgets
    except ImportError:
        return None
    choice: list[bool] = []
    send = ipywidgets.Button(description="Send", button_style="primary", icon="paper-plane")
    cancel = ipywidgets.Button(description="Cancel", icon="times")
    send.on_click(lambda _button: choice.append(True))
    cancel.on_click(lambda _button: choice.append(False))
    widget = ipywidgets.VBox([ipywidgets.HTML(bill.html()), ipywidgets.HBox([send, cancel])])
    widget._view_count = 0  # the frontend counts the views it draws: proof someone is there
    return _Box(widget, choice)


def _ask(bill: Bill, box: _Box, events: Any) -> bool:
    from notebook_llm.notebook._ipython import display
    from notebook_llm.notebook._widgets import widget_bundle

    handle = display(widget_bundle(box.widget), raw=True, display_id=True)
    started = time.monotonic()
    try:
        while not box.choice:
            events.poll()
            if not box.widget._view_count and time.monotonic() - started > ACK_SECONDS:
                _show_text(bill, f"no answer from the frontend in {ACK_SECONDS:g} s: sending",
                           handle)
                return True
            time.sleep(0.03)
    except KeyboardInterrupt:
        box.choice.append(False)
    finally:
        for child in (*box.widget.children[1].children, *box.widget.children):
            child.close()
        box.widget.close()
    sent = box.choice[0]
    _show_text(bill, "sent" if sent else "cancelled: nothing was sent", handle)
    return sent
