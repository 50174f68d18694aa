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

from notebook_llm.core.errors import StorageError

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
        _refuse_newer(conn, applied)
        for function in MIGRATIONS:
            if function.__name__ not in applied:
                _retry_locked(partial(_apply, conn, function))
    finally:
        conn.isolation_level = previous_isolation


def _refuse_newer(conn: sqlite3.Connection, applied: set[str]) -> None:
    """Refuse a database a newer version has migrated: this one would misread it.

    Nothing is changed in the file, so the newer version still reads every row.
    """
    unknown = sorted(applied - {function.__name__ for function in MIGRATIONS})
    if unknown:
        files = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
        where = f" ({files[0]})" if files and files[0] else ""
        raise StorageError(
            f"The database{where} was written by a newer version of notebook-llm: it has "
            f"schema changes this version does not know ({', '.join(unknown)}). Upgrade "
            "notebook-llm (pip install -U notebook-llm), or use another file "
            "(NOTEBOOK_LLM_DB or db_path=). The file was not changed."
        )


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
def m009_conversations(conn: sqlite3.Connection) -> None:
    # A conversation's turns are its calls (conversation_id, conversation_position);
    # this row holds what belongs to the whole conversation. A fork names its
    # parent and the turn it starts after; a summary stands in for the first
    # summary_turns turns once the context strategy "summarise" made one.
    conn.execute(
        """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            name TEXT,
            model TEXT,
            system TEXT,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            parent_id TEXT,
            forked_at INTEGER,
            summary TEXT,
            summary_turns INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    conn.execute("CREATE INDEX idx_conversations_last_used ON conversations (last_used_at)")
    conn.execute("ALTER TABLE calls ADD COLUMN conversation_position INTEGER")
    # Most calls belong to no conversation: they write no entry here.
    conn.execute(
        "CREATE INDEX idx_calls_conversation ON calls (conversation_id, conversation_position)"
        " WHERE conversation_id IS NOT NULL"
    )
    # Calls logged with a conversation id before this table existed: one
    # conversation each, its turns numbered in time order.
    conn.execute(
        """
        INSERT OR IGNORE INTO conversations (id, name, model, system, created_at, last_used_at)
        SELECT conversation_id, NULL, MAX(model), MAX(system), MIN(created_at), MAX(created_at)
        FROM calls WHERE conversation_id IS NOT NULL GROUP BY conversation_id
        """
    )
    conn.execute(
        """
        UPDATE calls SET conversation_position = (
            SELECT COUNT(*) FROM calls AS earlier
            WHERE earlier.conversation_id = calls.conversation_id
              AND (earlier.created_at < calls.created_at
                   OR (earlier.created_at = calls.created_at AND earlier.rowid < calls.rowid))
        ) WHERE conversation_id IS NOT NULL
        """
    )


# The text of the last user message of a logged messages_json: what the call
# asked (earlier turns of a conversation are in earlier calls). Content parts
# give their text parts; malformed JSON gives NULL, never an error, so a bad
# row can never make an insert fail. The common case (the last message is the
# user's text) is read directly; the search through every message is the
# fallback. No '$[#-1]' (SQLite 3.31+): the file may meet an older SQLite.
_FTS_LAST_USER = """(SELECT CASE json_type(x.value, '$.content')
    WHEN 'text' THEN json_extract(x.value, '$.content')
    WHEN 'array' THEN (SELECT group_concat(json_extract(p.value, '$.text'), ' ')
                       FROM json_each(x.value, '$.content') AS p
                       WHERE json_type(p.value, '$.text') = 'text') END
  FROM json_each({m}) AS x
  WHERE x.type = 'object' AND json_extract(x.value, '$.role') = 'user'
  ORDER BY x.key DESC LIMIT 1)"""
_FTS_LAST = "'$[' || (json_array_length({m}) - 1) || ']'"
_FTS_PROMPT = (
    "(CASE WHEN json_valid({m}) AND json_type({m}) = 'array' AND json_array_length({m}) > 0"
    f" THEN CASE WHEN json_extract({{m}}, {_FTS_LAST} || '.role') = 'user'"
    f" AND json_type({{m}}, {_FTS_LAST} || '.content') = 'text'"
    f" THEN json_extract({{m}}, {_FTS_LAST} || '.content')"
    f" ELSE {_FTS_LAST_USER} END END)"
)


@migration
def m010_calls_fts(conn: sqlite3.Connection) -> None:
    # Full-text search over what each call asked and answered (FTS5, as
    # simonw/llm). The index reads its text from a view over `calls`
    # (external content), so the text is stored once.
    #
    # New calls are indexed in catch-up steps (store.search.catch_up), not by
    # an insert trigger: indexing costs the writer of a busy kernel more than
    # the rest of the row, so the writer thread catches up when idle and every
    # search catches up first. calls_fts_state holds the highest rowid
    # indexed; each step reads and moves it inside one write transaction, so
    # kernels catching up at once never index a call twice, and rows become
    # visible in rowid order (one writer at a time), so none is skipped.
    # Updates and deletes of indexed calls go through triggers, in the same
    # transaction as the change. VACUUM keeps the rowids of `calls`.
    conn.execute(
        "CREATE TABLE calls_fts_state (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " indexed_rowid INTEGER NOT NULL)"
    )
    conn.execute(
        f"CREATE VIEW calls_fts_source AS SELECT rowid AS call_rowid,"
        f" {_FTS_PROMPT.format(m='messages_json')} AS prompt, response_text AS response"
        " FROM calls"
    )
    conn.execute(
        "CREATE VIRTUAL TABLE calls_fts USING fts5(prompt, response,"
        " content='calls_fts_source', content_rowid='call_rowid',"
        " tokenize='porter unicode61 remove_diacritics 2')"
    )
    new_prompt = _FTS_PROMPT.format(m="new.messages_json")
    old_prompt = _FTS_PROMPT.format(m="old.messages_json")
    insert = (
        "INSERT INTO calls_fts (rowid, prompt, response)"
        f" VALUES (new.rowid, {new_prompt}, new.response_text);"
    )
    # An external-content index forgets a row given the values it indexed.
    delete = (
        "INSERT INTO calls_fts (calls_fts, rowid, prompt, response)"
        f" VALUES ('delete', old.rowid, {old_prompt}, old.response_text);"
    )
    indexed = "(SELECT indexed_rowid FROM calls_fts_state)"
    conn.execute(f"CREATE TRIGGER calls_fts_delete AFTER DELETE ON calls"
                 f" WHEN old.rowid <= {indexed} BEGIN {delete} END")
    conn.execute(
        "CREATE TRIGGER calls_fts_update AFTER UPDATE OF messages_json, response_text ON calls"
        f" WHEN old.rowid <= {indexed} BEGIN {delete} {insert} END"
    )
    # The calls logged so far. (FTS5's 'rebuild' fails on this view, whose
    # columns are subqueries: the same rows, inserted the ordinary way.)
    conn.execute(
        "INSERT INTO calls_fts (rowid, prompt, response)"
        " SELECT call_rowid, prompt, response FROM calls_fts_source"
    )
    conn.execute(
        "INSERT INTO calls_fts_state VALUES (1, (SELECT COALESCE(MAX(rowid), 0) FROM calls))"
    )


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
