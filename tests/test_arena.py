"""The blind arena: rating maths against an independent fit, votes that survive a
restart, the widgets clicked in a real kernel, the input() frontend, and no hang
where no one can answer."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import notebook_llm as nl
from notebook_llm._arena import Arena
from notebook_llm._ratings import bootstrap_ratings, bradley_terry
from tests.support.kernel import KernelSession, buttons, ok, run_notebook, value

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["m:strong", "m:middle", "m:weak"]
# (a, b, score of a): strong > middle > weak, with upsets and ties, every model
# with wins and losses, so the plain maximum likelihood exists.
VOTES = (
    [("m:strong", "m:middle", 1.0)] * 7 + [("m:strong", "m:middle", 0.0)] * 3
    + [("m:strong", "m:weak", 1.0)] * 8 + [("m:weak", "m:strong", 1.0)] * 2
    + [("m:middle", "m:weak", 1.0)] * 6 + [("m:middle", "m:weak", 0.0)] * 3
    + [("m:middle", "m:weak", 0.5)] * 2 + [("m:strong", "m:middle", 0.5)]
)


def scipy_fit(votes: list[tuple[str, str, float]], models: list[str]) -> dict[str, float]:
    """Bradley-Terry by direct maximisation of the log-likelihood (ties as half a
    win each), independent of the library's MM iteration."""
    minimize = pytest.importorskip("scipy.optimize").minimize
    index = {m: i for i, m in enumerate(models)}

    def negative_log_likelihood(free: np.ndarray) -> float:
        theta = np.concatenate([[0.0], free])
        total = 0.0
        for a, b, score in votes:
            diff = theta[index[a]] - theta[index[b]]
            total += score * -np.logaddexp(0, -diff) + (1 - score) * -np.logaddexp(0, diff)
        return -total

    fit = minimize(negative_log_likelihood, np.zeros(len(models) - 1), method="BFGS",
                   options={"gtol": 1e-10})
    theta = np.concatenate([[0.0], fit.x])
    theta -= theta.mean()
    return {m: 1000 + 400 * theta[i] / math.log(10) for m, i in index.items()}


def test_bradley_terry_matches_an_independent_maximum_likelihood_fit() -> None:
    ours = bradley_terry(VOTES, MODELS, prior=0)
    reference = scipy_fit(VOTES, MODELS)
    for model in MODELS:
        assert ours[model] == pytest.approx(reference[model], abs=0.01)
    assert ours["m:strong"] > ours["m:middle"] > ours["m:weak"]
    assert sum(ours.values()) / 3 == pytest.approx(1000)


def test_two_models_rating_gap_is_the_log_odds() -> None:
    # 3 wins to 1: p = 0.75, so the gap is 400 * log10(3) on the Elo scale.
    votes = [("x", "y", 1.0)] * 3 + [("x", "y", 0.0)]
    ratings = bradley_terry(votes, ["x", "y"], prior=0)
    assert ratings["x"] - ratings["y"] == pytest.approx(400 * math.log10(3), abs=1e-6)


def test_the_prior_keeps_an_unbeaten_model_finite() -> None:
    votes = [("x", "y", 1.0)] * 4
    with pytest.raises(ValueError, match="infinite"):
        bradley_terry(votes, ["x", "y"], prior=0)
    # prior=1: one virtual tie, so x has 4.5 of 5 games: odds 9.
    ratings = bradley_terry(votes, ["x", "y"], prior=1)
    assert ratings["x"] - ratings["y"] == pytest.approx(400 * math.log10(9), abs=1e-6)


def test_bootstrap_intervals_contain_the_fit_and_are_repeatable() -> None:
    fit = bradley_terry(VOTES, MODELS)
    intervals = bootstrap_ratings(VOTES, MODELS, resamples=100)
    for model in MODELS:
        low, high = intervals[model]
        assert low <= fit[model] <= high and high - low > 10
    assert bootstrap_ratings(VOTES, MODELS, resamples=100) == intervals


# -- the arena itself (offline models) -------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "log.db")


def test_votes_are_stored_and_an_arena_resumes(db: str) -> None:
    prompts = ["alpha beta", "gamma delta", "epsilon"]
    models = ["offline:echo", "offline:story"]
    first = Arena(prompts, models, db_path=db, max_tokens=8)
    m = first.next_matchup()
    assert m is not None and {m.model_a, m.model_b} == set(models)
    first.stream(m)
    assert m.status == "ready" and m.text_a and m.text_b
    assert "A was" not in m.reveal()  # no names before the vote
    first.vote(m, "a")
    assert m.model_a in m.reveal() and m.model_b in m.reveal()

    again = Arena(prompts, models, db_path=db, max_tokens=8)  # a new kernel, say
    assert again.id == first.id and again.voted == 1
    assert [(x.model_a, x.model_b) for x in again.matchups] == [
        (x.model_a, x.model_b) for x in first.matchups]  # the same shuffled order
    nxt = again.next_matchup()
    assert nxt is not None and nxt.index == 1
    votes = again.votes
    assert votes["winner"].tolist() == ["a"] and votes["model_a"].tolist() == [m.model_a]
    with pytest.raises(ValueError, match="both_bad"):
        again.vote(nxt, "maybe")


# Colab's pinned matplotlib calls pyparsing names that its pyparsing deprecates.
@pytest.mark.filterwarnings("ignore:.* deprecated - use .*:Warning")
def test_results_table_and_plot(db: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    models = ["offline:echo", "offline:story"]
    arena = Arena(["p1", "p2", "p3", "p4"], models, db_path=db, name="table", max_tokens=4)
    for m, choice in zip(arena.matchups, ["a", "b", "tie", "both_bad"], strict=True):
        arena.stream(m)
        arena.vote(m, choice)
    results = arena.results(resamples=50)
    frame = results.df
    assert set(frame.index) == set(models) and results.votes == 4
    assert (frame["games"] == 4).all()
    assert frame["wins"].sum() == 2
    assert (frame["ties"] == 1).all() and (frame["both_bad"] == 1).all()
    assert (frame["cost_per_answer_usd"] == 0.0).all()  # offline models are free
    assert list(frame.columns[:3]) == ["rating", "rating_low", "rating_high"]
    ax = results.plot()
    assert ax.get_title() == "Arena ratings"
    assert "<table" in results._repr_html_()


def test_arena_needs_two_models_and_a_prompt(db: str) -> None:
    with pytest.raises(ValueError, match="two different models"):
        Arena(["p"], ["offline:echo"], db_path=db)
    with pytest.raises(ValueError, match="prompt"):
        Arena([], ["offline:echo", "offline:story"], db_path=db)


def run_text_arena(db: str, stdin: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(f"""
        import notebook_llm as nl
        a = nl.arena(["one two", "three four"], models=["offline:echo", "offline:story"],
                     name="text", db_path={db!r}, max_tokens=6, frontend="text")
        print("VOTES", a.voted, a.votes["winner"].tolist())
    """)
    return subprocess.run([sys.executable, "-c", script], input=stdin, capture_output=True,
                          text=True, timeout=120, cwd=ROOT, check=True)


def test_the_text_frontend_votes_through_input(db: str) -> None:
    done = run_text_arena(db, "maybe\nb\nx\n")
    assert "Type a, b, t, x or q." in done.stdout
    assert "[A]" in done.stdout and "[B]" in done.stdout and "A was offline:" in done.stdout
    assert "VOTES 2 ['b', 'both_bad']" in done.stdout


def test_the_text_frontend_stops_with_the_votes_it_has_at_end_of_input(db: str) -> None:
    done = run_text_arena(db, "t\n")
    assert "No answer: stopped with 1 of 2" in done.stdout and "VOTES 1 ['tie']" in done.stdout
    resumed = run_text_arena(db, "a\n")
    assert "Matchup 2 of 2" in resumed.stdout and "Matchup 1 of 2" not in resumed.stdout
    assert "VOTES 2 ['tie', 'a']" in resumed.stdout


def test_run_all_without_anyone_to_answer_does_not_hang(tmp_path: Path) -> None:
    db = str(tmp_path / "nb.db")
    cells = [
        "import notebook_llm as nl",
        f"t = nl.arena(['q1', 'q2'], models=['offline:echo', 'offline:story'], db_path={db!r},"
        " frontend='text', max_tokens=4)",
        f"w = nl.arena(['q3'], models=['offline:echo', 'offline:story'], db_path={db!r},"
        " max_tokens=4)",
        "print('votes', t.voted, w.voted)",
    ]
    nb, error = run_notebook(cells, timeout=60)
    assert error is None, error
    text = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "No answer: stopped with 0 of 2" in text
    assert "votes 0 0" in "".join(o.get("text", "") for o in nb.cells[3].outputs)


# -- the widgets, clicked in a real kernel --------------------------------------------------

SETUP = """
%load_ext notebook_llm
import notebook_llm as nl
"""


def test_widgets_vote_reveal_next_and_resume_after_a_restart(kernel: KernelSession) -> None:
    done = ok(kernel, "a = nl.arena(['one two three', 'four five'], "
                      "models=['offline:echo', 'offline:story'], name='widgets', max_tokens=8)")
    opened = buttons(done)
    assert {"👍 A", "👍 B", "Tie", "Both bad", "Next ▶"} <= set(opened)
    ok(kernel, "a.wait(30)")
    labels = value(kernel, "[a.view.label_a.value, a.view.label_b.value]")
    assert labels == ["<b>A</b>", "<b>B</b>"]  # anonymous until the vote
    assert value(kernel, "[b.disabled for b in a.view.buttons.values()]") == [False] * 4
    html = value(kernel, "a.view.answer_a.value + a.view.answer_b.value")
    assert "one two three" in html  # offline:echo streamed into one column

    kernel.click(opened["👍 A"])
    first = value(kernel, "[a.voted, a.matchups[0].vote, a.matchups[0].model_a,"
                          " a.view.label_a.value, a.view.status.value]")
    assert first[:2] == [1, "a"]
    assert first[2] in first[3] and "You preferred A" in first[4]  # names revealed

    kernel.click(opened["Next ▶"])
    ok(kernel, "a.wait(30)")
    kernel.click(opened["Both bad"])
    final = value(kernel, "[a.voted, a.matchups[1].vote, a.view.status.value]")
    assert final[:2] == [2, "both_bad"] and "Arena done" in final[2]

    kernel.km.restart_kernel(now=True)
    kernel.kc.wait_for_ready(timeout=60)
    ok(kernel, SETUP)
    ok(kernel, "a = nl.arena(['one two three', 'four five'], "
               "models=['offline:echo', 'offline:story'], name='widgets', max_tokens=8)")
    assert value(kernel, "[a.voted, a.votes['winner'].tolist()]") == [2, ["a", "both_bad"]]
    assert "Arena done" in value(kernel, "a.view.status.value")


def test_llm_arena_magic(kernel: KernelSession) -> None:
    done = ok(kernel, "%%llm_arena -m offline:echo,offline:story --name magic --max-tokens 5\n"
                      "first prompt\n---\nsecond\nprompt")
    assert "👍 A" in buttons(done)
    assert value(kernel, "_arena.prompts") == ["first prompt", "second\nprompt"]
    bad = kernel.execute("%%llm_arena -m offline:echo\nhi")
    assert bad.status == "error" and "two or more different models" in bad.text
    assert "Traceback" not in bad.text
    assert nl.arena is not None


def test_stream_and_astream_take_the_same_arguments() -> None:
    import inspect

    sync = list(inspect.signature(Arena.stream).parameters.values())
    asynchronous = list(inspect.signature(Arena.astream).parameters.values())
    assert [(p.name, p.kind, p.default) for p in sync] == [
        (p.name, p.kind, p.default) for p in asynchronous]


def test_three_models_take_turns_in_a_repeatable_shuffled_order(db: str) -> None:
    models = ["offline:echo", "offline:story", "offline:echo-2"]
    arena = Arena([f"p{i}" for i in range(6)], models, db_path=db, name="three")
    pairs = [frozenset((m.model_a, m.model_b)) for m in arena.matchups]
    assert len(set(pairs)) == 3 and all(pairs.count(p) == 2 for p in set(pairs))
    again = Arena([f"p{i}" for i in range(6)], models, db_path=db, name="three")
    assert [(m.model_a, m.model_b) for m in again.matchups] == [
        (m.model_a, m.model_b) for m in arena.matchups]


def test_hostile_answers_and_prompts_are_sanitised_in_the_widgets(
    kernel: KernelSession,
) -> None:
    ok(kernel, "x = nl.arena(['<script>alert(1)</script> <img src=x onerror=alert(1)> **b**'],"
               " models=['offline:echo', 'offline:story'], name='xss', max_tokens=40)")
    ok(kernel, "x.wait(30)")
    shown = value(kernel, "x.view.header.value + x.view.answer_a.value + x.view.answer_b.value")
    assert "<script" not in shown and "<img" not in shown
    assert "&lt;script&gt;" in shown
