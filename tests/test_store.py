"""The SQLite store: schema, migrations, connections and the background call log."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from notebook_llm.store import (
    CallLog,
    Store,
    connect,
    default_db_path,
    migrate,
    migrations as migrations_module,
    scrub,
)
from notebook_llm.store.migrations import MIGRATIONS

ROOT = Path(__file__).resolve().parents[1]

# Fake keys, built from parts so secret scanners do not mistake them for real ones.
OPENAI_KEY = "sk-" + "proj-abcdefghijklmnopqrstuvwx1234"
ANTHROPIC_KEY = (
    "sk-" + "ant-api03-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVbNmQwErTyUiOpAsDfGhJkLz-AbCdEfAA"
)
SECRETS = [
    OPENAI_KEY,
    ANTHROPIC_KEY,
    "abcdefghijklmnopqrstuvwx1234",
    "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0",
]


def columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    return {row[1]: row[2] for row in conn.execute(f"PRAGMA table_info({table})")}


def test_migrate_blank() -> None:
    conn = connect(":memory:")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {
        "_migrations",
        "calls",
        "cache",
        "batch_jobs",
        "batch_rows",
        "collections",
        "collection_items",
        "embedding_cache",
        "arena_votes",
        "fragments",
        "fragment_aliases",
        "call_fragments",
        "schemas",
        "call_schemas",
        "conversations",  # m009
        # m010: the FTS5 index and its shadow tables
        "calls_fts",
        "calls_fts_data",
        "calls_fts_idx",
        "calls_fts_docsize",
        "calls_fts_config",
        "calls_fts_state",  # the highest rowid indexed
    }
    assert columns(conn, "_migrations") == {"name": "TEXT", "applied_at": "TEXT"}
    assert columns(conn, "calls") == {
        "id": "TEXT",
        "created_at": "TEXT",
        "provider": "TEXT",
        "model": "TEXT",
        "response_model": "TEXT",
        "messages_json": "TEXT",
        "system": "TEXT",
        "params_json": "TEXT",
        "response_text": "TEXT",
        "reasoning": "TEXT",
        "tool_calls_json": "TEXT",
        "finish_reason": "TEXT",
        "input_tokens": "INTEGER",
        "output_tokens": "INTEGER",
        "cached_input_tokens": "INTEGER",
        "cache_write_tokens": "INTEGER",
        "reasoning_tokens": "INTEGER",
        "latency_s": "REAL",
        "ttft_s": "REAL",
        "cost_usd": "REAL",
        "cost_status": "TEXT",
        "cached": "INTEGER",
        "error_class": "TEXT",
        "error_message": "TEXT",
        "tags_json": "TEXT",
        "conversation_id": "TEXT",
        "batch_id": "TEXT",
        "notebook_path": "TEXT",
        "tool_results_json": "TEXT",
        "conversation_position": "INTEGER",  # m009
    }
    assert columns(conn, "conversations") == {
        "id": "TEXT",
        "name": "TEXT",
        "model": "TEXT",
        "system": "TEXT",
        "created_at": "TEXT",
        "last_used_at": "TEXT",
        "parent_id": "TEXT",
        "forked_at": "INTEGER",
        "summary": "TEXT",
        "summary_turns": "INTEGER",
    }
    assert columns(conn, "cache") == {
        "key": "TEXT",
        "created_at": "TEXT",
        "provider": "TEXT",
        "model": "TEXT",
        "completion_json": "TEXT",
        "hits": "INTEGER",
    }
    assert columns(conn, "batch_jobs") == {
        "id": "TEXT",
        "name": "TEXT",
        "created_at": "TEXT",
        "updated_at": "TEXT",
        "model_json": "TEXT",
        "params_json": "TEXT",
        "total": "INTEGER",
        "state": "TEXT",
        "mode": "TEXT",
        "provider_batch_id": "TEXT",
        "meta_json": "TEXT",
    }
    assert columns(conn, "batch_rows") == {
        "job_id": "TEXT",
        "row_key": "TEXT",
        "idx": "INTEGER",
        "model": "TEXT",
        "status": "TEXT",
        "result_json": "TEXT",
        "error_class": "TEXT",
        "error_message": "TEXT",
        "attempts": "INTEGER",
        "cost_usd": "REAL",
        "input_tokens": "INTEGER",
        "output_tokens": "INTEGER",
        "finished_at": "TEXT",
    }
    assert columns(conn, "collections") == {
        "name": "TEXT",
        "model": "TEXT",
        "dims": "INTEGER",
        "created_at": "TEXT",
        "meta_json": "TEXT",
    }
    assert columns(conn, "collection_items") == {
        "collection": "TEXT",
        "id": "TEXT",
        "content_hash": "TEXT",
        "text": "TEXT",
        "vector": "BLOB",
        "metadata_json": "TEXT",
        "updated_at": "TEXT",
    }
    assert columns(conn, "embedding_cache") == {
        "model": "TEXT",
        "content_hash": "TEXT",
        "vector": "BLOB",
    }
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(calls)")}
    assert {
        "idx_calls_usage",  # m005: covers the totals, replaces idx_calls_created_at
        "idx_calls_batch",  # m005: only calls that belong to a batch
    } <= indexes
    # m005 and m006 dropped what idx_calls_usage covers.
    assert not {"idx_calls_created_at", "idx_calls_batch_id", "idx_calls_model",
                "idx_calls_provider"} & indexes
    usage_index = [row[2] for row in conn.execute("PRAGMA index_info(idx_calls_usage)")]
    assert usage_index[0] == "created_at"
    plan = " ".join(str(row[-1]) for row in conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM calls WHERE batch_id = ?", ("b",)))
    assert "idx_calls_batch" in plan
    pk = {row[1]: row[5] for row in conn.execute("PRAGMA table_info(batch_rows)") if row[5]}
    assert pk == {"job_id": 1, "row_key": 2, "model": 3}
    applied = [row[0] for row in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert applied == ["m001_calls", "m002_cache", "m003_batches", "m004_collections",
                       "m005_calls_usage_index", "m006_drop_model_provider_indexes",
                       "m007_fragments", "m008_schemas", "m009_conversations",
                       "m010_calls_fts", "m011_tool_results", "m012_arena_votes"]


def test_migrate_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    conn = connect(path)
    migrate(conn)
    migrate(conn)
    conn.close()
    conn = connect(path)  # connect migrates again
    assert conn.execute("SELECT count(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)
    conn.close()


def test_migrate_runs_only_new_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = connect(":memory:")
    calls: list[str] = []

    def m999_test_only(conn: sqlite3.Connection) -> None:
        calls.append("ran")
        conn.execute("ALTER TABLE calls ADD COLUMN extra TEXT")

    monkeypatch.setattr(
        migrations_module, "MIGRATIONS", [*migrations_module.MIGRATIONS, m999_test_only]
    )
    migrate(conn)
    migrate(conn)
    assert calls == ["ran"]
    assert "extra" in columns(conn, "calls")


def test_migrate_failed_migration_rolls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = connect(":memory:")

    def m998_broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    monkeypatch.setattr(
        migrations_module, "MIGRATIONS", [*migrations_module.MIGRATIONS, m998_broken]
    )
    with pytest.raises(RuntimeError):
        migrate(conn)
    assert not conn.in_transaction
    assert (
        conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchone() is None
    )
    assert conn.execute("SELECT 1 FROM _migrations WHERE name = 'm998_broken'").fetchone() is None


def test_connect_settings(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "db.sqlite"
    conn = connect(path)
    assert path.exists()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.isolation_level is None
    assert conn.row_factory is sqlite3.Row
    conn.close()


def test_default_db_path_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTEBOOK_LLM_DB", str(tmp_path / "x.db"))
    assert default_db_path() == tmp_path / "x.db"
    monkeypatch.delenv("NOTEBOOK_LLM_DB")
    path = default_db_path()
    assert path.name == "notebook_llm.db"
    assert "notebook-llm" in str(path)


def test_store_connection_per_thread(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    seen: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: seen.append(store.conn))
    thread.start()
    thread.join()
    assert store.conn is store.conn
    assert seen[0] is not store.conn
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        seen[0].execute("SELECT 1")  # closed from this thread too


def test_store_memory_shared_between_threads() -> None:
    with Store(":memory:") as store:
        with store.transaction() as conn:
            conn.execute("INSERT INTO collections (name, created_at) VALUES ('a', 'now')")
        counts: list[object] = []
        thread = threading.Thread(
            target=lambda: counts.append(
                store.execute("SELECT count(*) AS n FROM collections")[0]["n"]
            )
        )
        thread.start()
        thread.join()
        assert counts == [1]


def test_store_transaction_rolls_back(tmp_path: Path) -> None:
    with Store(tmp_path / "db.sqlite") as store:
        with pytest.raises(ValueError), store.transaction() as conn:
            conn.execute("INSERT INTO collections (name, created_at) VALUES ('a', 'now')")
            raise ValueError
        assert store.execute("SELECT * FROM collections") == []


def test_calllog_record_fills_id_and_created_at() -> None:
    with CallLog(":memory:", register_atexit=False) as log:
        call_id = log.record({"model": "offline:echo", "not_a_column": 1})
        explicit = log.record({"id": "abc", "created_at": "2025-01-01T00:00:00+00:00"})
        rows = log.query()
    assert len(call_id) == 32 and int(call_id, 16) >= 0
    assert explicit == "abc"
    by_id = {row["id"]: row for row in rows}
    assert by_id[call_id]["model"] == "offline:echo"
    assert by_id[call_id]["created_at"].endswith("+00:00")
    assert by_id["abc"]["created_at"] == "2025-01-01T00:00:00+00:00"


def test_calllog_json_columns_encoded_at_record_time() -> None:
    messages = [{"role": "user", "content": "hi"}]
    with CallLog(":memory:", register_atexit=False) as log:
        log.record(
            {"messages_json": messages, "params_json": {"temperature": 0.5}, "tags_json": ["a"]}
        )
        messages.append({"role": "assistant", "content": "later"})  # must not leak into the log
        (row,) = log.query()
    assert json.loads(row["messages_json"]) == [{"role": "user", "content": "hi"}]
    assert json.loads(row["params_json"]) == {"temperature": 0.5}
    assert json.loads(row["tags_json"]) == ["a"]


def test_calllog_flush_commits_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    log = CallLog(path, register_atexit=False, interval=10)  # a long gather window
    assert log.flush() is True  # nothing queued yet
    for i in range(1234):
        log.record({"model": f"m{i % 3}", "input_tokens": i})
    assert log.flush(timeout=5) is True
    # Committed: visible to an unrelated connection, without waiting for `interval`.
    other = sqlite3.connect(path)
    assert other.execute("SELECT count(*) FROM calls").fetchone()[0] == 1234
    other.close()
    assert log.written == 1234 and log.dropped == 0 and not log.errors
    log.close()
    log.record({"model": "after close"})  # dropped quietly, no error
    assert log.dropped == 1


def test_calllog_close_writes_pending(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    log = CallLog(path, register_atexit=False)
    for _ in range(10):
        log.record({"model": "x"})
    log.close()
    conn = connect(path)
    assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 10
    conn.close()


def test_calllog_flushes_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from notebook_llm.store import CallLog
        log = CallLog({str(path)!r}, interval=30)  # rows would sit in the queue for 30 s
        for _ in range(300):
            log.record({{"model": "x"}})
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    conn = connect(path)
    assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 300
    conn.close()


def test_calllog_query_where_and_limit() -> None:
    with CallLog(":memory:", register_atexit=False) as log:
        for i in range(10):
            log.record(
                {
                    "model": "a" if i % 2 else "b",
                    "input_tokens": i,
                    "created_at": f"2025-01-01T00:00:{i:02d}",
                }
            )
        assert [r["input_tokens"] for r in log.query("model = ?", ("a",))] == [1, 3, 5, 7, 9]
        assert [r["input_tokens"] for r in log.query("WHERE input_tokens > :n", {"n": 6})] == [
            7,
            8,
            9,
        ]
        assert [r["input_tokens"] for r in log.query(limit=3)] == [7, 8, 9]


def test_calllog_threads_record_concurrently(tmp_path: Path) -> None:
    with CallLog(tmp_path / "db.sqlite", register_atexit=False) as log:
        threads = [
            threading.Thread(target=lambda: [log.record({"model": "t"}) for _ in range(500)])
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(log.query()) == 4000
        assert not log.errors


def test_calllog_write_failure_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = CallLog(blocker / "sub" / "db.sqlite", register_atexit=False)  # parent is a file
    assert log.record({"model": "x"})  # still returns an id
    assert log.flush(timeout=5) is True
    assert log.dropped == 1 and log.written == 0
    assert log.errors
    log.close()


def test_calllog_duplicate_id_costs_only_that_row() -> None:
    with CallLog(":memory:", register_atexit=False) as log:
        log.record({"id": "same"})
        log.flush()
        for call_id in ("a", "same", "b"):
            log.record({"id": call_id})
        rows = log.query()
        assert sorted(r["id"] for r in rows) == ["a", "b", "same"]
        assert log.dropped == 1


_WORKER = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, sys.argv[2])
    from notebook_llm.store import CallLog

    log = CallLog(sys.argv[1])
    start = time.perf_counter()
    for i in range(1000):
        log.record({
            "provider": "offline", "model": "offline:echo", "input_tokens": i, "output_tokens": i,
            "messages_json": [{"role": "user", "content": "hello " * 20}],
            "response_text": "hello " * 20, "cost_usd": 0.0, "cost_status": "free",
        })
    record_s = time.perf_counter() - start
    ok = log.flush(timeout=60)
    total_s = time.perf_counter() - start
    # Every process catches the search index up at once, as kernels searching
    # together do: no call may be indexed twice or missed.
    from notebook_llm.store.search import catch_up_all
    catch_up_all(log.store)
    print(json.dumps({"ok": ok, "record_us": record_s * 1e6 / 1000, "total_s": total_s,
                      "errors": list(log.errors), "dropped": log.dropped}))
    """
)


def test_calllog_four_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), str(ROOT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = []
    stderr = ""
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        stderr += err
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert "locked" not in stderr.lower(), stderr
    assert stderr.strip() == ""
    for result in results:
        assert result["ok"] and result["dropped"] == 0 and result["errors"] == []
    conn = connect(path)
    assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 4000
    assert conn.execute("SELECT count(DISTINCT id) FROM calls").fetchone()[0] == 4000
    assert conn.execute("SELECT count(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)
    # The search index caught up by four processes at once: one entry per
    # call, each matching its row (FTS5's own check reads the rows back).
    assert conn.execute(
        "SELECT count(*) FROM calls_fts WHERE calls_fts MATCH 'hello'").fetchone()[0] == 4000
    conn.execute("INSERT INTO calls_fts (calls_fts) VALUES ('integrity-check')")
    conn.close()


def test_scrub_redacts_text_columns() -> None:
    row = scrub(
        {
            "id": "x",
            "messages_json": json.dumps([{"content": f"my key is {OPENAI_KEY}"}]),
            "error_message": f"Incorrect API key provided: {ANTHROPIC_KEY}",
            "input_tokens": 3,
        }
    )
    assert OPENAI_KEY not in row["messages_json"] and "[REDACTED]" in row["messages_json"]
    assert ANTHROPIC_KEY not in row["error_message"]
    assert row["id"] == "x" and row["input_tokens"] == 3


def test_calllog_secrets_never_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets.db"
    log = CallLog(path, register_atexit=False)
    for _ in range(50):
        log.record(
            {
                "provider": "openai",
                "model": "openai:gpt-4o-mini",
                "messages_json": [
                    {"role": "user", "content": f"here is my key {OPENAI_KEY} and {ANTHROPIC_KEY}"}
                ],
                "system": f"use {ANTHROPIC_KEY}",
                "params_json": {
                    "api_key": OPENAI_KEY,
                    "extra_headers": {"Authorization": f"Bearer {OPENAI_KEY}"},
                },
                "response_text": f"You sent {OPENAI_KEY}",
                "reasoning": f"the key {ANTHROPIC_KEY} looks valid",
                "tool_calls_json": [{"name": "f", "arguments": {"k": OPENAI_KEY}}],
                "error_class": "AuthenticationError",
                "error_message": f"Incorrect API key provided: {OPENAI_KEY}. Also {ANTHROPIC_KEY}",
                "tags_json": [OPENAI_KEY],
            }
        )
    assert log.flush() is True
    assert len(log.query()) == 50

    def raw_bytes() -> bytes:
        data = b""
        for suffix in ("", "-wal", "-shm"):
            file = Path(str(path) + suffix)
            if file.exists():
                data += file.read_bytes()
        return data

    assert Path(str(path) + "-wal").exists()
    data = raw_bytes()  # WAL not yet checkpointed
    assert b"[REDACTED]" in data
    for secret in SECRETS:
        assert secret.encode() not in data, secret
    log.close()  # checkpoints the WAL into the main file
    data = raw_bytes()
    for secret in SECRETS:
        assert secret.encode() not in data, secret
