"""Recorded OpenAI-protocol traffic replayed over loopback through all three transports.

Every ``*__chat_completions__*`` and ``*__embeddings__*`` fixture from
../shared/fixtures/recorded goes through the client (the lean client, aiohttp
and the official openai SDK); the expected values are read straight
from the recorded payload, independently of the parser under test.
"""

from __future__ import annotations

import json

import pytest

from notebook_llm import errors
from notebook_llm.core.client import CoreClient
from notebook_llm.core.retry import RetryPolicy
from tests.support.replay import Fault, Fixture, ReplayServer, Reply, load_fixture, load_fixtures

TRANSPORTS = ["fast", "aiohttp", "sdk"]
CHAT = [fx for fx in load_fixtures() if fx.endpoint_kind == "chat_completions"]
EMBEDDINGS = [fx for fx in load_fixtures() if fx.endpoint_kind == "embeddings"]
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=2)


@pytest.fixture(scope="module")
def server():
    with ReplayServer() as srv:
        yield srv


def make_client(server: ReplayServer, transport: str, **kwargs) -> CoreClient:
    return CoreClient(
        api_keys={"openai-compatible": "test-key"},
        api_bases={"openai-compatible": server.url + "/v1"},
        provider_settings={"openai-compatible": {"transport": transport}},
        retry=kwargs.pop("retry", FAST_RETRY),
        **kwargs,
    )


def request_args(fx: Fixture) -> tuple[str, list[dict]]:
    body = fx.request_json or {}
    model = "openai-compatible:" + str(body.get("model") or "gpt-4o-mini")
    messages = body.get("messages") or [{"role": "user", "content": "hi"}]
    return model, messages


def expected_from_json(data: dict) -> dict:
    choice = data["choices"][0]
    message = choice.get("message") or {}  # Azure's content filter sends none
    calls = [
        (c["function"]["name"], json.loads(c["function"]["arguments"] or "{}"))
        for c in message.get("tool_calls") or []
    ]
    if message.get("function_call"):
        fc = message["function_call"]
        calls.append((fc["name"], json.loads(fc["arguments"] or "{}")))
    usage = data.get("usage") or {}
    return {
        "text": message.get("content") or "",
        "calls": calls,
        "reasoning": message.get("reasoning_content") or message.get("reasoning") or None,
        "raw_finish": choice.get("finish_reason"),
        "input": usage.get("prompt_tokens", 0),
        "output": usage.get("completion_tokens", 0),
        "cached": ((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        "reasoning_tokens": (
            (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        ),
    }


def expected_from_sse(body: str) -> dict:
    text, reasoning, raw_finish, usage = [], [], None, {}
    calls: dict[int, dict] = {}
    error = None
    event = None
    for block in body.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            data = json.loads(line[5:])
            if event == "error" or data.get("error"):
                error = data
                continue
            usage = data.get("usage") or usage
            for choice in data.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                text.append(delta.get("content") or "")
                reasoning.append(delta.get("reasoning_content") or delta.get("reasoning") or "")
                for i, call in enumerate(delta.get("tool_calls") or []):
                    slot = calls.setdefault(call.get("index", i), {"name": "", "args": ""})
                    fn = call.get("function") or {}
                    slot["name"] = fn.get("name") or slot["name"]
                    slot["args"] += fn.get("arguments") or ""
                raw_finish = choice.get("finish_reason") or raw_finish
        event = None
    return {
        "text": "".join(text),
        "calls": [(c["name"], json.loads(c["args"] or "{}")) for _, c in sorted(calls.items())],
        "reasoning": "".join(reasoning) or None,
        "raw_finish": raw_finish,
        "input": usage.get("prompt_tokens", 0),
        "output": usage.get("completion_tokens", 0),
        "error": error,
    }


FINISH = {
    "stop": "stop",
    "eos": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}

STATUS_ERRORS = {
    401: errors.AuthenticationError,
    404: errors.ModelNotFoundError,
    429: errors.RateLimitError,
    400: errors.InvalidRequestError,
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fx", CHAT, ids=lambda fx: fx.name)
async def test_chat_fixture_replays(server: ReplayServer, fx: Fixture, transport: str) -> None:
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    client = make_client(server, transport, retry=RetryPolicy(max_attempts=1))
    model, messages = request_args(fx)
    try:
        if fx.status >= 400:
            with pytest.raises(errors.LLMError) as caught:
                await client.acomplete(messages, model)
            assert isinstance(caught.value, STATUS_ERRORS[fx.status])
            assert caught.value.status_code == fx.status
            return
        if fx.streaming:
            expected = expected_from_sse(fx.response_body)
            stream = client.astream(messages, model)
            if expected["error"] is not None:
                with pytest.raises(errors.LLMError):
                    async for _ in stream:
                        pass
                return
            completion = await stream.collect()
            assert completion.ttft_s is not None
        else:
            data = json.loads(fx.response_body)
            if data.get("error"):  # an error object under a 200 (Azure's content filter)
                expected_class = (
                    errors.ContentFilterError
                    if data["error"].get("code") == "content_filter"
                    else errors.LLMError
                )
                with pytest.raises(expected_class):
                    await client.acomplete(messages, model)
                return
            expected = expected_from_json(data)
            completion = await client.acomplete(messages, model)
        assert completion.text == expected["text"]
        assert [(c.name, c.arguments) for c in completion.tool_calls] == expected["calls"]
        assert completion.reasoning == expected["reasoning"]
        if expected["raw_finish"]:
            assert completion.finish_reason == FINISH[expected["raw_finish"]]
        if expected["input"] or expected["output"]:
            assert completion.usage.input_tokens == expected["input"]
            assert completion.usage.output_tokens == expected["output"]
            assert not completion.usage.estimated
        elif completion.text or completion.reasoning:
            # The server sent no usage: what arrived is counted, marked estimated.
            assert completion.usage.estimated and completion.usage.output_tokens > 0
        if not fx.streaming:
            assert completion.usage.cached_input_tokens == expected["cached"]
            assert completion.usage.reasoning_tokens == expected["reasoning_tokens"]
        assert completion.provider == "openai-compatible"
    finally:
        await client.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fx", EMBEDDINGS, ids=lambda fx: fx.name)
async def test_embedding_fixture_replays(server: ReplayServer, fx: Fixture, transport: str) -> None:
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    client = make_client(server, transport, retry=RetryPolicy(max_attempts=1))
    body = fx.request_json or {}
    inputs = body.get("input") or ["x"]
    inputs = [inputs] if isinstance(inputs, str) else inputs
    kwargs = {k: v for k, v in body.items() if k in ("encoding_format", "dimensions")}
    try:
        if fx.status >= 400:
            with pytest.raises(STATUS_ERRORS[fx.status]):
                await client.aembed(inputs, "openai-compatible:" + body.get("model", "m"), **kwargs)
            return
        result = await client.aembed(
            inputs, "openai-compatible:" + body.get("model", "m"), **kwargs
        )
        recorded = json.loads(fx.response_body)["data"]
        assert len(result.vectors) == len(recorded)
        dims = body.get("dimensions")
        for vector in result.vectors:
            assert vector and all(isinstance(v, float) for v in vector)
            if dims:
                assert len(vector) == dims
    finally:
        await client.aclose()


STREAM_FX = "openai__chat_completions__fec38cf7ea77"


def stream_text(fx: Fixture) -> str:
    return expected_from_sse(fx.response_body)["text"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("status", [429, 500, 503, 529])
async def test_retryable_status_is_retried(
    server: ReplayServer, transport: str, status: int
) -> None:
    fx = load_fixture(STREAM_FX)
    server.clear()
    server.enqueue(Fault.status(status, retry_after=0.05), Reply.from_fixture(fx))
    client = make_client(server, transport)
    try:
        completion = await client.astream("hi", "openai-compatible:gpt-4o-mini").collect()
    finally:
        await client.aclose()
    assert completion.text == stream_text(fx)
    assert len(server.requests) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rate_limit_carries_retry_after(server: ReplayServer, transport: str) -> None:
    server.clear()
    server.enqueue(Fault.status(429, retry_after=7))
    client = make_client(server, transport, retry=RetryPolicy(max_attempts=1))
    try:
        with pytest.raises(errors.RateLimitError) as caught:
            await client.acomplete("hi", "openai-compatible:gpt-4o-mini")
    finally:
        await client.aclose()
    assert caught.value.retry_after == 7
    assert caught.value.status_code == 429


def announced(headers: dict[str, str], field: str, kind: str) -> float:
    return float(headers[f"x-ratelimit-{field}-{kind}"])


# Recorded answers with OpenAI's x-ratelimit-* headers: a plain one and a stream.
RATE_LIMITED = {
    False: "openai__chat_completions__0eb980349939",
    True: "openai__chat_completions__fec38cf7ea77",
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
async def test_rate_limit_headers_reach_the_completion_and_the_limiter(
    server: ReplayServer, transport: str, streaming: bool
) -> None:
    fx = load_fixture(RATE_LIMITED[streaming])
    headers = fx.response_headers
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    client = make_client(server, transport, retry=RetryPolicy(max_attempts=1))
    model, messages = request_args(fx)
    limiter = client.limiter(client.resolve(model))
    assert not limiter.active
    try:
        if streaming:
            completion = await client.astream(messages, model).collect()
        else:
            completion = await client.acomplete(messages, model)
    finally:
        await client.aclose()
    info = completion.rate_limits
    assert info is not None
    assert info.requests_limit == announced(headers, "limit", "requests")
    assert info.requests_remaining == announced(headers, "remaining", "requests")
    assert info.tokens_limit == announced(headers, "limit", "tokens")
    assert info.tokens_remaining == announced(headers, "remaining", "tokens")
    assert info.requests_reset_s is not None and info.tokens_reset_s is not None
    assert limiter.active
    assert limiter.rpm == announced(headers, "limit", "requests")
    assert limiter.tpm == announced(headers, "limit", "tokens")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_retried_429_adapts_the_limiter(server: ReplayServer, transport: str) -> None:
    exhausted = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "50ms",
    }
    server.clear()
    server.enqueue(
        Fault.status(429, headers=exhausted),
        Reply.from_fixture(load_fixture("ollama__chat_completions__bfa863f2faa2")),  # no headers
    )
    client = make_client(server, transport)
    limiter = client.limiter(client.resolve("openai-compatible:m"))
    try:
        completion = await client.acomplete("hi", "openai-compatible:m")
    finally:
        await client.aclose()
    assert completion.rate_limits is None
    assert limiter.rpm == 600
    assert len(server.requests) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_error_keeps_the_rate_limits(server: ReplayServer, transport: str) -> None:
    fx = load_fixture("openai__chat_completions__720bf0910a2a")  # a recorded 400
    server.clear()
    server.enqueue(Reply.from_fixture(fx))
    client = make_client(server, transport, retry=RetryPolicy(max_attempts=1))
    try:
        with pytest.raises(errors.InvalidRequestError) as caught:
            await client.acomplete("hi", "openai-compatible:m")
    finally:
        await client.aclose()
    info = caught.value.rate_limits
    assert info is not None
    assert info.requests_limit == announced(fx.response_headers, "limit", "requests")
    assert info.tokens_remaining == announced(fx.response_headers, "remaining", "tokens")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bad_request_is_not_retried(server: ReplayServer, transport: str) -> None:
    server.clear()
    server.enqueue(Reply.from_fixture(load_fixture("openai__chat_completions__be78c7384ec0")))
    client = make_client(server, transport)
    try:
        with pytest.raises(errors.InvalidRequestError):
            await client.acomplete("hi", "openai-compatible:gpt-4o-mini")
    finally:
        await client.aclose()
    assert len(server.requests) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", ["reset", "truncated"])
async def test_broken_stream_raises(server: ReplayServer, transport: str, fault: str) -> None:
    fx = load_fixture(STREAM_FX)
    server.clear()
    make = Fault.reset if fault == "reset" else Fault.truncated
    server.default = make(after_events=3, reply=Reply.from_fixture(fx))
    client = make_client(server, transport, retry=RetryPolicy(max_attempts=1))
    seen = []
    try:
        with pytest.raises(errors.ConnectionError):
            async for chunk in client.astream("hi", "openai-compatible:gpt-4o-mini"):
                seen.append(chunk.text)
    finally:
        server.default = Reply(status=404)
        await client.aclose()
    assert "".join(seen) and "".join(seen) != stream_text(fx)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_slow_headers_time_out(server: ReplayServer, transport: str) -> None:
    server.clear()
    server.enqueue(Fault.slow_headers(3, reply=Reply.from_fixture(load_fixture(STREAM_FX))))
    client = make_client(server, transport, retry=RetryPolicy(max_attempts=1))
    try:
        with pytest.raises(errors.TimeoutError):
            await client.acomplete("hi", "openai-compatible:gpt-4o-mini", timeout=0.3)
    finally:
        await client.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_invalid_json_is_a_provider_error(server: ReplayServer, transport: str) -> None:
    server.clear()
    server.enqueue(Fault.invalid_json())
    client = make_client(server, transport, retry=RetryPolicy(max_attempts=1))
    try:
        with pytest.raises(errors.ProviderError):
            await client.acomplete("hi", "openai-compatible:gpt-4o-mini")
    finally:
        await client.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cancel_closes_the_response(server: ReplayServer, transport: str) -> None:
    fx = load_fixture(STREAM_FX)
    server.clear()
    before = server.client_disconnects
    server.enqueue(Reply.from_fixture(fx, chunk_delay=0.2))
    client = make_client(server, transport)
    stream = client.astream("hi", "openai-compatible:gpt-4o-mini")
    try:
        count = 0
        async for chunk in stream:
            count += 1
            if chunk.text:
                stream.cancel()
    finally:
        await client.aclose()
    assert stream.completion is not None
    assert stream.completion.finish_reason == "cancelled"
    assert stream.completion.text and stream.completion.text != stream_text(fx)
    assert server.wait_for_disconnects(before + 1, timeout=5)


def test_key_never_in_error_text(server: ReplayServer) -> None:
    key = "sk-proj-" + "A1b2C3d4" * 6
    server.clear()
    server.enqueue(Reply.from_fixture(load_fixture("openai__chat_completions__157e5d158091")))
    client = CoreClient(
        api_keys={"openai-compatible": key},
        api_bases={"openai-compatible": server.url + "/v1"},
        retry=RetryPolicy(max_attempts=1),
    )
    with pytest.raises(errors.AuthenticationError) as caught:
        client.complete("hi", "openai-compatible:gpt-4o-mini")
    client.close()
    for text in (str(caught.value), repr(caught.value), repr(client)):
        assert key not in text and key[-8:] not in text
    assert server.requests[-1].headers["authorization"] == f"Bearer {key}"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tool_loop_runs_python_function_and_sends_result(
    server: ReplayServer, transport: str
) -> None:
    # A recorded answer that calls get_file(), then a recorded plain answer.
    calls: list[str] = []

    def get_file() -> str:
        """Read the file."""
        calls.append("get_file")
        return "file contents: 42"

    server.clear()
    server.enqueue(
        Reply.from_fixture(load_fixture("groq__chat_completions__fe1bc0479819")),
        Reply.from_fixture(load_fixture("cerebras__chat_completions__c9ced606f338")),
    )
    client = make_client(server, transport)
    try:
        completion = await client.acomplete(
            "What is in the file?", "openai-compatible:m", tools=[get_file], max_tool_rounds=2
        )
    finally:
        await client.aclose()
    assert calls == ["get_file"]
    first, second = (request.json() for request in server.requests)
    assert first["tools"][0]["function"]["name"] == "get_file"
    tool_message = second["messages"][-1]
    assert tool_message == {"role": "tool", "tool_call_id": "hwjt5hve7",
                            "content": "file contents: 42"}
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "get_file"
    expected = json.loads(load_fixture("cerebras__chat_completions__c9ced606f338").response_body)
    assert completion.text == expected["choices"][0]["message"]["content"]
