"""The call log: every request and response, written in the background.

``CallLog.record(row)`` queues the row and returns; one daemon writer thread
per log drains the queue and inserts rows in batches, one transaction per
batch. Logging therefore costs the caller microseconds and never raises: a
write that fails is retried, then counted and reported in
:attr:`CallLog.errors`, never re-raised into the caller's thread.

The caller's side is kept as small as it can be, because it runs on the
event loop of every call: :meth:`CallLog.record_values` takes a tuple in
column order, and what can wait (JSON encoding, the timestamp's text, the id,
redaction) is done by the writer thread. The writer wakes once per batch, not
once per row, so a burst of calls costs one thread switch per
:attr:`CallLog.interval`.

Durability: a row handed to ``record``/``record_values`` is committed within
about :attr:`CallLog.interval` seconds (0.05 by default), plus the time the
write itself takes (longer while another process holds the database's write
lock). :meth:`CallLog.flush` waits for every row queued before it; so does
``close()``, and an ``atexit`` hook does it at interpreter exit (for up to 5
seconds). A crash or ``kill -9`` loses the rows not yet committed: those
queued in the last ``interval`` seconds and the batch being written, nothing
committed before. Committed rows are in the WAL and survive a process crash;
with ``synchronous=NORMAL`` an operating-system crash or power loss may lose
the last transactions before a checkpoint.

Search: the full-text index (``calls_fts``) is not written on this path.
Once no row has arrived for :data:`INDEX_IDLE_S` seconds, the writer thread
indexes what was written (:func:`notebook_llm.store.search.catch_up`, a
transaction at a time, stopping as soon as rows arrive), and every search
catches up first, so the index costs a busy kernel nothing per call.

Nothing here knows API keys, but every text column passes through
:func:`scrub` before it is written, so a key pasted into a prompt or echoed
back in an error message never reaches the file.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import random
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from notebook_llm.core.errors import redact
from notebook_llm.store.db import PathLike, Store, default_db_path
from notebook_llm.store.migrations import _is_locked, _retry_locked
from notebook_llm.store.search import CATCH_UP, catch_up

__all__ = [
    "CALL_COLUMNS",
    "CallLog",
    "call_log",
    "new_call_id",
    "scrub",
    "utc_iso",
]

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
    "conversation_position",
    "tool_results_json",
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
        "tool_results_json",
        "error_class",
        "error_message",
        "tags_json",
        "notebook_path",
    }
)
# Text columns whose values repeat from call to call: redacted once per batch.
_REPEATING = frozenset({"system", "params_json", "error_class", "tags_json", "notebook_path"})
_JSON_INDEX = tuple(i for i, column in enumerate(CALL_COLUMNS) if column in _JSON_COLUMNS)
_TEXT_ONCE = tuple(i for i, column in enumerate(CALL_COLUMNS)
                   if column in _TEXT_COLUMNS and column not in _REPEATING)
_TEXT_REPEATING = tuple(i for i, column in enumerate(CALL_COLUMNS) if column in _REPEATING)
_WIDTH = len(CALL_COLUMNS)
# Rows prepared (GIL held) between two inserts (GIL free), and rows per INSERT:
# 32 x 29 parameters stay under SQLite's oldest limit of 999 per statement.
_CHUNK = 32
INDEX_IDLE_S = 1.0
"""Seconds without new rows before the writer indexes what it wrote for search."""
_LEADING_WHERE = re.compile(r"^where\s+", re.IGNORECASE)
_INSERT_SQL = (
    f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES ({', '.join('?' for _ in CALL_COLUMNS)})"
)
# One encoder for every row (json.dumps builds a new one per call).
_encode = json.JSONEncoder(default=str, ensure_ascii=False).encode


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


# -- ids and timestamps -------------------------------------------------------------------

_random = random.Random()  # private: never draws from (or reseeds) the user's global random
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_random.seed)


def new_call_id(now_ns: int | None = None) -> str:
    """A new call id: 32 hex digits laid out as a UUIDv7 (RFC 9562).

    48 bits of Unix milliseconds, then 74 random bits: unique across kernels
    writing to one file, and increasing with time, so the primary-key index
    grows at its end instead of taking random inserts (about a third of the
    cost of writing a row with uuid4 ids on a large log).
    """
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    bits = _random.getrandbits(74)
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (bits >> 62) << 64
        | 0b10 << 62
        | (bits & 0x3FFF_FFFF_FFFF_FFFF)
    )
    return f"{value:032x}"


_second = [-1, ""]


def iso_utc(now_ns: int) -> str:
    """``now_ns`` (``time.time_ns()``) as the log's ``created_at`` text.

    The same text as ``datetime.now(timezone.utc).isoformat(timespec="microseconds")``
    at that moment, e.g. ``2026-01-02T03:04:05.678901+00:00``; the date part is
    formatted once per second.
    """
    seconds, rest = divmod(now_ns, 1_000_000_000)
    cached = _second
    if cached[0] != seconds:
        cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        cached[0] = seconds
    return f"{cached[1]}.{rest // 1000:06d}+00:00"


class _Flush:
    """A marker on the queue: set once every row queued before it is written."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class _Related:
    """Rows of another table that refer to a queued call (its fragments, its schema)."""

    __slots__ = ("rows", "sql")

    def __init__(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        self.sql = sql
        self.rows = rows


class CallLog:
    """Background, batched writer for the ``calls`` table.

    Args:
        store: A :class:`Store`, a database path, ``":memory:"``, or ``None``
            for the default database.
        batch_size: Most rows written in one transaction; a queue this long
            also wakes the writer before ``interval`` is up.
        interval: Seconds the writer waits after a first row to gather more
            into one transaction (and so the most a row waits in the queue
            before its write starts).
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
        # Rows (tuples in CALL_COLUMNS order), flush markers and the stop marker.
        self._pending: deque[Any] = deque()
        self._wake = threading.Event()  # something is pending
        self._hurry = threading.Event()  # write it now: a flush, close, or a full batch
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
        ones are NULL, unknown keys are ignored. ``id`` (see
        :func:`new_call_id`) and ``created_at`` (ISO-8601 UTC, now) are filled
        in when absent. ``*_json`` columns may be given as Python objects:
        they are encoded now, so later changes to a list the caller keeps (a
        growing conversation) do not leak into the log. Never raises.
        """
        try:
            if self._closed:
                self.dropped += 1
                return str(row.get("id") or "")
            values = [row.get(column) for column in CALL_COLUMNS]
            call_id = values[0] or new_call_id()
            values[0] = call_id
            created = values[1]
            if not created:
                values[1] = time.time_ns()  # formatted by the writer
            elif not isinstance(created, str):
                values[1] = str(created)  # SQLite would store the same text
            for i in _JSON_INDEX:
                value = values[i]
                if value is not None and not isinstance(value, str):
                    values[i] = _encode(value)
            self._put(tuple(values))
            return str(call_id)
        except Exception as exc:  # noqa: BLE001 - logging must never break a call
            self._note_error(f"record failed: {type(exc).__name__}: {exc}")
            self.dropped += 1
            return ""

    def record_values(self, values: Sequence[Any]) -> None:
        """Queue one call given as a sequence in :data:`CALL_COLUMNS` order (the fast path).

        Unlike :meth:`record`, it leaves work to the writer thread: ``id`` may
        be ``None`` (a new id is made), ``created_at`` may be an ``int`` from
        ``time.time_ns()`` (formatted as :meth:`record` would), and ``*_json``
        columns may be Python objects, encoded by the writer. The caller hands
        those objects over: it must not change them afterwards (pass copies).
        Never raises.
        """
        try:
            if self._closed:
                self.dropped += 1
                return
            if len(values) != _WIDTH:
                raise ValueError(f"{len(values)} values for {_WIDTH} columns")
            self._put(values)
        except Exception as exc:  # noqa: BLE001 - logging must never break a call
            self._note_error(f"record failed: {type(exc).__name__}: {exc}")
            self.dropped += 1

    def record_related(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Queue rows of another table that refer to a call queued before (by the id
        given to :meth:`record_values`): written after the calls of the same batch,
        in a transaction of their own. Never raises."""
        try:
            if not self._closed and rows:
                self._put(_Related(sql, rows))
        except Exception as exc:  # noqa: BLE001 - logging must never break a call
            self._note_error(f"record failed: {type(exc).__name__}: {exc}")

    def _put(self, item: Any) -> None:
        if self._thread is None or self._pid != os.getpid():
            self._start()
        pending = self._pending
        pending.append(item)
        # Wake the writer for the first row of a batch only: no thread switch per row.
        if not self._wake.is_set():
            self._wake.set()
        if len(pending) >= self.batch_size and not self._hurry.is_set():
            self._hurry.set()

    def flush(self, timeout: float | None = 5) -> bool:
        """Block until every row queued so far is committed.

        Returns:
            True when everything was written (or given up on), False on timeout.
        """
        thread = self._thread
        if thread is None or not thread.is_alive() or self._pid != os.getpid():
            return not self._pending
        marker = _Flush()
        self._pending.append(marker)
        self._hurry.set()
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 5) -> None:
        """Write what is queued, stop the writer thread and close the store if owned."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._pending.append(_STOP)
            self._hurry.set()
            self._wake.set()
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
                self._pending = deque()
                self._wake = threading.Event()
                self._hurry = threading.Event()
                self._thread = None
                if self._owns_store:
                    self.store = Store(self.store.path)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="notebook-llm-call-log", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        pending, wake, hurry = self._pending, self._wake, self._hurry
        index_due = False
        while True:
            # Rows written and nothing new for INDEX_IDLE_S: index them for search.
            if not wake.wait(INDEX_IDLE_S if index_due else None):
                index_due = not self._index_while_idle()
                continue
            # Gather a burst into one transaction, unless a flush or close is waiting.
            hurry.wait(self.interval)
            # Clear before draining: a row queued after the drain sets them again.
            wake.clear()
            hurry.clear()
            rows: list[Sequence[Any]] = []
            markers: list[_Flush] = []
            related: list[_Related] = []
            stop = False
            for _ in range(len(pending)):
                item = pending.popleft()
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Flush):
                    markers.append(item)
                elif isinstance(item, _Related):
                    related.append(item)
                else:
                    rows.append(item)
            size = self.batch_size
            for start in range(0, len(rows), size):
                self._write(rows[start : start + size])
            if related:
                self._write_related(related)
            index_due = index_due or bool(rows)
            for marker in markers:
                marker.done.set()
            if stop:
                return

    def _index_while_idle(self) -> bool:
        """Catch the search index up, a transaction at a time, until rows arrive.

        Returns whether it is done (False: rows arrived first).
        """
        try:
            while not self._pending:
                if catch_up(self.store) < CATCH_UP:
                    return True
        except Exception as exc:  # noqa: BLE001 - indexing must never stop the writer
            # Tried again once more rows are written; a search catches up itself.
            self._note_error(f"could not index calls for search: {type(exc).__name__}: {exc}")
            return True
        return False

    def _prepare(self, batch: list[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Rows ready to insert: ids, timestamps, JSON text, and every text column redacted."""
        out: list[tuple[Any, ...]] = []
        seen: dict[str, str] = {}  # redacted repeating values, for this chunk only
        for values in batch:
            try:
                row = list(values)
                if row[0] is None:
                    row[1] = row[1] if row[1] is not None else time.time_ns()
                    row[0] = new_call_id(row[1] if isinstance(row[1], int) else None)
                if isinstance(row[1], int):
                    row[1] = iso_utc(row[1])
                for i in _JSON_INDEX:
                    value = row[i]
                    if value is not None and not isinstance(value, str):
                        row[i] = _encode(value)
                for i in _TEXT_ONCE:
                    value = row[i]
                    if value and isinstance(value, str):
                        row[i] = redact(value)
                for i in _TEXT_REPEATING:
                    value = row[i]
                    if value and isinstance(value, str):
                        clean = seen.get(value)
                        if clean is None:
                            clean = seen[value] = redact(value)
                        row[i] = clean
                out.append(tuple(row))
            except Exception as exc:  # noqa: BLE001 - one bad row must not cost the batch
                self._note_error(f"could not prepare a row: {type(exc).__name__}: {exc}")
                self.dropped += 1
        return out

    def _write(self, batch: list[Sequence[Any]]) -> None:
        """Write ``batch`` in one transaction, preparing it a few rows at a time.

        Preparing (redaction above all) holds the GIL; SQLite's own work does
        not. Interleaving the two in small chunks keeps the GIL free often, so
        the event loop that makes the calls is never held up for long.
        """
        prepared: list[tuple[Any, ...]] = []
        start = 0
        delay = 0.05
        for attempt in range(10):
            try:
                with self.store.transaction() as conn:
                    for done in range(0, len(prepared), _CHUNK):  # a retry: rows prepared before
                        _insert(conn, prepared[done : done + _CHUNK])
                    while start < len(batch):
                        chunk = self._prepare(batch[start : start + _CHUNK])
                        start += _CHUNK
                        prepared += chunk
                        _insert(conn, chunk)
                self.written += len(prepared)
                return
            except sqlite3.IntegrityError:
                # One bad row (a duplicate id) must not cost the others.
                prepared += self._prepare(batch[start:])
                self._write_one_by_one(prepared)
                return
            except sqlite3.OperationalError as exc:
                if _is_locked(exc) and attempt < 9:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                self._note_error(f"could not write {len(batch)} rows: {exc}")
                break
            except Exception as exc:  # noqa: BLE001
                self._note_error(
                    f"could not write {len(batch)} rows: {type(exc).__name__}: {exc}"
                )
                break
        prepared += self._prepare(batch[start:])  # counted, like every row given up on
        self.dropped += len(prepared)

    def _write_related(self, items: list[_Related]) -> None:
        def write() -> None:
            with self.store.transaction() as conn:
                for item in items:
                    conn.executemany(item.sql, item.rows)

        try:
            _retry_locked(write, attempts=10)
        except Exception as exc:  # noqa: BLE001 - never raised into a call
            self._note_error(f"could not write links: {type(exc).__name__}: {exc}")

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


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` with one statement (one ``sqlite3_step``).

    ``executemany`` steps once per row, and each step hands the GIL over and
    back: with a busy event loop in the other thread, every handover is a
    thread switch. One multi-row INSERT per chunk makes it one per chunk.
    """
    if rows:
        conn.execute(_insert_sql(len(rows)), [value for row in rows for value in row])


@functools.lru_cache(maxsize=_CHUNK)
def _insert_sql(rows: int) -> str:
    one = f"({', '.join('?' for _ in CALL_COLUMNS)})"
    return f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES {', '.join([one] * rows)}"


# -- the process-wide call log per file -------------------------------------------------

_logs: dict[str, CallLog] = {}
_logs_lock = threading.Lock()
# (db_path as given, $NOTEBOOK_LLM_DB when db_path is None) -> log: every call
# asks for its log, and resolving a path takes the filesystem's time.
_by_argument: dict[tuple[Any, str | None], CallLog] = {}


def utc_iso(moment: datetime) -> str:
    """``moment`` in the log's ``created_at`` format, so that text comparison orders by time."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def call_log(db_path: PathLike | None = None) -> CallLog:
    """The process-wide :class:`CallLog` for a database file.

    One per file, created on first use. ``db_path`` defaults to
    ``$NOTEBOOK_LLM_DB``, else the platform data directory (read at each call,
    so changing the variable switches files). A relative path is resolved
    against the working directory the first time it is seen.
    """
    given = db_path if db_path is None or isinstance(db_path, str) else os.fspath(db_path)
    key = (given, os.environ.get("NOTEBOOK_LLM_DB") if db_path is None else None)
    log = _by_argument.get(key)
    if log is not None and not log._closed:
        return log
    raw = str(default_db_path() if db_path is None else db_path)
    path = raw if raw == ":memory:" else str(Path(raw).expanduser().resolve())
    with _logs_lock:
        log = _logs.get(path)
        if log is None or log._closed:
            log = _logs[path] = CallLog(path)
        _by_argument[key] = log
        return log
