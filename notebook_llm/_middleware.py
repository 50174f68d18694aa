"""The standard middlewares of :class:`notebook_llm.Client`, below it: pricing,
the response cache and the SQLite call log (budgets and trackers are in
:mod:`notebook_llm._tracking`), and the switches that turn logging and the
cache on and off for every client.

:func:`standard_middlewares` lists them in the order a call meets them. The
readers that turn the log back into tables and charts live above the client,
in :mod:`notebook_llm._usage`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

from notebook_llm import pricing
from notebook_llm._tracking import (
    BudgetMiddleware,
    Tracker,
    TrackingMiddleware,
    call_latency,
    current_trackers,
    finish_reason,
)
from notebook_llm.core.client import CallContext, Middleware
from notebook_llm.core.errors import redact
from notebook_llm.core.shell import ipython_shell
from notebook_llm.core.types import Completion, Message, Request, Usage
from notebook_llm.store.log import call_log, new_call_id, utc_iso

if TYPE_CHECKING:
    from notebook_llm.store.db import PathLike

__all__ = [
    "CacheMiddleware",
    "LogMiddleware",
    "PricingMiddleware",
    "attach",
    "cache",
    "cache_default",
    "cache_key",
    "logging_enabled",
    "notebook_path",
    "set_cache",
    "set_logging",
    "standard_middlewares",
]

logger = logging.getLogger("notebook_llm.log")

_switches = {"log": True, "cache": False}
"""The master switches of :func:`set_logging` and :func:`set_cache`."""


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


def attach(ctx: CallContext) -> None:
    """Note on ``ctx`` the trackers active now: the client calls this where the
    call is made (the caller's context), before it moves to the library loop."""
    ctx.trackers = current_trackers()


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
        completion.cost_status = status


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
            completion = _completion_from_json(
                str(rows[0]["completion_json"]), ctx.format_model
            )
        except (sqlite3.Error, OSError, ValueError, TypeError, KeyError) as exc:
            logger.warning("response cache lookup failed: %s", exc)
            return None
        completion.model, completion.provider = ctx.model, ctx.ref.provider
        completion.messages = ctx.request.messages
        if ctx.request.response_format and completion.text:
            from notebook_llm.core.tools import parse_structured

            try:
                completion.parsed = parse_structured(completion.text, ctx.format_model)
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
                (cache_key(ctx), utc_iso(datetime.now(timezone.utc)), ctx.ref.provider,
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
    """A completion as the cache stores it: no raw payload, key-looking text redacted
    (a key echoed in an answer is not written to disk)."""
    return redact(completion.to_json())


def _completion_from_json(text: str, format_model: Any = None) -> Completion:
    """A cached completion; rows written before ``Completion.to_json`` (flat usage
    fields) are read too."""
    data = json.loads(text)
    if "usage" not in data:
        data["usage"] = {
            name: int(data.pop(name, 0) or 0)
            for name in ("input_tokens", "output_tokens", "cached_input_tokens",
                         "cache_write_tokens", "reasoning_tokens")
        }  # fmt: skip
        data.pop("total_tokens", None)
        text = json.dumps(data)
    try:
        completion = Completion.from_json(text, response_format=format_model)
    except ValueError:
        completion = Completion.from_json(text)  # parsed data no longer fits the model
    completion.cost_usd, completion.cost_status, completion.cached = 0.0, "cached", True
    completion.attempts = 0
    return completion


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
            rows = store.execute("SELECT COUNT(*) AS n FROM cache")
            store.execute("DELETE FROM cache")
        else:
            where = "model = ? OR provider || ':' || model = ?"
            rows = store.execute(f"SELECT COUNT(*) AS n FROM cache WHERE {where}", (model, model))
            store.execute(f"DELETE FROM cache WHERE {where}", (model, model))
        return cast(int, rows[0]["n"])  # COUNT(*)

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
    namespace = getattr(ipython_shell(), "user_ns", None)
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
        if not ctx.log or not _switches["log"] or ctx.stopped_unsent(completion, error):
            return
        try:
            notebook = _shell_notebook() or self._session_name
            values = _log_values(ctx, completion, error, notebook)
        except Exception as exc:  # noqa: BLE001 - logging must never break a call
            logger.warning("could not log a call: %s", redact(f"{type(exc).__name__}: {exc}"))
            return
        log = call_log(self.db_path)
        if ctx.fragment_ids or ctx.system_fragment_ids or ctx.schema_id:
            _record_with_links(log, ctx, values)
        else:
            log.record_values(values)


def _record_with_links(log: Any, ctx: CallContext, values: tuple[Any, ...]) -> None:
    """The call's row with an id made now, then the rows that link its fragments
    and schema to it (written after it, by the log's thread)."""
    call_id = new_call_id()
    log.record_values((call_id, *values[1:]))
    links = [(call_id, fragment_id, kind, position)
             for kind, ids in (("prompt", ctx.fragment_ids), ("system", ctx.system_fragment_ids))
             for position, fragment_id in enumerate(ids)]
    if links:
        log.record_related("INSERT OR IGNORE INTO call_fragments (call_id, fragment_id, kind,"
                           " position) VALUES (?, ?, ?, ?)", links)
    if ctx.schema_id:
        log.record_related("INSERT OR IGNORE INTO call_schemas (call_id, schema_id) VALUES (?, ?)",
                           [(call_id, ctx.schema_id)])


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
    position = metadata.get("conversation_position")
    batch_id = metadata.get("batch_id")
    response_model: str | None
    response_text: str | None
    reasoning: str | None
    ttft_s: float | None
    cost_usd: float | None
    cost_status: str | None
    if completion is not None:
        response_model, response_text = completion.response_model, completion.text
        reasoning, ttft_s = completion.reasoning, completion.ttft_s
        cost_usd, cost_status = completion.cost_usd, completion.cost_status
        cached = int(completion.cached)
        # Fresh objects that only the writer thread will see: it encodes them.
        tool_calls = [
            {"id": c.id, "name": c.name, "arguments": dict(c.arguments)}
            for c in completion.tool_calls
        ] if completion.tool_calls else None
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
        params if params else "{}",  # a fresh dict: encoded by the writer
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
        None if position is None else int(position),
        [run.to_dict() for run in ctx.tool_runs] if ctx.tool_runs else None,
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
            return json.dumps([_without_data(m) for m in messages], default=str,
                              ensure_ascii=False)
        copies.append(dict(message))
    return copies


_DATA_URL = re.compile(r"^(data:[^;,]*;base64,)(.{64,})$", re.S)


def _logged_data(value: str) -> str:
    match = _DATA_URL.match(value)
    if match is None:
        return value
    return f"{match.group(1)}[{_decoded_size(match.group(2)):,} bytes not logged]"


def _decoded_size(data: str) -> int:
    return len(data) * 3 // 4 - data[-2:].count("=")


def _without_data(message: Message) -> Message:
    """``message`` with the base64 data of images, files and audio replaced by its
    size: the log keeps what was asked, not megabytes of attachments."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    parts: list[Any] = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            image = part.get("image_url")
            if isinstance(image, dict) and isinstance(image.get("url"), str):
                part = {**part, "image_url": {**image, "url": _logged_data(image["url"])}}
        elif isinstance(part, dict) and part.get("type") == "file":
            file = part.get("file")
            if isinstance(file, dict) and isinstance(file.get("file_data"), str):
                part = {**part, "file": {**file, "file_data": _logged_data(file["file_data"])}}
        elif isinstance(part, dict) and part.get("type") == "input_audio":
            audio = part.get("input_audio")
            if isinstance(audio, dict) and isinstance(audio.get("data"), str):
                size = _decoded_size(audio["data"])
                part = {**part, "input_audio": {**audio, "data": f"[{size:,} bytes not logged]"}}
        parts.append(part)
    return {**message, "content": parts}


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


