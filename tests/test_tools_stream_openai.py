"""The streaming tool loop over recorded OpenAI traffic on a loopback server,
through every transport (the official ``openai`` SDK included): a recorded
stream of two parallel tool calls, then a recorded text stream."""

from __future__ import annotations

import json

import pytest

from notebook_llm.core.client import CoreClient
from notebook_llm.core.retry import RetryPolicy
from tests.support.replay import ReplayServer, Reply, load_fixture

TRANSPORTS = ["fast", "aiohttp", "sdk"]
CALLS_FX = "openai__chat_completions__7de2f89d92fa"  # get_current_weather x2, streamed
TEXT_FX = "openai__chat_completions__05ca9ac589d2"  # a streamed text answer


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    with ReplayServer() as srv:
        yield srv


def client_for(server: ReplayServer, transport: str) -> CoreClient:
    return CoreClient(
        api_keys={"openai-compatible": "test-key"},
        api_bases={"openai-compatible": server.url + "/v1"},
        provider_settings={"openai-compatible": {"transport": transport}},
        retry=RetryPolicy(max_attempts=1),
    )


def recorded_text(name: str) -> str:
    body = load_fixture(name).response_body
    parts = []
    for line in body.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_streamed_parallel_calls_run_and_their_results_go_back(
    server: ReplayServer, transport: str
) -> None:
    asked: list[str] = []

    def get_current_weather(location: str) -> dict[str, object]:
        """Get the current weather.

        Args:
            location: The city and state, e.g. San Francisco, CA
        """
        asked.append(location)
        return {"location": location, "temperature_c": 18}

    server.clear()
    server.enqueue(Reply.from_fixture(load_fixture(CALLS_FX)),
                   Reply.from_fixture(load_fixture(TEXT_FX)))
    client = client_for(server, transport)
    try:
        stream = client.astream("What's the weather in San Francisco and Boston?",
                                "openai-compatible:gpt-3.5-turbo", tools=[get_current_weather])
        text, events = [], []
        async for chunk in stream:
            if chunk.tool_run is not None:
                events.append((chunk.tool_run.call.id, chunk.tool_run.status))
            text.append(chunk.text)
    finally:
        await client.aclose()
    assert sorted(asked) == ["Boston", "San Francisco"]
    ids = ["call_u0T52evs3Y0byXDiUv5Al8dG", "call_iXfR9wmFaDTHUw5YaVxD1uFH"]
    assert sorted(events) == sorted([(i, s) for i in ids for s in ("running", "ok")])
    first, second = (request.json() for request in server.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["get_current_weather"]
    assert first["stream"] is True and second["stream"] is True
    assistant, *results = second["messages"][-3:]
    assert [c["id"] for c in assistant["tool_calls"]] == ids
    assert [r["tool_call_id"] for r in results] == ids
    assert json.loads(results[0]["content"]) == {"location": "San Francisco",
                                                 "temperature_c": 18}
    assert "".join(text) == recorded_text(TEXT_FX) == stream.completion.text
    assert [r.status for r in stream.completion.tool_runs] == ["ok", "ok"]


@pytest.mark.parametrize("transport", ["sdk"])
async def test_a_refused_call_goes_back_as_a_refusal(server: ReplayServer,
                                                     transport: str) -> None:
    def get_current_weather(location: str) -> str:
        """Get the current weather."""
        raise AssertionError("must not run")

    server.clear()
    server.enqueue(Reply.from_fixture(load_fixture(CALLS_FX)),
                   Reply.from_fixture(load_fixture(TEXT_FX)))
    client = client_for(server, transport)
    try:
        completion = await client.astream(
            "weather?", "openai-compatible:gpt-3.5-turbo", tools=[get_current_weather],
            approve="never").collect()
    finally:
        await client.aclose()
    second = server.requests[1].json()
    assert [m["content"].startswith("Denied") for m in second["messages"][-2:]] == [True, True]
    assert completion.text == recorded_text(TEXT_FX)
