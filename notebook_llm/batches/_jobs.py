"""Batch jobs in SQLite: the job record, its finished rows, and the checkpoint writer.

Tables ``batch_jobs`` and ``batch_rows`` (migration ``m003_batches``). A row
is written once it has finished (``done`` or ``failed``); provider-mode jobs
also write ``submitted`` rows when the provider batch is created, so results
can be mapped back after a kernel restart.

Rows that cannot be written (a full disk, a read-only or locked file) are
paid-for answers: they are kept in this process's memory, keyed by database
and job, and every :class:`JobStore` reading that job counts them as if stored
(``rows``, ``finished``, ``counts``, ``cost``). The next write to the job, a
rerun or :meth:`JobStore.flush_unsaved` stores them once the disk allows.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

from notebook_llm.store.db import Store

__all__ = [
    "CheckpointWriter",
    "EncodedRow",
    "JobRecord",
    "JobStore",
    "RowRecord",
    "db_path_of",
    "now_iso",
]

logger = logging.getLogger("notebook_llm.batches")

EncodedRow = str
"""One row of a job (without its job id) as the JSON array text the writer stores:
:meth:`RowRecord.encode` makes it, once, on the thread that finished the row."""

# (database path, job id) -> {(row_key, model): record}: finished rows that
# could not be written yet. A process-wide stash, so a rerun in the same
# kernel finds them and pays for none of them again.
_unsaved: dict[tuple[str, str], dict[tuple[str, str], EncodedRow]] = {}
_unsaved_lock = threading.Lock()


def db_path_of(db_path: Any, db: Any, function: str, *, stacklevel: int = 3) -> Any:
    """``db_path``, or the deprecated ``db=`` with a DeprecationWarning."""
    if db is None:
        return db_path
    warnings.warn(
        f"{function}(db=...) is now db_path=...; db= will be removed in a future release",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return db if db_path is None else db_path


def _record_key(record: EncodedRow) -> tuple[str, str]:
    fields = json.loads(record)
    return str(fields[0]), str(fields[2])


def _keep_unsaved(path: str, job_id: str, records: Iterable[EncodedRow]) -> None:
    with _unsaved_lock:
        stash = _unsaved.setdefault((path, job_id), {})
        for record in records:
            stash[_record_key(record)] = record


def _unsaved_rows(path: str, job_id: str) -> list[EncodedRow]:
    with _unsaved_lock:
        return list(_unsaved.get((path, job_id), {}).values())

ROW_COLUMNS = (
    "job_id", "row_key", "idx", "model", "status", "result_json", "error_class",
    "error_message", "attempts", "cost_usd", "input_tokens", "output_tokens", "finished_at",
)  # fmt: skip


# A checkpoint is ONE statement: its rows go in as one JSON array, unpacked by
# SQLite (json_each), and the statement is its own transaction (the connection
# autocommits). The writer thread then takes the GIL back from the event loop
# about three times per checkpoint, not per row or per statement, which is
# what checkpointing costs a fast job (see bench/bench_batch.py).
# finished_at: a record may leave it null and SQLite stamps the commit time
# (cheaper than formatting a timestamp per row in Python).
_INSERT_ROWS = (
    f"INSERT OR REPLACE INTO batch_rows ({', '.join(ROW_COLUMNS)}) SELECT ?2, "
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(ROW_COLUMNS) - 2))
    + f", COALESCE(json_extract(value, '$[{len(ROW_COLUMNS) - 2}]'), "
    "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')) FROM json_each(?1)"
)
_dumps = json.dumps


@dataclass(slots=True)
class RowRecord:
    """One ``batch_rows`` row, without its job id."""

    row_key: str
    idx: int | None
    model: str
    status: str
    """``done``, ``failed`` or ``submitted`` (sent in a provider batch)."""
    result: dict[str, Any] | None = None
    """The text, latency, finish reason and parsed fields of a ``done`` row."""
    error_class: str | None = None
    error_message: str | None = None
    attempts: int = 0
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finished_at: str | None = None
    """ISO time; ``None`` lets SQLite stamp the commit time."""

    def encode(self) -> EncodedRow:
        """The row as the JSON array the writer stores (``result`` encoded with it, once)."""
        return _dumps([self.row_key, self.idx, self.model, self.status, self.result,
                       self.error_class, self.error_message, self.attempts, self.cost_usd,
                       self.input_tokens, self.output_tokens, self.finished_at])


FINISHED = ("done", "failed")


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat()


@dataclass
class JobRecord:
    """A ``batch_jobs`` row."""

    id: str
    name: str | None
    models: list[str]
    params: dict[str, Any]
    total: int
    state: str = "pending"
    mode: str = "direct"
    provider_batch_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=now_iso)
    updated_at: str | None = None


class JobStore:
    """Reads and writes jobs and rows in one database (``db``: a path, a Store or None)."""

    def __init__(self, db: Store | str | os.PathLike[str] | None = None) -> None:
        self.store = db if isinstance(db, Store) else Store(db)
        self._owned = not isinstance(db, Store)

    def close(self) -> None:
        """Close the connections this object opened."""
        if self._owned:
            self.store.close()

    def unsaved(self, job_id: str) -> list[EncodedRow]:
        """Finished rows of the job kept in memory because they could not be written."""
        return _unsaved_rows(self.store.path, job_id)

    def keep_unsaved(self, job_id: str, records: Iterable[EncodedRow]) -> None:
        """Keep rows that could not be written in memory (see the module docstring)."""
        _keep_unsaved(self.store.path, job_id, records)

    def flush_unsaved(self, job_id: str) -> int:
        """Write the job's rows kept in memory; returns how many are still unsaved.

        Raises nothing: when the disk still refuses, the rows stay in memory.
        """
        records = self.unsaved(job_id)
        if not records:
            return 0
        try:
            self.insert_rows(job_id, records, flush=False)
        except (sqlite3.Error, OSError) as exc:
            logger.warning("%d finished batch rows still cannot be saved: %s", len(records), exc)
            return len(records)
        with _unsaved_lock:
            stash = _unsaved.get((self.store.path, job_id), {})
            for record in records:
                stash.pop(_record_key(record), None)
            if not stash:
                _unsaved.pop((self.store.path, job_id), None)
        return 0

    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id, or ``None``."""
        rows = self.store.execute("SELECT * FROM batch_jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def find(self, name_or_id: str) -> JobRecord | None:
        """The job with this id, else the newest job with this name."""
        job = self.get(name_or_id)
        if job is not None:
            return job
        rows = self.store.execute(
            "SELECT * FROM batch_jobs WHERE name = ? ORDER BY created_at DESC LIMIT 1",
            (name_or_id,),
        )
        return _job(rows[0]) if rows else None

    def save(self, job: JobRecord) -> None:
        """Insert or update the job record."""
        job.updated_at = now_iso()
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO batch_jobs (id, name, created_at, updated_at, model_json,"
                " params_json, total, state, mode, provider_batch_id, meta_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.name, job.created_at, job.updated_at, json.dumps(job.models),
                 json.dumps(job.params, default=str), job.total, job.state, job.mode,
                 job.provider_batch_id, json.dumps(job.meta, default=str)),
            )

    def set_state(self, job_id: str, state: str) -> None:
        """Change a job's state."""
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE batch_jobs SET state = ?, updated_at = ? WHERE id = ?",
                (state, now_iso(), job_id),
            )

    def delete_rows(self, job_id: str, status: str | None = None) -> int:
        """Forget a job's rows (only those with ``status`` when given)."""
        with self.store.transaction() as conn:
            if status is None:
                cursor = conn.execute("DELETE FROM batch_rows WHERE job_id = ?", (job_id,))
            else:
                cursor = conn.execute(
                    "DELETE FROM batch_rows WHERE job_id = ? AND status = ?", (job_id, status)
                )
            return cursor.rowcount

    def finished(self, job_id: str) -> set[tuple[str, str]]:
        """``(row_key, model)`` of every finished row: what a rerun must not send again."""
        conn = self.store.conn
        cursor = conn.execute(
            "SELECT row_key, model FROM batch_rows"
            " WHERE job_id = ? AND status IN ('done', 'failed')",
            (job_id,),
        )
        done = {(key, model) for key, model in cursor}
        done.update(_record_key(record) for record in self.unsaved(job_id))
        return done

    def counts(self, job_id: str) -> dict[str, int]:
        """Rows by status (``done``, ``failed``, ``submitted``), rows kept in memory
        included; the dollars are :meth:`cost`."""
        rows = self.store.execute(
            "SELECT status, COUNT(*) AS n FROM batch_rows WHERE job_id = ? GROUP BY status",
            (job_id,),
        )
        counts = {str(row["status"]): cast(int, row["n"]) for row in rows}  # COUNT(*)
        for record in self.unsaved(job_id):
            status = str(json.loads(record)[3])
            counts[status] = counts.get(status, 0) + 1
        return counts

    def cost(self, job_id: str) -> float:
        """Dollars spent on the job's finished rows (unpriced rows count as 0)."""
        rows = self.store.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) AS c FROM batch_rows WHERE job_id = ?", (job_id,)
        )
        kept = sum(json.loads(record)[8] or 0.0 for record in self.unsaved(job_id))
        return float(cast(float, rows[0]["c"])) + kept  # a SUM or 0

    def rows(self, job_id: str) -> list[tuple[Any, ...]]:
        """Every stored row of a job, ordered by input position and model."""
        cursor = self.store.conn.execute(
            "SELECT row_key, idx, model, status, result_json, error_class, error_message,"
            " attempts, cost_usd, input_tokens, output_tokens FROM batch_rows WHERE job_id = ?"
            " ORDER BY idx, model",
            (job_id,),
        )
        stored = [tuple(row) for row in cursor]
        kept = self.unsaved(job_id)
        if not kept:
            return stored
        for record in kept:
            fields = json.loads(record)
            result = fields[4]
            fields[4] = None if result is None else json.dumps(result)
            stored.append(tuple(fields[:11]))
        stored.sort(key=lambda row: (row[1] if row[1] is not None else -1, row[2]))
        return stored

    def insert_rows(
        self, job_id: str, records: Iterable[EncodedRow], *, flush: bool = True
    ) -> None:
        """Write rows of one job (:meth:`RowRecord.encode`) in one transaction.

        Rows kept in memory from an earlier failed write go first (``flush``).
        """
        if flush and self.unsaved(job_id):
            records = [*self.unsaved(job_id), *records]
            self.store.execute(_INSERT_ROWS, ("[" + ",".join(records) + "]", job_id))
            with _unsaved_lock:
                _unsaved.pop((self.store.path, job_id), None)
            return
        self.store.execute(_INSERT_ROWS, ("[" + ",".join(records) + "]", job_id))

    def jobs(self) -> list[dict[str, Any]]:
        """Every job with its row counts and cost, newest first."""
        return self.store.execute(
            """
            SELECT j.id, j.name, j.state, j.mode, j.model_json, j.total,
                   COALESCE(SUM(r.status = 'done'), 0) AS done,
                   COALESCE(SUM(r.status = 'failed'), 0) AS failed,
                   COALESCE(SUM(r.cost_usd), 0) AS cost_usd,
                   j.provider_batch_id, j.created_at, j.updated_at
            FROM batch_jobs j LEFT JOIN batch_rows r ON r.job_id = j.id
            GROUP BY j.id ORDER BY j.created_at DESC
            """
        )


def _job(row: dict[str, Any]) -> JobRecord:
    return JobRecord(
        id=row["id"],
        name=row["name"],
        models=json.loads(row["model_json"] or "[]"),
        params=json.loads(row["params_json"] or "{}"),
        total=int(row["total"] or 0),
        state=row["state"],
        mode=row["mode"],
        provider_batch_id=row["provider_batch_id"],
        meta=json.loads(row["meta_json"] or "{}"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_STOP = object()


class CheckpointWriter:
    """Writes one job's finished rows on a background thread, many per transaction.

    ``put(record)`` costs the caller a queue append. The thread wakes on the
    first waiting row and commits everything queued (up to ``max_batch``) in
    one transaction. When rows arrive fast (the last transaction held 8 or
    more: several hundred rows a second), it first lingers ``linger_s``
    (20 ms) for more, so it wakes at most about 50 times a second and takes
    the GIL from the event loop that seldom (measured on a 2-core machine at
    13,000 rows/s: checkpointing cost 6-7% of throughput lingering 5 ms, 2-3%
    lingering 20 ms). A row is durable within a millisecond or so of finishing
    on a slower job and within about 20 ms on a fast one: that window, plus
    the rows in flight, is what a rerun after ``kill -9`` may send again.
    """

    def __init__(
        self, jobs: JobStore, job_id: str, max_batch: int = 5000, linger_s: float = 0.02
    ) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.linger_after = 8
        self.written = 0
        self.errors = 0
        self.failure: BaseException | None = None
        """The first error that kept rows from being written (their records stay
        in memory, see the module docstring); ``None`` while all went well."""
        self.on_failure: Callable[[BaseException], object] | None = None
        """Called once, from the writer thread, with that first error."""
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="notebook-llm-batch", daemon=True)
        self._thread.start()

    def put(self, record: RowRecord) -> None:
        """Queue one finished row (encoded here, on the caller's thread)."""
        self._queue.put(record.encode())

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued and stop the thread (one last try for rows
        kept in memory after a failed write)."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self.failure is not None:
            self.jobs.flush_unsaved(self.job_id)

    @property
    def unsaved(self) -> int:
        """Finished rows of this job held in memory, not yet written."""
        return len(self.jobs.unsaved(self.job_id))

    def _run(self) -> None:
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        last = 0
        while True:
            item = get()
            if self.linger_s and last >= self.linger_after and item is not _STOP:
                # Let rows pile up for a moment: one transaction for many rows,
                # and few wake-ups of this thread competing for the GIL.
                time.sleep(self.linger_s)
            batch: list[EncodedRow] = []
            while item is not _STOP:
                batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
            last = len(batch)
            if batch:
                self._write(batch)
            if item is _STOP:
                return

    def _write(self, batch: list[EncodedRow]) -> None:
        for attempt in range(5):
            try:
                self.jobs.insert_rows(self.job_id, batch)
                self.written += len(batch)
                return
            except Exception as exc:  # noqa: BLE001 - never kill the writer; keep the rows
                # A full disk stays full: no point retrying that for long.
                if attempt == 4 or _is_full(exc):
                    self.errors += len(batch)
                    self.jobs.keep_unsaved(self.job_id, batch)
                    logger.warning(
                        "could not checkpoint %d batch rows (kept in memory): %s", len(batch), exc
                    )
                    if self.failure is None:
                        self.failure = exc
                        if self.on_failure is not None:
                            self.on_failure(exc)
                    return
                time.sleep(0.05 * (attempt + 1))


def _is_full(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error | OSError) and (
        "full" in str(exc).lower() or getattr(exc, "errno", None) == 28  # ENOSPC
    )


class NullWriter:
    """A writer that keeps nothing (checkpointing off, for benchmarks).

    It has the attributes of :class:`CheckpointWriter` that the run reads: it
    never fails and never holds a row.
    """

    written = 0
    errors = 0

    def __init__(self) -> None:
        self.failure: BaseException | None = None
        self.on_failure: Callable[[BaseException], object] | None = None

    @property
    def unsaved(self) -> int:
        """Always 0: nothing is kept."""
        return 0

    def put(self, record: RowRecord) -> None:
        """Drop the row."""

    def close(self, timeout: float = 30.0) -> None:
        """Nothing to close."""
