"""``timeout=`` bounds the whole call, on every transport, sync and async.

The server here never stalls long enough for a read timeout: it drips one
byte every 0.2 s (or one SSE event), so only a deadline on the whole call can
end it. Before the deadline existed a ``timeout=3`` call stayed alive for as
long as the server kept dripping, and the sync API never returned at all on
Python >= 3.11 (the library's TimeoutError was taken for the wait's own poll
timeout).
"""

from __future__ import annotations

import json
import time

import pytest

from notebook_llm import errors
from notebook_llm.core.client import CoreClient
from notebook_llm.core.retry import RetryPolicy
from tests.support.replay import Fault, ReplayServer, Reply

TIMEOUT = 1.0
SLACK = 0.5  # how late past the deadline the error may arrive
NO_RETRY = RetryPolicy(max_attempts=1)
OPENAI_TRANSPORTS = ["fast", "aiohttp", "sdk"]

CHAT = {
    "id": "chatcmpl-drip",
    "object": "chat.completion",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 400},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 100, "total_tokens": 101},
}  # fmt: skip
ANTHROPIC = {
    "id": "msg_drip",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "x" * 400}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 1, "output_tokens": 100},
}


def _sse_chat(n: int) -> Reply:
    events = "".join(
        "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "model": "m",
                               "choices": [{"index": 0, "delta": {"content": f"w{i} "}}]})
        + "\n\n"
        for i in range(n)
    ) + "data: [DONE]\n\n"  # fmt: skip
    return Reply(200, {"content-type": "text/event-stream"}, events, sse=True, chunk_delay=0.2)


@pytest.fixture(scope="module")
def server():
    with ReplayServer() as srv:
        yield srv


def openai_client(server: ReplayServer, transport: str, *, warm: bool = True) -> CoreClient:
    client = CoreClient(
        api_keys={"openai-compatible": "test-key"},
        api_bases={"openai-compatible": server.url + "/v1"},
        provider_settings={"openai-compatible": {"transport": transport}},
        retry=NO_RETRY,
        timeout=TIMEOUT,
    )
    # One answered call first, so importing the SDK and building its client
    # (a second or more on a busy machine) is not what the deadline measures.
    if warm:
        server.enqueue(Reply.from_json(CHAT))
        client.complete("warm up", model="openai-compatible:m", timeout=60)
    return client


async def awarm(server: ReplayServer, client: CoreClient) -> None:
    """The warm-up on the test's own loop, which gets its own provider."""
    server.enqueue(Reply.from_json(CHAT))
    await client.acomplete("warm up", model="openai-compatible:m", timeout=60)


def anthropic_client(server: ReplayServer) -> CoreClient:
    client = CoreClient(
        api_keys={"anthropic": "test-key"},
        api_bases={"anthropic": server.url},
        retry=NO_RETRY,
        timeout=TIMEOUT,
    )
    server.enqueue(Reply.from_json(ANTHROPIC))
    client.complete("warm up", model="anthropic:claude-haiku-4-5", timeout=60)
    return client


def _assert_bounded(started: float) -> None:
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + SLACK, f"the call took {elapsed:.2f}s with timeout={TIMEOUT}"


@pytest.mark.parametrize("transport", OPENAI_TRANSPORTS)
async def test_timeout_bounds_a_dripping_answer_async(server, transport):
    client = openai_client(server, transport, warm=False)
    await awarm(server, client)
    server.enqueue(Fault.drip(0.2, Reply.from_json(CHAT)))
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError) as info:
        await client.acomplete("hi", model="openai-compatible:m")
    _assert_bounded(started)
    assert "timeout=1s" in str(info.value)
    await client.aclose()


@pytest.mark.parametrize("transport", OPENAI_TRANSPORTS)
def test_timeout_bounds_a_dripping_answer_sync(server, transport):
    client = openai_client(server, transport)
    server.enqueue(Fault.drip(0.2, Reply.from_json(CHAT)))
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError):
        client.complete("hi", model="openai-compatible:m")
    _assert_bounded(started)
    client.close()


@pytest.mark.parametrize("transport", OPENAI_TRANSPORTS)
def test_timeout_bounds_a_dripping_stream_and_keeps_the_text(server, transport):
    client = openai_client(server, transport)
    server.enqueue(_sse_chat(100))
    stream = client.stream("hi", model="openai-compatible:m")
    seen = []
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError):
        for chunk in stream:
            seen.append(chunk.text)
    _assert_bounded(started)
    text = "".join(seen)
    assert text.startswith("w0 ")
    assert stream.completion is not None and stream.completion.text == text
    assert stream.completion.finish_reason == "error"
    client.close()


async def test_timeout_bounds_an_async_stream(server):
    client = openai_client(server, "fast", warm=False)
    await awarm(server, client)
    server.enqueue(_sse_chat(100))
    stream = client.astream("hi", model="openai-compatible:m")
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError):
        async for _ in stream:
            pass
    _assert_bounded(started)
    assert stream.completion is not None and stream.completion.text.startswith("w0 ")
    await client.aclose()


def test_timeout_bounds_anthropic(server):
    client = anthropic_client(server)
    server.enqueue(Fault.drip(0.2, Reply.from_json(ANTHROPIC)))
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError):
        client.complete("hi", model="anthropic:claude-haiku-4-5")
    _assert_bounded(started)
    client.close()


def test_timeout_bounds_slow_headers_in_sync_code(server):
    # No byte at all: the transports' own read timeout fires first. Its error is
    # the library's TimeoutError, and the sync wait must hand it over.
    client = openai_client(server, "fast")
    server.enqueue(Fault.slow_headers(TIMEOUT * 6, Reply.from_json(CHAT)))
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError):
        client.complete("hi", model="openai-compatible:m")
    _assert_bounded(started)
    client.close()


@pytest.mark.parametrize("transport", ["fast", "sdk"])
def test_timeout_bounds_embed_and_list_models_sync(server, transport):
    client = openai_client(server, transport)
    embedding = {"object": "list", "data": [{"index": 0, "embedding": [0.1] * 64}]}
    server.enqueue(Fault.drip(0.05, Reply.from_json(embedding)))
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError):
        client.embed(["a"], model="openai-compatible:e")
    _assert_bounded(started)
    models = {"object": "list",
              "data": [{"id": f"model-{i}", "object": "model"} for i in range(50)]}
    server.enqueue(Fault.drip(0.05, Reply.from_json(models)))
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError):
        client.list_models("openai-compatible")
    _assert_bounded(started)
    client.close()


def test_timeout_includes_retries(server):
    # Each attempt fails fast with a 500; the backoff alone would take longer than
    # the deadline, which ends the call during the wait.
    client = CoreClient(
        api_keys={"openai-compatible": "test-key"},
        api_bases={"openai-compatible": server.url + "/v1"},
        retry=RetryPolicy(max_attempts=4, initial_delay=5.0, jitter=0.0),
        timeout=TIMEOUT,
    )
    server.enqueue(*[Fault.status(500) for _ in range(4)])
    started = time.monotonic()
    with pytest.raises(errors.TimeoutError):
        client.complete("hi", model="openai-compatible:m")
    _assert_bounded(started)
    server.clear()
    client.close()
