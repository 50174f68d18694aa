"""Bad input and odd servers: refused before sending, mapped right, never run twice."""

from __future__ import annotations

import json
import os
import stat

import pytest
from pydantic import BaseModel

from notebook_llm import errors
from notebook_llm._client import Client
from notebook_llm.core.client import CoreClient
from notebook_llm.core.retry import RetryPolicy
from notebook_llm.store.db import connect
from notebook_llm.store.log import call_log
from tests.support.replay import Fault, ReplayServer, Reply

OPENAI_TRANSPORTS = ["fast", "aiohttp", "sdk"]
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)


_clients: list[CoreClient] = []


@pytest.fixture(scope="module")
def server():
    with ReplayServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _clients:
        _clients.pop().close()


def openai_client(server: ReplayServer, transport: str = "fast", **kwargs) -> CoreClient:
    return _keep(CoreClient(
        api_keys={"openai-compatible": kwargs.pop("key", "test-key-0001")},
        api_bases={"openai-compatible": server.url + "/v1"},
        provider_settings={"openai-compatible": {"transport": transport}},
        retry=kwargs.pop("retry", FAST_RETRY),
        **kwargs,
    ))


def _keep(client: CoreClient) -> CoreClient:
    _clients.append(client)
    return client


def chat(content: str | None, **message) -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message},
                     "finish_reason": "tool_calls" if message else "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
    }  # fmt: skip


def sse(*chunks: dict) -> Reply:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return Reply(200, {"content-type": "text/event-stream"}, body, sse=True)


def delta(content: str | None = None, finish: str | None = None, **fields) -> dict:
    payload = {"content": content, **fields} if content is not None else dict(fields)
    return {"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": payload, "finish_reason": finish}]}  # fmt: skip


# -- base URLs -----------------------------------------------------------------


@pytest.mark.parametrize("base", ["localhost:8080/v1", "127.0.0.1:11434", "/v1", "ftp://host/v1"])
def test_base_url_without_http_scheme_is_refused_before_sending(base):
    client = CoreClient(api_keys={"openai-compatible": "k" * 16},
                        api_bases={"openai-compatible": base})
    with pytest.raises(errors.InvalidRequestError) as info:
        client.complete("hi", model="openai-compatible:m")
    message = str(info.value)
    assert base in message and "http://" in message
    assert "k" * 16 not in message


def test_base_url_from_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("OLLAMA_BASE_URL", "localhost:11434/v1")
    with pytest.raises(errors.InvalidRequestError) as info:
        CoreClient().complete("hi", model="ollama:llama3.2")
    assert "OLLAMA_BASE_URL" in str(info.value)
    assert "http://localhost:11434/v1" in str(info.value)


def test_anthropic_base_url_without_scheme_is_refused():
    client = CoreClient(api_keys={"anthropic": "k" * 16}, api_bases={"anthropic": "api.example"})
    with pytest.raises(errors.InvalidRequestError):
        client.complete("hi", model="anthropic:claude-haiku-4-5")


# -- header injection ------------------------------------------------------------


@pytest.mark.parametrize("transport", OPENAI_TRANSPORTS)
@pytest.mark.parametrize("bad", ["key\r\nX-Injected: 1", "key\nX-Injected: 1", "key\x00x"])
def test_key_with_a_line_break_is_refused_on_every_transport(server, transport, bad):
    server.clear()
    client = openai_client(server, transport, key="sk-test" + bad)
    with pytest.raises(errors.InvalidRequestError) as info:
        client.complete("hi", model="openai-compatible:m")
    assert "line break" in str(info.value)
    assert server.requests == []  # nothing was sent


@pytest.mark.parametrize("transport", OPENAI_TRANSPORTS)
def test_extra_header_with_a_line_break_is_refused_on_every_transport(server, transport):
    server.clear()
    client = openai_client(server, transport)
    for headers in ({"X-Trace": "a\r\nX-Injected: 1"}, {"Bad Name": "v"}):
        with pytest.raises(errors.InvalidRequestError) as info:
            client.complete("hi", model="openai-compatible:m", extra_headers=headers)
        assert "extra_headers" in str(info.value)
        with pytest.raises(errors.InvalidRequestError):
            client.stream("hi", model="openai-compatible:m", extra_headers=headers).collect()
    assert server.requests == []


def test_anthropic_extra_header_with_a_line_break_is_refused(server):
    server.clear()
    client = _keep(CoreClient(api_keys={"anthropic": "k" * 16},
                              api_bases={"anthropic": server.url}))
    with pytest.raises(errors.InvalidRequestError):
        client.complete("hi", model="anthropic:claude-haiku-4-5",
                        extra_headers={"X-Trace": "a\nb"})
    assert server.requests == []


def test_key_whitespace_around_is_dropped(server):
    server.clear()
    server.enqueue(Reply.from_json(chat("ok")))
    client = openai_client(server, key="  test-key-0002\n")
    assert client.complete("hi", model="openai-compatible:m").text == "ok"
    assert server.requests[-1].headers["authorization"] == "Bearer test-key-0002"


# -- error mapping -----------------------------------------------------------------


def test_http_501_is_unsupported_and_not_retried(server):
    server.clear()
    server.enqueue(*[Fault.status(501, message="This server does not support embeddings. "
                                               "Start it with `--embeddings`")] * 3)
    client = openai_client(server)
    with pytest.raises(errors.UnsupportedError) as info:
        client.complete("hi", model="openai-compatible:m")
    assert info.value.status_code == 501
    assert len(server.requests) == 1
    server.clear()


def test_llama_server_context_size_error_is_a_context_length_error(server):
    # llama.cpp's llama-server, as it answers a prompt longer than --ctx-size.
    body = {"error": {"code": 400, "message": "the request exceeds the available context size, "
                      "try increasing it", "type": "exceed_context_size_error",
                      "n_prompt_tokens": 5000, "n_ctx": 4096}}  # fmt: skip
    for transport in OPENAI_TRANSPORTS:
        server.enqueue(Fault.status(400, body=body))
        with pytest.raises(errors.ContextLengthError):
            openai_client(server, transport).complete("hi", model="openai-compatible:m")


@pytest.mark.parametrize("transport", OPENAI_TRANSPORTS)
def test_function_call_beside_tool_calls_is_not_a_second_call(server, transport):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}  # fmt: skip
    legacy = {"name": "add", "arguments": '{"a": 1, "b": 2}'}
    server.enqueue(Reply.from_json(chat(None, tool_calls=[call], function_call=legacy)))
    completion = openai_client(server, transport).complete("1+2?", model="openai-compatible:m")
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("add", {"a": 1, "b": 2})]
    server.enqueue(sse(
        delta(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "add", "arguments": ""}}]),
        delta(function_call={"name": "add", "arguments": ""}),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"a": 1, "b": 2}'}}]),
        delta(function_call={"arguments": '{"a": 1, "b": 2}'}),
        delta(finish="tool_calls"),
    ))  # fmt: skip
    stream = openai_client(server, transport).stream("1+2?", model="openai-compatible:m")
    streamed = stream.collect()
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [("add", {"a": 1, "b": 2})]


def test_function_call_alone_is_still_a_tool_call(server):
    legacy = {"name": "add", "arguments": '{"a": 1}'}
    server.enqueue(Reply.from_json(chat(None, function_call=legacy)))
    completion = openai_client(server).complete("1?", model="openai-compatible:m")
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("add", {"a": 1})]
    server.enqueue(sse(delta(function_call={"name": "add", "arguments": '{"a": 1}'}),
                       delta(finish="function_call")))
    streamed = openai_client(server).stream("1?", model="openai-compatible:m").collect()
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [("add", {"a": 1})]


# -- structured output that fails validation --------------------------------------


class City(BaseModel):
    name: str
    population: int


@pytest.mark.parametrize("transport", OPENAI_TRANSPORTS)
def test_invalid_structured_answer_raises_the_same_when_streamed(server, transport, tmp_path):
    text = '{"name": "Paris", "population": "lots"}'
    client = _keep(Client(
        api_keys={"openai-compatible": "test-key-0001"},
        api_bases={"openai-compatible": server.url + "/v1"},
        provider_settings={"openai-compatible": {"transport": transport}},
        retry=FAST_RETRY, db_path=tmp_path / "log.db",
    ))
    server.enqueue(Reply.from_json(chat(text)))
    with pytest.raises(errors.ProviderError) as completed:
        client.complete("city?", model="openai-compatible:m", response_format=City)
    server.enqueue(sse(delta(text[:20]), delta(text[20:]), delta(finish="stop")))
    stream = client.stream("city?", model="openai-compatible:m", response_format=City)
    with pytest.raises(errors.ProviderError) as streamed:
        for _ in stream:
            pass
    assert type(streamed.value) is type(completed.value)
    assert "not valid for the requested format" in str(streamed.value)
    # What was paid for is kept: on the error, on the stream, and in the log.
    assert completed.value.completion is not None and completed.value.completion.text == text
    assert stream.completion is not None and stream.completion.text == text
    assert call_log(tmp_path / "log.db").flush()
    rows = call_log(tmp_path / "log.db").query()
    assert [row["response_text"] for row in rows] == [text, text]
    assert all(row["error_class"] == "ProviderError" for row in rows)
    assert all(row["output_tokens"] == 5 for row in rows[:1])


def test_stopped_structured_stream_is_not_held_to_the_format(server):
    server.enqueue(Reply(200, {"content-type": "text/event-stream"},
                         "".join(f"data: {json.dumps(delta('{x' * 5))}\n\n" for _ in range(50)),
                         sse=True, chunk_delay=0.05))  # fmt: skip
    stream = openai_client(server).stream("city?", model="openai-compatible:m",
                                          response_format=City)
    for _ in stream:
        stream.cancel()
    assert stream.completion is not None and stream.completion.finish_reason == "cancelled"


# -- the store's files ---------------------------------------------------------------


def test_database_files_are_private(tmp_path):
    path = tmp_path / "new" / "dir" / "log.db"
    conn = connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    for name in ("log.db", "log.db-wal", "log.db-shm"):
        assert stat.S_IMODE(os.stat(path.parent / name).st_mode) == 0o600, name
    conn.close()


def test_existing_database_is_made_private(tmp_path):
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "old.db"
    connect(path).close()
    os.chmod(path, 0o644)
    connect(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # A directory the user chose (not the library's own) keeps its mode.
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o755


# -- a stopped stream still counts what it cost ----------------------------------------


def test_stopped_stream_logs_estimated_tokens_and_cost(server, tmp_path):
    words = [f"word{i} " for i in range(200)]
    server.enqueue(Reply(200, {"content-type": "text/event-stream"},
                         "".join(f"data: {json.dumps(delta(w))}\n\n" for w in words),
                         sse=True, chunk_delay=0.01))  # fmt: skip
    client = _keep(Client(
        api_keys={"openai": "test-key-0003"}, api_bases={"openai": server.url + "/v1"},
        retry=FAST_RETRY, db_path=tmp_path / "log.db",
    ))
    stream = client.stream("Tell me everything about tea.", model="openai:gpt-4o-mini")
    for i, _ in enumerate(stream):
        if i == 20:
            stream.cancel()
    completion = stream.completion
    assert completion is not None and completion.finish_reason == "cancelled"
    usage = completion.usage
    assert usage.estimated and usage.output_tokens >= 20 and usage.input_tokens > 0
    assert completion.cost_usd is not None and completion.cost_usd > 0
    assert "~" in completion.footer()
    assert call_log(tmp_path / "log.db").flush()
    [row] = call_log(tmp_path / "log.db").query()
    assert row["finish_reason"] == "cancelled"
    assert row["output_tokens"] == usage.output_tokens > 0
    assert row["cost_usd"] == pytest.approx(completion.cost_usd)


def test_reported_usage_is_never_replaced_by_an_estimate(server):
    server.enqueue(sse(delta("hello"), delta(finish="stop"),
                       {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 1}}))  # fmt: skip
    completion = openai_client(server).stream("hi", model="openai-compatible:m").collect()
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (7, 1)
    assert not completion.usage.estimated
