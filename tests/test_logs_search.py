"""Searching and browsing the call log: FTS5 search, filters, full calls, backup, prune,
and logs written by older and newer versions."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import notebook_llm as nl
from notebook_llm import errors
from notebook_llm.store import CallLog, Store, connect, migrations as migrations_module
from notebook_llm.store.log import call_log, utc_iso
from notebook_llm.store.search import catch_up, catch_up_all

ROOT = Path(__file__).resolve().parents[1]


def _call(prompt: str, response: str, **extra: object) -> dict[str, object]:
    return {"provider": "openai", "model": "openai:gpt-4o-mini",
            "messages_json": [{"role": "user", "content": prompt}], "response_text": response,
            "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.001, "cost_status": "priced",
            **extra}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "log.db"
    log = call_log(path)
    old = utc_iso(datetime.now(timezone.utc) - timedelta(days=30))
    log.record(_call("What is the refund policy?", "Refunds within 30 days. Refund policy: "
                     "the refund policy covers every refund.", tags_json=["support"]))
    log.record(_call("Tell me a joke", "Why did the refund cross the road?"))
    log.record(_call("Shipping costs?", "Shipping is free.", model="anthropic:claude-haiku-4-5",
                     provider="anthropic"))
    log.record(_call("refund for an old order", "An old refund answer.", created_at=old))
    log.record(_call("<img src=x onerror=alert(1)> refund", "<script>alert(2)</script> refund"))
    log.record(_call("a conversation about refunds", "yes, refunds", conversation_id="conv-1",
                     conversation_position=0))
    assert log.flush()
    return path


def test_search_ranks_by_relevance_and_keeps_the_order_everywhere(db: Path) -> None:
    found = nl.logs(10, q="refund policy", db_path=db)
    assert len(found) == 1 and "refund policy" in found.df["prompt"].iloc[0]
    found = nl.logs(10, q="refund", db_path=db)
    df = found.df
    assert len(df) == 5  # porter stemming: "refunds" matches too
    assert list(df["rank"]) == sorted(df["rank"])  # best (lowest bm25) first
    assert df["response"].iloc[0].startswith("Refunds within 30 days")  # most mentions
    text = repr(found)
    assert text.index("«Refunds» within 30 days") < text.index("Why did the «refund»")
    html = found._repr_html_()
    assert html is not None and html.index("within 30 days") < html.index("cross the road")
    markdown = found._repr_markdown_()
    assert markdown.index("within 30 days") < markdown.index("cross the road")
    assert found.call(0).response.startswith("Refunds within 30 days")


def test_search_combines_with_filters(db: Path) -> None:
    assert len(nl.logs(10, q="refund", since="7d", db_path=db)) == 4
    assert len(nl.logs(10, q="refund", tag="support", db_path=db)) == 1
    assert len(nl.logs(10, q="refund", conversation="conv-1", db_path=db)) == 1
    assert len(nl.logs(10, q="shipping", model="claude-haiku-4-5", db_path=db)) == 1
    assert len(nl.logs(10, q="shipping", model="gpt-4o-mini", db_path=db)) == 0
    assert len(nl.logs(2, q="refund", db_path=db)) == 2
    assert len(nl.logs(10, q="response:joke", db_path=db)) == 0  # only the prompt has it
    assert len(nl.logs(10, q="prompt:joke", db_path=db)) == 1
    # Without a search, the same filters; shown newest first.
    assert len(nl.logs(10, conversation="conv-1", db_path=db)) == 1
    assert len(nl.logs(10, since="7d", db_path=db)) == 5


def test_search_highlighting_escapes_model_output(db: Path) -> None:
    found = nl.logs(1, q="alert", db_path=db)
    html = found._repr_html_() or ""
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "<mark>alert</mark>" in html
    markdown = found._repr_markdown_()
    assert "<script>" not in markdown and "<img" not in markdown and "**alert**" in markdown
    assert nl.logs(1, q="nothingmatchesthis", db_path=db)._repr_html_().startswith("<p>No logged")


@pytest.mark.parametrize("query", ['"unclosed', "refund AND", "gpt-4o", "(refund", "  "])
def test_bad_search_syntax_gives_a_clear_error(db: Path, query: str) -> None:
    with pytest.raises(ValueError) as caught:
        nl.logs(q=query, db_path=db)
    message = str(caught.value)
    assert "q=" in message and caught.value.__cause__ is None
    assert not isinstance(caught.value, sqlite3.Error)


def test_log_entry_shows_the_whole_call_escaped(db: Path, tmp_path: Path) -> None:
    client = nl.Client("offline:echo", db_path=db)
    client.complete("<b>bold</b> question", temperature=0.5, tags=["t1"], system="sys prompt")
    found = nl.logs(1, q="bold", db_path=db)
    entry = found.call(0)
    assert entry.prompt == "<b>bold</b> question" and entry.response == "<b>bold</b> question"
    assert entry.params == {"temperature": 0.5}
    assert entry.messages == [{"role": "user", "content": "<b>bold</b> question"}]
    html = entry._repr_html_()
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    for label in ("System prompt", "Messages", "Options", "Response", "latency_s",
                  "input_tokens", "cost"):
        assert label in html
    assert nl.log_entry(entry.id[:20], db_path=db).id == entry.id  # a prefix will do
    assert "temperature" in repr(entry)
    with pytest.raises(KeyError, match="no logged call"):
        nl.log_entry("ffffffffffff", db_path=db)
    with pytest.raises(IndexError):
        found.call(5)


def test_existing_logs_are_indexed_and_conversations_kept_by_the_migration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "old.db"
    old = [m for m in migrations_module.MIGRATIONS
           if m.__name__ < "m009"]  # the schema before conversations and search
    monkeypatch.setattr(migrations_module, "MIGRATIONS", old)
    conn = connect(path)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(calls)")]
    assert "conversation_position" not in columns
    for i, (text, conversation) in enumerate(
        [("old refund question", None), ("chat one", "c1"), ("chat two", "c1")]
    ):
        conn.execute(
            "INSERT INTO calls (id, created_at, model, messages_json, response_text,"
            " conversation_id) VALUES (?, ?, 'offline:echo', ?, 'answer', ?)",
            (f"id{i}", f"2026-01-0{i + 1}T00:00:00+00:00",
             json.dumps([{"role": "user", "content": text}]), conversation))
    conn.close()
    monkeypatch.undo()
    conn = connect(path)  # the newer version migrates it
    assert conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 3  # nothing lost
    hits = conn.execute("SELECT rowid FROM calls_fts WHERE calls_fts MATCH 'refund'").fetchall()
    assert len(hits) == 1
    conn.execute("INSERT INTO calls_fts (calls_fts) VALUES ('integrity-check')")
    assert [tuple(row) for row in conn.execute(
        "SELECT id, conversation_position FROM calls WHERE conversation_id = 'c1'"
        " ORDER BY created_at")] == [("id1", 0), ("id2", 1)]
    conn.close()
    again = nl.conversation("c1", db_path=path)
    assert [t.prompt for t in again.turns] == ["chat one", "chat two"]


def test_log_from_a_newer_version_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = connect(path)
    conn.execute("INSERT INTO calls (id, created_at) VALUES ('x', '2026-01-01')")
    conn.execute("INSERT INTO _migrations VALUES ('m999_from_the_future', '2030-01-01')")
    conn.close()
    with pytest.raises(errors.StorageError, match="newer version of notebook-llm") as caught:
        connect(path)
    assert "m999_from_the_future" in str(caught.value) and str(path) in str(caught.value)
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 1
    assert raw.execute("SELECT COUNT(*) FROM _migrations WHERE name = 'm999_from_the_future'"
                       ).fetchone()[0] == 1
    raw.close()


_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from notebook_llm.store import CallLog
    log = CallLog(sys.argv[1])
    print("started", flush=True)
    for i in range(4000):
        log.record({"model": "offline:echo", "response_text": f"refund {i}",
                    "messages_json": [{"role": "user", "content": "backup while writing"}]})
        if i % 200 == 0:
            time.sleep(0.01)
    assert log.flush(timeout=60)
    """
)


def test_log_backup_is_consistent_while_another_process_writes(db: Path, tmp_path: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), str(ROOT)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "started"
        target = nl.log_backup(tmp_path / "backup.db", db_path=db)
    finally:
        _out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert target == (tmp_path / "backup.db").resolve()
    assert target.stat().st_mode & 0o777 == 0o600
    copy = sqlite3.connect(target)
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    catch_up_all(Store(target))  # calls written since the writer last indexed
    copy.execute("INSERT INTO calls_fts (calls_fts) VALUES ('integrity-check')")
    count = copy.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert 6 <= count <= 6 + 4000
    assert copy.execute("SELECT COUNT(*) FROM calls_fts WHERE calls_fts MATCH 'refund'"
                        ).fetchone()[0] == count - 1  # every call but "Shipping costs?"
    copy.close()
    with pytest.raises(FileExistsError, match="never overwrites"):
        nl.log_backup(target, db_path=db)
    with pytest.raises(FileNotFoundError):
        nl.log_backup(tmp_path / "missing" / "b.db", db_path=db)


def test_log_prune_keeps_costs_and_forgets_text(db: Path) -> None:
    before = nl.costs(db_path=db)
    assert nl.log_prune(before="7d", db_path=db) == 1  # the 30-day-old call
    assert len(nl.logs(10, q="old", db_path=db)) == 0  # gone from the index too
    after = nl.costs(db_path=db)
    assert after["cost_usd"].sum() == pytest.approx(before["cost_usd"].sum())
    assert after["calls"].sum() == before["calls"].sum()
    assert nl.log_prune(before="7d", db_path=db) == 0  # nothing left to prune
    assert nl.log_prune(before="now", keep_costs=False, db_path=db) == 6
    assert nl.costs(db_path=db).empty
    with pytest.raises(ValueError, match="before= is required"):
        nl.log_prune(before=None, db_path=db)


def test_logs_refuses_a_bad_count(db: Path) -> None:
    with pytest.raises(ValueError, match="positive whole number"):
        nl.logs(0, db_path=db)


def test_index_changes_and_deletes_of_indexed_calls_in_step(tmp_path: Path) -> None:
    log = CallLog(tmp_path / "x.db", register_atexit=False)
    for i in range(300):
        log.record(_call(f"question {i}", f"answer number {i}"))
    assert log.flush()
    assert catch_up_all(log.store) == 300
    conn = log.store.conn
    conn.execute("UPDATE calls SET response_text = 'changed' WHERE rowid <= 10")
    conn.execute("DELETE FROM calls WHERE rowid > 290")
    conn.execute("INSERT INTO calls_fts (calls_fts) VALUES ('integrity-check')")
    assert conn.execute("SELECT COUNT(*) FROM calls_fts WHERE calls_fts MATCH 'changed'"
                        ).fetchone()[0] == 10
    assert conn.execute("SELECT COUNT(*) FROM calls_fts WHERE calls_fts MATCH 'number'"
                        ).fetchone()[0] == 280
    log.close()


def test_search_with_more_matches_than_it_ranks_says_so(
    db: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from notebook_llm import _usage

    everything = nl.logs(10, q="refund", db_path=db)
    assert everything.note is None
    monkeypatch.setattr(_usage, "RANK_LIMIT", 2)
    found = nl.logs(10, q="refund", db_path=db)
    assert len(found) == 2 and found.note and "newest 2" in found.note
    newest = nl.logs(10, db_path=db).df  # oldest first
    refund_rows = newest[newest["prompt"].str.contains("refund|Refund", regex=True)
                         | newest["response"].str.contains("refund", regex=True)]
    assert set(found.df["id"]) == set(refund_rows["id"].iloc[-2:])
    assert found.note in repr(found) and "newest 2" in (found._repr_html_() or "")
    assert "newest 2" in found._repr_markdown_()


def test_latest_calls_open_newest_first(db: Path) -> None:
    latest = nl.logs(3, db_path=db)
    assert latest.query is None and latest._repr_html_() is None  # Markdown cards, as before
    assert latest.call(0).prompt == "a conversation about refunds"  # shown first: the newest
    assert latest.call(-1).prompt == "Shipping costs?"  # the third newest
    assert latest.call(latest.df["id"].iloc[0]).id == latest.df["id"].iloc[0]


def test_new_calls_are_indexed_when_the_writer_is_idle_or_at_a_search(tmp_path: Path) -> None:
    from notebook_llm.store import log as log_module

    path = tmp_path / "idle.db"
    log = CallLog(path, register_atexit=False)
    log.record(_call("first refund", "a"))
    assert log.flush()
    state = "SELECT indexed_rowid FROM calls_fts_state"
    assert log.store.tuples(state) == [(0,)]  # written, not indexed yet: no cost on the way
    deadline = time.monotonic() + 10 * log_module.INDEX_IDLE_S
    while log.store.tuples(state) != [(1,)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.store.tuples(state) == [(1,)]  # the writer indexed it once idle
    log.close()
    # Written by another log and not indexed: a search catches up first.
    other = CallLog(path, register_atexit=False)
    for i in range(3):
        other.record(_call(f"second refund {i}", "b"))
    other.record(_call("gone before it was indexed", "refund"))
    assert other.flush()
    other.store.execute("DELETE FROM calls WHERE messages_json LIKE '%gone%'")
    assert len(nl.logs(10, q="refund", db_path=path)) == 4
    other.store.execute("INSERT INTO calls_fts (calls_fts) VALUES ('integrity-check')")
    assert catch_up(other.store) == 0
    other.close()


def test_prune_keeps_the_index_mark_below_new_calls(db: Path) -> None:
    nl.logs(1, q="refund", db_path=db)  # everything indexed
    assert nl.log_prune(before="now", keep_costs=False, db_path=db) == 6
    log = call_log(db)
    log.record(_call("after the prune: refund", "x"))
    assert log.flush()
    assert len(nl.logs(5, q="prune", db_path=db)) == 1
    log.store.execute("INSERT INTO calls_fts (calls_fts) VALUES ('integrity-check')")
