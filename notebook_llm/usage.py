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

Trackers and budgets live in :mod:`notebook_llm._tracking` (which tracker
sees a call, and why), reading the log back in :mod:`notebook_llm._usage`;
their public names are importable from here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import sys
import time
from datetime import date, datetime, timedelta, timezone
from types import ModuleType
from typing import TYPE_CHECKING, Any

from notebook_llm import pricing
from notebook_llm._render import terminal_text
from notebook_llm._tracking import (
    DEFAULT_MAX_OUTPUT_TOKENS as DEFAULT_MAX_OUTPUT_TOKENS,
)
from notebook_llm._tracking import (
    TRACKERS_KEY,
    BudgetMiddleware,
    Tracker,
    TrackingMiddleware,
    call_latency,
    carry_trackers,
    current_trackers,
    finish_reason,
    track,
)
from notebook_llm._usage import COST_GROUPS as COST_GROUPS
from notebook_llm._usage import costs, usage
from notebook_llm._usage import parse_time as parse_time
from notebook_llm._usage import utc_iso as _utc_iso
from notebook_llm.core.client import CallContext, Middleware
from notebook_llm.core.errors import redact
from notebook_llm.core.money import format_usd
from notebook_llm.core.types import Completion, Message, Request, ToolCall, Usage
from notebook_llm.store.log import call_log

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


# ctx.metadata key private to this module (the log stores only conversation_id / batch_id).
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


def attach(ctx: CallContext, format_model: Any = None) -> None:
    """Note on ``ctx`` what the middlewares need from the moment a call is prepared.

    The trackers active now (read in the caller's context), and the Pydantic
    model of ``response_format`` so a cache hit can rebuild ``parsed``.
    """
    ctx.metadata[TRACKERS_KEY] = current_trackers()
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


def notebook_path() -> str | None:
    """The running notebook's path when it is known cheaply, else ``None``.

    VS Code's ``__vsc_ipynb_file__``, ipykernel's ``__session__``, then
    ``$JPY_SESSION_NAME``. IPython is only consulted when already imported.
    """
    return _shell_notebook() or os.environ.get("JPY_SESSION_NAME") or None


def _shell_notebook() -> str | None:
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
    return None


class LogMiddleware(Middleware):
    """Writes every call (success, error, cancelled stream) to the call log.

    Skipped when the call says ``log=False`` or :func:`set_logging` is off.
    Writing happens on the log's own thread and never raises into the call;
    what can wait (JSON encoding of the messages, redaction, the timestamp's
    text) waits for that thread (see :meth:`CallLog.record_values
    <notebook_llm.store.log.CallLog.record_values>`).

    The notebook's path (:func:`notebook_path`) is looked up at each call in
    the IPython namespace; ``$JPY_SESSION_NAME``, the fallback, is read once,
    when the middleware is made (an environment lookup costs a microsecond).

    Args:
        db_path: the database file (default: as :func:`call_log`).
    """

    def __init__(self, db_path: PathLike | None = None) -> None:
        self.db_path = db_path
        self._session_name = os.environ.get("JPY_SESSION_NAME") or None

    async def after(
        self, ctx: CallContext, completion: Completion | None, error: BaseException | None
    ) -> None:
        if not ctx.log or not _switches["log"]:
            return
        try:
            notebook = _shell_notebook() or self._session_name
            values = _log_values(ctx, completion, error, notebook)
        except Exception as exc:  # noqa: BLE001 - logging must never break a call
            logger.warning("could not log a call: %s", redact(f"{type(exc).__name__}: {exc}"))
            return
        call_log(self.db_path).record_values(values)


_NO_USAGE = Usage()


def _log_values(
    ctx: CallContext, completion: Completion | None, error: BaseException | None,
    notebook: str | None,
) -> tuple[Any, ...]:
    """One ``calls`` row in :data:`~notebook_llm.store.log.CALL_COLUMNS` order.

    Objects handed to the writer thread are copies it alone holds (the caller
    may change its lists once the call returns), or text encoded now.
    """
    request = ctx.request
    usage = completion.usage if completion is not None else _NO_USAGE
    params = _params(request)
    metadata = ctx.metadata
    conversation_id = metadata.get("conversation_id")
    batch_id = metadata.get("batch_id")
    if completion is not None:
        response_model, response_text = completion.response_model, completion.text
        reasoning, ttft_s = completion.reasoning, completion.ttft_s
        cost_usd, cost_status = completion.cost_usd, completion.cost_status
        cached = int(completion.cached)
        tool_calls = json.dumps(
            [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in completion.tool_calls],
            default=str, ensure_ascii=False,
        ) if completion.tool_calls else None
    else:
        response_model = response_text = reasoning = ttft_s = cost_usd = cost_status = None
        cached, tool_calls = 0, None
    return (
        None,  # id: made by the writer
        time.time_ns(),  # created_at
        ctx.ref.provider,
        ctx.model,
        response_model,
        _messages_snapshot(request.messages),
        request.system,
        json.dumps(params, default=str, ensure_ascii=False) if params else "{}",
        response_text,
        reasoning,
        tool_calls,
        finish_reason(completion, error),
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
        call_latency(ctx, completion),
        ttft_s,
        cost_usd,
        cost_status,
        cached,
        type(error).__name__ if error is not None else None,
        str(error) if error is not None else None,  # redacted by the writer, like every text
        list(ctx.tags) if ctx.tags else "[]",
        None if conversation_id is None else str(conversation_id),
        None if batch_id is None else str(batch_id),
        notebook,
    )


def _messages_snapshot(messages: list[Message]) -> list[Message] | str:
    """``messages`` for the writer to encode: copies when they hold only text, else JSON now.

    Plain ``{"role", "content"}`` messages with text content are copied (cheap)
    and encoded by the writer thread; anything nested (content parts, tool
    calls) could be changed by the caller later, so it is encoded here.
    """
    copies: list[Message] = []
    for message in messages:
        if len(message) > 2 or type(message.get("content")) is not str:
            return json.dumps(messages, default=str, ensure_ascii=False)
        copies.append(dict(message))  # type: ignore[arg-type]
    return copies


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


# -- reading the log back: notebook_llm._usage (usage, costs); displays below ----------


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
                         f"{row.output_tokens:,}", "—" if cost != cost else format_usd(cost),
                         row.unpriced_calls or "", row.cached_calls or "", row.errors or ""])
        if len(self.df) > 1:
            df = self.df
            total = df["cost_usd"].sum(min_count=1)
            rows.append(["total", int(df["calls"].sum()), f"{int(df['input_tokens'].sum()):,}",
                         f"{int(df['output_tokens'].sum()):,}",
                         "—" if total != total else format_usd(float(total)),
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
