"""Conversations kept in the call log: turns, restarts, forks, models, context strategies."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import notebook_llm as nl
from notebook_llm import errors
from notebook_llm._conversations import ContextWarning, Turn, select_conversation
from notebook_llm.store.log import call_log
from tests.support.replay import ReplayServer, Reply, load_fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def client(tmp_path: Path) -> nl.Client:
    return nl.Client("offline:echo", db_path=tmp_path / "log.db")


def rows(client: nl.Client, sql: str, params: tuple[object, ...] = ()) -> list[dict[str, object]]:
    log = call_log(client.db_path)
    log.flush()
    return log.store.execute(sql, params)


def test_conversation_turns_are_logged_with_id_and_position(client: nl.Client) -> None:
    conv = nl.chat(system="be brief", name="demo", client=client)
    assert conv.send("first question").text == "first question"
    assert "".join(c.text for c in conv.stream("second question")) == "second question"
    assert asyncio.run(conv.asend("third question")).text == "third question"

    async def streamed() -> str:
        return "".join([c.text async for c in conv.astream("fourth question")])

    assert asyncio.run(streamed()) == "fourth question"
    assert len(conv) == 4 and conv.model == "offline:echo"
    calls = rows(client, "SELECT conversation_id, conversation_position, messages_json, system"
                         " FROM calls ORDER BY created_at")
    assert [c["conversation_position"] for c in calls] == [0, 1, 2, 3]
    assert {c["conversation_id"] for c in calls} == {conv.id}
    assert {c["system"] for c in calls} == {"be brief"}
    # Each call sent the whole history before its question.
    assert len(json.loads(str(calls[3]["messages_json"]))) == 7
    saved = rows(client, "SELECT name, model, system FROM conversations WHERE id = ?", (conv.id,))
    assert saved == [{"name": "demo", "model": "offline:echo", "system": "be brief"}]


def test_conversation_rebuilt_from_the_log_continues(client: nl.Client) -> None:
    conv = nl.chat(name="restart me", client=client)
    conv.send("my name is Ada")
    conv.send("what is my name?")
    again = nl.conversation(conv.id, client=client)
    assert again is not conv
    assert again.messages == conv.messages and again.name == "restart me"
    assert nl.conversation("restart me", client=client).id == conv.id  # by name
    assert nl.conversation(conv.id[:16], client=client).id == conv.id  # by id prefix
    completion = again.send("and now?")
    assert completion.messages[:-1] == conv.messages  # the history went with it
    assert [t.position for t in nl.conversation(conv.id, client=client).turns] == [0, 1, 2]


def test_conversation_survives_a_new_process(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    first = nl.chat(client=nl.Client("offline:echo", db_path=db))
    first.send("remember the number 42")
    call_log(db).flush()
    code = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        import notebook_llm as nl
        conv = nl.conversation({first.id!r}, db_path={str(db)!r})
        done = conv.send("what was it?")
        print(len(conv), len(done.messages), conv.model)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "3", "offline:echo"]
    assert len(nl.conversation(first.id, db_path=db)) == 2


def test_failed_turn_is_not_kept_and_its_position_is_reused(client: nl.Client) -> None:
    conv = nl.chat(client=client)
    conv.send("one")
    with pytest.raises(errors.ProviderError):  # a turn that failed at the provider
        client.complete([*conv.messages, {"role": "user", "content": "two"}], fail="boom",
                        metadata={"conversation_id": conv.id, "conversation_position": 1})
    conv.send("two")
    again = nl.conversation(conv.id, client=client)
    assert [t.prompt for t in again.turns] == ["one", "two"]
    assert [t.position for t in again.turns] == [0, 1]


def test_fork_shares_turns_and_continues_on_its_own(client: nl.Client) -> None:
    conv = nl.chat(name="main", client=client)
    for text in ("a", "b", "c"):
        conv.send(text)
    fork = conv.fork(2)
    assert [t.prompt for t in fork.turns] == ["a", "b"] and fork.name == "main (fork)"
    fork.send("b2")
    assert [t.prompt for t in conv.turns] == ["a", "b", "c"]  # unchanged
    loaded = nl.conversation(fork.id, client=client)
    assert [t.prompt for t in loaded.turns] == ["a", "b", "b2"]
    assert loaded.parent_id == conv.id and loaded.forked_at == 2
    assert [t.prompt for t in conv.fork(-1).turns] == ["a", "b"]
    assert len(conv.fork()) == 3
    with pytest.raises(ValueError, match="has 3 turns"):
        conv.fork(4)


def test_switch_model_applies_from_the_next_turn_and_is_kept(client: nl.Client) -> None:
    conv = nl.chat("offline:echo", client=client)
    conv.send("hello")
    conv.switch_model("offline:story")
    conv.send("a fox")
    models = [r["model"] for r in rows(client, "SELECT model FROM calls ORDER BY created_at")]
    assert models == ["offline:echo", "offline:story"]
    assert nl.conversation(conv.id, client=client).model == "offline:story"
    with pytest.raises(errors.UnknownProviderError):
        conv.switch_model("nosuchprovider:x")


def test_truncate_leaves_out_the_oldest_turns_and_says_so(client: nl.Client) -> None:
    conv = nl.chat(client=client, context_window=400, strategy="truncate")
    with warnings.catch_warnings():  # the strategy may act already while filling
        warnings.simplefilter("ignore", ContextWarning)
        for i in range(6):
            conv.send(f"turn {i} " + "word " * 40)
    with pytest.warns(ContextWarning, match=r"left out the \d+ oldest turns?"):
        completion = conv.send("the last question", max_tokens=50)
    note = conv.notes[-1]
    assert note.strategy == "truncate" and note.context_window == 400
    assert note.tokens_before > note.tokens_after and note.turns >= 1
    sent = [m["content"] for m in completion.messages if m["role"] == "user"]
    assert "the last question" in sent and not any(s.startswith("turn 0 ") for s in sent)
    assert len(conv.turns) == 7  # the transcript keeps every turn
    assert str(note.tokens_before) in str(note).replace(",", "")


def test_summarise_replaces_the_oldest_turns_with_a_summary(client: nl.Client) -> None:
    conv = nl.chat(client=client, strategy="summarise", summary_model="offline:story")
    for i in range(6):  # no known context: nothing is managed
        conv.send(f"turn {i} " + "word " * 40)
    conv.context_window = 400
    with pytest.warns(ContextWarning, match="summarised the"):
        conv.send("the last question", max_tokens=50)
    note = conv.notes[-1]
    assert note.strategy == "summarise" and note.summary_model == "offline:story"
    assert note.tokens_after < note.tokens_before and conv.summary
    last = rows(client, "SELECT system, tags_json, conversation_position FROM calls"
                        " ORDER BY created_at")
    summary_call = [r for r in last if "conversation-summary" in str(r["tags_json"])]
    assert len(summary_call) == 1 and summary_call[0]["conversation_position"] is None
    assert "Summary of the earlier conversation" in str(last[-1]["system"])
    again = nl.conversation(conv.id, client=client)  # the summary is kept
    assert again.summary == conv.summary and again.summary_turns == conv.summary_turns
    assert len(again.turns) == 7  # the summary call is not a turn


def test_message_too_long_for_the_context_is_refused_before_sending(
    client: nl.Client,
) -> None:
    conv = nl.chat(client=client, context_window=200)
    with pytest.raises(errors.ContextLengthError, match="nothing was sent"):
        conv.send("word " * 400)
    assert rows(client, "SELECT COUNT(*) AS n FROM calls") == [{"n": 0}]


def test_known_context_window_comes_from_the_price_data(client: nl.Client) -> None:
    conv = nl.chat("openai:gpt-4o-mini", client=client)
    assert conv._window("openai:gpt-4o-mini") == 128_000
    assert nl.chat(client=client)._window("offline:echo") is None


def test_bad_input_is_refused_with_a_clear_error(client: nl.Client) -> None:
    with pytest.raises(ValueError, match="strategy must be"):
        nl.chat(strategy="forget", client=client)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="message is empty"):
        nl.chat(client=client).send("  ")
    with pytest.raises(KeyError, match="no conversation"):
        nl.conversation("nope", client=client)


def test_transcript_escapes_model_and_user_text(client: nl.Client) -> None:
    conv = nl.chat(name="<b>x</b>", client=client)
    conv.send("<script>alert(1)</script> [a](javascript:alert(1)) *b*")
    html = conv._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "href" not in html and "<em>b</em>" in html  # the answer's Markdown, sanitised
    assert "<b>x</b>" not in html
    markdown = conv._repr_markdown_()
    assert "<script>" not in markdown and "<b>" not in markdown
    assert "user: <script>" in repr(conv)


def test_conversations_frame(client: nl.Client) -> None:
    first = nl.chat(name="one", client=client)
    first.send("a")
    second = nl.chat("offline:story", name="two", client=client)
    second.send("b")
    second.send("c")
    df = nl.conversations(db_path=client.db_path)
    assert list(df.columns) == ["id", "name", "model", "turns", "calls", "input_tokens",
                                "output_tokens", "tokens", "cost_usd", "created", "last_used",
                                "parent_id"]
    assert list(df["name"]) == ["two", "one"]  # most recently used first
    assert list(df["turns"]) == [2, 1] and list(df["model"]) == ["offline:story", "offline:echo"]
    assert (df["tokens"] > 0).all() and list(df["cost_usd"]) == [0.0, 0.0]


def test_select_conversation_for_chat_cells(client: nl.Client) -> None:
    nl.set_default_client(client)
    try:
        open_chats: dict[str, nl.Conversation] = {}
        with pytest.raises(KeyError, match="no conversation in the log"):
            select_conversation(open_chats, "default", resume=True)
        conv = select_conversation(open_chats, "default")
        conv.send("hi")
        assert select_conversation(open_chats, "default") is conv
        assert select_conversation({}, "default", resume=True).id == conv.id
        assert select_conversation({}, "x", cid=conv.id).messages == conv.messages
        fresh = select_conversation(open_chats, "default", new=True)
        assert fresh.id != conv.id and open_chats["default"] is fresh
    finally:
        nl.set_default_client(None)


def test_logging_off_keeps_the_conversation_in_memory_only(tmp_path: Path) -> None:
    client = nl.Client("offline:echo", db_path=tmp_path / "log.db", log=False)
    conv = nl.chat(client=client)
    conv.send("secret")
    assert len(conv) == 1
    assert rows(client, "SELECT COUNT(*) AS n FROM conversations") == [{"n": 0}]


# -- tool calls, through real recorded traffic --------------------------------------------


def test_turn_with_tool_calls_keeps_calls_and_results(tmp_path: Path) -> None:
    def get_file() -> str:
        """Read the file."""
        return "file contents: 42"

    with ReplayServer() as server:
        server.enqueue(
            Reply.from_fixture(load_fixture("groq__chat_completions__fe1bc0479819")),
            Reply.from_fixture(load_fixture("cerebras__chat_completions__c9ced606f338")),
        )
        client = nl.Client("openai-compatible:m", db_path=tmp_path / "log.db",
                           api_keys={"openai-compatible": "test-key"},
                           api_bases={"openai-compatible": server.url + "/v1"})
        conv = nl.chat(client=client)
        completion = conv.send("What is in the file?", tools=[get_file])
        client.close()
    turn = conv.turns[0]
    assert [m["role"] for m in turn.to_messages()] == ["user", "assistant", "tool", "assistant"]
    assert turn.text == completion.text
    calls = rows(client, "SELECT conversation_position FROM calls")
    assert [c["conversation_position"] for c in calls] == [0, 0]  # two calls, one turn
    loaded = nl.conversation(conv.id, client=client)
    assert loaded.turns[0].to_messages() == turn.to_messages()
    text = repr(loaded)
    assert "tool call get_file" in text and "tool result: file contents: 42" in text
    # Where the log keeps tool results and timings (a later column), they are shown.
    conn = sqlite3.connect(tmp_path / "log.db")
    conn.execute("ALTER TABLE calls ADD COLUMN tool_results TEXT")
    conn.execute("UPDATE calls SET tool_results = ? WHERE tool_calls_json IS NOT NULL",
                 (json.dumps([{"name": "get_file", "result": "file contents: 42",
                               "seconds": 0.01}]),))
    conn.commit()
    conn.close()
    shown = nl.conversation(conv.id, client=client)
    assert shown.turns[0].tool_results == [[{"name": "get_file", "result": "file contents: 42",
                                            "seconds": 0.01}]]
    assert '"seconds": 0.01' in repr(shown)


def test_provider_context_error_with_an_unknown_window_truncates_and_retries(
    tmp_path: Path,
) -> None:
    # OpenAI's answer to a prompt over the context (its documented error body).
    too_long = Reply.from_json({"error": {
        "message": "This model's maximum context length is 8192 tokens.",
        "type": "invalid_request_error", "param": "messages",
        "code": "context_length_exceeded"}}, status=400)
    answer = Reply.from_fixture(load_fixture("cerebras__chat_completions__c9ced606f338"))
    with ReplayServer() as server:
        client = nl.Client("openai-compatible:m", db_path=tmp_path / "log.db",
                           api_keys={"openai-compatible": "test-key"},
                           api_bases={"openai-compatible": server.url + "/v1"})
        conv = nl.chat(client=client)
        conv.turns = [  # an earlier, long exchange
            Turn(position=i, messages=[{"role": "user", "content": f"old {i} " + "x " * 400}],
                 answer={"role": "assistant", "content": "y " * 400}) for i in range(4)]
        server.enqueue(too_long, answer)
        with pytest.warns(ContextWarning, match="left out"):
            completion = conv.send("the new question")
        sent = [request.json()["messages"] for request in server.requests]
        client.close()
    assert len(sent) == 2 and len(sent[1]) < len(sent[0])
    assert sent[1][-1] == {"role": "user", "content": "the new question"}
    assert conv.context_window is not None and conv.notes[-1].strategy == "truncate"
    assert conv.turns[-1].text == completion.text and len(conv.turns) == 5


def test_fork_before_any_turn_keeps_the_shared_turns_findable(client: nl.Client) -> None:
    conv = nl.chat(client=client)
    conv.turns = [Turn(position=0, messages=[{"role": "user", "content": "typed in"}],
                       answer={"role": "assistant", "content": "ok"})]
    fork = conv.fork()
    saved = rows(client, "SELECT id, parent_id FROM conversations ORDER BY created_at")
    assert {r["id"] for r in saved} == {conv.id, fork.id}
    assert nl.conversation(fork.id, client=client).parent_id == conv.id
