"""batch(budget_usd=, deadline=): the cost is projected first, the mode chosen and explained."""

from __future__ import annotations

from datetime import timedelta

import pytest

from notebook_llm import batch, errors
from notebook_llm._client import Client
from notebook_llm.batches._plan import parse_deadline
from notebook_llm.core.money import format_usd
from tests.support.provider_batch_server import ProviderBatchServer
from tests.support.replay import ReplayServer

ROWS = [f"Classify review {i}: the product was fine, the delivery slow." for i in range(2000)]


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "jobs.db")


def test_over_budget_is_refused_before_anything_is_sent(db: str) -> None:
    with ReplayServer() as server:
        client = Client(api_keys={"openai": "test-key"}, api_bases={"openai": server.url + "/v1"},
                        db_path=db)
        try:
            with pytest.raises(errors.BudgetExceededError) as info:
                batch(ROWS, "openai:gpt-4o", client=client, db_path=db, progress=False,
                      budget_usd=0.5, deadline="6h", max_tokens=50)
        finally:
            client.close()
        assert server.requests == []
    error = info.value
    assert error.budget_usd == 0.5 and error.spent_usd == 0.0
    assert error.estimate_usd is not None and error.estimate_usd > 0.5
    message = str(error)
    assert "2,000 requests" in message and format_usd(0.5) in message
    assert "batch API would cost about" in message  # half price, if the deadline allowed


def test_a_short_deadline_picks_direct_mode_and_says_why(db: str) -> None:
    result = batch(ROWS[:3], "openai:gpt-4o-mini", db_path=db, progress=False, dry_run=True,
                   deadline="6h", budget_usd=5)
    assert result.mode == "direct"
    assert "shorter than the batch API's 24-hour window" in result.mode_reason
    assert result.budget_usd == 5


def test_a_long_deadline_picks_the_provider_batch_api_at_half_price(db: str) -> None:
    direct = batch(ROWS[:100], "openai:gpt-4o-mini", db_path=db, progress=False, dry_run=True,
                   mode="direct", max_tokens=20)
    chosen = batch(ROWS[:100], "openai:gpt-4o-mini", db_path=db, progress=False, dry_run=True,
                   deadline=timedelta(days=2), max_tokens=20)
    assert chosen.mode == "provider" and "half" in chosen.mode_reason
    assert direct.mode == "direct" and "as mode= asked" in direct.mode_reason
    assert chosen.estimate is not None and direct.estimate is not None
    assert chosen.estimate.cost_usd == pytest.approx(direct.estimate.cost_usd / 2, rel=0.01)


def test_a_provider_without_a_batch_api_stays_direct(db: str) -> None:
    result = batch(["a"], "offline:echo", db_path=db, progress=False, dry_run=True,
                   deadline="3d")
    assert result.mode == "direct" and "has no batch API" in result.mode_reason


def test_a_budgeted_run_prints_its_mode_and_projection(db: str, capsys) -> None:
    result = batch(["one", "two"], "offline:echo", db_path=db, progress=False,
                   budget_usd=5, deadline="6h")
    assert result.done == 2 and result.mode == "direct"
    printed = capsys.readouterr().out
    assert "Direct mode" in printed
    assert f"Projected cost {format_usd(0.0)} for 2 requests (budget {format_usd(5)})" in printed
    assert result.mode_reason in printed


def test_provider_mode_chosen_by_deadline_runs_through_the_batch_api(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "test-batch-openai-000")
    with ProviderBatchServer(polls_to_finish=1) as server:
        client = Client(api_bases={"openai": server.url + "/v1"}, db_path=db)
        try:
            result = batch(["alpha", "gamma"], "openai:gpt-4o-mini", client=client, db_path=db,
                           poll_interval=0.01, progress=False, max_tokens=20,
                           budget_usd=1, deadline="36h")
        finally:
            client.close()
        submitted = [c for c in server.calls if c[0] == "POST" and c[1].endswith("batches")]
    assert result.mode == "provider" and result.done == 2 and len(submitted) == 1


def test_budget_and_deadline_never_reach_the_provider(db: str) -> None:
    reply = {"id": "x", "object": "chat.completion", "model": "m",
             "choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": "ok"}}],
             "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
    from tests.support.replay import Reply

    with ReplayServer(handler=lambda request: Reply.from_json(reply)) as server:
        client = Client(api_keys={"openai": "test-key"}, api_bases={"openai": server.url + "/v1"},
                        db_path=db)
        try:
            result = batch(["a", "b"], "openai:gpt-4o-mini", client=client, db_path=db,
                           progress=False, budget_usd=1, deadline="1h", max_tokens=5)
        finally:
            client.close()
        bodies = [r.json() for r in server.requests]
    assert result.done == 2 and len(bodies) == 2
    assert all("budget_usd" not in body and "deadline" not in body for body in bodies)


def test_deadlines_parse_or_fail_clearly() -> None:
    assert parse_deadline("6h") == 6 * 3600
    assert parse_deadline("30m") == 1800
    assert parse_deadline("2d") == 2 * 86400
    assert parse_deadline(90) == 90
    assert parse_deadline(timedelta(hours=1)) == 3600
    with pytest.raises(errors.InvalidRequestError, match="'6h'"):
        parse_deadline("tomorrow")
    with pytest.raises(errors.InvalidRequestError, match="positive"):
        parse_deadline(0)


def test_the_budget_holds_while_the_rows_run(db: str) -> None:
    # The projection (5 output tokens a row) fits the budget; the server then reports
    # far more tokens per answer, so the real spend reaches the budget mid-job.
    reply = {"id": "x", "object": "chat.completion", "model": "gpt-4o",
             "choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": "ok"}}],
             "usage": {"prompt_tokens": 20, "completion_tokens": 20_000,
                       "total_tokens": 20_020}}
    from tests.support.replay import Reply

    with ReplayServer(handler=lambda request: Reply.from_json(reply)) as server:
        client = Client(api_keys={"openai": "test-key"}, api_bases={"openai": server.url + "/v1"},
                        db_path=db)
        try:
            result = batch([f"row {i}" for i in range(40)], "openai:gpt-4o", client=client,
                           db_path=db, progress=False, budget_usd=1.0, max_tokens=5,
                           concurrency=1)
        finally:
            client.close()
        sent = len(server.requests)
    assert result.state == "stopped" and 0 < result.done < 40
    assert sent == result.done  # the refused rows were never sent
    assert result.cost_usd <= 1.0 + 0.2 + 1e-9  # at most one answer past the line
