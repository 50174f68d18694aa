"""Schema migrations: an ordered, append-only list of functions.

Each migration is a function that takes a connection and changes the schema.
Its ``__name__`` is its identity, recorded in ``_migrations`` once applied, so
a shipped migration must never be renamed or edited: append a new one.
``migrate(conn)`` runs, in list order, every migration not yet recorded.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial

__all__ = ["MIGRATIONS", "migrate", "migration"]

Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[Migration] = []
"""Every migration, in the order it runs."""

migration = MIGRATIONS.append
"""Decorator: register a migration at the end of :data:`MIGRATIONS`."""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema of ``conn`` up to date; safe to call on every open.

    Each pending migration runs in its own ``BEGIN IMMEDIATE`` transaction and
    re-checks ``_migrations`` once it holds the write lock, so two kernels
    opening a new database at the same moment never apply one migration twice.
    """
    previous_isolation = conn.isolation_level
    conn.isolation_level = None  # we issue BEGIN/COMMIT ourselves
    try:
        _retry_locked(
            lambda: conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
            )
        )
        applied = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
        for function in MIGRATIONS:
            if function.__name__ not in applied:
                _retry_locked(partial(_apply, conn, function))
    finally:
        conn.isolation_level = previous_isolation


def _apply(conn: sqlite3.Connection, function: Migration) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have applied it between our read and our lock.
        done = conn.execute(
            "SELECT 1 FROM _migrations WHERE name = ?", (function.__name__,)
        ).fetchone()
        if done is None:
            function(conn)
            conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                (function.__name__, datetime.now(timezone.utc).isoformat()),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _retry_locked(operation: Callable[[], object], attempts: int = 8) -> None:
    """Run ``operation``, retrying with backoff while another process holds the lock.

    ``busy_timeout`` covers most waits; this covers the few cases where SQLite
    returns SQLITE_BUSY without calling the busy handler (lock upgrades).
    """
    delay = 0.05
    for attempt in range(attempts):
        try:
            operation()
            return
        except sqlite3.OperationalError as exc:
            if not _is_locked(exc) or attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


# Append-only below this line. Never rename or edit a shipped migration.


@migration
def m001_calls(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE calls (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            provider TEXT,
            model TEXT,
            response_model TEXT,
            messages_json TEXT,
            system TEXT,
            params_json TEXT,
            response_text TEXT,
            reasoning TEXT,
            tool_calls_json TEXT,
            finish_reason TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cached_input_tokens INTEGER,
            cache_write_tokens INTEGER,
            reasoning_tokens INTEGER,
            latency_s REAL,
            ttft_s REAL,
            cost_usd REAL,
            cost_status TEXT,
            cached INTEGER,
            error_class TEXT,
            error_message TEXT,
            tags_json TEXT,
            conversation_id TEXT,
            batch_id TEXT,
            notebook_path TEXT
        )
        """
    )
    for column in ("created_at", "model", "provider", "batch_id"):
        conn.execute(f"CREATE INDEX idx_calls_{column} ON calls ({column})")


@migration
def m002_cache(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE cache (
            key TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            provider TEXT,
            model TEXT,
            completion_json TEXT,
            hits INTEGER NOT NULL DEFAULT 0
        )
        """
    )


@migration
def m003_batches(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE batch_jobs (
            id TEXT PRIMARY KEY,
            name TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT,
            model_json TEXT,
            params_json TEXT,
            total INTEGER,
            state TEXT NOT NULL DEFAULT 'pending',
            mode TEXT NOT NULL DEFAULT 'direct',
            provider_batch_id TEXT,
            meta_json TEXT
        )
        """
    )
    # model is part of the key (one row per input per model when comparing),
    # so it is NOT NULL: SQLite would let two NULL-keyed duplicates in.
    conn.execute(
        """
        CREATE TABLE batch_rows (
            job_id TEXT NOT NULL REFERENCES batch_jobs (id) ON DELETE CASCADE,
            row_key TEXT NOT NULL,
            idx INTEGER,
            model TEXT NOT NULL DEFAULT '',
            status TEXT,
            result_json TEXT,
            error_class TEXT,
            error_message TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            finished_at TEXT,
            PRIMARY KEY (job_id, row_key, model)
        )
        """
    )
    conn.execute("CREATE INDEX idx_batch_rows_job_status ON batch_rows (job_id, status)")


@migration
def m004_collections(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE collections (
            name TEXT PRIMARY KEY,
            model TEXT,
            dims INTEGER,
            created_at TEXT NOT NULL,
            meta_json TEXT
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE collection_items (
            collection TEXT NOT NULL REFERENCES collections (name) ON DELETE CASCADE,
            id TEXT NOT NULL,
            content_hash TEXT,
            text TEXT,
            vector BLOB,
            metadata_json TEXT,
            updated_at TEXT,
            PRIMARY KEY (collection, id)
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE embedding_cache (
            model TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            vector BLOB,
            PRIMARY KEY (model, content_hash)
        )
        """
    )


@migration
def m005_calls_usage_index(conn: sqlite3.Connection) -> None:
    # Totals (nl.costs(), nl.usage_table()) group by model, provider, day,
    # notebook or tag: this index holds every column they read, in time order,
    # so SQLite answers them from the index alone and never reads the prompts
    # and answers in the table. It starts with created_at, so it does all the
    # work of idx_calls_created_at, which it replaces. Building it on a large
    # existing log takes a few seconds, once.
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_calls_usage ON calls (created_at, model, provider,"
        " input_tokens, output_tokens, cost_usd, cost_status, cached, error_class,"
        " notebook_path, tags_json)"
    )
    conn.execute("DROP INDEX IF EXISTS idx_calls_created_at")
    # Most calls belong to no batch: index only those that do (`batch_id = ?`
    # still finds them), so an ordinary call writes one index entry less.
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_calls_batch ON calls (batch_id)"
        " WHERE batch_id IS NOT NULL"
    )
    conn.execute("DROP INDEX IF EXISTS idx_calls_batch_id")


@migration
def m006_drop_model_provider_indexes(conn: sqlite3.Connection) -> None:
    # idx_calls_usage holds model and provider too: a filter on either reads
    # that index (about 15 ms over 100,000 calls), so the two single-column
    # indexes cost every logged call two index entries and buy nothing.
    conn.execute("DROP INDEX IF EXISTS idx_calls_model")
    conn.execute("DROP INDEX IF EXISTS idx_calls_provider")


@migration
def m007_fragments(conn: sqlite3.Connection) -> None:
    # llm's design: each fragment's text once, by hash; aliases name them;
    # call_fragments links a call to the fragments it used, in order.
    conn.execute(
        """
        CREATE TABLE fragments (
            id INTEGER PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            content TEXT,
            source TEXT,
            created_at TEXT
        )
        """
    )
    conn.execute(
        "CREATE TABLE fragment_aliases (alias TEXT PRIMARY KEY,"
        " fragment_id INTEGER NOT NULL REFERENCES fragments (id))"
    )
    conn.execute(
        """
        CREATE TABLE call_fragments (
            call_id TEXT NOT NULL,
            fragment_id INTEGER NOT NULL REFERENCES fragments (id),
            kind TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (call_id, kind, position)
        )
        """
    )
    conn.execute("CREATE INDEX idx_call_fragments_fragment ON call_fragments (fragment_id)")


@migration
def m008_schemas(conn: sqlite3.Connection) -> None:
    # Each JSON schema used once, by its id (a hash of its canonical JSON);
    # call_schemas links a call to the schema it asked for.
    conn.execute("CREATE TABLE schemas (id TEXT PRIMARY KEY, content TEXT, created_at TEXT)")
    conn.execute(
        "CREATE TABLE call_schemas (call_id TEXT PRIMARY KEY, schema_id TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX idx_call_schemas_schema ON call_schemas (schema_id)")


@migration
def m011_tool_results(conn: sqlite3.Connection) -> None:
    # The tool calls a request carries the results of (the tool loop's runs:
    # name, arguments, status, what the model was told, traceback, seconds),
    # as JSON, on the row of the request that sent them back.
    columns = {row[1] for row in conn.execute("PRAGMA table_info(calls)")}
    if "tool_results_json" not in columns:
        conn.execute("ALTER TABLE calls ADD COLUMN tool_results_json TEXT")


@migration
def m012_arena_votes(conn: sqlite3.Connection) -> None:
    # One row per voted matchup of a blind arena (nl.arena): who was A and B,
    # the vote, and what each answer cost. A re-vote replaces the row.
    conn.execute(
        """
        CREATE TABLE arena_votes (
            arena TEXT NOT NULL,
            matchup INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            prompt TEXT,
            model_a TEXT NOT NULL,
            model_b TEXT NOT NULL,
            winner TEXT NOT NULL CHECK (winner IN ('a', 'b', 'tie', 'both_bad')),
            answer_a TEXT,
            answer_b TEXT,
            cost_a REAL,
            cost_b REAL,
            latency_a REAL,
            latency_b REAL,
            PRIMARY KEY (arena, matchup)
        )
        """
    )
