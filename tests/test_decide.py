"""Frontier and recommendation: constructed scores with a known answer, then real runs."""

from __future__ import annotations

import math
from collections.abc import Iterator

import matplotlib
import pytest

from notebook_llm import Recommendation, compare, errors
from notebook_llm._client import Client
from notebook_llm._compare import Comparison
from notebook_llm._decide import bootstrap_interval, pareto_mask
from notebook_llm.core.retry import RetryPolicy
from notebook_llm.core.types import Completion, Usage
from tests.support.replay import ReplayServer, Reply

matplotlib.use("Agg")

# model -> (scores of its 10 rows, cost of one answer in $, latency in s)
MODELS = {
    "p:premium": ([1.0] * 9 + [0.7], 0.003, 3.0),  # 0.97
    "p:fast": ([1.0] * 9 + [0.5], 0.002, 1.0),  # 0.95
    "p:cheap": ([1.0] * 8 + [0.6, 0.6], 0.0005, 5.0),  # 0.92
    "p:tiny": ([1.0] * 5 + [0.2] * 5, 0.0001, 0.5),  # 0.60
    "p:dominated": ([1.0] * 8 + [0.5, 0.5], 0.004, 4.0),  # 0.90, costs more than premium
}


def constructed() -> Comparison:
    prompts = [f"row {i}" for i in range(10)]
    comparison = Comparison(prompts, list(MODELS), runs=1)
    comparison.scored = True
    for cell in comparison.cells:
        scores, cost, latency = MODELS[cell.model]
        cell.status = "done"
        cell.completion = Completion(
            "answer", model=cell.model, usage=Usage(input_tokens=10, output_tokens=5),
            cost_usd=cost, cost_status="priced", latency_s=latency,
        )
        cell.score = scores[cell.prompt_index]
    return comparison


def test_recommend_picks_the_cheapest_model_that_passes() -> None:
    rec = constructed().recommend(min_quality=0.9, rows=100_000)
    assert isinstance(rec, Recommendation)
    assert rec.model == "p:cheap"
    assert rec.score == pytest.approx(0.92)
    assert rec.ci_low <= rec.score <= rec.ci_high
    assert rec.cost_per_1k_rows_usd == pytest.approx(0.5)
    assert rec.projected_cost_usd == pytest.approx(50.0)
    assert rec.rows == 100_000
    assert "p:cheap" in str(rec) and "$50" in str(rec)


def test_recommend_a_higher_bar_or_a_latency_cap_changes_the_answer() -> None:
    comparison = constructed()
    assert comparison.recommend(min_quality=0.96).model == "p:premium"
    assert comparison.recommend(min_quality=0.9, max_latency_s=2).model == "p:fast"
    assert comparison.recommend(min_quality=0.5).model == "p:tiny"


def test_recommend_takes_the_data_itself_for_rows() -> None:
    rec = constructed().recommend(min_quality=0.9, rows=list(range(2000)))
    assert rec.rows == 2000 and rec.projected_cost_usd == pytest.approx(1.0)
    assert constructed().recommend(min_quality=0.9).projected_cost_usd is None


def test_recommend_raises_naming_the_closest_model() -> None:
    with pytest.raises(errors.NoModelQualifiesError, match=r"'p:premium' at 0\.97") as info:
        constructed().recommend(min_quality=0.99)
    assert info.value.closest == "p:premium"
    with pytest.raises(errors.NoModelQualifiesError, match="p50 latency") as info:
        constructed().recommend(min_quality=0.9, max_latency_s=0.8)
    assert info.value.closest == "p:tiny"  # the only one fast enough


def test_recommend_strict_uses_the_lower_end_of_the_interval() -> None:
    comparison = constructed()
    low = comparison.frontier(plot=False).loc["p:cheap", "quality_low"]
    assert low < 0.9
    rec = comparison.recommend(min_quality=0.9, strict=True)
    assert rec.model != "p:cheap"
    assert rec.ci_low >= 0.9


def test_recommend_rejects_a_bar_off_the_score_scale() -> None:
    with pytest.raises(ValueError, match="0-1"):
        constructed().recommend(min_quality=9)


def test_failed_answers_count_as_zero() -> None:
    comparison = constructed()
    for cell in comparison.cells:
        if cell.model == "p:cheap" and cell.prompt_index == 0:
            cell.score, cell.error, cell.completion = None, ValueError("boom"), None
    table = comparison.frontier(plot=False)
    assert table.loc["p:cheap", "quality"] == pytest.approx(0.82)
    assert table.loc["p:cheap", "errors"] == 1
    assert comparison.recommend(min_quality=0.9).model == "p:fast"


def test_frontier_marks_the_pareto_front_and_plots() -> None:
    import matplotlib.pyplot as plt

    plt.close("all")
    table = constructed().frontier()
    assert list(table.index) == list(MODELS)
    front = table["pareto"].to_dict()
    assert front == {"p:premium": True, "p:fast": True, "p:cheap": True, "p:tiny": True,
                     "p:dominated": False}
    assert table.loc["p:fast", "cost_per_1k_rows_usd"] == pytest.approx(2.0)
    assert table.loc["p:fast", "latency_p50_s"] == pytest.approx(1.0)
    # quality/latency: cheap (0.92, 5s) loses to fast (0.95, 1s)
    assert not table.loc["p:cheap", "pareto_latency"] and table.loc["p:fast", "pareto_latency"]
    figure = plt.gcf()
    assert len(figure.axes) == 2
    assert figure.axes[0].get_xlabel() == "$ per 1,000 rows"
    assert figure.axes[1].get_xlabel() == "p50 latency (s)"
    plt.close("all")


def test_frontier_needs_scores() -> None:
    comparison = Comparison(["x"], ["p:a"], runs=1)
    with pytest.raises(ValueError, match="scorer="):
        comparison.frontier()


def test_pareto_mask_against_brute_force() -> None:
    quality = [0.5, 0.7, 0.7, 0.9, 0.6, math.nan]
    cost = [1.0, 2.0, 3.0, 5.0, 4.0, 0.1]
    assert pareto_mask(quality, cost) == [True, True, False, True, False, False]


def test_bootstrap_interval_matches_the_normal_approximation() -> None:
    values = [0.0, 1.0] * 200  # mean 0.5, standard error 0.025
    low, high = bootstrap_interval(values)
    assert low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.01)
    assert high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.01)
    assert bootstrap_interval([0.8, 0.8, 0.8]) == (pytest.approx(0.8), pytest.approx(0.8))
    assert bootstrap_interval(values) == (low, high)  # fixed seed: the same every time


@pytest.fixture
def client(tmp_path) -> Iterator[Client]:
    client = Client(db_path=tmp_path / "log.db", retry=RetryPolicy(initial_delay=0.01))
    yield client
    client.close()


def test_recommend_on_a_real_comparison(client: Client) -> None:
    result = compare(
        template="{word}", data=[{"word": w} for w in ("alpha", "beta", "gamma")],
        models=["offline:story", "offline:echo"], max_tokens=8,
        scorer=lambda prompt, text: float(prompt in text), client=client,
    )
    rec = result.recommend(min_quality=0.9, rows=1000)
    assert rec.model == "offline:echo"
    assert rec.score == 1.0 and rec.cost_per_1k_rows_usd == 0.0 and rec.projected_cost_usd == 0.0
    with pytest.raises(errors.NoModelQualifiesError):
        result.recommend(min_quality=0.9, max_latency_s=1e-9)


def test_scorer_outside_zero_to_one_is_refused(client: Client) -> None:
    with pytest.raises(ValueError, match="0-1 scale"):
        compare("x", models=["offline:echo"], scorer=lambda text: 7, client=client)


def test_judge_sends_a_seed_and_its_cost_is_reported_apart(tmp_path) -> None:
    reply = {
        "id": "c1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "8"}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101},
    }
    with ReplayServer(handler=lambda request: Reply.from_json(reply)) as server:
        client = Client(
            api_keys={"openai": "test-key"}, api_bases={"openai": server.url + "/v1"},
            db_path=tmp_path / "log.db", retry=RetryPolicy(max_attempts=1),
        )
        try:
            result = compare(
                prompts=["a", "b"], models=["offline:echo"], judge="openai:gpt-4o-mini",
                rubric="names a colour", client=client,
            )
        finally:
            client.close()
        bodies = [r.json() for r in server.requests]
    assert len(bodies) == 2
    assert all(body["seed"] == 1234 and body["temperature"] == 0 for body in bodies)
    assert "names a colour" in bodies[0]["messages"][-1]["content"]
    assert result.to_pandas()["score"].tolist() == [pytest.approx(7 / 9)] * 2
    assert result.judge == "openai:gpt-4o-mini" and len(result.judge_calls) == 2
    assert result.judge_cost_usd is not None and result.judge_cost_usd > 0
    assert result.judge_cost_usd == pytest.approx(sum(c.cost_usd for c in result.judge_calls))
    assert result.models_cost_usd == 0.0
    assert "judge openai:gpt-4o-mini cost $" in repr(result)


def test_the_judge_sends_no_seed_where_the_provider_takes_none(tmp_path) -> None:
    from tests.support.replay import load_fixture

    fixture = load_fixture("anthropic__messages__38e4ca6b3a7d")
    with ReplayServer(handler=lambda request: Reply.from_fixture(fixture)) as server:
        client = Client(
            api_keys={"anthropic": "sk-ant-test-judge-000"}, api_bases={"anthropic": server.url},
            db_path=tmp_path / "log.db", retry=RetryPolicy(max_attempts=1),
        )
        try:
            result = compare("a", models=["offline:echo"], client=client,
                             judge="anthropic:" + fixture.request_json["model"])
        finally:
            client.close()
        body = server.requests[0].json()
    assert "seed" not in body and body["temperature"] == 0
    assert len(result.judge_calls) == 1


def test_an_unpriced_model_is_never_shown_as_free() -> None:
    import matplotlib.pyplot as plt

    comparison = constructed()
    for cell in comparison.cells:
        if cell.model == "p:cheap" and cell.completion is not None:
            cell.completion.cost_usd, cell.completion.cost_status = None, "unpriced"
    table = comparison.frontier()
    assert math.isnan(table.loc["p:cheap", "cost_per_1k_rows_usd"])
    assert not table.loc["p:cheap", "pareto"]
    assert "unpriced: p:cheap" in plt.gcf().axes[0].get_title()
    plt.close("all")
    # A priced model that passes wins over an unpriced one...
    assert comparison.recommend(min_quality=0.9).model == "p:fast"
    # ...and an unpriced one is chosen only when no priced model passes, saying so.
    for cell in comparison.cells:
        if cell.model != "p:cheap" and cell.completion is not None:
            cell.score = 0.0
    rec = comparison.recommend(min_quality=0.9)
    assert rec.model == "p:cheap" and rec.cost_per_1k_rows_usd is None
    assert "No model that passes is priced" in rec.reason and "unpriced" in str(rec)
