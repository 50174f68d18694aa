"""Recorded OpenAI traffic beyond chat completions, replayed over loopback HTTP.

Covers every fixture in ../shared/fixtures/recorded that ``test_protocol_openai``
(chat completions, embeddings) and ``test_protocol_anthropic`` (messages,
count_tokens) do not:

- ``*__responses__*`` (OpenAI, DeepSeek, OpenRouter): the Responses API through
  ``OpenAIProvider`` with ``api="responses"``, on all three transports.
- ``*__completions_legacy__*`` (OpenAI, Azure, vLLM): ``api="completions"``.
- ``openai__models__*``: ``OpenAIProvider.retrieve_model``.
- ``openai__responses_input_tokens__*``: ``OpenAIProvider.count_tokens``.
- ``openai__responses_compact__*``, ``openai__files__*``, ``anthropic__files__*``,
  ``openai__moderations__*``: notebook_llm has NO compaction, files or
  moderations API of its own (batch mode uploads files through the official SDK,
  in ``notebook_llm/batches/_provider.py``). Those fixtures are replayed through
  the official SDKs directly, to show the recorded payloads parse, and so that
  no recorded fixture goes unaccounted for.

What each test expects is computed here from the recorded payload, independently
of the parsers under test. ``test_every_fixture_is_covered`` fails when a new
fixture appears that no ``tests/test_protocol_*.py`` module replays.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from notebook_llm import errors
from notebook_llm.core.client import CoreClient
from notebook_llm.core.registry import get_spec
from notebook_llm.core.retry import RetryPolicy
from notebook_llm.core.types import Request, Tool
from notebook_llm.providers._responses import (
    ResponsePendingError,
    ResponsesStreamParser,
    parse_output,
    parse_response,
    responses_body,
)
from notebook_llm.providers.openai import OpenAIProvider, completion_prompt, completions_body
from tests.support.replay import Fault, Fixture, ReplayServer, Reply, load_fixture, load_fixtures

TRANSPORTS = ["fast", "aiohttp", "sdk"]
NO_RETRY = RetryPolicy(max_attempts=1)
MODEL_PREFIX = "openai-compatible:"

ALL = load_fixtures()
RESPONSES = [fx for fx in ALL if fx.endpoint_kind == "responses" and fx.method == "POST"]
RESPONSE_RETRIEVALS = [fx for fx in ALL if fx.endpoint_kind == "responses" and fx.method == "GET"]
LEGACY = [fx for fx in ALL if fx.endpoint_kind == "completions_legacy"]
MODELS = [fx for fx in ALL if fx.endpoint_kind == "models"]
INPUT_TOKENS = [fx for fx in ALL if fx.endpoint_kind == "responses_input_tokens"]
COMPACT = [fx for fx in ALL if fx.endpoint_kind == "responses_compact"]
FILES = [fx for fx in ALL if fx.endpoint_kind == "files"]
MODERATIONS = [fx for fx in ALL if fx.endpoint_kind == "moderations"]

COVERED_FIXTURES = sorted(
    fx.name
    for group in (
        RESPONSES,
        RESPONSE_RETRIEVALS,
        LEGACY,
        MODELS,
        INPUT_TOKENS,
        COMPACT,
        FILES,
        MODERATIONS,
    )
    for fx in group
)
"""The fixtures this module replays (read by ``test_every_fixture_is_covered``)."""

STATUS_ERRORS = {
    400: errors.InvalidRequestError,
    401: errors.AuthenticationError,
    404: errors.ModelNotFoundError,
    429: errors.RateLimitError,
}


@pytest.fixture(scope="module")
def server():
    with ReplayServer() as srv:
        yield srv


def make_client(server: ReplayServer, transport: str, **settings: Any) -> CoreClient:
    return CoreClient(
        api_keys={"openai-compatible": "test-key"},
        api_bases={"openai-compatible": server.url + "/v1"},
        provider_settings={"openai-compatible": {"transport": transport, **settings}},
        retry=NO_RETRY,
    )


def make_provider(server: ReplayServer, transport: str) -> OpenAIProvider:
    return OpenAIProvider(
        get_spec("openai-compatible").info,
        api_key="test-key",
        api_base=server.url + "/v1",
        transport=transport,
    )


def ids(fx: Fixture) -> str:
    return fx.name


# -- expectations, computed from the recorded payloads --------------------------------


def sse_payloads(body: str) -> list[dict]:
    """Every JSON ``data:`` payload of a recorded event stream, in order."""
    payloads = []
    for block in body.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                payloads.append(json.loads(line[5:]))
    return payloads


def expected_from_response(resp: dict) -> dict:
    """What a finished Responses ``response`` object says, by the documented rules."""
    output = resp.get("output") or []
    text = "".join(
        part["text"]
        for item in output
        if item.get("type") == "message"
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    )
    reasoning_parts: list[str] = []
    for item in output:
        if item.get("type") != "reasoning":
            continue
        summary = [p["text"] for p in item.get("summary") or [] if p.get("text")]
        content = [
            p["text"]
            for p in item.get("content") or []
            if p.get("type") == "reasoning_text" and p.get("text")
        ]
        reasoning_parts.extend(summary or content)
    calls = [
        (item["name"], json.loads(item["arguments"] or "{}"), item["call_id"])
        for item in output
        if item.get("type") == "function_call"
    ]
    status = resp.get("status")
    if status == "incomplete":
        reason = (resp.get("incomplete_details") or {}).get("reason")
        finish = "content_filter" if reason == "content_filter" else "length"
    else:
        finish = "tool_calls" if calls else "stop"
    usage = resp.get("usage") or {}
    return {
        "text": text,
        "reasoning": "\n\n".join(reasoning_parts) or None,
        "calls": calls,
        "finish": finish,
        "input": usage.get("input_tokens", 0),
        "output": usage.get("output_tokens", 0),
        "cached": (usage.get("input_tokens_details") or {}).get("cached_tokens", 0),
        "reasoning_tokens": (usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0),
        "id": resp.get("id"),
    }


def expected_from_stream(body: str) -> dict:
    """Expectations from the terminal event's response, plus the raw delta texts."""
    events = sse_payloads(body)
    final = next(
        e["response"] for e in reversed(events)
        if e.get("type") in ("response.completed", "response.incomplete")
    )  # fmt: skip
    expected = expected_from_response(final)
    expected["text_deltas"] = "".join(
        e["delta"] for e in events if e.get("type") == "response.output_text.delta"
    )
    expected["argument_deltas"] = "".join(
        e["delta"] for e in events if e.get("type") == "response.function_call_arguments.delta"
    )
    return expected


def function_tools(body: dict) -> list[dict]:
    """The recorded request's function tools, as the four fields notebook_llm sends."""
    return [
        {key: tool[key] for key in ("type", "name", "description", "parameters") if key in tool}
        for tool in body.get("tools") or []
        if tool.get("type") == "function"
    ]


def responses_call(fx: Fixture) -> tuple[str, list[dict], dict]:
    """Model, messages and keyword arguments that re-create the recorded request."""
    body = fx.request_json or {}
    model = MODEL_PREFIX + str(body.get("model") or "gpt-4.1")
    recorded = body.get("input")
    if isinstance(recorded, str):
        messages = [{"role": "user", "content": recorded}]
    elif isinstance(recorded, list) and recorded:
        messages = recorded  # chat-like role messages and raw Responses items pass through
    else:
        messages = [{"role": "user", "content": "hi"}]
    kwargs: dict[str, Any] = {
        key: body[key]
        for key in ("include", "reasoning", "text", "tool_choice", "prompt", "previous_response_id")
        if key in body
    }
    # ``tools=`` takes function tools; built-in ones (code_interpreter, ...) have no
    # notebook_llm form, and what comes back from them is skipped anyway.
    functions = function_tools(body)
    if functions:
        kwargs["tools"] = functions
    if body.get("instructions"):
        kwargs["system"] = body["instructions"]
    if "temperature" in body:
        kwargs["temperature"] = body["temperature"]
    return model, messages, kwargs


# -- the Responses API --------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fx", RESPONSES, ids=ids)
async def test_responses_fixture_replays(server: ReplayServer, fx: Fixture, transport: str) -> None:
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    client = make_client(server, transport)
    model, messages, kwargs = responses_call(fx)
    streaming = fx.streaming or bool((fx.request_json or {}).get("stream"))
    try:
        if fx.status >= 400:
            with pytest.raises(errors.LLMError) as caught:
                if streaming:
                    await client.astream(messages, model, api="responses", **kwargs).collect()
                else:
                    await client.acomplete(messages, model, api="responses", **kwargs)
            assert type(caught.value) is STATUS_ERRORS[fx.status]
            assert caught.value.status_code == fx.status
            message = json.loads(fx.response_body)["error"]["message"]
            assert message[:40] in str(caught.value)
            return
        if streaming:
            expected = expected_from_stream(fx.response_body)
            completion = await client.astream(messages, model, api="responses", **kwargs).collect()
            assert completion.text == expected["text_deltas"] or not expected["text_deltas"]
            assert completion.ttft_s is not None
        else:
            expected = expected_from_response(json.loads(fx.response_body))
            completion = await client.acomplete(messages, model, api="responses", **kwargs)
        assert completion.text == expected["text"]
        assert completion.reasoning == expected["reasoning"]
        assert [(c.name, c.arguments, c.id) for c in completion.tool_calls] == expected["calls"]
        assert completion.finish_reason == expected["finish"]
        if expected["input"] or expected["output"]:
            assert completion.usage.input_tokens == expected["input"]
            assert completion.usage.output_tokens == expected["output"]
            assert not completion.usage.estimated
        elif completion.text or completion.reasoning:
            # The server sent no usage: what arrived is counted, marked estimated.
            assert completion.usage.estimated and completion.usage.output_tokens > 0
        assert completion.usage.cached_input_tokens == expected["cached"]
        assert completion.usage.reasoning_tokens == expected["reasoning_tokens"]
        assert completion.id == expected["id"]
        assert completion.provider == "openai-compatible"
    finally:
        await client.aclose()
    # What went out: the Responses endpoint, with the recorded fields passed through.
    (sent,) = server.requests
    assert sent.method == "POST" and sent.path == "/v1/responses"
    body = sent.json()
    recorded = fx.request_json or {}
    assert "api" not in body
    assert body["model"] == recorded.get("model", "gpt-4.1")
    assert body.get("stream", False) is streaming
    for key in ("include", "reasoning", "text", "tool_choice", "prompt", "instructions"):
        if key in recorded:
            assert body[key] == recorded[key], key
    assert function_tools(body) == function_tools(recorded)
    if isinstance(recorded.get("input"), list):
        assert body["input"] == recorded["input"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_responses_api_as_a_provider_setting(server: ReplayServer, transport: str) -> None:
    """``provider_settings={"openai": {"api": "responses"}}`` makes every call use it."""
    fx = load_fixture("openai__responses__c6d10ca46396")
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    client = CoreClient(
        api_keys={"openai": "test-key"},
        api_bases={"openai": server.url + "/v1"},
        provider_settings={"openai": {"transport": transport, "api": "responses"}},
        retry=NO_RETRY,
    )
    try:
        completion = await client.acomplete("Extract: Bob is 42 years old.", "openai:gpt-4.1-nano")
    finally:
        await client.aclose()
    assert completion.text == expected_from_response(json.loads(fx.response_body))["text"]
    assert json.loads(completion.text) == {"name": "Bob", "age": 42}
    assert server.requests[0].path == "/v1/responses"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_per_call_api_overrides_the_setting(server: ReplayServer, transport: str) -> None:
    fx = load_fixture("vllm__completions_legacy__f4d806c8724e")
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    client = make_client(server, transport, api="responses")
    try:
        completion = await client.acomplete("Tell me a joke", MODEL_PREFIX + "m", api="completions")
    finally:
        await client.aclose()
    assert completion.text == json.loads(fx.response_body)["choices"][0]["text"]
    assert server.requests[0].path == "/v1/completions"


async def test_unknown_api_is_refused(server: ReplayServer) -> None:
    client = make_client(server, "fast")
    try:
        with pytest.raises(errors.InvalidRequestError, match="api="):
            await client.acomplete("hi", MODEL_PREFIX + "m", api="assistants")
    finally:
        await client.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fx", RESPONSE_RETRIEVALS, ids=ids)
async def test_background_response_is_pending(
    server: ReplayServer, fx: Fixture, transport: str
) -> None:
    """A ``queued`` background response raises ResponsePendingError, both when
    retrieved (``GET /responses/{id}``, as recorded) and as the answer to a call."""
    recorded = json.loads(fx.response_body)
    response_id = fx.endpoint.rsplit("/", 1)[-1]
    provider = make_provider(server, transport)
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    try:
        with pytest.raises(ResponsePendingError) as caught:
            await provider.retrieve_response(response_id)
    finally:
        await provider.aclose()
    assert isinstance(caught.value, errors.UnsupportedError)
    assert caught.value.response_id == recorded["id"] == response_id
    assert caught.value.status == recorded["status"]
    assert "background" in str(caught.value)
    (sent,) = server.requests
    assert (sent.method, sent.path) == ("GET", fx.endpoint)

    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    client = make_client(server, transport)
    try:
        with pytest.raises(ResponsePendingError):
            await client.acomplete("hi", MODEL_PREFIX + "gpt-5", api="responses", background=True)
    finally:
        await client.aclose()
    assert server.requests[0].json()["background"] is True


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_truncated_responses_stream_raises(server: ReplayServer, transport: str) -> None:
    """A Responses stream cut before ``response.completed`` is a ConnectionError."""
    fx = load_fixture("openai__responses__ffafedcfc50f")
    server.clear()
    server.enqueue(Fault.truncated(after_events=120, reply=Reply.from_fixture(fx)))
    client = make_client(server, transport)
    try:
        with pytest.raises(errors.ConnectionError):
            await client.astream("hi", MODEL_PREFIX + "o4-mini", api="responses").collect()
    finally:
        await client.aclose()


# Payloads below follow https://platform.openai.com/docs/api-reference/responses-streaming
# and .../responses/object; the corpus has no recorded failure, incomplete or refusal.


def _event_stream(*events: dict) -> str:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("event", "error_class"),
    [
        (
            {
                "type": "response.failed",
                "response": {
                    "id": "resp_1",
                    "status": "failed",
                    "error": {"code": "rate_limit_exceeded", "message": "Slow down"},
                },
            },
            errors.RateLimitError,
        ),
        (
            {
                "type": "response.failed",
                "response": {
                    "id": "resp_1",
                    "status": "failed",
                    "error": {"code": "server_error", "message": "Oops"},
                },
            },
            errors.ProviderError,
        ),
        (
            {
                "type": "error",
                "code": "context_length_exceeded",
                "param": None,
                "message": "Your input exceeds the context window",
            },
            errors.ContextLengthError,
        ),
    ],
    ids=["failed-rate-limit", "failed-server", "error-event"],
)
async def test_stream_failure_events_raise(
    server: ReplayServer, transport: str, event: dict, error_class: type
) -> None:
    created = {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}
    delta = {
        "type": "response.output_text.delta",
        "output_index": 0,
        "content_index": 0,
        "item_id": "msg_1",
        "delta": "Hel",
    }
    server.clear()
    server.enqueue(
        Reply(
            200,
            {"content-type": "text/event-stream"},
            _event_stream(created, delta, event),
            sse=True,
        )
    )
    client = make_client(server, transport)
    seen = []
    try:
        with pytest.raises(error_class):
            async for chunk in client.astream("hi", MODEL_PREFIX + "gpt-4o", api="responses"):
                seen.append(chunk.text)
    finally:
        await client.aclose()
    assert "".join(seen) == "Hel"


def test_incomplete_and_refusal_responses() -> None:
    base = {"id": "resp_1", "object": "response", "model": "gpt-4o", "usage": None}
    message = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Par", "annotations": []}],
    }
    cut = parse_response(
        {
            **base,
            "status": "incomplete",
            "output": [message],
            "incomplete_details": {"reason": "max_output_tokens"},
        }
    )
    assert (cut.text, cut.finish_reason) == ("Par", "length")
    filtered = parse_response(
        {
            **base,
            "status": "incomplete",
            "output": [],
            "incomplete_details": {"reason": "content_filter"},
        }
    )
    assert filtered.finish_reason == "content_filter"
    refused = parse_response(
        {
            **base,
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "refusal", "refusal": "I can't help with that."}],
                }
            ],
        }
    )
    assert (refused.text, refused.refusal) == ("", "I can't help with that.")
    with pytest.raises(errors.ProviderError):
        parse_response(
            {
                **base,
                "status": "failed",
                "output": [],
                "error": {"code": "server_error", "message": "boom"},
            }
        )


def test_stream_parser_fills_in_items_sent_whole() -> None:
    """Servers that send an output item whole, without deltas, lose nothing."""
    parser = ResponsesStreamParser("p")
    call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a": 1}'}
    message = {"type": "message", "content": [{"type": "output_text", "text": "hi"}]}
    chunks = [
        parser.feed({"type": "response.output_item.done", "output_index": 0, "item": call}),
        parser.feed({"type": "response.output_item.done", "output_index": 1, "item": message}),
        parser.feed(
            {
                "type": "response.completed",
                "response": {"status": "completed", "output": [call, message]},
            }
        ),
    ]
    assert chunks[0] is not None and chunks[0].tool_calls == [
        {"index": 0, "arguments": '{"a": 1}', "id": "call_1", "name": "f"}
    ]
    assert chunks[1] is not None and chunks[1].text == "hi"
    assert chunks[2] is not None and chunks[2].finish_reason == "tool_calls"
    assert parser.finished


def test_responses_body_from_a_chat_conversation() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    request = Request(
        model="gpt-4.1",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        system="Be brief.",
        temperature=0.2,
        max_tokens=50,
        tools=[Tool("weather", "Get the weather", schema)],
        tool_choice="weather",
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "Answer", "schema": schema, "strict": True},
        },
        reasoning_effort="low",
        extra={"store": False},
    )
    body = responses_body(request, stream=True)
    assert body == {
        "model": "gpt-4.1",
        "instructions": "Be brief.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Weather?"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                ],
            },
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ],
        "temperature": 0.2,
        "max_output_tokens": 50,
        "tools": [
            {
                "type": "function",
                "name": "weather",
                "description": "Get the weather",
                "parameters": schema,
            }
        ],
        "tool_choice": {"type": "function", "name": "weather"},
        "text": {
            "format": {"type": "json_schema", "name": "Answer", "schema": schema, "strict": True}
        },
        "reasoning": {"effort": "low"},
        "stream": True,
        "store": False,
    }


# -- legacy completions -------------------------------------------------------------------


def expected_legacy(fx: Fixture) -> dict:
    if fx.streaming:
        events = sse_payloads(fx.response_body)
        choices = [c for e in events for c in e.get("choices") or [] if c.get("index", 0) == 0]
        usage = next((e["usage"] for e in reversed(events) if e.get("usage")), {})
        finish = next(
            (c["finish_reason"] for c in reversed(choices) if c.get("finish_reason")), None
        )
        return {
            "text": "".join(c.get("text") or "" for c in choices),
            "finish": finish,
            "input": usage.get("prompt_tokens", 0),
            "output": usage.get("completion_tokens", 0),
        }
    data = json.loads(fx.response_body)
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    return {
        "text": choice["text"],
        "finish": choice["finish_reason"],
        "input": usage.get("prompt_tokens", 0),
        "output": usage.get("completion_tokens", 0),
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fx", LEGACY, ids=ids)
async def test_legacy_completion_fixture_replays(
    server: ReplayServer, fx: Fixture, transport: str
) -> None:
    body = fx.request_json or {}
    prompt = body.get("prompt") or "hi"
    prompt = prompt[0] if isinstance(prompt, list) else prompt
    model = MODEL_PREFIX + str(body.get("model") or "davinci-002")
    kwargs = {k: body[k] for k in ("max_tokens", "temperature") if k in body}
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    client = make_client(server, transport)
    try:
        if fx.status >= 400:
            with pytest.raises(STATUS_ERRORS[fx.status]) as caught:
                await client.acomplete(prompt, model, api="completions", **kwargs)
            assert caught.value.status_code == fx.status
            message = json.loads(fx.response_body)["error"]["message"]
            assert message.split(":")[0] in str(caught.value)
            return
        expected = expected_legacy(fx)
        if fx.streaming:
            completion = await client.astream(prompt, model, api="completions", **kwargs).collect()
        else:
            completion = await client.acomplete(prompt, model, api="completions", **kwargs)
    finally:
        await client.aclose()
    assert completion.text == expected["text"] and completion.text
    assert completion.finish_reason == {"length": "length", "stop": "stop"}[expected["finish"]]
    if expected["input"] or expected["output"]:
        assert completion.usage.input_tokens == expected["input"]
        assert completion.usage.output_tokens == expected["output"]
        assert not completion.usage.estimated
    elif completion.text or completion.reasoning:
        # The server sent no usage: what arrived is counted, marked estimated.
        assert completion.usage.estimated and completion.usage.output_tokens > 0
    (sent,) = server.requests
    assert sent.path == "/v1/completions"
    assert sent.json()["prompt"] == prompt
    assert sent.json().get("stream", False) is fx.streaming
    assert "messages" not in sent.json()


# -- rate-limit headers on every API ------------------------------------------------------

# (api, fixture, fixture whose x-ratelimit-* headers are served with it). The corpus
# has no Responses stream recorded with those headers: that one borrows a recorded
# Responses answer's.
RATE_LIMITED = [
    ("responses", "openai__responses__5d8722ea358c", None),
    ("responses", "openai__responses__ffafedcfc50f", "openai__responses__5d8722ea358c"),
    ("completions", "openai__completions_legacy__e9cc3b12ae15", None),
    ("completions", "openai__completions_legacy__328ec6ccda45", None),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("api", "name", "headers_from"), RATE_LIMITED, ids=lambda v: v or "")
async def test_rate_limit_headers_on_every_api(
    server: ReplayServer, transport: str, api: str, name: str, headers_from: str | None
) -> None:
    fx = load_fixture(name)
    reply = Reply.from_fixture(fx)
    if headers_from is not None:
        borrowed = load_fixture(headers_from).response_headers
        limits = {k: v for k, v in borrowed.items() if k.startswith("x-ratelimit-")}
        reply = dataclasses.replace(reply, headers={**reply.headers, **limits})
    served = reply.headers
    server.clear()
    server.enqueue(reply)
    client = make_client(server, transport)
    model = MODEL_PREFIX + "m"
    try:
        if fx.streaming:
            completion = await client.astream("hi", model, api=api).collect()
        else:
            completion = await client.acomplete("hi", model, api=api)
    finally:
        await client.aclose()
    info = completion.rate_limits
    assert info is not None
    assert info.requests_limit == float(served["x-ratelimit-limit-requests"])
    assert info.requests_remaining == float(served["x-ratelimit-remaining-requests"])
    assert info.tokens_limit == float(served["x-ratelimit-limit-tokens"])
    assert info.tokens_remaining == float(served["x-ratelimit-remaining-tokens"])
    limiter = client.limiter(client.resolve(model))
    assert limiter.active
    assert limiter.rpm == info.requests_limit and limiter.tpm == info.tokens_limit


def test_completion_prompt_from_messages() -> None:
    lone = Request(model="m", messages=[{"role": "user", "content": "Once upon"}])
    assert completion_prompt(lone) == "Once upon"
    chat = Request(
        model="m",
        system="Sys",
        messages=[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
    )
    assert completion_prompt(chat) == "Sys\n\nQ\n\nA"
    with pytest.raises(errors.UnsupportedError):
        completions_body(dataclasses.replace(lone, tools=[Tool("f", "", {})]), False, {})


# -- models and token counting ------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fx", MODELS, ids=ids)
async def test_retrieve_model(server: ReplayServer, fx: Fixture, transport: str) -> None:
    recorded = json.loads(fx.response_body)
    model_id = fx.endpoint.rsplit("/", 1)[-1]
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    provider = make_provider(server, transport)
    try:
        info = await provider.retrieve_model(model_id)
    finally:
        await provider.aclose()
    assert (info.id, info.owned_by, info.created) == (
        recorded["id"],
        recorded["owned_by"],
        recorded["created"],
    )
    assert info.model_string == f"openai-compatible:{recorded['id']}"
    (sent,) = server.requests
    assert (sent.method, sent.path) == (fx.method, fx.endpoint)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fx", INPUT_TOKENS, ids=ids)
async def test_count_tokens(server: ReplayServer, fx: Fixture, transport: str) -> None:
    recorded = fx.request_json
    tools = [
        Tool(t["name"], t.get("description", ""), t["parameters"])
        for t in recorded.get("tools", [])
    ]
    request = Request(
        model=recorded["model"],
        messages=recorded["input"],
        tools=tools or None,
        tool_choice=recorded.get("tool_choice"),
        max_tokens=100,  # the endpoint refuses these three: they must be left out
        temperature=0.5,
        extra={"api": "responses"},
    )
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    provider = make_provider(server, transport)
    try:
        count = await provider.count_tokens(request)
    finally:
        await provider.aclose()
    assert count == json.loads(fx.response_body)["input_tokens"]
    (sent,) = server.requests
    assert sent.path == fx.endpoint
    body = sent.json()
    assert body["model"] == recorded["model"] and body["input"] == recorded["input"]
    assert not {"max_output_tokens", "temperature", "stream", "api"} & set(body)
    for sent_tool, recorded_tool in zip(
        body.get("tools", []), recorded.get("tools", []), strict=True
    ):
        for key in ("type", "name", "description", "parameters"):
            assert sent_tool[key] == recorded_tool[key]
    if "tool_choice" in recorded:
        assert body["tool_choice"] == recorded["tool_choice"]


# -- endpoints notebook_llm does not wrap: replayed through the official SDKs -------------


def _openai_sdk(server: ReplayServer) -> Any:
    import openai

    return openai.AsyncOpenAI(api_key="test-key", base_url=server.url + "/v1", max_retries=0)


@pytest.mark.parametrize("fx", COMPACT, ids=ids)
async def test_compact_through_the_sdk(server: ReplayServer, fx: Fixture) -> None:
    """``/responses/compact`` (no notebook_llm API): the SDK parses it, and the
    items it returns (input messages, ``compaction``) do not trip the output parser."""
    recorded = json.loads(fx.response_body)
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    client = _openai_sdk(server)
    try:
        result = await client.responses.compact(**fx.request_json)
    finally:
        await client.close()
    assert result.id == recorded["id"]
    assert [item.type for item in result.output] == [i["type"] for i in recorded["output"]]
    assert result.usage.output_tokens == recorded["usage"]["output_tokens"]
    assert server.requests[0].path == fx.endpoint
    summary = parse_output(recorded["output"])
    assert summary.text == "" and not summary.tool_calls  # user input echoed, not output
    assert "compaction" in summary.skipped


@pytest.mark.parametrize("fx", FILES, ids=ids)
async def test_files_through_the_sdk(server: ReplayServer, fx: Fixture) -> None:
    """Files are used by batch mode through the SDK; notebook_llm has no files API."""
    recorded = json.loads(fx.response_body)
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    if fx.provider == "anthropic":
        import anthropic

        client: Any = anthropic.AsyncAnthropic(
            api_key="test-key", base_url=server.url, max_retries=0
        )
        file_id = fx.endpoint.rsplit("/", 1)[-1]
        try:
            result = await client.beta.files.delete(file_id)
        finally:
            await client.close()
        assert (result.id, result.type) == (recorded["id"], recorded["type"])
    else:
        client = _openai_sdk(server)
        try:
            if fx.method == "DELETE":
                result = await client.files.delete(fx.endpoint.rsplit("/", 1)[-1])
                assert (result.id, result.deleted) == (recorded["id"], recorded["deleted"])
            else:
                result = await client.files.create(
                    file=(recorded["filename"], b'{"prompt": "x"}\n'), purpose=recorded["purpose"]
                )
                assert (result.id, result.bytes, result.filename) == (
                    recorded["id"],
                    recorded["bytes"],
                    recorded["filename"],
                )
                assert server.requests[0].headers["content-type"].startswith("multipart/form-data")
        finally:
            await client.close()
    (sent,) = server.requests
    assert (sent.method, sent.path) == (fx.method, fx.endpoint)


@pytest.mark.parametrize("fx", MODERATIONS, ids=ids)
async def test_moderations_through_the_sdk(server: ReplayServer, fx: Fixture) -> None:
    """notebook_llm has no moderations API; the recorded payload parses with the SDK."""
    recorded = json.loads(fx.response_body)["results"][0]
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    client = _openai_sdk(server)
    try:
        result = await client.moderations.create(**fx.request_json)
    finally:
        await client.close()
    parsed = result.results[0].model_dump(by_alias=True)
    assert parsed["flagged"] == recorded["flagged"]
    for name, flagged in recorded["categories"].items():
        assert parsed["categories"][name] == flagged
        assert parsed["category_scores"][name] == pytest.approx(recorded["category_scores"][name])
    assert server.requests[0].path == fx.endpoint


# -- every recorded fixture is replayed somewhere -----------------------------------------

_FIXTURE_NAME = re.compile(r"^[a-z_]+__[a-z_]+__[0-9a-f]{12}$")
_LOAD_LITERAL = re.compile(r"load_fixture\(\s*[\"']([^\"']+)[\"']")


def _names_in(value: Any, known: set[str]) -> set[str]:
    if isinstance(value, Fixture):
        return {value.name}
    if isinstance(value, str):
        return {value} if value in known else set()
    if isinstance(value, (list, tuple, set, frozenset)):
        return set().union(*(_names_in(item, known) for item in value)) if value else set()
    return set()


def covered_by(module_name: str, known: set[str]) -> set[str]:
    """The fixtures a protocol test module replays.

    A module's ``COVERED_FIXTURES`` when it declares one; otherwise every
    module-level Fixture, fixture name or list of them (``CHAT``,
    ``MESSAGE_FIXTURES``, ``STREAM_FIXTURE`` ...) plus every literal
    ``load_fixture("...")`` in its source.
    """
    module = importlib.import_module(module_name)
    declared = getattr(module, "COVERED_FIXTURES", None)
    if declared is not None:
        return set(declared)
    names: set[str] = set()
    for value in vars(module).values():
        names |= _names_in(value, known)
    source = Path(module.__file__ or "").read_text(encoding="utf-8")
    names |= {name for name in _LOAD_LITERAL.findall(source) if name in known}
    return names


def test_every_fixture_is_covered() -> None:
    known = {fx.name for fx in ALL}
    assert all(_FIXTURE_NAME.match(name) for name in known)
    modules = sorted(p.stem for p in Path(__file__).parent.glob("test_protocol_*.py"))
    assert {"test_protocol_openai", "test_protocol_anthropic", Path(__file__).stem} <= set(modules)
    covered: set[str] = set()
    for name in modules:
        covered |= covered_by(f"tests.{name}", known)
    missing = sorted(known - covered)
    assert not missing, f"recorded fixtures no protocol test replays: {missing}"
