"""The call log's fast path: every call ends up in SQLite, complete and redacted."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import notebook_llm as nl
from notebook_llm.store.log import CALL_COLUMNS, CallLog, call_log, iso_utc, new_call_id

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-proj-" + "Zy3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7cDE0q"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "calls.db"
    monkeypatch.setenv("NOTEBOOK_LLM_DB", str(path))
    previous = nl.set_logging(True)
    yield path
    call_log(path).close()
    nl.set_logging(previous)


def rows(path: Path) -> list[dict]:
    return call_log(path).query()


async def test_every_concurrent_call_is_logged_with_every_column(db: Path) -> None:
    client = nl.Client("offline:echo", max_retries=0)
    prompts = [f"prompt {i} " + "word " * (i % 13) for i in range(500)]

    async def one(i: int) -> None:
        await client.acomplete(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompts[i]}],
            temperature=0.5, tags=[f"t{i % 3}"], metadata={"batch_id": f"b{i % 2}"},
        )

    await asyncio.gather(*(one(i) for i in range(500)))
    logged = rows(db)
    assert len(logged) == 500
    assert len({r["id"] for r in logged}) == 500
    by_prompt = {json.loads(r["messages_json"])[-1]["content"]: r for r in logged}
    assert set(by_prompt) == set(prompts)
    for i, prompt in enumerate(prompts):
        row = by_prompt[prompt]
        assert json.loads(row["messages_json"]) == [{"role": "user", "content": prompt}]
        assert row["system"] == "be brief"
        assert json.loads(row["params_json"]) == {"temperature": 0.5}
        assert json.loads(row["tags_json"]) == [f"t{i % 3}"]
        assert row["batch_id"] == f"b{i % 2}" and row["conversation_id"] is None
        assert row["response_text"] == prompt  # offline:echo answers the prompt
        assert row["provider"] == "offline" and row["model"] == "offline:echo"
        assert row["cost_status"] == "free" and row["cost_usd"] == 0.0
        assert row["finish_reason"] == "stop" and row["error_class"] is None
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0
        assert row["created_at"].endswith("+00:00") and len(row["id"]) == 32


def test_fast_path_writes_what_record_writes(db: Path) -> None:
    """The middleware's tuple and a dict through CallLog.record make the same row."""
    nl.Client("offline:echo").complete("same row please", tags=["a"], max_tokens=50)
    (fast,) = rows(db)
    log = CallLog(db.parent / "other.db", register_atexit=False)
    log.record({column: fast[column] for column in CALL_COLUMNS if column != "id"})
    (slow,) = log.query()
    log.close()
    assert {k: v for k, v in slow.items() if k != "id"} == \
        {k: v for k, v in fast.items() if k != "id"}


def test_messages_changed_after_the_call_do_not_leak_into_the_log(db: Path) -> None:
    client = nl.Client("offline:echo")
    completion = client.complete("original")
    completion.messages.append(completion.to_message())  # continuing the chat
    completion.messages[0]["content"] = "edited"
    call_log(db).flush()
    (row,) = rows(db)
    assert json.loads(row["messages_json"]) == [{"role": "user", "content": "original"}]


def test_keys_are_redacted_on_the_fast_path(db: Path) -> None:
    nl.Client("offline:echo").complete(f"my key is {SECRET}", tags=[SECRET], top_secret=SECRET)
    (row,) = rows(db)
    raw = sqlite3.connect(db).execute("SELECT * FROM calls").fetchall()
    assert SECRET not in repr(raw)
    assert "[REDACTED]" in row["messages_json"] and "[REDACTED]" in row["response_text"]


def test_record_values_of_the_wrong_width_is_dropped_quietly(tmp_path: Path) -> None:
    with CallLog(tmp_path / "db.sqlite", register_atexit=False) as log:
        log.record_values((None, None, "too short"))
        assert log.dropped == 1 and log.errors
        assert log.query() == []


def test_call_ids_are_unique_uuid7_in_time_order() -> None:
    start = 1_750_000_000_000_000_000
    ids = [new_call_id(start + i * 1_000_000) for i in range(20_000)]  # 1 ms apart
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 32 and i[12] == "7" and i[16] in "89ab" for i in ids[:100])
    same_ms = {new_call_id(start) for _ in range(20_000)}
    assert len(same_ms) == 20_000


def test_created_at_text_matches_datetime() -> None:
    rng = random.Random(3)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    for _ in range(2000):
        ns = rng.randrange(1_600_000_000 * 10**9, 2_000_000_000 * 10**9)
        expected = (epoch + timedelta(microseconds=ns // 1000)).isoformat(
            timespec="microseconds")
        assert iso_utc(ns) == expected


def test_rows_committed_before_a_kill_survive(tmp_path: Path) -> None:
    """kill -9 loses at most what was not yet committed; the file stays sound."""
    path = tmp_path / "killed.db"
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from notebook_llm.store import CallLog
        log = CallLog({str(path)!r}, interval=30)
        for i in range(300):
            log.record({{"model": "committed", "input_tokens": i}})
        assert log.flush(timeout=30)
        for i in range(300):
            log.record({{"model": "maybe", "input_tokens": i}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -9
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = dict(conn.execute("SELECT model, count(*) FROM calls GROUP BY model").fetchall())
    conn.close()
    assert counts["committed"] == 300 and counts.get("maybe", 0) in (0, 300)
