"""``usage()`` and ``costs()`` read in SQL give what reading every row into pandas gave.

The reference below is the previous implementation (every row as a dict, one
DataFrame, then pandas' groupby), computed in the test from the raw rows of a
randomised log: odd messages, tags, missing values, ties and out-of-order
times included.
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import notebook_llm as nl
from notebook_llm._usage import COST_GROUPS, USAGE_COLUMNS, parse_time
from notebook_llm.store.log import CallLog, call_log

# -- the reference: the previous pandas implementation, kept here verbatim ------------------

_USAGE_COLUMNS = (
    "id", "time", "provider", "model", "response_model", "input_tokens", "output_tokens",
    "total_tokens", "cached_input_tokens", "reasoning_tokens", "cost_usd", "cost_status",
    "cached", "latency_s", "ttft_s", "finish_reason", "error_class", "error_message", "tags",
    "conversation_id", "batch_id", "notebook_path", "prompt", "response",
)  # fmt: skip
_TOKEN_COLUMNS = ("input_tokens", "output_tokens", "total_tokens", "cached_input_tokens",
                  "reasoning_tokens")


def _local_tz():
    return datetime.now().astimezone().tzinfo or timezone.utc


def _utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _last_user_text(messages_json: str | None) -> str:
    try:
        messages = json.loads(messages_json or "[]")
    except ValueError:
        return ""
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def ref_query(log: CallLog, since=None, until=None, model=None, provider=None, tag=None,
              limit=None) -> list[dict[str, Any]]:
    where: list[str] = []
    params: list[Any] = []
    start, end = parse_time(since), parse_time(until)
    if start is not None:
        where.append("created_at >= ?")
        params.append(_utc_iso(start))
    if end is not None:
        where.append("created_at < ?")
        params.append(_utc_iso(end))
    if model is not None:
        where.append("(model = ? OR substr(model, instr(model, ':') + 1) = ?)")
        params += [model, model]
    if provider is not None:
        where.append("provider = ?")
        params.append(provider.rstrip(":"))
    if tag is not None:
        # The one change: a malformed tags_json used to make the query fail.
        where.append("EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(calls.tags_json)"
                     " THEN calls.tags_json END) WHERE value = ?)")
        params.append(tag)
    return log.query(" AND ".join(where), tuple(params), limit=limit)


def ref_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    records = []
    for row in rows:
        try:
            tags = json.loads(row.get("tags_json") or "[]")
        except ValueError:
            tags = []
        records.append({
            **{column: row.get(column) for column in _USAGE_COLUMNS},
            "time": row["created_at"],
            "total_tokens": (row.get("input_tokens") or 0) + (row.get("output_tokens") or 0),
            "tags": tags,
            "prompt": _last_user_text(row.get("messages_json")),
            "response": row.get("response_text"),
        })
    df = pd.DataFrame.from_records(records, columns=list(_USAGE_COLUMNS))
    df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601").dt.tz_convert(_local_tz())
    for column in _TOKEN_COLUMNS:
        df[column] = pd.to_numeric(df[column]).fillna(0).astype("int64")
    for column in ("cost_usd", "latency_s", "ttft_s"):
        df[column] = pd.to_numeric(df[column]).astype("float64")
    df["cached"] = df["cached"].fillna(0).astype(bool)
    return df[list(USAGE_COLUMNS)]  # the same data; usage() shows time and model first


def ref_costs(log: CallLog, by: str, since=None, until=None) -> pd.DataFrame:
    df = ref_frame(ref_query(log, since=since, until=until))
    df = df.assign(
        unpriced=df["cost_status"].eq("unpriced"),
        is_error=df["error_class"].notna(),
    )
    if by == "day":
        df[by] = df["time"].dt.date
    elif by == "notebook":
        df[by] = df["notebook_path"].fillna("(unknown)")
    elif by == "tag":
        df[by] = df["tags"].map(lambda tags: list(tags) or ["(untagged)"])
        df = df.explode(by)
    out = (
        df.groupby(by, sort=by == "day")
        .agg(
            calls=("id", "size"),
            input_tokens=("input_tokens", "sum"),
            output_tokens=("output_tokens", "sum"),
            total_tokens=("total_tokens", "sum"),
            cost_usd=("cost_usd", lambda s: s.sum(min_count=1)),
            unpriced_calls=("unpriced", "sum"),
            cached_calls=("cached", "sum"),
            errors=("is_error", "sum"),
        )
        .reset_index()
    )
    for column in ("calls", "input_tokens", "output_tokens", "total_tokens", "unpriced_calls",
                   "cached_calls", "errors"):
        out[column] = out[column].astype("int64")
    out["cost_usd"] = pd.to_numeric(out["cost_usd"]).astype("float64")
    if by != "day":
        out = out.sort_values(["cost_usd", "calls"], ascending=False, na_position="last",
                              kind="stable").reset_index(drop=True)
    return out


# -- a randomised log ---------------------------------------------------------------------

MESSAGES = [
    [{"role": "user", "content": "hi there"}],
    [{"role": "user", "content": "question"}, {"role": "assistant", "content": "answer"}],
    [{"role": "system", "content": "only a system prompt"}],
    [{"role": "user", "content": [{"type": "text", "text": "look"},
                                  {"type": "image_url", "image_url": {"url": "x"}},
                                  {"type": "text", "text": "here"}]}],
    [{"role": "user", "content": None}],
    [{"role": "user"}],
    [{"role": "user", "content": 5}],
    [{"role": "user", "content": True}],
    [{"role": "user", "content": {"nested": 1}}],
    [{"role": "user", "content": ""}],
    [{"role": 1, "content": "not a role"}, {"role": "user", "content": "second"}],
    ["user", {"role": "user", "content": "after a string"}, 3],
    [{"role": "user", "content": "héllo \"quoted\"\nnew line 😀 \\ back"}],
    [{"role": "user", "content": "first"}, {"role": "user", "content": "last wins"}],
    [],
]
RAW_MESSAGES = ["not json", '{"role": "user", "content": "an object"}', "null", "[1, 2]", None]
TAGS = [[], [], ["a"], ["b"], ["a", "b"], ["b", "a"], ["a", "a"], [""], [None], [1],
        ["(untagged)"]]
RAW_TAGS = ["not json", None, "[]"]
MODELS = [("openai", "openai:gpt-4o-mini"), ("openai", "openai:gpt-4o"),
          ("anthropic", "anthropic:claude"), ("offline", "offline:echo"),
          ("offline", "offline:story"), ("ollama", "ollama:llama3.2"), (None, None),
          ("openai-compatible", "openai-compatible:gpt-4o-mini")]


def random_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    times: list[str] = []
    rows = []
    for i in range(count):
        if times and rng.random() < 0.08:
            created = rng.choice(times)  # the same microsecond as another call
        elif rng.random() < 0.03:
            created = (now - timedelta(days=rng.uniform(0, 20))).strftime("%Y-%m-%dT%H:%M:%S")
        else:
            # Mostly in time order, some not; days apart so by="day" has groups.
            moment = now - timedelta(days=20) + timedelta(hours=i * 0.9 + rng.uniform(-30, 30))
            created = _utc_iso(moment)
        times.append(created)
        provider, model = rng.choice(MODELS)
        if rng.random() < 0.15:
            messages: Any = rng.choice(RAW_MESSAGES)
        else:
            messages = json.dumps(rng.choice(MESSAGES), ensure_ascii=False)
        tags: Any = (rng.choice(RAW_TAGS) if rng.random() < 0.1
                     else json.dumps(rng.choice(TAGS)))
        status = rng.choice(["priced", "priced", "free", "unpriced", "cached", None])
        cost = {"priced": rng.uniform(0, 0.01), "free": 0.0, "cached": 0.0}.get(status or "")
        row = {
            "created_at": created, "provider": provider, "model": model,
            "messages_json": messages, "tags_json": tags,
            "input_tokens": rng.choice([None, 0, rng.randint(1, 5000)]),
            "output_tokens": rng.choice([None, 0, rng.randint(1, 2000)]),
            "cached_input_tokens": rng.choice([None, 0, 7]),
            "reasoning_tokens": rng.choice([None, 0, 3]),
            "cost_usd": cost, "cost_status": status,
            "cached": rng.choice([None, 0, 1]),
            "latency_s": rng.choice([None, rng.uniform(0, 5)]),
            "ttft_s": rng.choice([None, rng.uniform(0, 1)]),
            "finish_reason": rng.choice(["stop", "length", "error", "cancelled"]),
            "error_class": rng.choice([None, None, None, "ProviderError", ""]),
            "error_message": rng.choice([None, "boom"]),
            "notebook_path": rng.choice([None, "/nb/a.ipynb", "/nb/b.ipynb", ""]),
            "conversation_id": rng.choice([None, "c1"]),
            "batch_id": rng.choice([None, None, "b1"]),
            "response_text": rng.choice([None, "", "an answer", "ünïcode ✓"]),
        }
        rows.append(row)
    return rows


@pytest.fixture(params=["UTC", "America/New_York", "Asia/Kolkata"])
def local_tz(request, monkeypatch: pytest.MonkeyPatch):
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available here")
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory):
    path = Path(tmp_path_factory.mktemp("usage-sql")) / "calls.db"
    log = call_log(path)
    for row in random_rows(600, seed=7):
        log.record(row)
    assert log.flush(timeout=30) and not log.dropped
    yield log
    log.close()


def test_usage_equals_reference(log: CallLog, local_tz: str) -> None:
    path = log.store.path
    pd.testing.assert_frame_equal(nl.usage(db_path=path), ref_frame(ref_query(log)))


@pytest.mark.parametrize("kwargs", [
    {"since": "3d"}, {"until": "5d"}, {"since": "10d", "until": "2d"},
    {"model": "gpt-4o-mini"}, {"model": "openai:gpt-4o"}, {"provider": "offline"},
    {"provider": "offline:"}, {"tag": "a"}, {"tag": "(untagged)"}, {"limit": 7},
    {"limit": 0}, {"model": "nothing-like-it"}, {"since": "today"},
])
def test_usage_filters_equal_reference(log: CallLog, kwargs: dict[str, Any]) -> None:
    path = log.store.path
    pd.testing.assert_frame_equal(nl.usage(db_path=path, **kwargs),
                                  ref_frame(ref_query(log, **kwargs)))


@pytest.mark.parametrize("by", COST_GROUPS)
def test_costs_equal_reference(log: CallLog, by: str, local_tz: str) -> None:
    path = log.store.path
    pd.testing.assert_frame_equal(nl.costs(by=by, db_path=path), ref_costs(log, by),
                                  check_exact=False, rtol=1e-12, atol=0)


@pytest.mark.parametrize("by", COST_GROUPS)
@pytest.mark.parametrize("window", [("6d", None), (None, "12d"), ("30d", "29d")])
def test_costs_windows_equal_reference(log: CallLog, by: str, window: tuple) -> None:
    since, until = window
    pd.testing.assert_frame_equal(
        nl.costs(by=by, since=since, until=until, db_path=log.store.path),
        ref_costs(log, by, since=since, until=until),
        check_exact=False, rtol=1e-12, atol=0,
    )


def test_ties_keep_the_order_of_first_appearance(tmp_path: Path) -> None:
    # Equal costs and counts: the group seen first comes first, as pandas kept it.
    log = call_log(tmp_path / "ties.db")
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    for i, (model, tags) in enumerate([("m:z", ["y", "x"]), ("m:a", ["x"]), ("m:k", [])]):
        log.record({"created_at": _utc_iso(start + timedelta(seconds=i)), "provider": "m",
                    "model": model, "cost_usd": 0.0, "cost_status": "free",
                    "tags_json": tags})
    log.flush()
    assert nl.costs(by="model", db_path=log.store.path)["model"].tolist() == \
        ["m:z", "m:a", "m:k"]
    assert nl.costs(by="tag", db_path=log.store.path)["tag"].tolist() == \
        ["x", "y", "(untagged)"]  # x: 2 calls; y before (untagged): first seen
    for by in COST_GROUPS:
        pd.testing.assert_frame_equal(nl.costs(by=by, db_path=log.store.path),
                                      ref_costs(log, by))
    log.close()


def test_empty_log(tmp_path: Path) -> None:
    log = call_log(tmp_path / "empty.db")
    pd.testing.assert_frame_equal(nl.usage(db_path=log.store.path), ref_frame([]))
    for by in COST_GROUPS:
        pd.testing.assert_frame_equal(nl.costs(by=by, db_path=log.store.path),
                                      ref_costs(log, by))
    log.close()


def test_costs_read_only_the_index(log: CallLog) -> None:
    # The totals come from idx_calls_usage (m005) alone, never from the table rows.
    from notebook_llm._usage import _group_sql

    for by in COST_GROUPS:
        plan = " ".join(str(row[-1]) for row in log.store.conn.execute(
            "EXPLAIN QUERY PLAN " + _group_sql(by, "created_at >= ?", 0), ("2020",)))
        assert "COVERING INDEX idx_calls_usage" in plan, plan
        assert "SCAN calls" not in plan


def test_tags_are_separate_lists(log: CallLog) -> None:
    tags = nl.usage(db_path=log.store.path)["tags"].tolist()
    lists = [t for t in tags if isinstance(t, list) and t]
    assert len({id(t) for t in lists}) == len(lists)  # no list shared between rows



def test_prompt_sql_for_older_sqlite_gives_the_same(log: CallLog) -> None:
    # Before SQLite 3.31 ('$[#-1]' paths), only the scan of every message is used.
    from notebook_llm import _usage

    older = (f"CASE WHEN json_valid(messages_json) AND json_type(messages_json) = 'array'"
             f" THEN {_usage._LAST_USER_SQL} END")
    rows = log.store.tuples(f"SELECT {older} FROM calls ORDER BY rowid")
    assert rows == log.store.tuples(f"SELECT {_usage._PROMPT_SQL} FROM calls ORDER BY rowid")
    assert len({row[0] for row in rows}) > 5
