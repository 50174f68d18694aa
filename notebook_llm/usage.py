"""Every call logged; costs, usage and budgets as DataFrames.

Two halves:

- **Middlewares** that :class:`notebook_llm.Client` wires around every call
  (see :func:`standard_middlewares`): the response cache and budget checks
  before sending; pricing, trackers and the SQLite call log after.
- **Features** that read the log back: :func:`usage`, :func:`costs`,
  :func:`logs`, :func:`usage_table`, :func:`track`, and the plots
  (:func:`plot_costs`, :func:`plot_usage_over_time`).

pandas is imported inside the functions that build DataFrames, so importing
this module stays cheap. Costs are never guessed: an unknown price is ``None``
(``"unpriced"``) and is counted separately, so unknown never looks free.

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
import functools
import hashlib
import json
import logging
import os
import re
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Coroutine, Sequence
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from notebook_llm import pricing
from notebook_llm._render import terminal_text
from notebook_llm.core import loop as _loop
from notebook_llm.core.client import CallContext, Middleware
from notebook_llm.core.errors import BudgetExceededError, redact
from notebook_llm.core.money import format_usd
from notebook_llm.core.tokens import estimate_prompt_tokens
from notebook_llm.core.types import Completion, Request, ToolCall, Usage
from notebook_llm.store.db import default_db_path
from notebook_llm.store.log import CallLog

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

    from notebook_llm.store.db import PathLike

__all__ = [
    "BudgetMiddleware",
    "CacheMiddleware",
    "LogMiddleware",
    "Logs",
    "PricingMiddleware",
    "Tracker",
    "TrackingMiddleware",
    "UsageTable",
    "cache",
    "cache_key",
    "call_log",
    "carry_trackers",
    "costs",
    "current_trackers",
    "logs",
    "plot_costs",
    "plot_usage_over_time",
    "set_cache",
    "set_logging",
    "standard_middlewares",
    "track",
    "usage",
    "usage_table",
]

logger = logging.getLogger("notebook_llm.usage")

T = TypeVar("T")

DEFAULT_MAX_OUTPUT_TOKENS = 1024
"""Output tokens assumed by budget estimates when a call sets no ``max_tokens``."""

COST_GROUPS = ("model", "provider", "day", "notebook", "tag")

# ctx.metadata keys private to this module (the log stores only conversation_id / batch_id).
_TRACKERS = "_nl_trackers"
_RESERVED = "_nl_reserved"
_FORMAT_MODEL = "_nl_format_model"

# -- global switches ------------------------------------------------------------------

_switches = {"log": True, "cache": False}


def set_logging(enabled: bool) -> bool:
    """Turn the call log on or off for every client (a master switch).

    Off means nothing is written, whatever ``Client(log=...)`` or ``log=`` per
    call say. Returns the previous setting.
    """
    previous = _switches["log"]
    _switches["log"] = bool(enabled)
    return previous


def set_cache(enabled: bool) -> bool:
    """Use the response cache by default for clients that did not choose.

    ``Client(cache=True/False)`` and ``cache=`` per call still win. Returns the
    previous setting.
    """
    previous = _switches["cache"]
    _switches["cache"] = bool(enabled)
    return previous


def logging_enabled() -> bool:
    """Whether the master logging switch is on."""
    return _switches["log"]


def cache_default() -> bool:
    """Whether the response cache is on by default (see :func:`set_cache`)."""
    return _switches["cache"]


# -- the process-wide call log ---------------------------------------------------------

_logs: dict[str, CallLog] = {}
_logs_lock = threading.Lock()


def _resolve_path(db_path: PathLike | None) -> str:
    return _absolute(str(default_db_path() if db_path is None else db_path))


@functools.lru_cache(maxsize=64)
def _absolute(path: str) -> str:
    # Every call resolves its log's path: remember the filesystem's answer.
    return path if path == ":memory:" else str(Path(path).expanduser().resolve())


def call_log(db_path: PathLike | None = None) -> CallLog:
    """The process-wide :class:`~notebook_llm.store.CallLog` for a database file.

    One per file, created on first use. ``db_path`` defaults to
    ``$NOTEBOOK_LLM_DB``, else the platform data directory (read at each call,
    so changing the variable switches files).
    """
    path = _resolve_path(db_path)
    with _logs_lock:
        log = _logs.get(path)
        if log is None or log._closed:
            log = _logs[path] = CallLog(path)
        return log


# -- trackers ---------------------------------------------------------------------------

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
    if stack or _carried.get() or not _on_library_loop():
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


class Tracker:
    """Calls made while it is active, with their tokens and costs.

    Use :func:`track` (``with nl.track() as t:``); a client also keeps one for
    all of its calls (``client.tracker``), which holds ``Client(budget_usd=...)``.

    Attributes:
        budget_usd: refuse calls that could take :attr:`cost_usd` over this.
        name: a label for messages and displays.
    """

    def __init__(self, budget_usd: float | None = None, name: str | None = None) -> None:
        self.budget_usd = budget_usd
        self.name = name
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._cost = 0.0
        self._reserved = 0.0
        self._tokens: list[contextvars.Token[tuple[Tracker, ...]]] = []

    # -- totals ---------------------------------------------------------------------

    @property
    def records(self) -> list[dict[str, Any]]:
        """One dict per call (a copy): time, model, tokens, cost, status, error."""
        with self._lock:
            return list(self._records)

    @property
    def calls(self) -> int:
        """How many calls ended while tracked (errors and cache hits included)."""
        return len(self._records)

    @property
    def cost_usd(self) -> float:
        """Dollars spent on priced calls. Unpriced calls are not in it: see :attr:`unpriced`."""
        return self._cost

    @property
    def input_tokens(self) -> int:
        """Prompt tokens over all calls."""
        return sum(r["input_tokens"] for r in self.records)

    @property
    def output_tokens(self) -> int:
        """Generated tokens over all calls."""
        return sum(r["output_tokens"] for r in self.records)

    @property
    def tokens(self) -> int:
        """Input plus output tokens over all calls."""
        return sum(r["total_tokens"] for r in self.records)

    @property
    def unpriced(self) -> int:
        """Calls whose price is unknown (their cost is not in :attr:`cost_usd`)."""
        return sum(1 for r in self.records if r["cost_status"] == "unpriced")

    @property
    def cached(self) -> int:
        """Calls answered from the response cache."""
        return sum(1 for r in self.records if r["cached"])

    @property
    def errors(self) -> int:
        """Calls that ended in an error."""
        return sum(1 for r in self.records if r["error_class"])

    @property
    def remaining_usd(self) -> float | None:
        """Budget left, or ``None`` without a budget."""
        if self.budget_usd is None:
            return None
        return self.budget_usd - self._cost

    @property
    def df(self) -> pd.DataFrame:
        """The calls as a DataFrame, one row per call."""
        import pandas as pd

        return pd.DataFrame.from_records(self.records, columns=list(_RECORD_COLUMNS))

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

    def _add(self, record: dict[str, Any], release: float = 0.0) -> None:
        with self._lock:
            self._records.append(record)
            if record["cost_usd"] is not None:
                self._cost += record["cost_usd"]
            if release:
                self._reserved = max(self._reserved - release, 0.0)

    def reset(self) -> None:
        """Forget the calls recorded so far (the budget stays)."""
        with self._lock:
            self._records.clear()
            self._cost = 0.0

    # -- context management -------------------------------------------------------------

    def __enter__(self) -> Tracker:
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

    async def __aenter__(self) -> Tracker:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)

    # -- display --------------------------------------------------------------------------

    def summary(self) -> str:
        """One line: calls, tokens, cost (with unpriced and cached counts), budget."""
        parts = [f"{self.calls} call{'s' if self.calls != 1 else ''}", f"{self.tokens:,} tokens",
                 _usd(self.cost_usd)]
        if self.unpriced:
            parts[-1] += f" + {self.unpriced} unpriced"
        if self.cached:
            parts.append(f"{self.cached} cached")
        if self.errors:
            parts.append(f"{self.errors} error{'s' if self.errors != 1 else ''}")
        if self.budget_usd is not None:
            parts.append(f"budget {_usd(self.budget_usd)} ({_usd(self.remaining_usd or 0.0)} left)")
        return " · ".join(parts)

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<Tracker{label}: {self.summary()}>"

    def _repr_html_(self) -> str:
        from notebook_llm._render import html_escape, plain_table_html

        by_model: dict[str, list[Any]] = {}
        for record in self.records:
            row = by_model.setdefault(record["model"], [record["model"], 0, 0, 0, 0.0, 0])
            row[1] += 1
            row[2] += record["input_tokens"]
            row[3] += record["output_tokens"]
            if record["cost_usd"] is not None:
                row[4] += record["cost_usd"]
            if record["cost_status"] == "unpriced":
                row[5] += 1
        rows = [[m, n, i, o, _usd(c), u or ""] for m, n, i, o, c, u in by_model.values()]
        table = plain_table_html(
            ["model", "calls", "input tokens", "output tokens", "cost", "unpriced"], rows
        ) if rows else ""
        title = html_escape(self.name or "tracked")
        return f"<p><b>{title}</b>: {html_escape(self.summary())}</p>{table}"


def track(budget_usd: float | None = None, name: str | None = None) -> Tracker:
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
    """
    return Tracker(budget_usd=budget_usd, name=name)


_RECORD_COLUMNS = (
    "time", "model", "provider", "input_tokens", "output_tokens", "total_tokens",
    "cost_usd", "cost_status", "cached", "latency_s", "finish_reason", "error_class", "tags",
)  # fmt: skip


def _record(
    ctx: CallContext, completion: Completion | None, error: BaseException | None
) -> dict[str, Any]:
    usage = completion.usage if completion is not None else Usage()
    return {
        "time": datetime.now().astimezone(),
        "model": ctx.model,
        "provider": ctx.ref.provider,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "cost_usd": completion.cost_usd if completion is not None else None,
        "cost_status": completion.cost_status if completion is not None else None,
        "cached": bool(completion is not None and completion.cached),
        "latency_s": _latency(ctx, completion),
        "finish_reason": _finish_reason(completion, error),
        "error_class": type(error).__name__ if error is not None else None,
        "tags": list(ctx.tags),
    }


def _trackers_of(ctx: CallContext) -> tuple[Tracker, ...]:
    trackers = ctx.metadata.get(_TRACKERS)
    if trackers is None:
        trackers = ctx.metadata[_TRACKERS] = current_trackers()
    return trackers  # type: ignore[no-any-return]


def attach(ctx: CallContext, format_model: Any = None) -> None:
    """Note on ``ctx`` what the middlewares need from the moment a call is prepared.

    The trackers active now (read in the caller's context), and the Pydantic
    model of ``response_format`` so a cache hit can rebuild ``parsed``.
    """
    ctx.metadata[_TRACKERS] = current_trackers()
    if format_model is not None:
        ctx.metadata[_FORMAT_MODEL] = format_model


# -- middlewares --------------------------------------------------------------------------


class PricingMiddleware(Middleware):
    """Sets ``cost_usd`` / ``cost_status`` on every completion (also partial ones).

    Cache hits are ``"cached"`` at $0; an unknown model is ``None`` /
    ``"unpriced"``, never 0.
    """

    async def after(
        self, ctx: CallContext, completion: Completion | None, error: BaseException | None
    ) -> None:
        if completion is None:
            return
        if completion.cached:
            completion.cost_usd, completion.cost_status = 0.0, "cached"
            return
        cost, status = pricing.price(
            ctx.info.pricing_id or ctx.ref.provider, ctx.ref.name, completion.usage,
            free=ctx.info.free,
        )
        completion.cost_usd = cost
        completion.cost_status = status  # type: ignore[assignment]


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
        record = _record(ctx, completion, error)
        reserved: dict[int, float] = ctx.metadata.pop(_RESERVED, None) or {}
        for tracker in _with_own(_trackers_of(ctx), self.own):
            tracker._add(record, release=reserved.pop(id(tracker), 0.0))


def _with_own(trackers: Sequence[Tracker], own: Tracker | None) -> list[Tracker]:
    out = [] if own is None else [own]
    for tracker in trackers:
        if all(tracker is not seen for seen in out):
            out.append(tracker)
    return out


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
        budgeted = [t for t in _with_own(_trackers_of(ctx), self.own) if t.budget_usd is not None]
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
        ctx.metadata[_RESERVED] = held
        return None


def _usd(value: float) -> str:
    return f"${value:.6f}" if abs(value) < 0.01 else f"${value:.4f}"


def _budget_message(tracker: Tracker, estimate: float) -> str:
    label = f"the {tracker.name} budget" if tracker.name else "the budget"
    in_flight = ""
    if tracker._reserved:
        in_flight = f" (plus {_usd(tracker._reserved)} held for calls in flight)"
    return (
        f"Not sent: this call could cost up to {_usd(estimate)}, and {_usd(tracker._cost)} of "
        f"{label} of {_usd(tracker.budget_usd or 0.0)} is already spent{in_flight}. "
        "Raise budget_usd, lower max_tokens, or use a cheaper model"
    )


class CacheMiddleware(Middleware):
    """Answers repeated identical calls from the ``cache`` table.

    Used when the call asks for it (``cache=True``, ``Client(cache=True)`` or
    :func:`set_cache`). A hit sends nothing and comes back with
    ``cached=True`` and ``cost_status="cached"``. Completions are stored as
    JSON without the raw payload, with key-looking strings redacted (so a key
    echoed in a response is not written to disk, and comes back redacted).
    Cache failures are logged, never raised.

    Args:
        db_path: the database file (default: as :func:`call_log`).
    """

    def __init__(self, db_path: PathLike | None = None) -> None:
        self.db_path = db_path

    async def before(self, ctx: CallContext) -> Completion | None:
        if not ctx.cache:
            return None
        started = time.perf_counter()
        key = cache_key(ctx)
        try:
            # A primary-key lookup on a local file: quick enough to do on the loop.
            store = call_log(self.db_path).store
            rows = store.execute("SELECT completion_json FROM cache WHERE key = ?", (key,))
            if not rows:
                return None
            store.execute("UPDATE cache SET hits = hits + 1 WHERE key = ?", (key,))
            completion = _completion_from_json(str(rows[0]["completion_json"]))
        except (sqlite3.Error, OSError, ValueError, TypeError, KeyError) as exc:
            logger.warning("response cache lookup failed: %s", exc)
            return None
        completion.model, completion.provider = ctx.model, ctx.ref.provider
        completion.messages = ctx.request.messages
        format_model = ctx.metadata.get(_FORMAT_MODEL)
        if ctx.request.response_format and completion.text:
            from notebook_llm.core.tools import parse_structured

            try:
                completion.parsed = parse_structured(completion.text, format_model)
            except ValueError:
                return None  # the stored answer no longer parses: ask again
        completion.latency_s = time.perf_counter() - started
        if ctx.kind == "stream":
            completion.ttft_s = completion.latency_s
        return completion

    async def after(
        self, ctx: CallContext, completion: Completion | None, error: BaseException | None
    ) -> None:
        if (not ctx.cache or completion is None or error is not None or completion.cached
                or completion.finish_reason in ("cancelled", "error")):
            return
        try:
            call_log(self.db_path).store.execute(
                "INSERT OR REPLACE INTO cache (key, created_at, provider, model, completion_json,"
                " hits) VALUES (?, ?, ?, ?, ?, 0)",
                (cache_key(ctx), _utc_iso(datetime.now(timezone.utc)), ctx.ref.provider,
                 ctx.ref.name, _completion_json(completion)),
            )
        except (sqlite3.Error, OSError) as exc:
            logger.warning("could not store the response in the cache: %s", exc)


def cache_key(ctx: CallContext) -> str:
    """The cache key of a call: sha256 of a canonical JSON of what decides the answer.

    Provider, model, messages, system prompt and parameters (temperature,
    max_tokens, tool schemas, tool_choice, response_format, reasoning_effort,
    provider keyword arguments). Never the key, base URL or timeout.
    """
    request = ctx.request
    payload = {
        "provider": ctx.ref.provider,
        "model": request.model,
        "messages": request.messages,
        "system": request.system,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "tools": [
            {"name": t.name, "description": t.description, "parameters": t.parameters}
            for t in request.tools or []
        ],
        "tool_choice": request.tool_choice,
        "response_format": request.response_format,
        "reasoning_effort": request.reasoning_effort,
        "extra": request.extra,
        "headers": sorted(request.headers),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _completion_json(completion: Completion) -> str:
    data = completion.to_dict()
    for name in ("cost_usd", "cost_status", "cached", "model", "provider", "total_tokens"):
        data.pop(name, None)
    data["tool_calls"] = [
        {"id": c.id, "name": c.name, "arguments": c.arguments, "arguments_json": c.arguments_json}
        for c in completion.tool_calls
    ]
    data["id"] = completion.id
    data["refusal"] = completion.refusal
    return redact(json.dumps(data, ensure_ascii=False, default=str))


def _completion_from_json(text: str) -> Completion:
    data = json.loads(text)
    return Completion(
        text=data.get("text") or "",
        response_model=data.get("response_model"),
        reasoning=data.get("reasoning"),
        tool_calls=[
            ToolCall(id=c["id"], name=c["name"], arguments=c.get("arguments") or {},
                     arguments_json=c.get("arguments_json") or "")
            for c in data.get("tool_calls") or []
        ],
        finish_reason=data.get("finish_reason") or "stop",
        usage=Usage(
            input_tokens=int(data.get("input_tokens") or 0),
            output_tokens=int(data.get("output_tokens") or 0),
            cached_input_tokens=int(data.get("cached_input_tokens") or 0),
            cache_write_tokens=int(data.get("cache_write_tokens") or 0),
            reasoning_tokens=int(data.get("reasoning_tokens") or 0),
        ),
        cost_usd=0.0,
        cost_status="cached",
        refusal=data.get("refusal"),
        id=data.get("id"),
        cached=True,
    )


class _Cache:
    """The response cache: ``nl.cache.clear()``, ``nl.cache.stats()``.

    Turn it on per call (``cache=True``), per client (``Client(cache=True)``)
    or for every client (``nl.set_cache(True)``).
    """

    @property
    def enabled(self) -> bool:
        """Whether clients use the cache by default (see :func:`set_cache`)."""
        return _switches["cache"]

    def clear(self, model: str | None = None, *, db_path: PathLike | None = None) -> int:
        """Delete cached responses (only ``model``'s, ``provider:model`` or name, when given).

        Returns:
            How many were deleted.
        """
        store = call_log(db_path).store
        if model is None:
            count = store.execute("SELECT COUNT(*) AS n FROM cache")[0]["n"]
            store.execute("DELETE FROM cache")
        else:
            where = "model = ? OR provider || ':' || model = ?"
            rows = store.execute(f"SELECT COUNT(*) AS n FROM cache WHERE {where}", (model, model))
            count = rows[0]["n"]
            store.execute(f"DELETE FROM cache WHERE {where}", (model, model))
        return int(count)  # type: ignore[call-overload]

    def stats(self, *, db_path: PathLike | None = None) -> dict[str, Any]:
        """``{"entries", "hits", "bytes", "enabled"}`` for the cache in ``db_path``."""
        row = call_log(db_path).store.execute(
            "SELECT COUNT(*) AS entries, COALESCE(SUM(hits), 0) AS hits,"
            " COALESCE(SUM(LENGTH(completion_json)), 0) AS bytes FROM cache"
        )[0]
        return {**row, "enabled": self.enabled}

    def __repr__(self) -> str:
        return f"<notebook_llm cache: {'on' if self.enabled else 'off'} by default>"


cache = _Cache()
"""The response cache namespace (``nl.cache.clear()``, ``nl.cache.stats()``)."""


# Parameter names whose values never reach the log.
_SECRET_NAME = re.compile(r"api[_-]?key|secret|password|passwd|token$|authorization|credential|"
                          r"headers$|cookie|subscription", re.IGNORECASE)


def _safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            str(k): "[REDACTED]" if _SECRET_NAME.search(str(k)) else _safe(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def _params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = {
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "tools": [tool.name for tool in request.tools] if request.tools else None,
        "tool_choice": request.tool_choice,
        "response_format": request.response_format,
        "reasoning_effort": request.reasoning_effort,
        "extra": _safe(request.extra) if request.extra else None,
        # Header names only: their values may be credentials.
        "headers": sorted(request.headers) if request.headers else None,
    }
    return {name: value for name, value in params.items() if value is not None}


def _latency(ctx: CallContext, completion: Completion | None) -> float:
    if completion is not None and completion.latency_s is not None:
        return completion.latency_s
    return max(time.time() - ctx.started_at, 0.0)


def _finish_reason(completion: Completion | None, error: BaseException | None) -> str:
    if completion is not None:
        return completion.finish_reason
    from notebook_llm.core.errors import CancelledError

    return "cancelled" if isinstance(error, (CancelledError, asyncio.CancelledError)) else "error"


def notebook_path() -> str | None:
    """The running notebook's path when it is known cheaply, else ``None``.

    VS Code's ``__vsc_ipynb_file__``, ipykernel's ``__session__``, then
    ``$JPY_SESSION_NAME``. IPython is only consulted when already imported.
    """
    ipython_module = sys.modules.get("IPython")
    shell = None
    if ipython_module is not None:
        try:
            shell = ipython_module.get_ipython()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - detection is best effort
            shell = None
    namespace = getattr(shell, "user_ns", None)
    if isinstance(namespace, dict):
        for name in ("__vsc_ipynb_file__", "__session__"):
            value = namespace.get(name)
            if isinstance(value, str) and value:
                return value
    return os.environ.get("JPY_SESSION_NAME") or None


class LogMiddleware(Middleware):
    """Writes every call (success, error, cancelled stream) to the call log.

    Skipped when the call says ``log=False`` or :func:`set_logging` is off.
    Writing happens on the log's own thread and never raises into the call.

    Args:
        db_path: the database file (default: as :func:`call_log`).
    """

    def __init__(self, db_path: PathLike | None = None) -> None:
        self.db_path = db_path

    async def after(
        self, ctx: CallContext, completion: Completion | None, error: BaseException | None
    ) -> None:
        if not ctx.log or not _switches["log"]:
            return
        try:
            row = _log_row(ctx, completion, error)
        except Exception as exc:  # noqa: BLE001 - logging must never break a call
            logger.warning("could not log a call: %s", redact(f"{type(exc).__name__}: {exc}"))
            return
        call_log(self.db_path).record(row)


def _log_row(
    ctx: CallContext, completion: Completion | None, error: BaseException | None
) -> dict[str, Any]:
    request = ctx.request
    usage = completion.usage if completion is not None else Usage()
    row: dict[str, Any] = {
        "provider": ctx.ref.provider,
        "model": ctx.model,
        "messages_json": request.messages,
        "system": request.system,
        "params_json": _params(request),
        "finish_reason": _finish_reason(completion, error),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "latency_s": _latency(ctx, completion),
        "tags_json": list(ctx.tags),
        "conversation_id": _text_or_none(ctx.metadata.get("conversation_id")),
        "batch_id": _text_or_none(ctx.metadata.get("batch_id")),
        "notebook_path": notebook_path(),
        "cached": 0,
    }
    if completion is not None:
        row.update(
            response_model=completion.response_model,
            response_text=completion.text,
            reasoning=completion.reasoning,
            tool_calls_json=[
                {"id": c.id, "name": c.name, "arguments": c.arguments}
                for c in completion.tool_calls
            ] or None,
            ttft_s=completion.ttft_s,
            cost_usd=completion.cost_usd,
            cost_status=completion.cost_status,
            cached=int(completion.cached),
        )
    if error is not None:
        row["error_class"] = type(error).__name__
        row["error_message"] = redact(str(error))
    return row


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def standard_middlewares(
    *, db_path: PathLike | None = None, tracker: Tracker | None = None
) -> list[Middleware]:
    """The middlewares ``notebook_llm.Client`` runs around every call, in order.

    Before sending: the cache (a hit answers at once), then budgets. After:
    pricing, then trackers (which need the cost), then the log (which stores it).
    The cache comes before budgets so that a free cache hit is never refused.
    """
    return [
        CacheMiddleware(db_path),
        BudgetMiddleware(tracker),
        PricingMiddleware(),
        TrackingMiddleware(tracker),
        LogMiddleware(db_path),
    ]


# -- reading the log back -----------------------------------------------------------------

_SHORTHAND = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(s|secs?|m|mins?|h|hrs?|d|days?|w|wks?|weeks?)\s*$", re.IGNORECASE
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _local_tz() -> tzinfo:
    return datetime.now().astimezone().tzinfo or timezone.utc


def parse_time(value: datetime | date | timedelta | str | None) -> datetime | None:
    """A point in time as an aware UTC datetime.

    Accepts a datetime (naive means local time), a date (local midnight), a
    timedelta (that long ago), an ISO string, or ``"now"``, ``"today"``,
    ``"yesterday"``, and ``"30m"``, ``"1h"``, ``"7d"``, ``"2w"`` (ago).
    """
    if value is None:
        return None
    now = datetime.now(timezone.utc)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).astimezone(timezone.utc)
    if isinstance(value, timedelta):
        return now - value
    if not isinstance(value, str):
        raise TypeError(
            f"expected a datetime, date, timedelta or string, not {type(value).__name__}"
        )
    text = value.strip().lower()
    midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).astimezone()
    if text == "now":
        return now
    if text == "today":
        return midnight.astimezone(timezone.utc)
    if text == "yesterday":
        return (midnight - timedelta(days=1)).astimezone(timezone.utc)
    match = _SHORTHAND.match(text)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)[0].lower()]
        return now - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"Cannot read {value!r} as a time: use a datetime, an ISO string, "
            "'today', 'yesterday', or an age such as '30m', '1h', '7d'"
        ) from None
    return parsed.astimezone(timezone.utc)


def _utc_iso(moment: datetime) -> str:
    # The log's created_at format, so that string comparison orders correctly.
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


_USAGE_COLUMNS = (
    "id", "time", "provider", "model", "response_model", "input_tokens", "output_tokens",
    "total_tokens", "cached_input_tokens", "reasoning_tokens", "cost_usd", "cost_status",
    "cached", "latency_s", "ttft_s", "finish_reason", "error_class", "error_message", "tags",
    "conversation_id", "batch_id", "notebook_path", "prompt", "response",
)  # fmt: skip
_TOKEN_COLUMNS = ("input_tokens", "output_tokens", "total_tokens", "cached_input_tokens",
                  "reasoning_tokens")


def _query(
    since: Any = None, until: Any = None, model: str | None = None,
    provider: str | None = None, tag: str | None = None, limit: int | None = None,
    db_path: PathLike | None = None,
) -> list[dict[str, Any]]:
    where: list[str] = []
    params: list[Any] = []
    start, end = parse_time(since), parse_time(until)
    if start is not None:
        where.append("created_at >= ?")
        params.append(_utc_iso(start))
    if end is not None:
        where.append("created_at < ?")
        params.append(_utc_iso(end))
    if model is not None:
        # "openai:gpt-4o-mini" or just "gpt-4o-mini" (names may contain ':' themselves).
        where.append("(model = ? OR substr(model, instr(model, ':') + 1) = ?)")
        params += [model, model]
    if provider is not None:
        where.append("provider = ?")
        params.append(provider.rstrip(":"))
    if tag is not None:
        where.append("EXISTS (SELECT 1 FROM json_each(calls.tags_json) WHERE value = ?)")
        params.append(tag)
    return call_log(db_path).query(" AND ".join(where), tuple(params), limit=limit)


def _last_user_text(messages_json: str | None) -> str:
    try:
        messages = json.loads(messages_json or "[]")
    except ValueError:
        return ""
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    records = []
    for row in rows:
        try:
            tags = json.loads(row.get("tags_json") or "[]")
        except ValueError:
            tags = []
        records.append({
            **{column: row.get(column) for column in _USAGE_COLUMNS},
            "time": row["created_at"],
            "total_tokens": (row.get("input_tokens") or 0) + (row.get("output_tokens") or 0),
            "tags": tags,
            "prompt": _last_user_text(row.get("messages_json")),
            "response": row.get("response_text"),
        })
    df = pd.DataFrame.from_records(records, columns=list(_USAGE_COLUMNS))
    df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601").dt.tz_convert(_local_tz())
    for column in _TOKEN_COLUMNS:
        df[column] = pd.to_numeric(df[column]).fillna(0).astype("int64")
    for column in ("cost_usd", "latency_s", "ttft_s"):
        df[column] = pd.to_numeric(df[column]).astype("float64")
    df["cached"] = df["cached"].fillna(0).astype(bool)
    return df


def usage(
    since: datetime | date | timedelta | str | None = None,
    until: datetime | date | timedelta | str | None = None,
    model: str | None = None,
    provider: str | None = None,
    tag: str | None = None,
    limit: int | None = None,
    *,
    db_path: PathLike | None = None,
) -> pd.DataFrame:
    """Logged calls as a DataFrame, oldest first.

    Args:
        since: only calls at or after this: a datetime, an ISO string, or
            ``"today"``, ``"yesterday"``, ``"30m"``, ``"1h"``, ``"7d"``, ``"2w"``.
        until: only calls before this (same forms).
        model: ``provider:model`` or the bare model name.
        provider: a provider name.
        tag: only calls carrying this tag.
        limit: only the most recent ``limit`` calls.
        db_path: the database file (default: ``$NOTEBOOK_LLM_DB``, else the user data dir).

    Returns:
        One row per call: ``time`` (local, tz-aware), ``model``, tokens,
        ``cost_usd`` (NaN when unpriced, see ``cost_status``), ``latency_s``,
        ``cached``, ``error_class`` / ``error_message``, ``tags``,
        ``notebook_path``, ``prompt`` (last user message), ``response``. Export
        it as any DataFrame: ``nl.usage("7d").to_csv("calls.csv")`` or
        ``.to_parquet("calls.parquet")``.
    """
    return _frame(_query(since, until, model, provider, tag, limit, db_path))


def costs(
    by: str = "model",
    since: datetime | date | timedelta | str | None = None,
    until: datetime | date | timedelta | str | None = None,
    *,
    db_path: PathLike | None = None,
) -> pd.DataFrame:
    """Totals per model, provider, day, notebook or tag.

    Args:
        by: ``"model"``, ``"provider"``, ``"day"``, ``"notebook"`` or ``"tag"``
            (a call with several tags counts once under each).
        since: as in :func:`usage`.
        until: as in :func:`usage`.
        db_path: as in :func:`usage`.

    Returns:
        One row per group: ``calls``, ``input_tokens``, ``output_tokens``,
        ``total_tokens``, ``cost_usd`` (sum of the priced calls; NaN when none
        was priced), ``unpriced_calls`` (never counted as free),
        ``cached_calls`` and ``errors``; the most expensive first (by day:
        oldest first).
    """
    if by not in COST_GROUPS:
        raise ValueError(f"by must be one of {', '.join(map(repr, COST_GROUPS))}, not {by!r}")
    import pandas as pd

    df = usage(since=since, until=until, db_path=db_path)
    df = df.assign(
        unpriced=df["cost_status"].eq("unpriced"),
        is_error=df["error_class"].notna(),
    )
    if by == "day":
        df[by] = df["time"].dt.date
    elif by == "notebook":
        df[by] = df["notebook_path"].fillna("(unknown)")
    elif by == "tag":
        df[by] = df["tags"].map(lambda tags: list(tags) or ["(untagged)"])
        df = df.explode(by)
    out = (
        df.groupby(by, sort=by == "day")
        .agg(
            calls=("id", "size"),
            input_tokens=("input_tokens", "sum"),
            output_tokens=("output_tokens", "sum"),
            total_tokens=("total_tokens", "sum"),
            cost_usd=("cost_usd", lambda s: s.sum(min_count=1)),
            unpriced_calls=("unpriced", "sum"),
            cached_calls=("cached", "sum"),
            errors=("is_error", "sum"),
        )
        .reset_index()
    )
    for column in ("calls", "input_tokens", "output_tokens", "total_tokens", "unpriced_calls",
                   "cached_calls", "errors"):
        out[column] = out[column].astype("int64")
    out["cost_usd"] = pd.to_numeric(out["cost_usd"]).astype("float64")
    if by != "day":
        out = out.sort_values(["cost_usd", "calls"], ascending=False, na_position="last",
                              kind="stable").reset_index(drop=True)
    return out


def _excerpt(text: Any, limit: int) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Logs:
    """The last few logged calls, readable in a notebook; ``.df`` for everything.

    ``logs(5)`` in a cell shows model, time, prompt, response excerpt,
    tokens and cost of each; ``logs(100).df.to_csv("calls.csv")`` exports.
    """

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        """The calls, as :func:`usage` returns them."""

    def __len__(self) -> int:
        return len(self.df)

    def to_pandas(self) -> pd.DataFrame:
        """Same as :attr:`df`."""
        return self.df

    def _lines(self) -> list[tuple[str, str, str, str]]:
        out = []
        for row in self.df.iloc[::-1].itertuples(index=False):
            cost = format_usd(None if row.cost_usd != row.cost_usd else row.cost_usd,
                               row.cost_status or "unknown")
            head = (f"{row.model} · {row.time:%Y-%m-%d %H:%M:%S} · "
                    f"{row.input_tokens} in / {row.output_tokens} out · {cost}")
            if row.latency_s == row.latency_s and row.latency_s is not None:
                head += f" · {row.latency_s:.2f}s"
            if row.cached:
                head += " · cached"
            error = f"{row.error_class}: {row.error_message}" if row.error_class else ""
            out.append((head, _excerpt(row.prompt, 200), _excerpt(row.response, 300), error))
        return out

    def _repr_markdown_(self) -> str:
        from notebook_llm._render import escape_markdown, markdown_text

        if self.df.empty:
            return "*No calls logged.*"
        cards = []
        for head, prompt, response, error in self._lines():
            card = [f"**{markdown_text(head)}**", "", f"*Prompt:* {escape_markdown(prompt)}"]
            if response:
                card += ["", f"*Response:* {escape_markdown(response)}"]
            if error:
                card += ["", f"*Error:* {escape_markdown(_excerpt(error, 300))}"]
            cards.append("\n".join(card))
        return "\n\n---\n\n".join(cards)

    def __repr__(self) -> str:
        if self.df.empty:
            return "No calls logged."
        blocks = []
        for head, prompt, response, error in self._lines():
            lines = [head, f"  prompt:   {prompt}"]
            if response:
                lines.append(f"  response: {response}")
            if error:
                lines.append(f"  error:    {_excerpt(error, 300)}")
            blocks.append("\n".join(lines))
        return terminal_text("\n\n".join(blocks))


def logs(n: int = 3, *, model: str | None = None, db_path: PathLike | None = None) -> Logs:
    """The last ``n`` calls, newest first when shown.

    Example::

        nl.logs(5)                              # readable in a cell
        nl.logs(1000).df.to_parquet("calls.parquet")
    """
    return Logs(usage(model=model, limit=n, db_path=db_path))


class UsageTable:
    """Cost totals as a small HTML table with a total row (what ``%llm_usage`` shows)."""

    def __init__(self, df: pd.DataFrame, by: str) -> None:
        self.df = df
        """The totals, as :func:`costs` returns them."""
        self.by = by

    def to_pandas(self) -> pd.DataFrame:
        """Same as :attr:`df`."""
        return self.df

    def _rows(self) -> tuple[list[str], list[list[object]]]:
        columns = [self.by, "calls", "input tokens", "output tokens", "cost", "unpriced",
                   "cached", "errors"]
        rows: list[list[object]] = []
        for row in self.df.itertuples(index=False):
            cost = row.cost_usd
            rows.append([getattr(row, self.by), row.calls, f"{row.input_tokens:,}",
                         f"{row.output_tokens:,}", "—" if cost != cost else _usd(cost),
                         row.unpriced_calls or "", row.cached_calls or "", row.errors or ""])
        if len(self.df) > 1:
            df = self.df
            total = df["cost_usd"].sum(min_count=1)
            rows.append(["total", int(df["calls"].sum()), f"{int(df['input_tokens'].sum()):,}",
                         f"{int(df['output_tokens'].sum()):,}",
                         "—" if total != total else _usd(float(total)),
                         int(df["unpriced_calls"].sum()) or "", int(df["cached_calls"].sum()) or "",
                         int(df["errors"].sum()) or ""])
        return columns, rows

    def _repr_html_(self) -> str:
        from notebook_llm._render import plain_table_html

        if self.df.empty:
            return "<p>No calls logged.</p>"
        columns, rows = self._rows()
        note = ""
        if int(self.df["unpriced_calls"].sum()):
            note = "<p><small>Unpriced calls (no known price) are not in the cost.</small></p>"
        return plain_table_html(columns, rows) + note

    def __repr__(self) -> str:
        if self.df.empty:
            return "No calls logged."
        columns, rows = self._rows()
        widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True))]
        lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
        return terminal_text("\n".join(line.rstrip() for line in lines))


def usage_table(
    by: str = "model",
    since: datetime | date | timedelta | str | None = None,
    until: datetime | date | timedelta | str | None = None,
    *,
    db_path: PathLike | None = None,
) -> UsageTable:
    """:func:`costs` as a displayable table with a total row (for ``%llm_usage``)."""
    return UsageTable(costs(by=by, since=since, until=until, db_path=db_path), by)


def plot_costs(
    by: str = "model",
    since: datetime | date | timedelta | str | None = None,
    *,
    ax: Axes | None = None,
    db_path: PathLike | None = None,
) -> Axes:
    """Bar chart of cost per group (see :func:`notebook_llm.plots.plot_costs`)."""
    from notebook_llm.plots import plot_costs as plot

    return plot(by=by, since=since, ax=ax, db_path=db_path)


def plot_usage_over_time(
    freq: str = "D",
    since: datetime | date | timedelta | str | None = None,
    *,
    ax: Axes | None = None,
    db_path: PathLike | None = None,
) -> Axes:
    """Cost and tokens over time (see :func:`notebook_llm.plots.plot_usage_over_time`)."""
    from notebook_llm.plots import plot_usage_over_time as plot

    return plot(freq=freq, since=since, ax=ax, db_path=db_path)


class _UsageModule(ModuleType):
    """This module, callable: ``nl.usage(...)`` works whether ``nl.usage`` is this
    module (once ``notebook_llm.usage`` is imported, the package attribute is the
    submodule) or the function, and ``nl.usage.costs(...)`` works too."""

    def __call__(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        return usage(*args, **kwargs)


sys.modules[__name__].__class__ = _UsageModule
