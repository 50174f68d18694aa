"""Replay files: record answers next to a notebook, replay them at $0 with no key.

Real parts throughout: the offline and local models, an OpenAI-protocol
loopback server (priced answers, sent keys), real kernels (jupyter_client and
nbclient) and real processes writing one file at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from pydantic import BaseModel

import notebook_llm as nl
from notebook_llm.core.client import CallContext, Middleware
from notebook_llm.core.types import Completion
from tests.support.chat_server import ChatServer
from tests.support.kernel import KernelSession, ok, strip_ansi, value

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT.parent / "shared" / "models" / "stories260K.gguf"
# Built from parts so secret scanners do not mistake it for a real key.
FAKE_KEY = "sk-" + "replaytest-abcdefghijklmnopqrstuvwxyz012345"


class Counter(Middleware):
    """Counts the calls that reach the middlewares after the replay lookup."""

    def __init__(self) -> None:
        self.calls = 0

    async def before(self, ctx: CallContext) -> Completion | None:
        self.calls += 1
        return None


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer(lambda prompt: "Paris is the capital of France.").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _replay_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("NOTEBOOK_LLM_REPLAY", raising=False)
    monkeypatch.delenv("NOTEBOOK_LLM_REPLAY_FILE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    with nl.replay("off"):
        yield


def client(**kwargs: Any) -> tuple[nl.Client, Counter]:
    counter = Counter()
    return nl.Client(middlewares=[counter], **kwargs), counter


# -- record and replay ------------------------------------------------------------------


def test_replayed_answer_is_the_recorded_one_at_zero_cost_with_no_key(
    server: ChatServer, tmp_path: Path
) -> None:
    nb = tmp_path / "analysis.ipynb"
    live, _ = client(api_bases={"openai": server.url + "/v1"}, api_keys={"openai": FAKE_KEY})
    with nl.replay("record", path=nb):
        first = live.complete("Capital of France?", "openai:gpt-4o-mini", temperature=0)
    assert first.cost_usd and first.cost_usd > 0 and first.cost_status == "priced"
    assert first.replay is not None and not first.replay.replayed
    assert "recorded" in first.footer()
    stored = (tmp_path / "analysis.llm.json").read_text()
    assert FAKE_KEY not in stored and "Authorization" not in stored

    # A fresh client with no key and nothing listening: the file answers.
    server.stop()
    fresh, counter = client()
    with nl.replay("replay", path=nb):
        again = fresh.complete("Capital of France?", "openai:gpt-4o-mini", temperature=0)
    assert again.text == first.text and again.model == first.model
    assert again.usage == first.usage and again.response_model == first.response_model
    assert again.replay is not None and again.replay.replayed
    assert again.replay.cost_usd == first.cost_usd  # the original cost, kept
    assert again.cost_usd == 0.0 and again.attempts == 0  # and $0 now
    assert "replayed · $0 now (recorded: $" in again.footer()
    # The footer is the live one with the cost replaced by the replay note.
    assert again.footer().split(" · ")[:2] == first.footer().split(" · ")[:2]
    assert fresh.tracker.cost_usd == 0.0 and fresh.tracker.calls == 1  # counted, at $0
    assert counter.calls == 0  # answered before any later middleware: nothing was sent
    assert len(server.requests) == 1


def test_replayed_answers_are_counted_at_zero_but_not_logged_as_calls(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    logged = nl.Client(db_path=db)
    with nl.replay("record", path=tmp_path / "log.llm.json"):
        logged.complete("count me once", "offline:echo")
    with nl.replay("replay", path=tmp_path / "log.llm.json"):
        again = logged.complete("count me once", "offline:echo")
    assert again.replay is not None and again.replay.replayed
    assert len(nl.logs(10, db_path=db).df) == 1  # the live call; the replay sent nothing
    assert logged.tracker.calls == 2 and logged.tracker.cached == 1


def test_parsed_object_replays_as_the_model(tmp_path: Path) -> None:
    class City(BaseModel):
        name: str

    live, _ = client()
    prompt = '{"name": "Paris"}'
    with nl.replay("record", path=tmp_path / "x.llm.json"):
        first = live.complete(prompt, "offline:echo", response_format=City)
    with nl.replay("replay", path=tmp_path / "x.llm.json"):
        again = live.complete(prompt, "offline:echo", response_format=City)
    assert isinstance(again.parsed, City) and again.parsed == first.parsed
    assert again.replay is not None and again.replay.replayed


def test_stream_replays_as_a_stream(tmp_path: Path) -> None:
    with nl.replay("record", path=tmp_path / "s.llm.json"):
        live = nl.stream("tell me a story", "offline:story")
        live_text = "".join(chunk.text for chunk in live)
    with nl.replay("replay", path=tmp_path / "s.llm.json"):
        stream = nl.stream("tell me a story", "offline:story")
        chunks = [chunk.text for chunk in stream]
    assert "".join(chunks) == live_text and chunks
    assert stream.completion is not None and stream.completion.replay is not None
    assert stream.completion.replay.replayed and stream.completion.text == live_text


def test_the_model_as_written_is_the_fingerprint(tmp_path: Path) -> None:
    """A kernel whose default or alias differs still finds the stored answer."""
    path = tmp_path / "d.llm.json"
    recorder, _ = client(model="offline:echo", aliases={"fast": "offline:echo"})
    with nl.replay("record", path=path):
        default = recorder.complete("hello default")
        aliased = recorder.complete("hello alias", "fast")
    other, _ = client(model="offline:story", aliases={"fast": "offline:story"})
    with nl.replay("replay", path=path):
        assert other.complete("hello default").text == default.text == "hello default"
        assert other.complete("hello alias", "fast").text == aliased.text
        with pytest.raises(nl.errors.LLMError, match="no stored answer"):
            other.complete("hello alias", "offline:echo")  # written differently


def test_keys_and_headers_are_never_in_the_fingerprint(server: ChatServer, tmp_path: Path) -> None:
    path = tmp_path / "k.llm.json"
    base = {"api_bases": {"openai": server.url + "/v1"}}
    with nl.replay("record", path=path):
        nl.Client(**base).complete("hi", "openai:gpt-4o-mini", api_key=FAKE_KEY,
                                   extra_headers={"X-Team": "secret-team-token"})
    assert server.auth == [f"Bearer {FAKE_KEY}"]
    text = path.read_text()
    assert FAKE_KEY not in text and "secret-team-token" not in text and "X-Team" not in text
    with nl.replay("replay", path=path):
        again = nl.Client().complete("hi", "openai:gpt-4o-mini", api_key="sk-" + "other" * 8)
    assert again.replay is not None and again.replay.replayed


def test_a_stored_answer_wins_over_the_response_cache(tmp_path: Path) -> None:
    path = tmp_path / "c.llm.json"
    with nl.replay("record", path=path):
        stored = nl.Client(aliases={"m": "offline:echo"}).complete("the prompt", "m")
    cached = nl.Client(aliases={"m": "offline:story"}, cache=True)
    with nl.replay("off"):
        story = cached.complete("the prompt", "m")  # now in the response cache
        assert cached.complete("the prompt", "m").cached
    assert story.text != stored.text
    with nl.replay("replay", path=path):
        again = cached.complete("the prompt", "m")
    assert again.text == stored.text and again.replay is not None and again.replay.replayed


def test_replay_mode_refuses_a_changed_prompt_before_sending(tmp_path: Path) -> None:
    path = tmp_path / "m.llm.json"
    live, counter = client()
    with nl.replay("record", path=path):
        live.complete("the old prompt", "offline:echo")
    with nl.replay("replay", path=path), pytest.raises(nl.errors.LLMError) as info:
        live.complete("the new prompt", "offline:echo")
    message = str(info.value)
    assert "no stored answer" in message and "'the new prompt'" in message and str(path) in message
    assert "auto" in message  # what to do
    assert counter.calls == 1  # only the recording call went past the replay file


def test_auto_replays_what_is_stored_and_records_what_is_new(tmp_path: Path) -> None:
    path = tmp_path / "a.llm.json"
    with nl.replay("record", path=path):
        nl.complete("one", "offline:echo")
    with nl.replay("auto", path=path):
        one = nl.complete("one", "offline:echo")
        two = nl.complete("two", "offline:echo")
    assert one.replay is not None and one.replay.replayed
    assert two.replay is not None and not two.replay.replayed
    with nl.replay("replay", path=path):
        assert nl.complete("two", "offline:echo").text == "two"
    assert len(json.loads(path.read_text())["entries"]) == 2


def test_record_refreshes_and_reports_drift(tmp_path: Path) -> None:
    path = tmp_path / "r.llm.json"
    with nl.replay("record", path=path):
        nl.Client(aliases={"m": "offline:echo"}).complete("a fox and a map", "m")
        same = nl.Client(aliases={"m": "offline:echo"}).complete("a fox and a map", "m")
        assert same.replay is not None and not same.replay.drift
        assert len(nl.replay_diff()) == 0
        changed = nl.Client(aliases={"m": "offline:story"}).complete("a fox and a map", "m")
    assert changed.replay is not None and changed.replay.drift
    assert "differs from the stored answer" in changed.footer()
    diff = nl.replay_diff()
    assert len(diff) >= 1
    text = str(diff)
    assert "-a fox and a map" in text and "+" + changed.text.splitlines()[0] in text
    with nl.replay("replay", path=path):
        assert nl.Client(aliases={"m": "offline:echo"}).complete("a fox and a map", "m").text \
            == changed.text  # the refreshed answer


def test_live_metadata_bypasses_the_file(tmp_path: Path) -> None:
    path = tmp_path / "l.llm.json"
    with nl.replay("record", path=path):
        nl.Client(aliases={"m": "offline:echo"}).complete("x y z", "m")
    with nl.replay("replay", path=path):
        live = nl.Client(aliases={"m": "offline:story"}).complete(
            "x y z", "m", metadata={"replay": "record"})
        assert live.replay is not None and not live.replay.replayed and live.replay.drift
        refreshed = nl.Client(aliases={"m": "offline:echo"}).complete("x y z", "m")
        assert refreshed.text == live.text


def test_compare_and_batch_record_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "cb.llm.json"
    prompts = [f"row {i}" for i in range(6)]
    with nl.replay("record", path=path):
        comparison = nl.compare("a short story", models=["offline:echo", "offline:story"])
        result = nl.batch(prompts, "offline:echo", progress=False, job="replay-batch-1")
    assert len(json.loads(path.read_text())["entries"]) == 2 + len(prompts)
    with nl.replay("replay", path=path):
        again = nl.compare("a short story", models=["offline:echo", "offline:story"])
        rows = nl.batch(prompts, "offline:echo", progress=False, job="replay-batch-2")
    before = [c.completion.text for c in comparison.cells if c.completion is not None]
    after = [c.completion for c in again.cells if c.completion is not None]
    assert [c.text for c in after] == before and len(after) == 2
    assert all(c.replay is not None and c.replay.replayed for c in after)
    assert list(rows.df["text"]) == list(result.df["text"]) == prompts


# -- the file ---------------------------------------------------------------------------


def _recorded(tmp_path: Path) -> Path:
    path = tmp_path / "f.llm.json"
    with nl.replay("record", path=path):
        nl.complete("stored prompt", "offline:echo")
    return path


def test_file_is_plain_sorted_json(tmp_path: Path) -> None:
    path = _recorded(tmp_path)
    text = path.read_text()
    data = json.loads(text)
    assert data["format"] == "notebook-llm.replay" and data["version"] == 1
    assert text == json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    (entry,) = data["entries"].values()
    assert entry["request"]["model"] == "offline:echo"
    assert entry["answer"]["text"] == "stored prompt"


def test_a_hand_edited_entry_is_refused_naming_file_and_entry(tmp_path: Path) -> None:
    path = _recorded(tmp_path)
    data = json.loads(path.read_text())
    (key,) = data["entries"]
    data["entries"][key]["answer"]["text"] = "a wrong answer"
    path.write_text(json.dumps(data))
    with nl.replay("replay", path=path), pytest.raises(nl.errors.LLMError) as info:
        nl.complete("stored prompt", "offline:echo")
    assert key in str(info.value) and str(path) in str(info.value)
    assert "changed after it was recorded" in str(info.value)


def test_a_damaged_entry_is_refused(tmp_path: Path) -> None:
    path = _recorded(tmp_path)
    data = json.loads(path.read_text())
    (key,) = data["entries"]
    data["entries"][key] = ["not", "an", "entry"]
    path.write_text(json.dumps(data))
    with nl.replay("replay", path=path), pytest.raises(nl.errors.LLMError, match=key):
        nl.complete("stored prompt", "offline:echo")


def test_a_corrupt_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = _recorded(tmp_path)
    path.write_text(path.read_text()[:-40])
    with pytest.raises(nl.errors.LLMError) as info:
        nl.replay("replay", path=path)
    assert str(path) in str(info.value) and "not valid JSON" in str(info.value)


def test_a_newer_format_is_refused_with_a_message(tmp_path: Path) -> None:
    path = _recorded(tmp_path)
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(nl.errors.LLMError) as info:
        nl.replay("auto", path=path)
    assert "newer notebook-llm" in str(info.value) and "upgrade" in str(info.value)


def test_recording_never_overwrites_a_newer_file_and_still_answers(tmp_path: Path) -> None:
    path = _recorded(tmp_path)
    with nl.replay("record", path=path):
        data = json.loads(path.read_text())
        data["version"] = 99  # another kernel, with a newer library, wrote it meanwhile
        path.write_text(json.dumps(data))
        before = path.read_text()
        with pytest.warns(RuntimeWarning, match="newer notebook-llm"):
            answer = nl.complete("a new prompt", "offline:echo")
    assert answer.text == "a new prompt"  # the answer that arrived is not lost
    assert path.read_text() == before


def test_record_replaces_a_damaged_entry(tmp_path: Path) -> None:
    path = _recorded(tmp_path)
    data = json.loads(path.read_text())
    (key,) = data["entries"]
    data["entries"][key]["answer"]["text"] = "tampered"
    path.write_text(json.dumps(data))
    with nl.replay("record", path=path):
        nl.complete("stored prompt", "offline:echo")
    with nl.replay("replay", path=path):
        assert nl.complete("stored prompt", "offline:echo").text == "stored prompt"


@pytest.mark.parametrize("path", sorted((ROOT / "cookbooks").glob("*.llm.json")),
                         ids=lambda p: p.name)
def test_the_shipped_replay_files_are_intact(path: Path) -> None:
    """Every entry of every cookbook's replay file passes its check (no hand edits or
    half-resolved merges), and its notebook exists."""
    from notebook_llm._replay import ReplayFile

    file = ReplayFile(path)
    keys = file.keys()
    assert keys and all(file.get(key) is not None for key in keys)
    assert path.with_name(path.name.replace(".llm.json", ".ipynb")).exists()


def test_a_path_is_needed_where_the_notebook_is_unknown() -> None:
    with pytest.raises(ValueError, match="path="):
        nl.replay("replay")


def test_the_environment_forces_the_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _recorded(tmp_path)
    monkeypatch.setenv("NOTEBOOK_LLM_REPLAY", "replay")
    monkeypatch.setenv("NOTEBOOK_LLM_REPLAY_FILE", str(path))
    with nl.replay("record"):  # the environment wins
        assert nl.replay().mode == "replay"
        assert nl.complete("stored prompt", "offline:echo").replay.replayed  # type: ignore[union-attr]


def test_two_processes_writing_one_file_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.llm.json"
    script = textwrap.dedent(f"""
        import sys, notebook_llm as nl
        nl.replay("record", path={str(path)!r})
        for i in range(25):
            nl.complete(f"writer {{sys.argv[1]}} prompt {{i}}", "offline:echo", log=False)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [subprocess.Popen([sys.executable, "-c", script, str(n)], env=env)
               for n in range(2)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    entries = json.loads(path.read_text())["entries"]
    assert len(entries) == 50
    with nl.replay("replay", path=path):
        for n in range(2):
            for i in range(25):
                text = nl.complete(f"writer {n} prompt {i}", "offline:echo", log=False).text
                assert text == f"writer {n} prompt {i}"


# -- in a kernel ------------------------------------------------------------------------

SETUP = """
%load_ext notebook_llm
import notebook_llm as nl
"""


def test_magics_record_replay_and_name_the_cell(kernel: KernelSession, tmp_path: Path) -> None:
    path = tmp_path / "kernel.llm.json"
    ok(kernel, "nl.default_client().aliases['m'] = 'offline:story'")
    ok(kernel, f"%llm_replay record {path}")
    ok(kernel, "%%llm -m m\nA tale of a teapot")
    recorded = value(kernel, "_llm.text")
    ok(kernel, "%llm_replay replay")
    done = ok(kernel, "%%llm -m m\nA tale of a teapot")
    assert "replayed · $0 now" in done.html and "replayed · $0 now" in done.text
    assert value(kernel, "[_llm.text, _llm.replay.replayed]") == [recorded, True]
    failed = kernel.execute("%%llm -m m\nA tale of a violin")
    assert failed.status == "error"
    message = strip_ansi(failed.text)
    assert "no stored answer" in message and "In [" in message and "A tale of a violin" in message
    # --live calls the model and refreshes the stored answer; a change is a drift.
    ok(kernel, "nl.default_client().aliases['m'] = 'offline:echo'")
    live = ok(kernel, "%%llm -m m --live\nA tale of a teapot")
    assert "differs from the stored answer" in live.html
    assert value(kernel, "[_llm.text, _llm.replay.drift]") == ["A tale of a teapot", True]
    shown = ok(kernel, "%llm_replay diff")
    assert "+A tale of a teapot" in shown.text
    assert value(kernel, f"_j.loads(open({str(path)!r}).read())['version']") == 1
    ok(kernel, "%llm_replay off")


def test_auto_is_the_default_in_a_notebook_with_a_replay_file(tmp_path: Path) -> None:
    """Jupyter tells the kernel the notebook's path ($JPY_SESSION_NAME, __session__)."""
    with nl.replay("record", path=tmp_path / "known.ipynb"):
        stored = nl.Client(aliases={"m": "offline:echo"}).complete("from the file", "m")
    session = KernelSession(env={"JPY_SESSION_NAME": str(tmp_path / "known.ipynb")},
                            cwd=str(tmp_path))
    try:
        ok(session, "%load_ext notebook_llm\nimport notebook_llm as nl\n"
                    "nl.default_client().aliases['m'] = 'offline:story'")
        ok(session, "%%llm -m m\nfrom the file")
        assert value(session, "[_llm.text, _llm.replay.replayed]") == [stored.text, True]
        assert value(session, "nl.replay().mode") == "auto"
        ok(session, "%%llm -m m\nsomething new")  # auto: sent, and stored
        assert value(session, "_llm.replay.replayed") is False
    finally:
        session.close()
    entries = json.loads((tmp_path / "known.llm.json").read_text())["entries"]
    assert len(entries) == 2
    other = KernelSession(env={"JPY_SESSION_NAME": str(tmp_path / "other.ipynb")})
    try:  # no replay file: nothing is replayed or written
        ok(other, "%load_ext notebook_llm\nimport notebook_llm as nl")
        ok(other, "%%llm -m offline:echo\nfrom the file")
        assert value(other, "[_llm.replay is None, nl.replay().mode]") == [True, "off"]
    finally:
        other.close()
    assert not (tmp_path / "other.llm.json").exists()


def _run(nb: nbformat.NotebookNode, cwd: Path) -> None:
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()


@pytest.mark.skipif(not MODEL.exists(), reason="the tiny GGUF model is not in ../shared/models")
def test_nbclient_records_a_local_model_then_replays_with_it_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run all records against local:; Run all again with the model gone replays it all."""
    cells = [
        "%load_ext notebook_llm\nimport os, notebook_llm as nl\n"
        "if os.path.exists(os.environ.get('TINY_MODEL', '')):\n"
        "    nl.local.register('tiny', os.environ['TINY_MODEL'])\n"
        "%llm_replay auto story.ipynb",
        "%%llm -m local:tiny -t 0 --max-tokens 24\nOnce upon a time",
        "%%chat -m local:tiny\nOnce upon a time there was a cat",
        "%%llm_expect -m local:tiny --from-cell -t 0 --max-tokens 24\nmax_tokens 24\n"
        "not contains \"sk-\"",
        "%%llm_compare -m local:tiny -m offline:echo\nOnce upon a time",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    monkeypatch.setenv("TINY_MODEL", str(MODEL))
    _run(nb, tmp_path)
    first = [cell.outputs for cell in nb.cells]
    assert (tmp_path / "story.llm.json").exists()

    again = nbformat.v4.new_notebook()
    again.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    monkeypatch.setenv("TINY_MODEL", str(tmp_path / "gone.gguf"))
    monkeypatch.setenv("NOTEBOOK_LLM_REPLAY", "replay")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # no network either
    _run(again, tmp_path)
    llm_first = _markdown(first[1])
    llm_again = _markdown(again.cells[1].outputs)
    assert llm_first and llm_first == llm_again
    assert "replayed" in json.dumps(again.cells[1].outputs)
    for cell in again.cells[2:]:  # %%chat, %%llm_expect and %%llm_compare replayed too
        assert "no stored answer" not in json.dumps(cell.outputs)
    assert "replayed" in json.dumps(again.cells[2].outputs)


def _markdown(outputs: list[Any]) -> str:
    """The answer's HTML (the first display of the cell)."""
    for output in outputs:
        data = output.get("data", {})
        if "text/html" in data and "<small" not in data["text/html"]:
            return str(data["text/html"])
    return ""


def test_the_replay_cookbook_passes_offline(tmp_path: Path) -> None:
    """As CI runs it: strict replay, no key, local:tiny hidden, no network, under nbval."""
    cookbooks = ROOT / "cookbooks"
    stored = (cookbooks / "08_replay.llm.json").read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({
        "NOTEBOOK_LLM_REPLAY": "replay", "NOTEBOOK_LLM_TINY_GGUF": str(tmp_path / "gone.gguf"),
        "NOTEBOOK_LLM_NO_PROMPT": "1", "NOTEBOOK_LLM_DB": str(tmp_path / "log.db"),
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
        "PYTHONPATH": str(ROOT),
    })
    command = [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p",
               "no:cacheprovider", "-q", "-o", "addopts=", "--rootdir", str(cookbooks),
               "08_replay.ipynb"]
    result = subprocess.run(command, cwd=cookbooks, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-6000:]
    assert (cookbooks / "08_replay.llm.json").read_bytes() == stored  # replay writes nothing
