"""One ledger: official openai/anthropic SDK clients, created by the test (not the
library), called sync, async and streaming against recorded traffic replayed over
loopback, land in the call log and trackers with the recorded tokens and cost.

Expected tokens are read straight from the recorded payloads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

import notebook_llm as nl
from notebook_llm import errors, pricing
from notebook_llm._client import Client
from notebook_llm.core.types import Usage
from notebook_llm.store.log import call_log
from tests.support.replay import Fault, ReplayServer, Reply, load_fixture, split_sse

OPENAI_JSON = load_fixture("openai__chat_completions__34647967f568")
OPENAI_SSE = load_fixture("openai__chat_completions__0fa57f3c0da8")  # include_usage
ANTHROPIC_JSON = load_fixture("anthropic__messages__38e4ca6b3a7d")
ANTHROPIC_SSE = load_fixture("anthropic__messages__03f16280e29c")


def openai_usage(fx) -> dict:
    if fx.streaming:
        events = [json.loads(e.split("data:", 1)[1]) for e in split_sse(fx.response_body)
                  if "data:" in e and "[DONE]" not in e]
        return next(e["usage"] for e in events if e.get("usage"))
    return json.loads(fx.response_body)["usage"]


def openai_tokens(fx) -> tuple[int, int]:
    usage = openai_usage(fx)
    return usage["prompt_tokens"], usage["completion_tokens"]


def openai_cost(fx) -> float | None:
    usage = openai_usage(fx)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    cost, _status = pricing.price("openai", fx.request_json["model"], Usage(
        input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"],
        cached_input_tokens=cached))
    return cost


def anthropic_usage(fx) -> Usage:
    if fx.streaming:
        events = [json.loads(line[5:]) for e in split_sse(fx.response_body)
                  for line in e.splitlines() if line.startswith("data:")]
        start = next(e for e in events if e["type"] == "message_start")["message"]["usage"]
        delta = [e for e in events if e["type"] == "message_delta"][-1]["usage"]
        usage = {**start, **delta}
    else:
        usage = json.loads(fx.response_body)["usage"]
    read = usage.get("cache_read_input_tokens") or 0
    write = usage.get("cache_creation_input_tokens") or 0
    return Usage(input_tokens=usage["input_tokens"] + read + write,
                 output_tokens=usage["output_tokens"], cached_input_tokens=read,
                 cache_write_tokens=write)


def anthropic_tokens(fx) -> tuple[int, int]:
    usage = anthropic_usage(fx)
    return usage.input_tokens, usage.output_tokens


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "log.db"
    yield path
    nl.capture(False)


def logged(db: Path):
    call_log(db).flush()
    return nl.usage(db_path=db)


def openai_sdk(server: ReplayServer, cls=openai.OpenAI, **kwargs):
    return cls(api_key="sk-test-capture-000000", base_url=server.url + "/v1", **kwargs)


def anthropic_sdk(server: ReplayServer, cls=anthropic.Anthropic, **kwargs):
    return cls(api_key="sk-ant-test-capture-0000", base_url=server.url, **kwargs)


def args_of(fx) -> dict:
    body = fx.request_json
    keep = ("model", "messages", "max_tokens", "stream", "stream_options", "system")
    return {k: body[k] for k in keep if body.get(k) is not None}


def test_openai_sync_whole_and_streamed_land_in_the_log(server: ReplayServer, db: Path) -> None:
    made_before = openai_sdk(server)  # a client built before capture was on
    server.enqueue(Reply.from_fixture(OPENAI_JSON), Reply.from_fixture(OPENAI_SSE))
    with nl.capture(db_path=db), nl.track() as tracker:
        whole = made_before.chat.completions.create(**args_of(OPENAI_JSON))
        streamed = openai_sdk(server).chat.completions.create(**args_of(OPENAI_SSE))
        texts = [c.choices[0].delta.content for c in streamed if c.choices]
    assert whole.choices[0].message.content == (
        json.loads(OPENAI_JSON.response_body)["choices"][0]["message"]["content"])
    assert "".join(t or "" for t in texts)  # the stream reached the caller whole
    frame = logged(db)
    assert len(frame) == 2 and tracker.calls == 2
    for (_, row), fx in zip(frame.iterrows(), (OPENAI_JSON, OPENAI_SSE), strict=True):
        tokens = openai_tokens(fx)
        model = fx.request_json["model"]
        assert row["model"] == f"openai:{model}"
        assert (row["input_tokens"], row["output_tokens"]) == tokens
        assert row["cost_usd"] == pytest.approx(openai_cost(fx))
        assert "captured" in row["tags"] and row["latency_s"] > 0
    assert tracker.cost_usd == pytest.approx(frame["cost_usd"].sum())


def test_anthropic_sync_and_async_streams(server: ReplayServer, db: Path) -> None:
    server.enqueue(Reply.from_fixture(ANTHROPIC_JSON), Reply.from_fixture(ANTHROPIC_SSE))

    async def stream_async() -> str:
        client = anthropic_sdk(server, anthropic.AsyncAnthropic)
        parts = []
        async with client.messages.stream(**{k: v for k, v in args_of(ANTHROPIC_SSE).items()
                                             if k != "stream"}) as stream:
            async for text in stream.text_stream:
                parts.append(text)
        await client.close()
        return "".join(parts)

    with nl.track(capture=True) as tracker:
        message = anthropic_sdk(server).messages.create(**args_of(ANTHROPIC_JSON))
        streamed = asyncio.run(stream_async())
    assert message.usage.output_tokens == anthropic_tokens(ANTHROPIC_JSON)[1]
    assert streamed
    assert tracker.calls == 2
    records = tracker.records
    for record, fx in zip(records, (ANTHROPIC_JSON, ANTHROPIC_SSE), strict=True):
        tokens = anthropic_tokens(fx)
        assert (record["input_tokens"], record["output_tokens"]) == tokens
        cost, _status = pricing.price("anthropic", fx.request_json["model"], anthropic_usage(fx))
        assert record["cost_usd"] == pytest.approx(cost)
        assert "sdk:anthropic" in record["tags"]


def test_openai_async_whole_and_streamed(server: ReplayServer, db: Path) -> None:
    server.enqueue(Reply.from_fixture(OPENAI_JSON), Reply.from_fixture(OPENAI_SSE))

    async def run() -> None:
        client = openai_sdk(server, openai.AsyncOpenAI)
        await client.chat.completions.create(**args_of(OPENAI_JSON))
        stream = await client.chat.completions.create(**args_of(OPENAI_SSE))
        async for _chunk in stream:
            pass
        await client.close()

    with nl.capture(db_path=db):
        asyncio.run(run())
    frame = logged(db)
    assert [(r["input_tokens"], r["output_tokens"]) for _, r in frame.iterrows()] == [
        openai_tokens(OPENAI_JSON), openai_tokens(OPENAI_SSE)]
    assert frame["ttft_s"].iloc[1] is not None


def test_capture_does_not_change_what_the_sdk_returns(server: ReplayServer, db: Path) -> None:
    client = openai_sdk(server)
    server.enqueue(Reply.from_fixture(OPENAI_JSON), Reply.from_fixture(OPENAI_JSON))
    plain = client.chat.completions.create(**args_of(OPENAI_JSON)).model_dump()
    with nl.capture(db_path=db):
        captured = client.chat.completions.create(**args_of(OPENAI_JSON)).model_dump()
    assert captured == plain


def test_retries_still_work_and_each_attempt_is_logged(server: ReplayServer, db: Path) -> None:
    server.enqueue(Fault.status(500), Reply.from_fixture(OPENAI_JSON))
    client = openai_sdk(server, max_retries=2)
    with nl.capture(db_path=db):
        result = client.chat.completions.create(**args_of(OPENAI_JSON))
    assert result.usage.prompt_tokens == openai_tokens(OPENAI_JSON)[0]
    assert len(server.requests) == 2
    frame = logged(db)
    assert frame["error_class"].tolist()[0] is not None
    assert frame["finish_reason"].tolist() == ["error", "stop"]


def test_a_budget_refuses_before_sending_with_the_figures(server: ReplayServer, db: Path) -> None:
    client = openai_sdk(server)
    with nl.track(budget_usd=0.0001, capture=True), pytest.raises(
        errors.BudgetExceededError
    ) as info:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Write a long essay."}],
            max_tokens=4000,
        )
    assert server.requests == []
    message = str(info.value)
    assert "Not sent" in message and "$0.0001" in message
    assert info.value.budget_usd == 0.0001


def test_stopping_restores_the_sdk_and_stops_recording(server: ReplayServer, db: Path) -> None:
    client = openai_sdk(server)
    transport = client._client._transport
    with nl.capture(db_path=db):
        server.enqueue(Reply.from_fixture(OPENAI_JSON))
        client.chat.completions.create(**args_of(OPENAI_JSON))
        assert "request" in vars(openai.OpenAI) and "request" in vars(anthropic.AsyncAnthropic)
    assert "request" not in vars(openai.OpenAI) and "request" not in vars(anthropic.Anthropic)
    assert client._client._transport is transport
    server.enqueue(Reply.from_fixture(OPENAI_JSON))
    client.chat.completions.create(**args_of(OPENAI_JSON))
    assert len(logged(db)) == 1
    # outside a track(capture=True) block nothing is recorded either
    with nl.track(capture=True):
        pass
    server.enqueue(Reply.from_fixture(OPENAI_JSON))
    client.chat.completions.create(**args_of(OPENAI_JSON))
    assert len(logged(db)) == 1


def test_the_librarys_own_sdk_client_is_not_captured_twice(
    server: ReplayServer, db: Path
) -> None:
    server.enqueue(Reply.from_fixture(ANTHROPIC_JSON))
    client = Client(api_keys={"anthropic": "sk-ant-test-own-00000"},
                    api_bases={"anthropic": server.url}, db_path=db)
    try:
        with nl.capture(db_path=db):
            client.complete("hi", model="anthropic:" + ANTHROPIC_JSON.request_json["model"],
                            max_tokens=50)
    finally:
        client.close()
    frame = logged(db)
    assert len(frame) == 1 and "captured" not in frame["tags"].iloc[0]


def test_responses_api_embeddings_and_an_error_status(server: ReplayServer, db: Path) -> None:
    whole = load_fixture("openai__responses__5d8722ea358c")
    streamed = load_fixture("openai__responses__ffafedcfc50f")
    embedded = load_fixture("openai__embeddings__f1d2e569a3d2")
    missing = load_fixture("openai__embeddings__51b3fb35ebed")  # a recorded 404
    server.enqueue(*(Reply.from_fixture(fx) for fx in (whole, streamed, embedded, missing)))
    client = openai_sdk(server, max_retries=0)
    with nl.capture(db_path=db):
        client.responses.create(model=whole.request_json["model"],
                                input=whole.request_json["input"])
        for _event in client.responses.create(model=streamed.request_json["model"],
                                              input=streamed.request_json["input"],
                                              stream=True):
            pass
        client.embeddings.create(model=embedded.request_json["model"],
                                 input=embedded.request_json["input"])
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="nonexistent", input=["x"])
    frame = logged(db)
    done = json.loads(whole.response_body)["usage"]
    events = [json.loads(line[5:]) for e in split_sse(streamed.response_body)
              for line in e.splitlines() if line.startswith("data:")]
    final = next(e for e in events if e.get("type") == "response.completed")["response"]["usage"]
    embedding = json.loads(embedded.response_body)["usage"]
    assert [(r["input_tokens"], r["output_tokens"]) for _, r in frame.iloc[:3].iterrows()] == [
        (done["input_tokens"], done["output_tokens"]),
        (final["input_tokens"], final["output_tokens"]),
        (embedding["prompt_tokens"], 0)]
    assert frame["error_class"].iloc[3] == "ModelNotFoundError"
    assert frame["model"].tolist()[2:] == ["openai:text-embedding-3-small", "openai:nonexistent"]


def test_a_stream_without_usage_is_estimated_and_says_so(server: ReplayServer, db: Path) -> None:
    fx = load_fixture("openai__chat_completions__05ca9ac589d2")  # no include_usage
    server.enqueue(Reply.from_fixture(fx))
    with nl.capture(db_path=db):
        for _chunk in openai_sdk(server).chat.completions.create(**args_of(fx)):
            pass
    text = "".join(
        (choice.get("delta") or {}).get("content") or ""
        for e in split_sse(fx.response_body) if "data:" in e and "[DONE]" not in e
        for choice in json.loads(e.split("data:", 1)[1])["choices"]
    )
    row = logged(db).iloc[0]
    assert "estimated-usage" in row["tags"]
    assert row["output_tokens"] == -(-len(text) // 4) and row["response"] == text
