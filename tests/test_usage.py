"""Call log, pricing, cache, budgets and trackers: the standard middlewares of ``Client``.

Real parts only: the offline provider, and the real OpenAI-protocol provider
talking over loopback to the replay server (recorded OpenAI payloads).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

import notebook_llm as nl
from notebook_llm import errors
from notebook_llm._usage import parse_time, plot_usage_over_time
from notebook_llm._usage_table import usage_table
from notebook_llm.core import loop as core_loop
from notebook_llm.core.types import Usage
from notebook_llm.pricing import price
from notebook_llm.store.log import call_log
from tests.support.replay import ReplayServer, Reply, load_fixture

CACHED_FIXTURE = "openai__chat_completions__ebc50890c985"  # 1220 prompt tokens, 1152 cached

SECRET = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7cDE0f"


@pytest.fixture(scope="module")
def server():
    with ReplayServer() as srv:
        yield srv


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "calls.db"
    monkeypatch.setenv("NOTEBOOK_LLM_DB", str(path))
    previous_log, previous_cache = nl.set_logging(True), nl.set_cache(False)
    yield path
    call_log(path).close()
    nl.set_logging(previous_log)
    nl.set_cache(previous_cache)


_open_clients: list[nl.Client] = []


@pytest.fixture
def replay(server: ReplayServer):
    server.clear()
    yield server
    # Providers hold aiohttp sessions on the library loop: close them there.
    while _open_clients:
        core_loop.run(_open_clients.pop().aclose())
    server.clear()


def openai_client(server: ReplayServer, key: str = "k", **kwargs) -> nl.Client:
    client = nl.Client(api_keys={"openai": key}, api_bases={"openai": server.url + "/v1"},
                       max_retries=0, **kwargs)
    _open_clients.append(client)
    return client


def fixture_messages(name: str = CACHED_FIXTURE) -> list[dict]:
    return load_fixture(name).request_json["messages"]


def rows(path: Path) -> list[dict]:
    return call_log(path).query()


# -- pricing -------------------------------------------------------------------------------


def test_pricing_replayed_call_with_cached_tokens_matches_price(db, replay) -> None:
    replay.enqueue(load_fixture(CACHED_FIXTURE))
    client = openai_client(replay)
    completion = client.complete(fixture_messages(), "openai:gpt-4o-mini", max_tokens=100)

    assert completion.usage.cached_input_tokens == 1152
    expected, status = price("openai", "gpt-4o-mini", completion.usage)
    assert status == "priced" and expected > 0
    assert completion.cost_status == "priced"
    assert completion.cost_usd == pytest.approx(expected)
    # Cached prompt tokens are billed below the full input rate.
    uncached, _ = price("openai", "gpt-4o-mini", Usage(input_tokens=1220, output_tokens=100))
    assert completion.cost_usd < uncached

    (row,) = rows(db)
    assert row["cost_usd"] == pytest.approx(expected)
    assert row["cost_status"] == "priced"
    tokens = (row["input_tokens"], row["output_tokens"], row["cached_input_tokens"])
    assert tokens == (1220, 100, 1152)
    assert row["response_model"] == "gpt-4o-2024-08-06"
    assert row["finish_reason"] == "length"
    assert client.spent_usd == pytest.approx(expected)


def test_pricing_replayed_anthropic_call_with_cache_reads_and_writes(db, replay) -> None:
    replay.enqueue(load_fixture("anthropic__messages__5feeeae54694"))
    client = nl.Client(api_keys={"anthropic": "k"}, api_bases={"anthropic": replay.url},
                       max_retries=0)
    _open_clients.append(client)
    completion = client.complete("hi", "anthropic:claude-sonnet-5", max_tokens=1000)
    assert completion.usage.cache_write_tokens == 7049
    assert completion.usage.cached_input_tokens == 13637
    expected, status = price("anthropic", "claude-sonnet-5", completion.usage)
    assert status == completion.cost_status == "priced"
    assert completion.cost_usd == pytest.approx(expected)
    assert rows(db)[0]["cost_usd"] == pytest.approx(expected)


def test_pricing_offline_is_free(db) -> None:
    completion = nl.Client("offline:echo").complete("hello")
    assert (completion.cost_usd, completion.cost_status) == (0.0, "free")
    assert rows(db)[0]["cost_status"] == "free"


def test_pricing_unknown_model_is_unpriced_not_zero(db, replay) -> None:
    replay.enqueue(load_fixture(CACHED_FIXTURE))
    completion = openai_client(replay).complete("hi", "openai:my-private-finetune-xyz")
    assert completion.cost_usd is None
    assert completion.cost_status == "unpriced"

    table = nl.costs(by="model")
    (row,) = table.to_dict("records")
    assert row["model"] == "openai:my-private-finetune-xyz"
    assert math.isnan(row["cost_usd"])
    assert row["unpriced_calls"] == 1


# -- the log ---------------------------------------------------------------------------------


def test_log_records_every_column(db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/analysis.ipynb")
    client = nl.Client("offline:echo")
    client.complete(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
        temperature=0.2, max_tokens=50, reasoning_effort="low", tags=["exp1", "ab"],
        metadata={"conversation_id": "conv-1", "batch_id": "b-9"}, chunk_delay=0,
    )
    (row,) = rows(db)
    assert row["provider"] == "offline" and row["model"] == "offline:echo"
    assert json.loads(row["messages_json"]) == [{"role": "user", "content": "hi there"}]
    assert row["system"] == "be brief"
    params = json.loads(row["params_json"])
    assert params == {"temperature": 0.2, "max_tokens": 50, "reasoning_effort": "low",
                      "extra": {"chunk_delay": 0}}
    assert row["response_text"] == "hi there"
    assert row["finish_reason"] == "stop"
    assert row["latency_s"] >= 0
    assert json.loads(row["tags_json"]) == ["exp1", "ab"]
    assert (row["conversation_id"], row["batch_id"]) == ("conv-1", "b-9")
    assert row["notebook_path"] == "/home/me/analysis.ipynb"
    assert row["cached"] == 0 and row["error_class"] is None


def test_log_records_errors_and_cancelled_streams(db) -> None:
    client = nl.Client("offline:echo", max_retries=0)
    with pytest.raises(errors.ProviderError):
        client.complete("boom", fail="the demo failure")
    stream = client.stream(" ".join(["w"] * 200), chunk_delay=0.005)
    for index, _ in enumerate(stream):
        if index == 3:
            break
    failed, cancelled = rows(db)
    assert failed["error_class"] == "ProviderError"
    assert "the demo failure" in failed["error_message"]
    assert failed["finish_reason"] == "error"
    assert cancelled["finish_reason"] == "cancelled"
    assert cancelled["response_text"].startswith("w w")
    assert cancelled["ttft_s"] is not None


def test_log_off_per_call_per_client_and_globally(db) -> None:
    client = nl.Client("offline:echo")
    client.complete("one", log=False)
    nl.Client("offline:echo", log=False).complete("two")
    nl.set_logging(False)
    client.complete("three")
    nl.set_logging(True)
    client.complete("four")
    assert [r["response_text"] for r in rows(db)] == ["four"]


def test_log_uses_client_db_path(db, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    nl.Client("offline:echo", db_path=other).complete("elsewhere")
    try:
        assert nl.usage(db_path=other)["response"].tolist() == ["elsewhere"]
        assert nl.usage().empty
    finally:
        call_log(other).close()


def test_log_never_stores_a_key(db, replay) -> None:
    for _ in range(2):
        replay.enqueue(load_fixture(CACHED_FIXTURE))
    client = openai_client(replay, key=SECRET)
    client.complete(f"my key is {SECRET}, keep it", "openai:gpt-4o-mini", tags=[SECRET])
    client.complete("again", "openai:gpt-4o-mini", api_key=SECRET, system=f"key {SECRET}")
    offline = nl.Client("offline:echo", api_keys={"openai": SECRET}, max_retries=0)
    offline.complete(f"echo {SECRET}", cache=True)  # echoed back, and cached
    offline.complete(f"echo {SECRET}", cache=True)
    with pytest.raises(errors.ProviderError):
        offline.complete("x", fail=f"server said {SECRET}")
    assert replay.requests[0].headers["authorization"] == f"Bearer {SECRET}"  # it was used
    assert call_log(db).flush()
    assert len(rows(db)) == 5
    for path in (db, Path(f"{db}-wal")):
        if path.exists():
            data = path.read_bytes()
            assert SECRET.encode() not in data
            assert SECRET[8:].encode() not in data


# -- budgets ----------------------------------------------------------------------------------


def test_budget_refuses_before_sending(db, replay) -> None:
    client = openai_client(replay, budget_usd=0.0001)
    with pytest.raises(errors.BudgetExceededError) as info:
        client.complete("hello", "openai:gpt-4o-mini")  # 1024 output tokens assumed
    assert replay.requests == []
    assert info.value.spent_usd == 0.0 and info.value.budget_usd == 0.0001
    assert "$0 of" in str(info.value) and "$0.000100" in str(info.value)
    # Nothing was sent, but the refusal is in the call log, as streams' are.
    [row] = rows(db)
    assert row["error_class"] == "BudgetExceededError" and row["model"] == "openai:gpt-4o-mini"
    assert row["input_tokens"] == 0 and row["output_tokens"] == 0 and row["cost_usd"] is None
    assert "Not sent" in row["error_message"]


def test_budget_message_gives_spend_so_far(db, replay) -> None:
    replay.enqueue(load_fixture(CACHED_FIXTURE))
    client = openai_client(replay, budget_usd=0.001)
    first = client.complete(fixture_messages(), "openai:gpt-4o-mini", max_tokens=100)
    with pytest.raises(errors.BudgetExceededError) as info:
        client.complete("write a novel", "openai:gpt-4o-mini", max_tokens=4000)
    assert len(replay.requests) == 1
    assert info.value.spent_usd == pytest.approx(first.cost_usd)
    assert f"${first.cost_usd:.6f}" in str(info.value)
    assert "$0.001000" in str(info.value)


def test_budget_per_tracker_and_free_and_unpriced(db, replay) -> None:
    client = openai_client(replay)
    with nl.track(budget_usd=0.00001, name="tiny") as t:
        with pytest.raises(errors.BudgetExceededError, match="tiny budget"):
            client.complete("hello", "openai:gpt-4o-mini")
        assert nl.Client("offline:echo").complete("free always passes").cost_status == "free"
        replay.enqueue(load_fixture(CACHED_FIXTURE))
        with pytest.warns(RuntimeWarning, match="No price is known"):
            unknown = client.complete("hi", "openai:budget-test-unknown-model")
        assert unknown.cost_status == "unpriced"
    assert len(replay.requests) == 1
    # The refused call ended too: the tracker counts it, as an error.
    assert t.calls == 3 and t.errors == 1 and t.unpriced == 1 and t.cost_usd == 0.0


async def test_budget_holds_estimates_for_concurrent_calls(db, replay) -> None:
    for _ in range(3):
        replay.enqueue(dataclasses.replace(Reply.from_fixture(load_fixture(CACHED_FIXTURE)),
                                           delay_s=0.2))
    client = openai_client(replay, budget_usd=0.0008)  # room for one 1000-token estimate
    results = await asyncio.gather(
        *[client.acomplete("x", "openai:gpt-4o-mini", max_tokens=1000) for _ in range(3)],
        return_exceptions=True,
    )
    await client.aclose()
    assert sorted(type(r).__name__ for r in results) == [
        "BudgetExceededError", "BudgetExceededError", "Completion"]
    assert len(replay.requests) == 1
    assert "held for calls in flight" in str(next(r for r in results if isinstance(r, Exception)))


# -- trackers ------------------------------------------------------------------------------------


def test_track_sync(db) -> None:
    client = nl.Client("offline:echo")
    client.complete("outside")
    with nl.track() as t:
        client.complete("one two")
        list(client.stream("three four five"))
        with nl.track() as inner:
            client.complete("six")
    assert t.calls == 3 and inner.calls == 1
    assert t.tokens == sum(r["total_tokens"] for r in t.records) > 0
    assert t.cost_usd == 0.0 and t.unpriced == 0
    assert t.df["model"].tolist() == ["offline:echo"] * 3
    assert "3 calls" in t._repr_html_() and "3 calls" in repr(t)
    assert client.tracker.calls == 4


async def test_track_async_and_concurrent_tasks_do_not_leak(db) -> None:
    client = nl.Client("offline:echo")
    started = asyncio.Event()
    release = asyncio.Event()

    async def untracked() -> None:
        started.set()
        await release.wait()
        await client.acomplete("not mine")
        await client.astream("nor this").collect()

    other = asyncio.create_task(untracked())
    async with nl.track() as t:
        await started.wait()
        release.set()
        await client.acomplete("mine")
        await client.astream("also mine").collect()
        await other
    assert t.calls == 2
    assert client.tracker.calls == 4


async def test_track_sync_api_inside_running_loop(db) -> None:
    client = nl.Client("offline:echo")
    with nl.track() as t:
        client.complete("a jupyter cell")
        list(client.stream("streamed in a cell"))
        # Another feature's sync wrapper: the coroutine reaches the library
        # loop without the caller's context, and the fallback still counts it.
        core_loop.run(client.acomplete("via the background loop"))
    assert t.calls == 3


def test_track_other_threads_context_is_not_mixed_in(db) -> None:
    client = nl.Client("offline:echo")
    done = threading.Event()

    def worker() -> None:
        client.complete("from a thread without a tracker")
        done.set()

    with nl.track() as t:
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert done.is_set() and t.calls == 0


# -- cache --------------------------------------------------------------------------------------


def test_cache_hit_sends_nothing_and_is_logged(db, replay) -> None:
    replay.enqueue(load_fixture(CACHED_FIXTURE))
    client = openai_client(replay, cache=True)
    args = (fixture_messages(), "openai:gpt-4o-mini")
    first = client.complete(*args, max_tokens=100, temperature=0.1)
    second = client.complete(*args, max_tokens=100, temperature=0.1)
    assert len(replay.requests) == 1
    assert second.text == first.text and second.usage == first.usage
    assert second.finish_reason == first.finish_reason == "length"
    assert second.cached and not first.cached
    assert (second.cost_usd, second.cost_status) == (0.0, "cached")
    assert second.latency_s is not None and second.latency_s < 0.5
    logged = rows(db)
    assert [r["cached"] for r in logged] == [0, 1]
    assert logged[1]["cost_status"] == "cached"
    assert nl.cache.stats()["entries"] == 1 and nl.cache.stats()["hits"] == 1

    # A different parameter is a different key.
    replay.enqueue(load_fixture(CACHED_FIXTURE))
    client.complete(*args, max_tokens=100, temperature=0.2)
    assert len(replay.requests) == 2
    assert nl.cache.clear() == 2
    replay.enqueue(load_fixture(CACHED_FIXTURE))
    assert not client.complete(*args, max_tokens=100, temperature=0.1).cached
    assert len(replay.requests) == 3


def test_cache_opt_in_per_call_global_and_streams(db) -> None:
    client = nl.Client("offline:story")
    assert not client.complete("seed", cache=True).cached
    assert client.complete("seed", cache=True).cached
    assert not client.complete("seed").cached  # off by default
    nl.set_cache(True)
    assert client.complete("seed").cached
    assert not client.complete("seed", cache=False).cached
    stream = client.stream("seed")
    text = "".join(chunk.text for chunk in stream)
    assert stream.completion.cached and text == stream.completion.text
    with nl.track() as t:
        client.complete("seed")
    assert t.cached == 1 and t.cost_usd == 0


# -- reading the log -----------------------------------------------------------------------


def _three_calls() -> None:
    client = nl.Client("offline:echo", max_retries=0)
    client.complete("alpha", tags=["a"])
    client.complete("beta", "offline:story", tags=["a", "b"], max_tokens=5)
    with pytest.raises(errors.ProviderError):
        client.complete("gamma", fail="nope")


def test_usage_filters(db) -> None:
    _three_calls()
    df = nl.usage()
    assert len(df) == 3
    # What a person reads first leads; the 32-hex call id comes last.
    assert list(df.columns[:6]) == ["time", "model", "input_tokens", "output_tokens",
                                    "total_tokens", "cost_usd"]
    assert df.columns[-1] == "id"
    assert str(df["time"].dtype).startswith("datetime64")
    assert df["prompt"].tolist() == ["alpha", "beta", "gamma"]
    assert nl.usage(model="offline:story")["prompt"].tolist() == ["beta"]
    assert nl.usage(model="story")["prompt"].tolist() == ["beta"]
    assert len(nl.usage(provider="offline")) == 3
    assert nl.usage(tag="b")["prompt"].tolist() == ["beta"]
    assert nl.usage(tag="a")["prompt"].tolist() == ["alpha", "beta"]
    assert len(nl.usage(since="1h")) == 3
    assert len(nl.usage(since="today")) == 3
    assert nl.usage(since=datetime.now(timezone.utc) + timedelta(minutes=1)).empty
    assert len(nl.usage(since=(datetime.now() - timedelta(minutes=5)).isoformat())) == 3
    assert nl.usage(until="1h").empty
    assert nl.usage(limit=1)["prompt"].tolist() == ["gamma"]
    assert nl.usage()["error_class"].tolist()[2] == "ProviderError"
    with pytest.raises(ValueError, match="30m"):
        nl.usage(since="last tuesday")


@pytest.mark.parametrize("by", ["model", "provider", "day", "notebook", "tag"])
def test_costs_groupings(db, by: str) -> None:
    _three_calls()
    table = nl.costs(by=by)
    assert list(table.columns) == [by, "calls", "input_tokens", "output_tokens", "total_tokens",
                                   "cost_usd", "unpriced_calls", "cached_calls", "errors"]
    expected = {
        "model": {"offline:echo": 2, "offline:story": 1},
        "provider": {"offline": 3},
        "day": {datetime.now().astimezone().date(): 3},
        "notebook": {"(unknown)": 3},
        "tag": {"a": 2, "b": 1, "(untagged)": 1},
    }[by]
    assert dict(zip(table[by], table["calls"], strict=True)) == expected
    assert table["errors"].sum() == 1
    # A group holding only a failed call (no completion) has no priced call: NaN, not 0.
    assert (table["cost_usd"].fillna(0) == 0).all() and table["unpriced_calls"].sum() == 0
    with pytest.raises(ValueError, match="by must be one of"):
        nl.costs(by="colour")


def test_logs_and_usage_table_display(db) -> None:
    _three_calls()
    shown = nl.logs(2)
    assert len(shown) == 2 and shown.df["prompt"].tolist() == ["beta", "gamma"]
    markdown = shown._repr_markdown_()
    assert markdown.index("gamma") < markdown.index("beta")  # newest first
    assert "offline:story" in markdown and "free" in markdown and "ProviderError" in markdown
    assert "alpha" not in markdown
    nl.Client("offline:echo").complete("<script>alert(1)</script>")
    assert "<script>" not in nl.logs(1)._repr_markdown_()

    table = usage_table(by="model")
    html = table._repr_html_()
    assert "<table>" in html and "offline:echo" in html and "total" in html
    assert "offline:story" in repr(table)
    assert "<table>" in usage_table(by="tag")._repr_html_()


def test_usage_is_a_function_that_also_plots(db) -> None:
    _three_calls()
    assert len(nl.usage()) == 3
    assert len(nl.usage(model="story")) == 1
    # nl.usage.plot_costs, documented before nl.plot_costs, is the same function.
    assert nl.usage.plot_costs is nl.plot_costs


def test_plots_render_with_agg(db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    empty = nl.plot_costs()
    assert empty.get_title() == "Cost by model"
    _three_calls()
    free = nl.plot_costs(by="model")  # offline calls are free: no bars of $0
    assert [t.get_text() for t in free.texts] == [
        "No priced calls yet: every call so far was free"
    ]
    from notebook_llm import _plots

    costs = pd.DataFrame({"model": ["a", "b"], "cost_usd": [0.0, 0.0], "unpriced_calls": [0, 2]})
    ax = _plots.plot_costs(costs, "model")
    assert len(ax.patches) == 2 and ax.get_ylim()[0] == 0  # no negative dollar ticks
    over_time = plot_usage_over_time(freq="h")
    assert over_time.right_ax.get_ylabel() == "tokens"
    for axes in (ax, over_time):
        axes.figure.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0
    plt.close("all")


def test_time_shorthands() -> None:
    now = datetime.now(timezone.utc)
    assert abs((now - parse_time("1h")).total_seconds() - 3600) < 5
    assert abs((now - parse_time("7d")).total_seconds() - 7 * 86400) < 5
    assert parse_time("2024-05-01T00:00:00Z") == datetime(2024, 5, 1, tzinfo=timezone.utc)
    midnight = parse_time("today").astimezone()
    assert (midnight.hour, midnight.minute) == (0, 0)
    assert parse_time(None) is None


def test_db_is_sqlite_with_cache_rows(db) -> None:
    nl.Client("offline:echo", cache=True).complete("stored")
    conn = sqlite3.connect(db)
    try:
        (stored,) = conn.execute("SELECT completion_json FROM cache").fetchall()
    finally:
        conn.close()
    data = json.loads(stored[0])
    assert data["text"] == "stored" and "raw" not in data


def test_budget_refuses_before_any_key_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The budget is checked before the provider (and its key) is looked up.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    client = nl.Client(db_path=tmp_path / "log.db", budget_usd=0.0)
    with pytest.raises(errors.BudgetExceededError):
        client.complete("hello " * 50, "openai:gpt-4o-mini", max_tokens=100)


def test_calls_failing_before_sending_are_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A missing key fails when the provider is looked up, before any request:
    # the call still ends in the log as an error, as a stream's would.
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    client = nl.Client(db_path=tmp_path / "log.db")
    with pytest.raises(errors.MissingKeyError):
        client.complete("hi", "groq:llama-3.1-8b-instant")
    [row] = rows(tmp_path / "log.db")
    assert row["model"] == "groq:llama-3.1-8b-instant"
    assert row["error_class"] == "MissingKeyError" and "GROQ_API_KEY" in row["error_message"]
    assert row["output_tokens"] == 0 and row["response_text"] is None


def test_usage_returns_the_newest_calls_up_to_its_limit_and_says_so(db) -> None:
    from notebook_llm._usage import DEFAULT_LIMIT, DefaultLimit

    _three_calls()
    assert DEFAULT_LIMIT == 10_000 and isinstance(DEFAULT_LIMIT, DefaultLimit)
    # The default limit, made small: cutting calls off says so.
    with pytest.warns(UserWarning, match="newest 2 of 3 logged calls"):
        newest = nl.usage(limit=DefaultLimit(2))
    assert len(newest) == 2
    assert len(nl.usage(limit=2)) == 2  # a limit the caller chose: no warning
    assert newest["time"].is_monotonic_increasing  # still oldest first
    assert len(nl.usage(limit=None)) == 3
    assert len(nl.usage()) == 3  # under the default limit: every call, no warning
    assert int(nl.costs()["calls"].sum()) == 3  # costs() totals every call
