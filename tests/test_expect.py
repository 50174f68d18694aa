"""Prompt tests: ``nl.expect`` and ``%%llm_expect``, a pass/fail matrix per model.

The answers come from real models: ``offline:echo`` (it answers with the
prompt, so every assertion's outcome is known), and an OpenAI-protocol
loopback server for priced calls and a judge that answers on its 1-10 scale.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import notebook_llm as nl
from notebook_llm._expect import ExpectationFailed, parse_checks
from tests.support.chat_server import ChatServer
from tests.support.kernel import KernelSession, ok, strip_ansi, value

FAKE_KEY = "sk-" + "expecttest-abcdefghijklmnopqrstuvwxyz0123"


def _answer(prompt: str) -> str:
    """The judge grades with 8 (of 10); anything else is answered in French."""
    return "8" if prompt.startswith("You grade answers") else "Bonjour, cher ami."


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer(_answer, usage=(1000, 500)).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _replay_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("NOTEBOOK_LLM_REPLAY", raising=False)
    with nl.replay("off"):
        yield


def served(server: ChatServer) -> nl.Client:
    return nl.Client(api_bases={"openai": server.url + "/v1"}, api_keys={"openai": FAKE_KEY})


# -- the assertion language --------------------------------------------------------------


def test_every_assertion_parses() -> None:
    checks = parse_checks(
        r"""
        # a comment, then one assertion per line
        contains "Paris"
        not contains 'London'
        regex ^P\w+s$
        not regex \d
        equals Paris
        json
        schema City
        max_tokens 50
        max_cost 0.01
        judge "is it polite?" >= 0.8
        judge "is it short?"
        """,
        schema=lambda name: {"City": dict}[name],
    )
    kinds = [(c.kind, c.negate) for c in checks]
    assert kinds == [("contains", False), ("contains", True), ("regex", False),
                     ("regex", True), ("equals", False), ("json", False), ("schema", False),
                     ("max_tokens", False), ("max_cost", False), ("judge", False),
                     ("judge", False)]
    assert checks[0].value == "Paris" and checks[1].value == "London"
    assert checks[7].value == 50 and checks[8].value == 0.01
    assert checks[9].value == "is it polite?" and checks[9].threshold == 0.8
    assert checks[10].threshold == 0.7


@pytest.mark.parametrize(("line", "message"), [
    ("bogus 1", "unknown assertion 'bogus'"),
    ("not json", "'not' goes before"),
    ("regex (", "not a regular expression"),
    ("max_tokens many", "needs a number"),
    ("max_cost -1", "cannot be negative"),
    ('judge "x" >= 8', "judge scores are 0-1"),
    ("contains", "say what to look for"),
    ("json please", "json takes nothing"),
    ("# only a comment", "no assertions"),
])
def test_a_bad_line_is_refused_naming_it(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_checks(line)


# -- nl.expect ---------------------------------------------------------------------------


def test_text_assertions_pass_and_fail_as_they_should() -> None:
    result = nl.expect(
        '{"name": "Paris", "country": "France"}', "offline:echo",
        ['contains "Paris"', 'not contains "London"', 'regex "name":\\s*"P',
         'equals {"name": "Paris", "country": "France"}', "json", "max_tokens 100",
         'contains "Berlin"', "not regex France", "equals Paris", "max_tokens 1"],
        check=False,
    )
    passed = [r.passed for r in result.results]
    assert passed == [True] * 6 + [False] * 4
    assert not result.passed and result.summary() == "4 of 10 checks failed"
    assert [r.check.source for r in result.failures()] == [
        'contains "Berlin"', "not regex France", "equals Paris", "max_tokens 1"]


def test_schema_assertion_uses_a_pydantic_model() -> None:
    class City(BaseModel):
        name: str
        population: int

    good = nl.expect('```json\n{"name": "Paris", "population": 2100000}\n```', "offline:echo",
                     "schema City", schemas={"City": City})
    assert good.passed
    bad = nl.expect('{"name": "Paris"}', "offline:echo", "schema City",
                    schemas={"City": City}, check=False)
    assert not bad.passed and "validation error" in bad.results[0].detail
    with pytest.raises(ValueError, match="schemas="):
        nl.expect("x", "offline:echo", "schema Missing")


def test_a_failure_raises_an_assertion_error_with_the_matrix() -> None:
    with pytest.raises(AssertionError) as info:
        nl.expect("hello", "offline:echo,offline:story", ['contains "hello"'])
    assert isinstance(info.value, ExpectationFailed)
    text = str(info.value)
    assert "1 of 2 checks failed" in text and "offline:echo" in text and "offline:story" in text
    result = info.value.result
    assert result.models == ["offline:echo", "offline:story"]
    assert result.rows()[0][1].startswith("pass") and result.rows()[0][2].startswith("FAIL")


def test_the_matrix_renders_escaped() -> None:
    result = nl.expect("<script>alert(1)</script>", "offline:echo",
                       ['contains "<script>"', 'equals <b>'], check=False)
    html = result._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("✓") == 1 and html.count("✗") == 1


def test_a_failed_call_fails_every_assertion_for_that_model() -> None:
    result = nl.expect("hi", ["offline:echo", "offline:nope"], 'contains "hi"', check=False)
    assert result.cell(result.checks[0], "offline:echo").passed
    failed = result.cell(result.checks[0], "offline:nope")
    assert not failed.passed and "the call failed" in failed.detail


def test_judge_scores_on_the_zero_to_one_scale(server: ChatServer) -> None:
    client = served(server)
    result = nl.expect("Say hello in French", "openai:gpt-4o-mini",
                       ['judge "is it polite?" >= 0.7', 'judge "is it polite?" >= 0.9'],
                       judge_model="openai:gpt-4o-mini", client=client, check=False)
    first, second = result.results
    assert first.passed and first.detail == "score 0.78"  # 8 of 10 -> (8 - 1) / 9
    assert not second.passed


def test_max_cost_uses_the_recorded_cost_under_replay(server: ChatServer, tmp_path: Path) -> None:
    path = tmp_path / "cost.llm.json"
    checks = ["max_cost 0.01", "max_cost 0.0000001", 'contains "Bonjour"',
              'judge "is it French?" >= 0.5']
    with nl.replay("record", path=path):
        live = nl.expect("Say hello in French", "openai:gpt-4o-mini", checks,
                         judge_model="openai:gpt-4o-mini", client=served(server), check=False)
    assert [r.passed for r in live.results] == [True, False, True, True]
    requests = len(server.requests)
    server.stop()
    with nl.replay("replay", path=path):  # offline, no key: the answers and the judge replay
        again = nl.expect("Say hello in French", "openai:gpt-4o-mini", checks,
                          judge_model="openai:gpt-4o-mini", check=False)
    assert [r.passed for r in again.results] == [True, False, True, True]
    assert [r.detail for r in again.results] == [r.detail for r in live.results]
    assert requests == 2  # the answer and the judge's, once each


async def test_aexpect_gives_the_same_matrix() -> None:
    result = await nl.aexpect("hello", "offline:echo", 'contains "hello"')
    assert result.passed and result.text() == nl.expect(
        "hello", "offline:echo", 'contains "hello"').text()


# -- %%llm_expect in a kernel ------------------------------------------------------------

SETUP = """
%load_ext notebook_llm
import notebook_llm as nl
city = "Paris"
"""


def test_cell_shows_the_matrix_and_passes(kernel: KernelSession) -> None:
    done = ok(kernel, '%%llm_expect -m offline:echo,offline:story --prompt "About {city}" -o r\n'
                      "max_tokens 500\nnot contains \"sk-\"")
    assert "all 4 checks passed" in done.html and done.html.count("✓") == 4
    assert value(kernel, "[r.passed, r.prompt, r.models]") == [
        True, "About Paris", ["offline:echo", "offline:story"]]


def test_a_failing_assertion_fails_the_cell(kernel: KernelSession) -> None:
    done = kernel.execute('%%llm_expect -m offline:echo -m offline:story --prompt "About {city}"\n'
                          'contains "Paris"')
    assert done.status == "error"
    assert "1 of 2 checks failed" in strip_ansi(done.text)
    assert "✗" in done.html and "✓" in done.html  # the matrix is shown before the failure
    assert value(kernel, "_llm_expect.passed") is False


def test_schema_dsl_and_from_cell(kernel: KernelSession) -> None:
    ok(kernel, '%%llm -m offline:echo\n{{"name": "{city}", "age": 3}}')
    done = ok(kernel, "%%llm_expect -m offline:echo --from-cell\nschema name: str, age: int\njson")
    assert "all 2 checks passed" in done.html
    assert value(kernel, "_llm_expect.prompt") == '{"name": "Paris", "age": 3}'
    ok(kernel, "bad = '{\"name\": 1}'")
    failed = kernel.execute('%%llm_expect -m offline:echo --prompt "{bad}"\nschema name: str')
    assert failed.status == "error" and "1 of 1 checks failed" in strip_ansi(failed.text)


@pytest.mark.parametrize(("cell", "message"), [
    ("%%llm_expect -m offline:echo --prompt hi\nfrobnicate", "unknown assertion"),
    ("%%llm_expect -m offline:echo\ncontains hi", "--prompt"),
    ('%%llm_expect -m offline:echo --prompt "{nowhere}"\ncontains hi', "nowhere"),
])
def test_bad_cells_fail_short_before_sending(kernel: KernelSession, cell: str,
                                             message: str) -> None:
    done = kernel.execute(cell)
    assert done.status == "error" and message in strip_ansi(done.text)
    assert "Traceback" not in strip_ansi(done.text)
