"""Trackers keep exact totals and a bounded window of recent call records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import notebook_llm as nl
from notebook_llm import errors
from notebook_llm.store.log import call_log


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "calls.db"
    monkeypatch.setenv("NOTEBOOK_LLM_DB", str(path))
    previous = nl.set_logging(True)
    yield path
    call_log(path).close()
    nl.set_logging(previous)


def test_client_tracker_window_is_bounded_and_totals_exact(db: Path) -> None:
    client = nl.Client("offline:echo", max_records=5, max_retries=0)
    prompts = [f"call number {i}" for i in range(12)]
    for prompt in prompts:
        client.complete(prompt)
    with pytest.raises(errors.ProviderError):
        client.complete("boom", fail="failing on purpose")
    t = client.tracker
    assert t.max_records == 5
    assert t.calls == 13 and t.errors == 1
    assert len(t.records) == 5 and len(t.df) == 5
    # Totals over every call, not only the window: the log agrees.
    logged = nl.usage(db_path=db)
    assert len(logged) == 13
    assert t.input_tokens == logged["input_tokens"].sum() > 0
    assert t.output_tokens == logged["output_tokens"].sum()
    assert t.tokens == logged["total_tokens"].sum()
    # The window holds the most recent calls, oldest first.
    assert [r["error_class"] for r in t.records] == [None] * 4 + ["ProviderError"]
    assert t.df["model"].tolist() == ["offline:echo"] * 5
    # The display's per-model table counts every call too.
    assert "<td>13</td>" in t._repr_html_()
    assert "13 calls" in repr(t)


def test_default_window_is_a_thousand_and_track_keeps_everything(db: Path) -> None:
    client = nl.Client("offline:echo")
    assert client.tracker.max_records == 1000
    with nl.track() as t:
        assert t.max_records is None
        for i in range(30):
            client.complete(f"p{i}")
    assert t.calls == 30 and len(t.records) == 30


async def test_concurrent_calls_counted_exactly_with_small_window(db: Path) -> None:
    client = nl.Client("offline:echo", max_records=3)
    async with nl.track(max_records=2) as t:
        await asyncio.gather(*(client.acomplete(f"task {i} " * (i % 7)) for i in range(200)))
    assert client.tracker.calls == t.calls == 200
    assert len(client.tracker.records) == 3 and len(t.records) == 2
    logged = nl.usage(db_path=db)
    assert len(logged) == 200
    assert client.tracker.tokens == t.tokens == logged["total_tokens"].sum()


def test_records_are_dicts_with_the_documented_fields(db: Path) -> None:
    client = nl.Client("offline:echo")
    client.complete("hello", tags=["x"])
    (record,) = client.tracker.records
    assert list(record) == list(nl.Tracker(name="x").df.columns)
    assert record["tags"] == ["x"] and record["time"].tzinfo is not None
    assert record["cost_status"] == "free" and record["cost_usd"] == 0.0
    record["tags"].append("changed")  # a copy: the tracker is not changed
    assert client.tracker.records[0]["tags"] == ["x"]


def test_window_can_be_resized_and_reset_keeps_budget(db: Path) -> None:
    client = nl.Client("offline:echo", budget_usd=1.0)
    for i in range(10):
        client.complete(f"p{i}")
    client.tracker.max_records = 4
    assert len(client.tracker.records) == 4 and client.tracker.calls == 10
    client.tracker.reset()
    assert client.tracker.calls == 0 and client.tracker.records == []
    assert client.tracker.tokens == 0 and client.budget_usd == 1.0


def test_budget_counts_every_call_beyond_the_window(db: Path) -> None:
    # A priced call; spend accumulates exactly whatever the window holds.
    tracker = nl.Tracker(budget_usd=0.05, max_records=1)
    record = ("t", "openai:gpt-4o-mini", "openai", 10, 5, 15, 0.01, "priced", False, 0.1,
              "stop", None, ())
    for _ in range(4):
        tracker._add((1.0, *record[1:]))
    assert tracker.calls == 4 and len(tracker.records) == 1
    assert tracker.cost_usd == pytest.approx(0.04)
    assert tracker.remaining_usd == pytest.approx(0.01)
