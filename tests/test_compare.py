"""Side-by-side comparison: offline models, a real llama.cpp server, errors, Stop all."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from notebook_llm import acompare, compare, errors
from notebook_llm._client import Client
from notebook_llm.core.retry import RetryPolicy

COLUMNS = [
    "prompt",
    "model",
    "provider",
    "run",
    "text",
    "finish_reason",
    "ttft_s",
    "latency_s",
    "input_tokens",
    "output_tokens",
    "tokens_per_s",
    "cost_usd",
    "error",
]


@pytest.fixture
def client(tmp_path) -> Iterator[Client]:
    client = Client(db_path=tmp_path / "log.db", retry=RetryPolicy(initial_delay=0.01))
    yield client
    client.close()


def test_compare_dataframe_columns_and_values(client: Client) -> None:
    result = compare(
        "the quick brown fox",
        models=["offline:echo", "offline:story"],
        max_tokens=10,
        client=client,
    )
    df = result.to_pandas()
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    echo = df.set_index("model").loc["offline:echo"]
    assert echo["text"] == "the quick brown fox"
    assert echo["output_tokens"] == 4 and echo["finish_reason"] == "stop"
    assert echo["ttft_s"] <= echo["latency_s"]
    assert echo["cost_usd"] == 0.0
    assert df.set_index("model").loc["offline:story", "text"].startswith("Once")


def test_compare_one_failing_model_does_not_stop_others(client: Client) -> None:
    result = compare(
        "hello", models=["offline:echo", "offline:missing", "nosuch:model"], client=client
    )
    df = result.to_pandas().set_index("model")
    assert df.loc["offline:echo", "text"] == "hello"
    assert "ModelNotFoundError" in df.loc["offline:missing", "error"]
    assert "UnknownProviderError" in df.loc["nosuch:model", "error"]
    assert result.summary().loc["offline:missing", "errors"] == 1


def test_compare_summary_counts_only_answered_cells(client: Client) -> None:
    result = compare("hello there", models=["offline:echo", "offline:missing"], runs=2,
                     client=client)
    summary = result.summary()
    echo, missing = summary.loc["offline:echo"], summary.loc["offline:missing"]
    assert echo["calls"] == 2 and echo["errors"] == 0
    assert echo["output_tokens"] == 4 and echo["cost_usd"] == 0.0
    assert echo["latency_mean_s"] > 0
    assert missing["calls"] == 2 and missing["errors"] == 2 and missing["output_tokens"] == 0
    assert pd.isna(missing["latency_mean_s"]) and pd.isna(missing["cost_usd"])


def test_compare_runs_give_percentiles(client: Client) -> None:
    result = compare("a b c", models=["offline:echo"], runs=5, client=client)
    summary = result.summary()
    assert summary.loc["offline:echo", "calls"] == 5
    assert (
        summary.loc["offline:echo", "latency_p50_s"] <= summary.loc["offline:echo", "latency_p95_s"]
    )


def test_compare_matrix_over_dataframe_of_variables(client: Client) -> None:
    data = pd.DataFrame({"animal": ["cat", "dog"], "sound": ["meow", "woof"]})
    result = compare(
        template="The {animal} says {sound}",
        data=data,
        models=["offline:echo", "offline:story"],
        max_tokens=6,
        client=client,
    )
    df = result.to_pandas()
    assert len(df) == 4
    assert set(df["animal"]) == {"cat", "dog"}
    echo = df[df["model"] == "offline:echo"].set_index("animal")["text"]
    assert echo["dog"] == "The dog says woof"
    assert len(result.different_only()) == 2


def test_compare_template_missing_column_fails_first(client: Client) -> None:
    with pytest.raises(ValueError, match="colour"):
        compare(
            template="{colour}", data=[{"animal": "cat"}], models=["offline:echo"], client=client
        )


def test_compare_diff_is_word_level(client: Client) -> None:
    result = compare(prompts=["x"], models=["offline:echo", "offline:story"], client=client)
    diff = result.diff("offline:echo", "offline:story")
    assert "[-x-]" in str(diff)
    assert "<del" in diff._repr_html_() and "<ins" in diff._repr_html_()


def test_compare_scorer_function_adds_column(client: Client) -> None:
    result = compare(
        "one two",
        models=["offline:echo", "offline:story"],
        max_tokens=8,
        scorer=lambda prompt, text: float(prompt in text),
        client=client,
    )
    scores = result.to_pandas().set_index("model")["score"]
    assert scores["offline:echo"] == 1.0 and scores["offline:story"] == 0.0


def test_compare_judge_model_scores(client: Client) -> None:
    # offline:echo as the judge answers with the instruction, whose first number is
    # "1": the bottom of the judge's 1-10 scale, 0 on the library's 0-1 scale.
    result = compare("q", models=["offline:echo"], judge="offline:echo", client=client)
    assert result.to_pandas()["score"].iloc[0] == 0.0


def test_judge_scores_are_on_a_zero_to_one_scale() -> None:
    from notebook_llm._judge import normalise

    assert [normalise(n) for n in (1, 5.5, 10)] == [0.0, 0.5, 1.0]
    assert normalise(42) == 1.0 and normalise(-3) == 0.0


def test_compare_stop_all_keeps_partial_text(client: Client) -> None:
    long_prompt = " ".join(["word"] * 2000)
    holder: dict = {}

    def on_update(comparison, cell) -> None:
        holder["c"] = comparison
        if len(cell.text.split()) >= 5:
            comparison.cancel()

    result = compare(
        long_prompt,
        models=["offline:echo", "offline:story"],
        client=client,
        chunk_delay=0.002,
        max_tokens=2000,
        on_update=on_update,
    )
    statuses = {c.model: c.status for c in result.cells}
    assert statuses == {"offline:echo": "stopped", "offline:story": "stopped"}
    for cell in result.cells:
        assert cell.completion.finish_reason == "cancelled"
        assert 0 < len(cell.completion.text.split()) < 2000


async def test_acompare_async(client: Client) -> None:
    result = await acompare("hi", ["offline:echo"], client=client)
    assert result.cells[0].text == "hi" and result.done


def test_compare_plot_renders(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
    result = compare("a b c", models=["offline:echo", "offline:story"], client=client)
    figure = result.plot()
    assert len(figure.axes) == 4


def test_compare_html_is_sanitised(client: Client) -> None:
    result = compare(
        "<img src=x onerror=alert(1)> [x](javascript:alert(1))",
        models=["offline:echo"],
        client=client,
    )
    page = result._repr_html_()
    assert "<img" not in page
    assert 'href="javascript' not in page.lower()


@pytest.mark.llama
def test_compare_offline_and_real_llama_server(client: Client, llama_chat_server: str) -> None:
    client.api_bases["llamacpp"] = llama_chat_server
    result = compare(
        "Once upon a time",
        models=["offline:story", "llamacpp:stories260k"],
        max_tokens=24,
        client=client,
    )
    df = result.to_pandas().set_index("model")
    assert df.loc["llamacpp:stories260k", "error"] is None
    assert len(df.loc["llamacpp:stories260k", "text"]) > 10
    assert df.loc["llamacpp:stories260k", "ttft_s"] is not None
    assert df.loc["llamacpp:stories260k", "cost_usd"] == 0.0


def test_compare_errors_are_llm_errors(client: Client) -> None:
    result = compare("x", models=["offline:echo"], client=client, fail="boom")
    assert isinstance(result.cells[0].error, errors.ProviderError)


def test_a_card_cut_off_by_max_tokens_says_so(client: Client) -> None:
    result = compare("A lighthouse by the sea", models=["offline:story", "offline:echo"],
                     max_tokens=5, client=client)
    story, echo = result._repr_html_().split("</td>")[:2]
    assert "cut off at max_tokens" in story and "cut off" not in echo

