"""Tests for the loopback replay server, driven with plain httpx."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.replay import (
    FIXTURES_DIR,
    Fault,
    Fixture,
    RecordedRequest,
    ReplayServer,
    Reply,
    load_fixture,
    load_fixtures,
    split_sse,
)

JSON_FIXTURE = "openai__chat_completions__0eb980349939"
SSE_FIXTURE = "anthropic__messages__7eb6d7c4461c"


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def _stream_chunks(url: str, **kwargs: object) -> list[bytes]:
    with httpx.stream("POST", url, json={}, **kwargs) as response:  # type: ignore[arg-type]
        return list(response.iter_raw())


def test_load_fixtures_sorted_and_complete() -> None:
    fixtures = load_fixtures()
    assert len(fixtures) == len(list(FIXTURES_DIR.glob("*.json"))) > 0
    assert [f.name for f in fixtures] == sorted(f.name for f in fixtures)
    fx = load_fixture(SSE_FIXTURE)
    assert fx.provider == "anthropic" and fx.streaming and fx.endpoint_kind == "messages"


def test_fixture_json_body_status_and_headers_round_trip(server: ReplayServer) -> None:
    fx = load_fixture(JSON_FIXTURE)
    server.enqueue(fx)
    response = httpx.post(f"{server.url}{fx.endpoint}", json=fx.request_json)
    assert response.status_code == fx.status == 200
    assert response.text == fx.response_body
    assert response.headers["x-request-id"] == fx.response_headers["x-request-id"]
    assert response.headers["x-ratelimit-remaining-tokens"] == "39977"
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(fx.response_body.encode())
    assert "content-encoding" not in response.headers


def test_fixture_error_status_round_trips(server: ReplayServer) -> None:
    fx = next(f for f in load_fixtures() if f.status == 401 and f.provider == "openai")
    server.enqueue(Reply.from_fixture(fx))
    response = httpx.post(server.url + fx.endpoint, json={})
    assert response.status_code == 401
    assert response.json() == json.loads(fx.response_body)


def test_reply_from_fixture_drops_framing_headers() -> None:
    fx = Fixture(
        name="x",
        provider="openai",
        endpoint="/v1/x",
        endpoint_kind="models",
        method="GET",
        status=200,
        response_headers={
            "Content-Encoding": "gzip",
            "content-length": "3",
            "retry-after": "2",
        },
        response_body="{}",
        streaming=False,
    )
    assert Reply.from_fixture(fx).headers == {"retry-after": "2"}


def test_sse_fixture_arrives_event_by_event(server: ReplayServer) -> None:
    fx = load_fixture(SSE_FIXTURE)
    events = split_sse(fx.response_body)
    assert "".join(events) == fx.response_body and len(events) > 5
    server.enqueue(Reply.from_fixture(fx, chunk_delay=0.01))
    with httpx.stream("POST", server.url + fx.endpoint, json={}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["transfer-encoding"] == "chunked"
        chunks = list(response.iter_raw())
    assert b"".join(chunks) == fx.response_body.encode()
    assert chunks == [e.encode() for e in events]


def test_fault_status_429_carries_retry_after(server: ReplayServer) -> None:
    server.enqueue(Fault.status(429, retry_after=1))
    response = httpx.post(server.url + "/v1/chat/completions", json={})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_fault_status_bodies_follow_provider_formats(server: ReplayServer) -> None:
    server.enqueue(Fault.status(529), Fault.status(500), Fault.status(503, "oops"))
    overloaded = httpx.post(server.url + "/v1/messages")
    assert overloaded.status_code == 529
    assert overloaded.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    error = httpx.post(server.url + "/v1/chat/completions").json()["error"]
    assert error["type"] == "server_error" and error["param"] is None
    assert httpx.get(server.url).text == "oops"


def test_fault_reset_mid_stream_raises_after_events(server: ReplayServer) -> None:
    fx = load_fixture(SSE_FIXTURE)
    events = split_sse(fx.response_body)
    server.enqueue(Fault.reset(after_events=3, reply=Reply.from_fixture(fx)))
    received = b""
    with (
        pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)),
        httpx.stream("POST", server.url + fx.endpoint, json={}) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += chunk
    assert received == "".join(events[:3]).encode()
    assert server.client_disconnects == 0


def test_fault_reset_before_body(server: ReplayServer) -> None:
    server.enqueue(Fault.reset())
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.post(server.url + "/v1/chat/completions", json={})


def test_fault_truncated_ends_cleanly_without_done(server: ReplayServer) -> None:
    fx = load_fixture("openai__chat_completions__face3b6318a3")
    events = split_sse(fx.response_body)
    assert events[-1] == "data: [DONE]\n\n"
    server.enqueue(Fault.truncated(after_events=2, reply=fx))
    chunks = _stream_chunks(server.url)
    assert chunks == [e.encode() for e in events[:2]]


def test_fault_sse_error_appends_error_event(server: ReplayServer) -> None:
    server.enqueue(Fault.sse_error(after_events=2, reply=load_fixture(SSE_FIXTURE)))
    chunks = _stream_chunks(server.url)
    assert len(chunks) == 3
    assert chunks[-1].startswith(b"event: error\ndata: ")
    assert b"overloaded_error" in chunks[-1]


def test_fault_slow_headers_triggers_read_timeout(server: ReplayServer) -> None:
    server.enqueue(Fault.slow_headers(0.5))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url, json={}, timeout=0.1)
    # The server notices the client left once it tries to answer.
    assert server.wait_for_disconnects(1, timeout=5)


def test_fault_slow_headers_then_reply(server: ReplayServer) -> None:
    server.enqueue(Fault.slow_headers(0.2, Reply.from_json({"ok": True})))
    assert httpx.post(server.url, timeout=5).json() == {"ok": True}


def test_fault_invalid_json(server: ReplayServer) -> None:
    server.enqueue(Fault.invalid_json())
    response = httpx.post(server.url + "/v1/chat/completions", json={})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_queue_is_fifo_then_default(server: ReplayServer) -> None:
    server.enqueue(Reply.from_json({"n": 1}), Reply.from_json({"n": 2}))
    assert [httpx.get(server.url).json()["n"] for _ in range(2)] == [1, 2]
    assert httpx.get(server.url).status_code == 404
    server.default = Reply(204)
    assert httpx.delete(server.url + "/anything").status_code == 204


def test_handler_answers_when_queue_empty(server: ReplayServer) -> None:
    def handler(request: RecordedRequest) -> Reply:
        # Deterministic "20% of requests fail", chosen from the request body.
        if hashlib.sha256(request.body).digest()[0] % 5 == 0:
            return Fault.status(500)
        return Reply.from_json({"echo": request.json()["i"]})

    server.handler = handler
    server.enqueue(Fault.status(429))
    assert httpx.post(server.url, json={"i": -1}).status_code == 429
    statuses = {}
    for i in range(40):
        response = httpx.post(server.url, json={"i": i})
        statuses[i] = response.status_code
        if response.status_code == 200:
            assert response.json() == {"echo": i}
    assert 0 < list(statuses.values()).count(500) < 40
    # Same body, same outcome.
    failing = next(i for i, s in statuses.items() if s == 500)
    assert httpx.post(server.url, json={"i": failing}).status_code == 500


def test_requests_are_recorded(server: ReplayServer) -> None:
    server.default = Reply.from_json({})
    httpx.post(
        server.url + "/v1/messages?beta=true",
        json={"model": "m"},
        headers={"X-Api-Key": "k"},
    )
    httpx.get(server.url + "/openai/v1/models")
    first, second = server.requests
    assert (first.method, first.path, first.query) == (
        "POST",
        "/v1/messages",
        {"beta": "true"},
    )
    assert first.headers["x-api-key"] == "k"
    assert first.json() == {"model": "m"}
    assert (second.method, second.path, second.body) == (
        "GET",
        "/openai/v1/models",
        b"",
    )
    server.clear()
    assert server.requests == []


def test_requests_recorded_from_many_threads(server: ReplayServer) -> None:
    server.handler = lambda request: Reply.from_json(request.json())
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda i: httpx.post(server.url, json=i).json(), range(32)))
    assert bodies == list(range(32))
    assert sorted(r.json() for r in server.requests) == list(range(32))


def test_client_disconnect_during_stream_is_counted(server: ReplayServer) -> None:
    server.enqueue(Fault.truncated(50, Reply(sse=True, body="data: {}\n\n" * 50, chunk_delay=0.05)))
    with httpx.stream("POST", server.url, json={}) as response:
        first = next(response.iter_raw())
    assert first == b"data: {}\n\n"
    assert server.wait_for_disconnects(1, timeout=5)
    assert server.client_disconnects == 1


@pytest.mark.asyncio
async def test_server_works_from_async_tests(server: ReplayServer) -> None:
    fx = load_fixture(SSE_FIXTURE)
    server.enqueue(Reply.from_fixture(fx), Fault.status(503))
    async with httpx.AsyncClient(base_url=server.url) as client:
        async with client.stream("POST", fx.endpoint, json={}) as response:
            body = b"".join([chunk async for chunk in response.aiter_raw()])
        assert body == fx.response_body.encode()
        assert (await client.get("/")).status_code == 503


def test_stop_does_not_wait_for_slow_reply() -> None:
    srv = ReplayServer().start()
    srv.enqueue(Fault.slow_headers(30))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(srv.url, timeout=0.1)
    srv.stop()
    srv.stop()  # idempotent
