"""The call log: every request and response, written in the background.

``CallLog.record(row)`` puts the row on a queue and returns; one daemon
writer thread per log drains the queue and inserts rows in batches, one
transaction per batch. Logging therefore costs the caller microseconds and
never raises: a write that fails is retried, then counted and reported in
:attr:`CallLog.errors`, never re-raised into the caller's thread.

Nothing here knows API keys, but every text column passes through
:func:`scrub` before it is written, so a key pasted into a prompt or echoed
back in an error message never reaches the file.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections import deque
from datetime import datetime, timezone
from typing import Any

from notebook_llm.core.errors import redact
from notebook_llm.store.db import PathLike, Store
from notebook_llm.store.migrations import _is_locked

__all__ = ["CALL_COLUMNS", "CallLog", "scrub"]

logger = logging.getLogger("notebook_llm.store")

CALL_COLUMNS: tuple[str, ...] = (
    "id",
    "created_at",
    "provider",
    "model",
    "response_model",
    "messages_json",
    "system",
    "params_json",
    "response_text",
    "reasoning",
    "tool_calls_json",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "latency_s",
    "ttft_s",
    "cost_usd",
    "cost_status",
    "cached",
    "error_class",
    "error_message",
    "tags_json",
    "conversation_id",
    "batch_id",
    "notebook_path",
)
"""The columns of the ``calls`` table, in order."""

_JSON_COLUMNS = frozenset(column for column in CALL_COLUMNS if column.endswith("_json"))
# Free text that may carry user or provider content. Identifiers, timestamps
# and enumerations are left alone.
_TEXT_COLUMNS = frozenset(
    {
        "messages_json",
        "system",
        "params_json",
        "response_text",
        "reasoning",
        "tool_calls_json",
        "error_class",
        "error_message",
        "tags_json",
        "notebook_path",
    }
)
_LEADING_WHERE = re.compile(r"^where\s+", re.IGNORECASE)
_INSERT_SQL = (
    f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES ({', '.join('?' for _ in CALL_COLUMNS)})"
)


def scrub(row: dict[str, Any]) -> dict[str, Any]:
    """Redact key-looking strings from the free-text columns of ``row``, in place.

    Uses :func:`notebook_llm.core.errors.redact` on messages, system prompt,
    params, response, reasoning, tool calls, tags and error text.

    Returns:
        The same dict, for chaining.
    """
    for column in _TEXT_COLUMNS:
        value = row.get(column)
        if isinstance(value, str) and value:
            row[column] = redact(value)
    return row


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class _Flush:
    """A marker on the queue: set once every row queued before it is written."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class CallLog:
    """Background, batched writer for the ``calls`` table.

    Args:
        store: A :class:`Store`, a database path, ``":memory:"``, or ``None``
            for the default database.
        batch_size: Most rows written in one transaction.
        interval: Seconds the writer waits to gather more rows into a batch.
        register_atexit: Flush queued rows when the interpreter exits.
    """

    def __init__(
        self,
        store: Store | PathLike | None = None,
        *,
        batch_size: int = 500,
        interval: float = 0.05,
        register_atexit: bool = True,
    ) -> None:
        self._owns_store = not isinstance(store, Store)
        self.store: Store = store if isinstance(store, Store) else Store(store)
        self.batch_size = batch_size
        self.interval = interval
        self.errors: deque[str] = deque(maxlen=100)
        """The most recent write errors, newest last (never raised)."""
        self.written = 0
        """Rows committed so far."""
        self.dropped = 0
        """Rows that could not be written and were given up on."""
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._atexit = register_atexit
        if register_atexit:
            atexit.register(self._flush_at_exit)

    # -- writing (caller side) ---------------------------------------------------------

    def record(self, row: dict[str, Any]) -> str:
        """Queue one call for writing and return its id at once.

        ``row`` holds ``calls`` columns (see :data:`CALL_COLUMNS`); missing
        ones are NULL, unknown keys are ignored. ``id`` (uuid4 hex) and
        ``created_at`` (ISO-8601 UTC) are filled in when absent. ``*_json``
        columns may be given as Python objects: they are encoded now, so later
        changes to a list the caller keeps (a growing conversation) do not
        leak into the log. Never raises.
        """
        try:
            if self._closed:
                self.dropped += 1
                return str(row.get("id") or "")
            if self._thread is None or self._pid != os.getpid():
                self._start()
            values = dict(row)
            call_id = values.get("id") or uuid.uuid4().hex
            values["id"] = call_id
            if not values.get("created_at"):
                values["created_at"] = _now()
            for column in _JSON_COLUMNS:
                value = values.get(column)
                if value is not None and not isinstance(value, str):
                    values[column] = json.dumps(value, default=str, ensure_ascii=False)
            self._queue.put(values)
            return str(call_id)
        except Exception as exc:  # noqa: BLE001 - logging must never break a call
            self._note_error(f"record failed: {type(exc).__name__}: {exc}")
            self.dropped += 1
            return ""

    def flush(self, timeout: float | None = 5) -> bool:
        """Block until every row queued so far is committed.

        Returns:
            True when everything was written (or given up on), False on timeout.
        """
        thread = self._thread
        if thread is None or not thread.is_alive() or self._pid != os.getpid():
            return self._queue.empty()
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 5) -> None:
        """Write what is queued, stop the writer thread and close the store if owned."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._queue.put(_STOP)
            thread.join(timeout)
        if self._atexit:
            atexit.unregister(self._flush_at_exit)
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> CallLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CallLog({self.store.path!r}, written={self.written}, dropped={self.dropped})"

    # -- reading -----------------------------------------------------------------------

    def query(
        self,
        sql_where: str = "",
        params: tuple[Any, ...] | dict[str, Any] = (),
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of ``calls`` as dicts, oldest first, after flushing pending writes.

        Args:
            sql_where: An SQL condition (``"model = ? AND cost_usd > 0"``); a
                leading ``WHERE`` is optional. Empty for every row.
            params: Parameters for the placeholders in ``sql_where``.
            limit: At most this many rows (the most recent ones when set).

        Returns:
            One dict per row, keyed by column name; ``*_json`` columns stay strings.
        """
        self.flush()
        where = _LEADING_WHERE.sub("", sql_where.strip())
        sql = "SELECT * FROM calls"
        if where:
            sql += f" WHERE {where}"
        if limit is None:
            return self.store.execute(sql + " ORDER BY created_at, rowid", params)
        # The newest `limit` rows, still returned oldest first.
        sql += f" ORDER BY created_at DESC, rowid DESC LIMIT {int(limit)}"
        return self.store.execute(sql, params)[::-1]

    # -- the writer thread -------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._pid != os.getpid():
                # Forked: the parent's thread and queued rows do not exist here.
                self._pid = os.getpid()
                self._queue = queue.SimpleQueue()
                self._thread = None
                if self._owns_store:
                    self.store = Store(self.store.path)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="notebook-llm-call-log", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            batch: list[dict[str, Any]] = []
            markers: list[_Flush] = []
            stop = False
            deadline = time.monotonic() + self.interval
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Flush):
                    markers.append(item)
                else:
                    batch.append(item)
                if stop or markers or len(batch) >= self.batch_size:
                    break
                # Gather more rows for a moment, so a burst becomes one transaction.
                remaining = deadline - time.monotonic()
                try:
                    item = get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            for marker in markers:
                marker.done.set()
            if stop:
                return

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            rows = [tuple(map(scrub(values).get, CALL_COLUMNS)) for values in batch]
        except Exception as exc:  # noqa: BLE001
            self._note_error(f"could not prepare {len(batch)} rows: {type(exc).__name__}: {exc}")
            self.dropped += len(batch)
            return
        delay = 0.05
        for attempt in range(10):
            try:
                with self.store.transaction() as conn:
                    conn.executemany(_INSERT_SQL, rows)
                self.written += len(rows)
                return
            except sqlite3.IntegrityError:
                # One bad row (a duplicate id) must not cost the others.
                self._write_one_by_one(rows)
                return
            except sqlite3.OperationalError as exc:
                if _is_locked(exc) and attempt < 9:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                self._note_error(f"could not write {len(rows)} rows: {exc}")
                break
            except Exception as exc:  # noqa: BLE001
                self._note_error(f"could not write {len(rows)} rows: {type(exc).__name__}: {exc}")
                break
        self.dropped += len(rows)

    def _write_one_by_one(self, rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            try:
                with self.store.transaction() as conn:
                    conn.execute(_INSERT_SQL, row)
                self.written += 1
            except Exception as exc:  # noqa: BLE001
                self._note_error(f"dropped call {row[0]}: {type(exc).__name__}: {exc}")
                self.dropped += 1

    def _note_error(self, message: str) -> None:
        message = redact(message)
        self.errors.append(message)
        logger.warning("notebook-llm call log: %s", message)

    def _flush_at_exit(self) -> None:
        try:
            self.flush(timeout=5)
        except Exception:  # noqa: BLE001
            pass
