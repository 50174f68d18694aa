"""Trackers and budgets: who sees a call, what it cost, and whether it may be sent.

:class:`Tracker` keeps exact running totals (calls, tokens, cost, errors, per
model) and a bounded window of recent call records; the full history is in
the call log (``nl.usage()``). ``nl.track()`` blocks and every client's own
tracker (``client.tracker``) are Trackers; :class:`TrackingMiddleware` adds
each ended call to them and :class:`BudgetMiddleware` refuses calls that could
go over a budget. Public names are exported at the package root (``nl.track``, ``nl.Tracker``).

Which tracker sees a call
-------------------------
``track()`` keeps a stack of active trackers in a ``ContextVar``, so calls made
by concurrent tasks outside the ``with`` block do not leak in. The sync API
runs coroutines on the library's background loop with
``run_coroutine_threadsafe``, which does not copy context variables, so:

1. ``Client.complete`` captures the stack in the caller's thread and sets it
   inside the coroutine (:func:`carry_trackers`); ``Client.stream`` prepares
   the call in the caller's thread, where the stack is read directly.
2. The stack is read once per call, when it is prepared, and kept on the call.
3. A coroutine that reaches the background loop without a captured stack
   (another feature's own sync wrapper) falls back to a thread-safe,
   process-wide list of every active tracker. That over-attributes when two
   threads track at once, which we prefer to silently losing calls.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from notebook_llm import pricing
from notebook_llm.core import capture_hooks, inflight, loop as _loop
from notebook_llm.core.client import CallContext, Middleware
from notebook_llm.core.errors import BudgetExceededError, CancelledError
from notebook_llm.core.money import format_usd
from notebook_llm.core.tokens import estimate_prompt_tokens
from notebook_llm.core.types import Completion

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "DEFAULT_MAX_RECORDS",
    "RECORD_COLUMNS",
    "BudgetMiddleware",
    "Tracker",
    "TrackingMiddleware",
    "call_latency",
    "carry_trackers",
    "current_trackers",
    "finish_reason",
    "track",
]

T = TypeVar("T")

DEFAULT_MAX_OUTPUT_TOKENS = 1024
"""Output tokens assumed by budget estimates when a call sets no ``max_tokens``."""

DEFAULT_MAX_RECORDS = 1000
"""Recent call records a client's own tracker keeps in memory (``Client(max_records=...)``)."""



# -- which trackers see a call -----------------------------------------------------------

_active: contextvars.ContextVar[tuple[Tracker, ...]] = contextvars.ContextVar(
    "notebook_llm_trackers", default=()
)
# True inside a coroutine whose tracker stack was carried over from the caller's thread.
_carried: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "notebook_llm_trackers_carried", default=False
)
_everywhere: list[Tracker] = []
_everywhere_lock = threading.Lock()


def _on_library_loop() -> bool:
    background = _loop._instance
    if background is None:
        return False
    try:
        return asyncio.get_running_loop() is background.loop
    except RuntimeError:
        return threading.current_thread() is background._thread


def current_trackers() -> tuple[Tracker, ...]:
    """The trackers a call prepared here belongs to, innermost last.

    The context's own stack; on the library's background loop, when no stack
    was carried over from the calling thread, every active tracker (see the
    module docstring).
    """
    stack = _active.get()
    if stack or _carried.get() or not _everywhere or not _on_library_loop():
        return stack
    with _everywhere_lock:
        return tuple(_everywhere)


def carry_trackers(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """Wrap ``coro`` so it sees this thread's trackers wherever it runs.

    Call it in the calling thread, then hand the result to the background loop.
    """
    stack = _active.get()

    async def carried() -> T:
        # A task has its own copy of the context, so these sets end with it.
        _active.set(stack)
        _carried.set(True)
        return await coro

    return carried()


def _trackers_of(ctx: CallContext) -> tuple[Tracker, ...]:
    if ctx.trackers is None:
        ctx.trackers = current_trackers()
    return ctx.trackers


def _with_own(trackers: Sequence[Tracker], own: Tracker | None) -> list[Tracker]:
    out = [] if own is None else [own]
    for tracker in trackers:
        if all(tracker is not seen for seen in out):
            out.append(tracker)
    return out


# -- records -----------------------------------------------------------------------------

RECORD_COLUMNS = (
    "time", "model", "provider", "input_tokens", "output_tokens", "total_tokens",
    "cost_usd", "cost_status", "cached", "latency_s", "finish_reason", "error_class", "tags",
)  # fmt: skip
"""The fields of :attr:`Tracker.records` and the columns of :attr:`Tracker.df`."""

# A record is a tuple in RECORD_COLUMNS order, "time" as time.time() and
# "tags" as a tuple: one per call, shared by every tracker that counts it.
_TIME, _MODEL, _INPUT, _OUTPUT, _TOTAL, _COST, _STATUS, _CACHED, _ERROR, _TAGS = (
    0, 1, 3, 4, 5, 6, 7, 8, 11, 12
)  # fmt: skip


def call_latency(ctx: CallContext, completion: Completion | None) -> float:
    """Seconds the call took: the completion's own figure, else since it started."""
    if completion is not None and completion.latency_s is not None:
        return completion.latency_s
    return max(time.time() - ctx.started_at, 0.0)


def finish_reason(completion: Completion | None, error: BaseException | None) -> str:
    """Why the call ended: the completion's reason, else ``cancelled`` or ``error``."""
    if completion is not None:
        return completion.finish_reason
    return "cancelled" if isinstance(error, (CancelledError, asyncio.CancelledError)) else "error"


def _record(
    ctx: CallContext, completion: Completion | None, error: BaseException | None
) -> tuple[Any, ...]:
    if completion is None:
        return (
            time.time(), ctx.model, ctx.ref.provider, 0, 0, 0, None, None, False,
            call_latency(ctx, None), finish_reason(None, error),
            type(error).__name__ if error is not None else None, tuple(ctx.tags),
        )  # fmt: skip
    usage = completion.usage
    return (
        time.time(), ctx.model, ctx.ref.provider, usage.input_tokens, usage.output_tokens,
        usage.total_tokens, completion.cost_usd, completion.cost_status, bool(completion.cached),
        call_latency(ctx, completion), completion.finish_reason,
        type(error).__name__ if error is not None else None, tuple(ctx.tags),
    )  # fmt: skip


def _as_dict(record: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(RECORD_COLUMNS, record, strict=True))
    row["time"] = datetime.fromtimestamp(record[_TIME]).astimezone()
    row["tags"] = list(record[_TAGS])
    return row


class Tracker:
    """Calls made while it is active, with their tokens and costs.

    Use :func:`track` (``with nl.track() as t:``); a client also keeps one for
    all of its calls (``client.tracker``), which holds ``Client(budget_usd=...)``.

    The totals (:attr:`calls`, :attr:`tokens`, :attr:`cost_usd`, :attr:`errors`,
    ..., and the per-model table of its display) are exact running sums over
    every call it saw. One record per call is kept for :attr:`records` and
    :attr:`df`, but only the most recent ``max_records`` of them: a client's
    own tracker keeps the last 1,000 by default, so a long-lived client does
    not grow without bound. The full history is in the call log
    (``nl.usage()``, ``nl.costs()``).

    Attributes:
        budget_usd: refuse calls that could take :attr:`cost_usd` over this.
        name: a label for messages and displays.
        max_records: how many recent call records to keep (``None``: all).
        capture: while active, also record calls made through ``openai`` /
            ``anthropic`` SDK clients that other code created (see
            :mod:`notebook_llm._capture`).
    """

    def __init__(
        self,
        budget_usd: float | None = None,
        name: str | None = None,
        *,
        max_records: int | None = None,
        capture: bool = False,
    ) -> None:
        self.budget_usd = budget_usd
        _all_trackers.add(self)
        self.name = name
        self.capture = capture
        self._lock = threading.Lock()
        self._recent: deque[tuple[Any, ...]] = deque(maxlen=max_records)
        self._reserved = 0.0
        self._tokens: list[contextvars.Token[tuple[Tracker, ...]]] = []
        self._clear_totals()

    def _clear_totals(self) -> None:
        self._calls = self._input = self._output = self._total = 0
        self._unpriced = self._cached = self._errors = 0
        self._cost = 0.0
        # model -> [calls, input tokens, output tokens, cost, unpriced calls]
        self._by_model: dict[str, list[Any]] = {}

    @property
    def max_records(self) -> int | None:
        """How many recent call records are kept (``None``: all)."""
        return self._recent.maxlen

    @max_records.setter
    def max_records(self, value: int | None) -> None:
        with self._lock:
            self._recent = deque(self._recent, maxlen=value)

    # -- totals ---------------------------------------------------------------------

    @property
    def records(self) -> list[dict[str, Any]]:
        """One dict per recent call, oldest first (at most :attr:`max_records`):
        time, model, tokens, cost, status, error."""
        with self._lock:
            recent = list(self._recent)
        return [_as_dict(record) for record in recent]

    @property
    def calls(self) -> int:
        """How many calls ended while tracked (errors and cache hits included)."""
        return self._calls

    @property
    def cost_usd(self) -> float:
        """Dollars spent on priced calls. Unpriced calls are not in it: see :attr:`unpriced`."""
        return self._cost

    @property
    def input_tokens(self) -> int:
        """Prompt tokens over all calls."""
        return self._input

    @property
    def output_tokens(self) -> int:
        """Generated tokens over all calls."""
        return self._output

    @property
    def tokens(self) -> int:
        """Input plus output tokens over all calls."""
        return self._total

    @property
    def unpriced(self) -> int:
        """Calls whose price is unknown (their cost is not in :attr:`cost_usd`)."""
        return self._unpriced

    @property
    def cached(self) -> int:
        """Calls answered from the response cache."""
        return self._cached

    @property
    def errors(self) -> int:
        """Calls that ended in an error."""
        return self._errors

    @property
    def remaining_usd(self) -> float | None:
        """Budget left, or ``None`` without a budget."""
        if self.budget_usd is None:
            return None
        return self.budget_usd - self._cost

    @property
    def df(self) -> pd.DataFrame:
        """The recent calls (see :attr:`records`) as a DataFrame, one row per call."""
        import pandas as pd

        return pd.DataFrame.from_records(self.records, columns=list(RECORD_COLUMNS))

    def to_pandas(self) -> pd.DataFrame:
        """Same as :attr:`df`."""
        return self.df

    # -- bookkeeping (called by the middlewares) ----------------------------------------

    def _reserve(self, estimate: float, ctx: CallContext) -> None:
        """Hold ``estimate`` dollars for a call in flight, or refuse it."""
        with self._lock:
            budget = self.budget_usd
            if budget is not None and self._cost + self._reserved + estimate > budget:
                error = BudgetExceededError(_budget_message(self, estimate), spent_usd=self._cost,
                                            budget_usd=budget)
                error.provider, error.model = ctx.ref.provider, ctx.ref.name
                raise error
            self._reserved += estimate

    def _release(self, estimate: float) -> None:
        with self._lock:
            self._reserved = max(self._reserved - estimate, 0.0)

    def _add(self, record: tuple[Any, ...], release: float = 0.0) -> None:
        cost = record[_COST]
        unpriced = record[_STATUS] == "unpriced"
        with self._lock:
            self._recent.append(record)
            self._calls += 1
            self._input += record[_INPUT]
            self._output += record[_OUTPUT]
            self._total += record[_TOTAL]
            if cost is not None:
                self._cost += cost
            if unpriced:
                self._unpriced += 1
            if record[_CACHED]:
                self._cached += 1
            if record[_ERROR]:
                self._errors += 1
            model = self._by_model.get(record[_MODEL])
            if model is None:
                model = self._by_model[record[_MODEL]] = [0, 0, 0, 0.0, 0]
            model[0] += 1
            model[1] += record[_INPUT]
            model[2] += record[_OUTPUT]
            if cost is not None:
                model[3] += cost
            if unpriced:
                model[4] += 1
            if release:
                self._reserved = max(self._reserved - release, 0.0)

    def reset(self) -> None:
        """Forget the calls recorded so far (the budget stays)."""
        with self._lock:
            self._recent.clear()
            self._clear_totals()

    # -- context management -------------------------------------------------------------

    def __enter__(self) -> Tracker:
        if self.capture:
            capture_hooks.switch().acquire()
        self._tokens.append(_active.set((*_active.get(), self)))
        with _everywhere_lock:
            _everywhere.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        token = self._tokens.pop() if self._tokens else None
        try:
            if token is not None:
                _active.reset(token)
        except ValueError:
            # Left in another context than entered (e.g. across tasks): drop just this one.
            _active.set(tuple(t for t in _active.get() if t is not self))
        with _everywhere_lock:
            if self in _everywhere:
                _everywhere.remove(self)
        if self.capture and token is not None:
            capture_hooks.switch().release()

    async def __aenter__(self) -> Tracker:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)

    # -- display --------------------------------------------------------------------------

    def summary(self) -> str:
        """One line: calls, tokens, cost (with unpriced and cached counts), budget."""
        parts = [f"{self.calls} call{'s' if self.calls != 1 else ''}", f"{self.tokens:,} tokens",
                 format_usd(self.cost_usd)]
        if self.unpriced:
            parts[-1] += f" + {self.unpriced} unpriced"
        if self.cached:
            parts.append(f"{self.cached} cached")
        if self.errors:
            parts.append(f"{self.errors} error{'s' if self.errors != 1 else ''}")
        if self.budget_usd is not None:
            left = format_usd(self.remaining_usd or 0.0)
            parts.append(f"budget {format_usd(self.budget_usd)} ({left} left)")
        return " · ".join(parts)

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<Tracker{label}: {self.summary()}>"

    def _repr_html_(self) -> str:
        from notebook_llm._render import html_escape, plain_table_html

        with self._lock:
            by_model = [(m, *totals) for m, totals in self._by_model.items()]
        rows = [[m, n, i, o, format_usd(c), u or ""] for m, n, i, o, c, u in by_model]
        table = plain_table_html(
            ["model", "calls", "input tokens", "output tokens", "cost", "unpriced"], rows
        ) if rows else ""
        title = html_escape(self.name or "tracked")
        return f"<p><b>{title}</b>: {html_escape(self.summary())}</p>{table}"


def track(
    budget_usd: float | None = None,
    name: str | None = None,
    *,
    max_records: int | None = None,
    capture: bool = False,
) -> Tracker:
    """Gather the calls made inside a ``with`` (or ``async with``) block.

    Example::

        with nl.track(budget_usd=0.50) as t:
            nl.complete("Summarise ...", model="openai:gpt-4o-mini")
        t.cost_usd, t.tokens, t.calls, t.unpriced
        t.df                     # one row per call

    Trackers nest (a call counts for every enclosing tracker) and follow
    ``contextvars``, so concurrent tasks outside the block are not counted.

    Args:
        budget_usd: refuse (``BudgetExceededError``, nothing sent) any call in
            the block whose estimated cost would take the spend over this.
        name: a label for displays and budget messages.
        max_records: keep only this many recent call records for ``t.df``
            (``None``, the default: every call of the block). Totals and the
            budget are exact either way.
        capture: also record, count and budget calls made in the block through
            ``openai`` / ``anthropic`` SDK clients that other code created
            (LangChain, LlamaIndex, ...): see :mod:`notebook_llm._capture`.
    """
    return Tracker(budget_usd=budget_usd, name=name, max_records=max_records, capture=capture)


# -- middlewares --------------------------------------------------------------------------


class TrackingMiddleware(Middleware):
    """Adds every ended call to its trackers (and releases budget reservations).

    Args:
        own: a tracker that sees every call of this client (``client.tracker``).
    """

    def __init__(self, own: Tracker | None = None) -> None:
        self.own = own

    async def after(
        self, ctx: CallContext, completion: Completion | None, error: BaseException | None
    ) -> None:
        reserved, ctx.budget_held = ctx.budget_held, {}
        trackers = _trackers_of(ctx)
        own = self.own
        if ctx.stopped_unsent(completion, error):  # not a call: only free its reservations
            for tracker in _with_own(trackers, own):
                tracker._release(reserved.pop(id(tracker), 0.0))
            return
        record = _record(ctx, completion, error)
        if not trackers and own is not None:  # the common case: no nl.track() block
            own._add(record, release=reserved.pop(id(own), 0.0) if reserved else 0.0)
            return
        for tracker in _with_own(trackers, own):
            tracker._add(record, release=reserved.pop(id(tracker), 0.0))


_warned_unpriced: set[str] = set()


class BudgetMiddleware(Middleware):
    """Refuses a call before sending when it could go over a budget.

    The cost is estimated with :func:`notebook_llm.pricing.estimate` from the
    prompt (about four characters a token) and ``max_tokens`` (else
    :data:`DEFAULT_MAX_OUTPUT_TOKENS`). The estimate is held against each
    budget until the call ends, so concurrent calls cannot all slip under it.
    Free models always pass; unpriced ones pass with a warning (once per model).

    Args:
        own: the client's tracker, holding ``Client(budget_usd=...)``.
    """

    def __init__(self, own: Tracker | None = None) -> None:
        self.own = own

    async def before(self, ctx: CallContext) -> Completion | None:
        trackers = _trackers_of(ctx)
        own = self.own
        if not trackers and (own is None or own.budget_usd is None):
            return None  # the common case: no budget anywhere
        budgeted = [t for t in _with_own(trackers, own) if t.budget_usd is not None]
        if not budgeted or ctx.info.free or ctx.ref.provider in pricing.FREE_PROVIDERS:
            return None
        estimate = pricing.estimate(
            ctx.info.pricing_id or ctx.ref.provider,
            ctx.ref.name,
            estimate_prompt_tokens(ctx.request),
            ctx.request.max_tokens or DEFAULT_MAX_OUTPUT_TOKENS,
        )
        if estimate is None:
            if ctx.model not in _warned_unpriced:
                _warned_unpriced.add(ctx.model)
                warnings.warn(
                    f"No price is known for {ctx.model}, so budgets cannot count its calls; "
                    "they are allowed.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return None
        held: dict[int, float] = {}
        try:
            for tracker in budgeted:
                tracker._reserve(estimate, ctx)
                held[id(tracker)] = estimate
        except BudgetExceededError:
            for tracker in budgeted:
                if id(tracker) in held:
                    tracker._release(estimate)
            raise
        ctx.budget_held = held
        return None


def _budget_message(tracker: Tracker, estimate: float) -> str:
    label = f"the {tracker.name} budget" if tracker.name else "the budget"
    in_flight = ""
    if tracker._reserved:
        in_flight = f" (plus {format_usd(tracker._reserved)} held for calls in flight)"
    return (
        f"Not sent: this call could cost up to {format_usd(estimate)}, and "
        f"{format_usd(tracker._cost)} of {label} of {format_usd(tracker.budget_usd or 0.0)} "
        f"is already spent{in_flight}. "
        "Raise budget_usd, lower max_tokens, or use a cheaper model"
    )


_all_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()


def _budgets() -> list[dict[str, Any]]:
    """The live trackers that hold a budget (the JupyterLab panel's budgets)."""
    return [
        {"name": t.name or "budget", "budget_usd": t.budget_usd, "spent_usd": t.cost_usd,
         "remaining_usd": t.remaining_usd, "calls": t.calls}
        for t in list(_all_trackers) if t.budget_usd is not None
    ]


inflight.add_status_source("budgets", _budgets)
