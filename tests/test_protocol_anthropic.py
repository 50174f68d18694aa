"""The Anthropic provider through the real ``anthropic`` SDK, over loopback HTTP.

Recorded traffic (``../shared/fixtures/recorded/anthropic__*``) is replayed by
``ReplayServer``; what each test expects is computed from the recorded payload
here, independently of the provider's parsing. Faults the corpus lacks (429
with Retry-After, 500, 529 ``overloaded_error``, resets, truncation, slow
headers, bad JSON) are built from Anthropic's public API documentation
(https://docs.anthropic.com/en/api/errors, .../messages-streaming); each test
says so.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from notebook_llm import errors
from notebook_llm.core.client import CoreClient
from notebook_llm.core.registry import get_spec
from notebook_llm.core.retry import RetryPolicy
from notebook_llm.core.types import Request, Tool
from notebook_llm.providers._errors import error_from_exception, error_from_status
from notebook_llm.providers.anthropic import AnthropicProvider, anthropic_params
from tests.support.replay import (
    FIXTURES_DIR,
    Fault,
    Fixture,
    RecordedRequest,
    ReplayServer,
    Reply,
    load_fixture,
    split_sse,
)

# The SDK warns (DeprecationWarning) for retired model names, and several
# recordings use them; the warning is about the model, not about this code.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)
NO_RETRY = RetryPolicy(max_attempts=1)

# Documented stop_reason values -> this library's finish reasons.
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _names(pattern: str) -> list[str]:
    return sorted(path.stem for path in FIXTURES_DIR.glob(pattern))


MESSAGE_FIXTURES = _names("anthropic__messages__*.json")
STREAM_FIXTURE = "anthropic__messages__03f16280e29c"  # text only, 100 output tokens
TOOL_STREAM_FIXTURE = "anthropic__messages__0bc6da3e74dd"  # text then two tool_use blocks
MODEL = "anthropic:claude-sonnet-4-5"
STREAM_MODEL = "anthropic:claude-sonnet-4-20250514"


def test_the_corpus_is_here() -> None:
    assert len(MESSAGE_FIXTURES) >= 10, f"recorded fixtures missing under {FIXTURES_DIR}"


# -- what a recorded payload implies, computed without the provider ----------


def _sse_events(body: str) -> list[dict[str, Any]]:
    events = []
    for raw in split_sse(body):
        data = "\n".join(line[5:].lstrip() for line in raw.splitlines() if line.startswith("data:"))
        if data:
            events.append(json.loads(data))
    return events


def _usage(usage: dict[str, Any]) -> dict[str, int]:
    read = usage.get("cache_read_input_tokens") or 0
    write = usage.get("cache_creation_input_tokens") or 0
    return {
        "input_tokens": (usage.get("input_tokens") or 0) + read + write,
        "output_tokens": usage.get("output_tokens") or 0,
        "cached_input_tokens": read,
        "cache_write_tokens": write,
    }


def expected_from_message(body: dict[str, Any]) -> dict[str, Any]:
    """Text, tool calls, reasoning, usage and finish reason of a ``message`` object."""
    blocks = body["content"]
    return {
        "text": "".join(b["text"] for b in blocks if b["type"] == "text"),
        "tool_calls": [(b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"],
        "reasoning": any(
            (b["type"] == "thinking" and b.get("thinking")) or b["type"] == "redacted_thinking"
            for b in blocks
        ),
        "usage": _usage(body["usage"]),
        "finish_reason": FINISH[body["stop_reason"]],
        "response_model": body["model"],
        "id": body["id"],
    }


def expected_from_stream(body: str) -> dict[str, Any]:
    """The same, folded from the raw SSE events of a stream."""
    text, tools, reasoning, usage, stop, model, msg_id = [], {}, False, {}, None, None, None
    for event in _sse_events(body):
        kind = event["type"]
        if kind == "message_start":
            usage.update(event["message"]["usage"])
            model, msg_id = event["message"]["model"], event["message"]["id"]
        elif kind == "message_delta":
            usage.update(event["usage"])  # cumulative: later values win
            stop = event["delta"]["stop_reason"]
        elif kind == "content_block_start":
            block = event["content_block"]
            if block["type"] == "tool_use":
                tools[event["index"]] = [block["name"], []]
            if block["type"] == "redacted_thinking":
                reasoning = True
        elif kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                text.append(delta["text"])
            elif delta["type"] == "thinking_delta" and delta["thinking"]:
                reasoning = True
            elif delta["type"] == "input_json_delta" and event["index"] in tools:
                tools[event["index"]][1].append(delta["partial_json"])
    calls = [
        (name, json.loads("".join(parts)) if "".join(parts) else {})
        for _, (name, parts) in sorted(tools.items())
    ]
    return {
        "text": "".join(text),
        "tool_calls": calls,
        "reasoning": reasoning,
        "usage": _usage(usage),
        "finish_reason": FINISH[stop],
        "response_model": model,
        "id": msg_id,
    }


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content or [] if part.get("type") == "text")


def request_args(fx: Fixture) -> dict[str, Any]:
    """The recorded request, rebuilt as arguments to ``acomplete``/``astream``
    (text parts only; the replay server does not check the body)."""
    body = fx.request_json
    messages = []
    for message in body["messages"]:
        text = _text_of(message["content"]) or "(non-text content)"
        messages.append({"role": message["role"], "content": text})
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": "continue"})
    tools = [
        {
            "name": t["name"],
            "description": t.get("description", ""),
            "parameters": t["input_schema"],
        }
        for t in body.get("tools") or []
        if "input_schema" in t
    ]
    args: dict[str, Any] = {
        "prompt_or_messages": messages,
        "model": f"anthropic:{body['model']}",
        "max_tokens": body.get("max_tokens"),
        "tools": tools or None,
    }
    if body.get("system"):
        args["system"] = _text_of(body["system"])
    return args


# -- fixtures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Any:
    with ReplayServer() as srv:
        yield srv


@pytest.fixture
def replay(server: ReplayServer) -> ReplayServer:
    server.clear()
    server.handler = None
    return server


def make_client(server: ReplayServer, retry: RetryPolicy = NO_RETRY, **kwargs: Any) -> CoreClient:
    return CoreClient(
        api_keys={"anthropic": "test-key"},
        api_bases={"anthropic": server.url},
        retry=retry,
        **kwargs,
    )


def make_provider(server: ReplayServer, key: str = "test-key") -> AnthropicProvider:
    return AnthropicProvider(get_spec("anthropic").info, api_key=key, api_base=server.url)


def sent_key(request: RecordedRequest) -> str:
    """The key a request carried: SDK 2.x sends ``Authorization: Bearer``, 0.x ``x-api-key``."""
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
    return request.headers.get("x-api-key") or bearer


async def run(client: CoreClient, streaming: bool, **args: Any) -> Any:
    if not streaming:
        return await client.acomplete(**args)
    stream = client.astream(**args)
    async for _ in stream:
        pass
    assert stream.completion is not None
    return stream.completion


# -- every recorded messages interaction ----------------------------------------


@pytest.mark.parametrize("name", MESSAGE_FIXTURES)
async def test_recorded_messages(replay: ReplayServer, name: str) -> None:
    fx = load_fixture(name)
    replay.enqueue(Reply.from_fixture(fx))
    client = make_client(replay)
    try:
        if fx.status >= 400:
            body = json.loads(fx.response_body)
            with pytest.raises(errors.LLMError) as info:
                await run(client, fx.streaming, **request_args(fx))
            error = info.value
            expected_class = {
                401: errors.AuthenticationError,
                403: errors.AuthenticationError,
                404: errors.ModelNotFoundError,
                429: errors.RateLimitError,
            }.get(fx.status, errors.InvalidRequestError)
            assert isinstance(error, expected_class)
            assert error.status_code == fx.status
            assert error.provider == "anthropic"
            assert error.request_id == body.get("request_id")
            assert body["error"]["message"] in str(error)
            assert error.body == body
            assert error.original is not None and error.__cause__ is error.original
            return

        completion = await run(client, fx.streaming, **request_args(fx))
        want = (
            expected_from_stream(fx.response_body)
            if fx.streaming
            else expected_from_message(json.loads(fx.response_body))
        )
        assert completion.text == want["text"]
        assert [(c.name, c.arguments) for c in completion.tool_calls] == want["tool_calls"]
        assert all(c.id.startswith("toolu_") for c in completion.tool_calls)
        assert bool(completion.reasoning) == want["reasoning"]
        usage = completion.usage
        got = {key: getattr(usage, key) for key in want["usage"]}
        assert got == want["usage"]
        assert completion.finish_reason == want["finish_reason"]
        assert completion.response_model == want["response_model"]
        assert completion.id == want["id"]
        assert completion.provider == "anthropic"
        assert completion.raw  # the payload (a dict) or the list of events
    finally:
        await client.aclose()

    # What the SDK sent: the Messages endpoint, the model, stream or not, a key header.
    (sent,) = replay.requests
    assert sent.path == "/v1/messages"
    assert sent_key(sent) == "test-key"
    body = sent.json()
    assert body["model"] == fx.request_json["model"]
    assert bool(body.get("stream")) == fx.streaming
    assert body["max_tokens"] == (fx.request_json.get("max_tokens") or 4096)


def _announced(headers: dict[str, str], kind: str, field: str) -> float | None:
    value = headers.get(f"anthropic-ratelimit-{kind}-{field}")
    return None if value is None else float(value)


@pytest.mark.parametrize(
    "name",
    [
        "anthropic__messages__54740bc0744d",  # not streamed
        "anthropic__messages__0bc6da3e74dd",  # streamed
        "anthropic__messages__03f16280e29c",  # streamed, no requests-* headers
    ],
)
async def test_rate_limit_headers_reach_the_completion_and_the_limiter(
    replay: ReplayServer, name: str
) -> None:
    fx = load_fixture(name)
    headers = fx.response_headers
    replay.enqueue(Reply.from_fixture(fx))
    client = make_client(replay)
    args = request_args(fx)
    limiter = client.limiter(client.resolve(args["model"]))
    try:
        completion = await run(client, fx.streaming, **args)
    finally:
        await client.aclose()
    info = completion.rate_limits
    assert info is not None
    assert info.requests_limit == _announced(headers, "requests", "limit")
    assert info.requests_remaining == _announced(headers, "requests", "remaining")
    assert info.tokens_limit == _announced(headers, "tokens", "limit")
    assert info.tokens_remaining == _announced(headers, "tokens", "remaining")
    assert info.tokens_reset_s == 0.0  # recorded long ago: the reset is past
    assert limiter.active
    assert limiter.rpm == info.requests_limit and limiter.tpm == info.tokens_limit


def test_redacted_thinking_is_noted() -> None:
    from notebook_llm.providers.anthropic import REDACTED_THINKING, parse_message

    fx = load_fixture("anthropic__messages__ece9096899a8")
    completion = parse_message(json.loads(fx.response_body))
    assert completion.reasoning == REDACTED_THINKING


async def test_streamed_thinking_and_tool_call(replay: ReplayServer) -> None:
    # Thinking deltas, one signature_delta, then a tool_use whose input streams.
    fx = load_fixture("anthropic__messages__0d70ae8c0f61")
    replay.enqueue(Reply.from_fixture(fx))
    client = make_client(replay)
    stream = client.astream(**request_args(fx))
    chunks = [chunk async for chunk in stream]
    await client.aclose()
    thinking = "".join(
        e["delta"]["thinking"]
        for e in _sse_events(fx.response_body)
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "thinking_delta"
    )
    assert stream.completion is not None
    assert stream.completion.reasoning == thinking
    assert stream.completion.usage.reasoning_tokens == 53  # output_tokens_details.thinking_tokens
    fragments = [f for c in chunks for f in c.tool_calls or []]
    assert fragments[0]["id"].startswith("toolu_") and fragments[0]["name"] == "fixed_version"


def test_sync_api_on_the_library_loop(replay: ReplayServer) -> None:
    # The sync twins run on the background loop: a provider (and SDK client) of its own.
    text_fx = load_fixture("anthropic__messages__fed5560d041e")
    stream_fx = load_fixture(STREAM_FIXTURE)
    replay.enqueue(Reply.from_fixture(text_fx), Reply.from_fixture(stream_fx))
    client = make_client(replay)
    completion = client.complete("hi", MODEL)
    assert completion.text == expected_from_message(json.loads(text_fx.response_body))["text"]
    with client.stream("hi", STREAM_MODEL) as stream:
        text = "".join(chunk.text for chunk in stream)
    assert text == expected_from_stream(stream_fx.response_body)["text"]
    assert stream.completion is not None and stream.completion.finish_reason == "length"
    from notebook_llm.core import loop

    async def close_all() -> None:
        # client.aclose() closes the providers keyed to the running loop, but the sync
        # stream() builds its provider off-loop (keyed to loop id 0): close them all.
        for provider in list(client._providers.values()):
            await provider.aclose()

    loop.run(close_all())


# -- the endpoints that are not messages ----------------------------------------------


async def test_count_tokens(replay: ReplayServer) -> None:
    fx = load_fixture("anthropic__count_tokens__16da5dd22f5f")
    replay.enqueue(Reply.from_fixture(fx))
    provider = make_provider(replay)
    schema = fx.request_json["tools"][0]
    request = Request(
        model=fx.request_json["model"],
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        tools=[Tool(schema["name"], schema["description"], schema["input_schema"])],
        tool_choice="required",
    )
    try:
        assert await provider.count_tokens(request) == json.loads(fx.response_body)["input_tokens"]
    finally:
        await provider.aclose()
    (sent,) = replay.requests
    assert sent.path == "/v1/messages/count_tokens"
    body = sent.json()
    assert body["tool_choice"] == {"type": "any"}
    assert body["tools"][0]["input_schema"] == schema["input_schema"]
    assert "max_tokens" not in body


async def test_list_models(replay: ReplayServer) -> None:
    # Shape from https://docs.anthropic.com/en/api/models-list (not recorded).
    page = {
        "data": [
            {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
             "created_at": "2025-09-29T00:00:00Z"},
            {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5",
             "created_at": "2025-10-01T00:00:00Z"},
        ],
        "has_more": False,
        "first_id": "claude-sonnet-4-5",
        "last_id": "claude-haiku-4-5",
    }  # fmt: skip
    replay.enqueue(Reply.from_json(page))
    client = make_client(replay)
    models = await client.alist_models("anthropic")
    await client.aclose()
    assert [m.model_string for m in models] == [
        "anthropic:claude-sonnet-4-5",
        "anthropic:claude-haiku-4-5",
    ]
    assert models[0].created == 1759104000
    assert replay.requests[0].path == "/v1/models"


# -- the request the SDK puts on the wire ----------------------------------------------


async def test_request_translation_on_the_wire(replay: ReplayServer) -> None:
    fx = load_fixture("anthropic__messages__38e4ca6b3a7d")
    replay.enqueue(Reply.from_fixture(fx))
    client = make_client(replay)
    png = "iVBORw0KGgo="
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_coordinates", "arguments": '{"city": "Paris"}'}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "get_coordinates", "arguments": '{"city": "Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "48.8,2.3"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "41.9,12.5"},
        {"role": "user", "content": "And Barcelona?"},
    ]  # fmt: skip

    def get_coordinates(city: str) -> str:
        """Coordinates of a city."""
        return ""

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    completion = await client.acomplete(
        messages,
        "anthropic:claude-sonnet-4-5",
        tools=[get_coordinates],
        tool_choice="get_coordinates",
        max_tool_rounds=0,  # the answer's tool call, not the loop: one request
        temperature=0.2,
        reasoning_effort="low",
        response_format={"type": "json_schema", "json_schema": {"name": "City", "schema": schema}},
        top_k=5,  # an extra keyword: passed through into the body
    )
    await client.aclose()
    assert completion.tool_calls[0].arguments == {"city": "Barcelona"}
    body = replay.requests[0].json()
    assert body["system"] == "Be brief."
    assert body["temperature"] == 0.2 and body["top_k"] == 5
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 2048 + 4096
    assert body["tool_choice"] == {"type": "tool", "name": "get_coordinates"}
    assert body["tools"][0]["name"] == "get_coordinates"
    assert body["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
    fmt = body["output_config"]["format"]
    assert fmt["type"] == "json_schema" and fmt["schema"]["additionalProperties"] is False
    user, assistant, results = body["messages"]
    assert user["content"][1] == {
        "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png},
    }  # fmt: skip
    assert user["content"][2] == {
        "type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }  # fmt: skip
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == {"type": "text", "text": "Let me look."}
    assert assistant["content"][1] == {
        "type": "tool_use", "id": "toolu_1", "name": "get_coordinates", "input": {"city": "Paris"},
    }  # fmt: skip
    # Consecutive tool results and the next user text share one user turn.
    assert results["role"] == "user"
    assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result", "text"]
    assert results["content"][1] == {
        "type": "tool_result", "tool_use_id": "toolu_2", "content": "41.9,12.5",
    }  # fmt: skip


def test_structured_output_text_is_the_json() -> None:
    # Recorded structured-output answer: the JSON is the text block.
    fx = load_fixture("anthropic__messages__fed5560d041e")
    from notebook_llm.providers.anthropic import parse_message

    completion = parse_message(json.loads(fx.response_body))
    assert json.loads(completion.text)["result"]["data"]["city"] == "Mexico City"


def test_params_defaults_and_tool_choice() -> None:
    request = Request(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    params = anthropic_params(request)
    assert params == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 4096,
    }
    tool = Tool("f", "", {"type": "object", "properties": {}})
    openai_style = {"type": "function", "function": {"name": "f"}}
    choices = [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ("f", {"type": "tool", "name": "f"}),
        (openai_style, {"type": "tool", "name": "f"}),
    ]
    for choice, wire in choices:
        request = Request(
            model="m", messages=[{"role": "user", "content": "x"}], tools=[tool], tool_choice=choice
        )
        assert anthropic_params(request)["tool_choice"] == wire
    request = Request(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=3000,
                      reasoning_effort="high")  # fmt: skip
    params = anthropic_params(request)
    assert params["max_tokens"] == 3000 and params["thinking"]["budget_tokens"] == 2999


# -- faults (bodies from Anthropic's public error documentation) ------------------


def _anthropic_error(kind: str, message: str) -> dict[str, Any]:
    # https://docs.anthropic.com/en/api/errors: the documented envelope.
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_test"}


async def test_429_retry_after_is_read(replay: ReplayServer) -> None:
    replay.enqueue(Fault.status(429, _anthropic_error("rate_limit_error", "Too many requests"),
                                retry_after=1))  # fmt: skip
    client = make_client(replay)
    with pytest.raises(errors.RateLimitError) as info:
        await client.acomplete("hi", MODEL)
    await client.aclose()
    assert info.value.retry_after == 1
    assert info.value.status_code == 429
    assert info.value.request_id == "req_test"


async def test_429_is_retried_then_succeeds(replay: ReplayServer) -> None:
    fx = load_fixture("anthropic__messages__fed5560d041e")
    replay.enqueue(
        Fault.status(429, _anthropic_error("rate_limit_error", "Too many requests"), retry_after=1),
        Reply.from_fixture(fx),
    )
    # max_delay caps the honoured Retry-After so the test stays fast.
    client = make_client(replay, retry=FAST_RETRY)
    completion = await client.acomplete("hi", MODEL)
    await client.aclose()
    assert completion.text == expected_from_message(json.loads(fx.response_body))["text"]
    assert len(replay.requests) == 2


@pytest.mark.parametrize(
    ("status", "kind"), [(529, "overloaded_error"), (500, "api_error"), (503, "api_error")]
)
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_server_errors_are_provider_errors_and_retried(
    replay: ReplayServer, status: int, kind: str, streaming: bool
) -> None:
    fx = load_fixture(STREAM_FIXTURE if streaming else "anthropic__messages__fed5560d041e")
    fault = Fault.status(
        status, _anthropic_error(kind, "Overloaded" if status == 529 else "Internal")
    )
    replay.enqueue(fault)
    client = make_client(replay)
    with pytest.raises(errors.ProviderError) as info:
        await run(client, streaming, prompt_or_messages="hi", model=MODEL)
    assert info.value.status_code == status
    await client.aclose()

    replay.clear()
    replay.enqueue(fault, Reply.from_fixture(fx))
    client = make_client(replay, retry=FAST_RETRY)
    completion = await run(client, streaming, prompt_or_messages="hi", model=MODEL)
    await client.aclose()
    assert completion.finish_reason in ("stop", "length")
    assert len(replay.requests) == 2


async def test_overloaded_error_event_mid_stream(replay: ReplayServer) -> None:
    # The documented mid-stream error event: event: error / overloaded_error.
    fx = load_fixture(STREAM_FIXTURE)
    replay.enqueue(Fault.sse_error(after_events=5, reply=fx))
    client = make_client(replay)
    stream = client.astream("hi", STREAM_MODEL)
    seen = []
    with pytest.raises(errors.ProviderError) as info:
        async for chunk in stream:
            seen.append(chunk)
    await client.aclose()
    assert info.value.status_code == 529
    assert "overloaded" in str(info.value).lower()
    assert seen  # the chunks before the error were delivered


async def test_connection_reset_mid_stream_raises(replay: ReplayServer) -> None:
    fx = load_fixture(STREAM_FIXTURE)
    replay.enqueue(Fault.reset(after_events=6, reply=fx))
    client = make_client(replay)
    stream = client.astream("hi", STREAM_MODEL)
    text = []
    with pytest.raises(errors.ConnectionError):
        async for chunk in stream:
            text.append(chunk.text)
    await client.aclose()
    assert "".join(text)  # some text arrived before the reset
    assert isinstance(stream.error, errors.ConnectionError)


async def test_connection_reset_before_any_event_is_retried(replay: ReplayServer) -> None:
    fx = load_fixture(STREAM_FIXTURE)
    replay.enqueue(Fault.reset(after_events=0, reply=fx), Reply.from_fixture(fx))
    client = make_client(replay, retry=FAST_RETRY)
    completion = await run(client, True, prompt_or_messages="hi", model=STREAM_MODEL)
    await client.aclose()
    assert completion.text == expected_from_stream(fx.response_body)["text"]
    assert len(replay.requests) == 2


@pytest.mark.parametrize("after_events", [3, 8, -1])
async def test_truncated_stream_raises(replay: ReplayServer, after_events: int) -> None:
    # -1: everything but message_stop (the most deceptive truncation).
    fx = load_fixture(STREAM_FIXTURE)
    count = len(split_sse(fx.response_body))
    replay.enqueue(Fault.truncated(after_events % count, reply=fx))
    client = make_client(replay)
    stream = client.astream("hi", STREAM_MODEL)
    with pytest.raises(errors.ConnectionError, match="message_stop"):
        async for _ in stream:
            pass
    await client.aclose()


async def test_slow_headers_time_out(replay: ReplayServer) -> None:
    fx = load_fixture("anthropic__messages__fed5560d041e")
    replay.enqueue(Fault.slow_headers(3.0, reply=fx))
    client = make_client(replay, timeout=0.5)
    with pytest.raises(errors.TimeoutError) as info:
        await client.acomplete("hi", MODEL)
    await client.aclose()
    assert isinstance(info.value, TimeoutError)  # also the builtin


async def test_slow_stream_headers_time_out(replay: ReplayServer) -> None:
    replay.enqueue(Fault.slow_headers(3.0, reply=load_fixture(STREAM_FIXTURE)))
    client = make_client(replay)
    stream = client.astream("hi", "anthropic:claude-sonnet-4-20250514", timeout=0.5)
    with pytest.raises(errors.TimeoutError):
        async for _ in stream:
            pass
    await client.aclose()


async def test_invalid_json_is_a_provider_error(replay: ReplayServer) -> None:
    replay.enqueue(Fault.invalid_json())
    client = make_client(replay)
    with pytest.raises(errors.ProviderError):
        await client.acomplete("hi", MODEL)
    await client.aclose()


async def test_invalid_json_in_a_stream_is_a_provider_error(replay: ReplayServer) -> None:
    fx = load_fixture(STREAM_FIXTURE)
    events = split_sse(fx.response_body)
    body = "".join(events[:4]) + 'event: content_block_delta\ndata: {"type": "content_bl\n\n'
    replay.enqueue(Reply(200, {"content-type": "text/event-stream"}, body, sse=True))
    client = make_client(replay)
    stream = client.astream("hi", STREAM_MODEL)
    with pytest.raises(errors.ProviderError, match="not valid JSON"):
        async for _ in stream:
            pass
    await client.aclose()


async def test_cancel_mid_stream_closes_the_connection(replay: ReplayServer) -> None:
    fx = load_fixture(STREAM_FIXTURE)
    replay.enqueue(Reply.from_fixture(fx, chunk_delay=0.05))
    client = make_client(replay)
    stream = client.astream("hi", STREAM_MODEL)
    texts = []
    async for chunk in stream:
        if chunk.text:
            texts.append(chunk.text)
            stream.cancel()
    assert stream.completion is not None
    assert stream.completion.finish_reason == "cancelled"
    assert stream.completion.text == "".join(texts) and texts
    assert stream.completion.text != expected_from_stream(fx.response_body)["text"]
    # The server saw the client go away instead of writing the rest.
    assert await asyncio.to_thread(replay.wait_for_disconnects, 1, 5.0)
    await client.aclose()


async def test_closing_the_provider_generator_closes_the_response(replay: ReplayServer) -> None:
    fx = load_fixture(TOOL_STREAM_FIXTURE)
    replay.enqueue(Reply.from_fixture(fx, chunk_delay=0.05))
    provider = make_provider(replay)
    request = Request(
        model="claude-3-5-sonnet-20240620", messages=[{"role": "user", "content": "x"}]
    )
    source = provider.stream(request)
    first = await source.__anext__()
    assert first.id and first.response_model == "claude-3-5-sonnet-20240620"
    await source.aclose()  # type: ignore[attr-defined]
    assert await asyncio.to_thread(replay.wait_for_disconnects, 1, 5.0)
    await provider.aclose()


# -- keys never leak -----------------------------------------------------------------

FAKE_KEY = "sk-ant-api03-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7dEf0h"


async def test_invalid_key_never_appears_in_errors(replay: ReplayServer) -> None:
    # A 401 as documented, made worse: the message echoes the key that was sent.
    def echo_key(request: RecordedRequest) -> Reply:
        key = sent_key(request)
        body = _anthropic_error("authentication_error", f"invalid x-api-key: {key}")
        return Fault.status(401, body, {"request-id": "req_401"})

    replay.handler = echo_key
    client = CoreClient(
        api_keys={"anthropic": FAKE_KEY}, api_bases={"anthropic": replay.url}, retry=NO_RETRY
    )
    for streaming in (False, True):
        with pytest.raises(errors.AuthenticationError) as info:
            await run(client, streaming, prompt_or_messages="hi", model=MODEL)
        error = info.value
        assert sent_key(replay.requests[-1]) == FAKE_KEY  # it was sent, and echoed
        assert error.status_code == 401 and error.request_id == "req_401"
        for text in (str(error), repr(error), str(error.__cause__), json.dumps(error.body)):
            assert FAKE_KEY not in text
            assert FAKE_KEY[13:] not in text
    assert FAKE_KEY not in repr(client)
    await client.aclose()


# -- the shared status mapping, on every recorded error body ---------------------------------

RECORDED_ERRORS = {
    "anthropic__messages__5325a3c8376d": (errors.ModelNotFoundError, 404),
    "azure_openai__chat_completions__d8783f0e3634": (errors.ModelNotFoundError, 404),
    # An error event inside a 200 stream, status_code in the body.
    "groq__chat_completions__41ffc36a2b06": (errors.InvalidRequestError, 400),
    "groq__chat_completions__6bf8ddf69ed9": (errors.InvalidRequestError, 400),
    "openai__chat_completions__157e5d158091": (errors.AuthenticationError, 401),
    "openai__chat_completions__605b467ff3c6": (errors.InvalidRequestError, 400),
    "openai__chat_completions__720bf0910a2a": (errors.InvalidRequestError, 400),
    "openai__chat_completions__bac07b799249": (errors.ModelNotFoundError, 404),
    "openai__completions_legacy__9c7af38e481f": (errors.AuthenticationError, 401),
    "openai__embeddings__51b3fb35ebed": (errors.ModelNotFoundError, 404),
    "openai__responses__28cea2516d47": (errors.InvalidRequestError, 400),
    "openrouter__chat_completions__d672595ef451": (errors.RateLimitError, 429),
}


@pytest.mark.parametrize("name", sorted(RECORDED_ERRORS))
def test_error_from_status_on_recorded_bodies(name: str) -> None:
    fx = load_fixture(name)
    expected_class, expected_status = RECORDED_ERRORS[name]
    body: Any = fx.response_body
    if fx.streaming:
        body = _sse_events(fx.response_body)[-1]  # the error event after the chunks
    error = error_from_status(fx.provider, fx.status, body, fx.response_headers, None)
    assert type(error) is expected_class
    assert error.status_code == expected_status
    assert error.provider == fx.provider
    assert error.hint == "" or error.hint in str(error)
    if isinstance(error, errors.RateLimitError):
        assert "rate-limited upstream" in str(error)  # OpenRouter's metadata.raw
    if "x-request-id" in fx.response_headers:
        assert error.request_id == fx.response_headers["x-request-id"]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        # OpenAI, documented context overflow.
        (400, {"error": {"message": "This model's maximum context length is 8192 tokens.",
                         "type": "invalid_request_error", "param": "messages",
                         "code": "context_length_exceeded"}}, errors.ContextLengthError),
        # Anthropic, documented: "prompt is too long: 210000 tokens > 200000 maximum".
        (400, _anthropic_error("invalid_request_error",
                               "prompt is too long: 210000 tokens > 200000 maximum"),
         errors.ContextLengthError),
        (400, _anthropic_error("invalid_request_error",
                               "input length and `max_tokens` exceed context limit: "
                               "188240 + 21333 > 200000, decrease input length or `max_tokens`"),
         errors.ContextLengthError),
        (400, {"error": {"message": "The response was filtered", "type": None,
                         "code": "content_filter"}}, errors.ContentFilterError),
        (400, {"error": {"message": "blocked", "code": "content_policy_violation"}},
         errors.ContentFilterError),
        (401, {"error": {"code": "401", "message": "Access denied: invalid subscription key"}},
         errors.AuthenticationError),  # Azure: string code, no type
        (403, _anthropic_error("permission_error", "no access"), errors.AuthenticationError),
        (429, {"error": {"message": "You exceeded your current quota",
                         "type": "insufficient_quota", "code": "insufficient_quota"}},
         errors.InvalidRequestError),  # waiting does not help: not retried
        (529, _anthropic_error("overloaded_error", "Overloaded"), errors.ProviderError),
        (502, "<html>Bad gateway</html>", errors.ProviderError),
        (404, {"error": "model 'llama9' not found, try pulling it"}, errors.ModelNotFoundError),
        (404, "404 page not found", errors.ModelNotFoundError),
        (422, {"detail": [{"msg": "field required"}]}, errors.InvalidRequestError),
        (200, _anthropic_error("rate_limit_error", "slow down"), errors.RateLimitError),
        (200, _anthropic_error("overloaded_error", "Overloaded"), errors.ProviderError),
    ],
)  # fmt: skip
def test_error_from_status_envelopes(status: int, body: Any, expected: type) -> None:
    error = error_from_status("p", status, body, None, None)
    assert type(error) is expected
    assert 400 <= (error.status_code or 0) < 600


def test_error_from_status_redacts_keys() -> None:
    original = RuntimeError(f"Error code: 401 - key {FAKE_KEY}")
    body = {
        "error": {"message": f"Incorrect API key provided: {FAKE_KEY}", "code": "invalid_api_key"}
    }
    error = error_from_status("openai", 401, body, {"x-request-id": "r1"}, original)
    assert isinstance(error, errors.AuthenticationError)
    assert error.request_id == "r1" and error.__cause__ is original
    for text in (str(error), repr(error), str(original), json.dumps(error.body)):
        assert FAKE_KEY not in text


def test_error_from_exception_by_kind() -> None:
    import httpx

    request = httpx.Request("POST", "http://127.0.0.1:1/v1/messages")
    assert isinstance(error_from_exception("p", httpx.ReadTimeout("slow", request=request)),
                      errors.TimeoutError)  # fmt: skip
    assert isinstance(error_from_exception("p", httpx.RemoteProtocolError("peer closed")),
                      errors.ConnectionError)  # fmt: skip
    assert isinstance(error_from_exception("p", ConnectionResetError()), errors.ConnectionError)
    assert isinstance(error_from_exception("p", asyncio.TimeoutError()), errors.TimeoutError)
    assert isinstance(error_from_exception("p", ValueError("odd")), errors.ProviderError)
    same = errors.RateLimitError("x")
    assert error_from_exception("p", same) is same
