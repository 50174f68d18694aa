"""``nl.serve()``: the OpenAI SDK talks to it; limits, keys, errors and the call log.

Real parts only: the official openai SDK (sync, async, streaming), raw HTTP
through aiohttp for what the SDK hides (status codes, headers), the offline
models in-process, and a replay server for upstream provider errors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import notebook_llm as nl
from notebook_llm.core.client import CallContext, Middleware
from notebook_llm.core.types import Completion
from notebook_llm.providers.discovery import afind_local_servers, ignore_port, unignore_port
from notebook_llm.store.log import call_log
from tests.support.replay import Fault, ReplayServer, load_fixture


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "log.db"


@pytest.fixture(scope="module")
def server(db: Path) -> Iterator[nl.Server]:
    client = nl.Client(db_path=db, aliases={"echo": "offline:echo"}, max_retries=0)
    srv = nl.serve(client=client)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def sdk(server: nl.Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)


def post(url: str, body: Any, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def assert_openai_error(body: Any, code: str | None = None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


# -- the official SDK ---------------------------------------------------------------


def test_sdk_chat(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(
        model="offline:echo", messages=[{"role": "user", "content": "hello from the sdk"}]
    )
    assert reply.choices[0].message.content == "hello from the sdk"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "offline:echo"
    assert reply.usage is not None and reply.usage.completion_tokens == 4


def test_sdk_chat_alias_and_max_tokens(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(
        model="echo", max_completion_tokens=2,
        messages=[{"role": "developer", "content": "be brief"},
                  {"role": "user", "content": "one two three four"}],
    )
    assert reply.choices[0].message.content == "one two"
    assert reply.choices[0].finish_reason == "length"


def test_sdk_stream_with_usage(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(
        model="offline:echo", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "a streamed answer in words"}],
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a streamed answer in words"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_sdk_stream_without_usage(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(
        model="offline:echo", stream=True, messages=[{"role": "user", "content": "hi there"}]
    ))
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)


async def test_async_sdk_chat_stream_embeddings_models(server: nl.Server) -> None:
    client = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0)
    try:
        reply = await client.chat.completions.create(
            model="offline:story", max_tokens=12,
            messages=[{"role": "user", "content": "a fox"}])
        assert reply.choices[0].message.content
        stream = await client.chat.completions.create(
            model="offline:echo", stream=True,
            messages=[{"role": "user", "content": "async streaming works"}])
        parts = [c.choices[0].delta.content or "" async for c in stream]
        assert "".join(parts) == "async streaming works"
        vectors = await client.embeddings.create(model="offline:hash", input=["a", "b c"])
        assert [len(d.embedding) for d in vectors.data] == [256, 256]
        models = await client.models.list()
        assert "offline:echo" in [m.id for m in models.data]
    finally:
        await client.close()


def test_sdk_embeddings_match_the_library(sdk: openai.OpenAI) -> None:
    texts = ["A cat sits on the mat.", "Quarterly tax rules."]
    # The SDK asks for base64 by default; ask for floats too.
    encoded = sdk.embeddings.create(model="offline:hash", input=texts)
    floats = sdk.embeddings.create(model="offline:hash", input=texts, encoding_format="float")
    direct = nl.embed(texts, "offline:hash", cache=False, progress=False)
    for row, expected in zip(encoded.data, direct.vectors, strict=True):
        assert row.embedding == pytest.approx([float(v) for v in expected], abs=1e-6)
    for got, want in zip(floats.data, encoded.data, strict=True):
        assert got.embedding == pytest.approx(want.embedding, abs=1e-6)
    assert [d.index for d in encoded.data] == [0, 1]
    assert encoded.usage.prompt_tokens > 0


def test_base64_embeddings_are_little_endian_float32(server: nl.Server) -> None:
    status, _, body = post(f"{server.url}/embeddings", {"model": "offline:hash", "input": "x y",
                                                        "encoding_format": "base64"})
    assert status == 200
    raw = base64.b64decode(body["data"][0]["embedding"])
    values = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(values) == 256 and abs(sum(v * v for v in values) - 1) < 1e-4


def test_sdk_models_have_the_fields_it_expects(sdk: openai.OpenAI) -> None:
    models = {m.id: m for m in sdk.models.list()}
    assert {"offline:echo", "offline:story", "offline:hash", "echo"} <= set(models)
    echo = models["offline:echo"]
    assert echo.object == "model" and echo.owned_by == "offline" and echo.created > 0


def test_sdk_responses_text(sdk: openai.OpenAI) -> None:
    reply = sdk.responses.create(model="offline:echo", input="respond with this",
                                 instructions="be plain")
    assert reply.output_text == "respond with this"
    assert reply.status == "completed" and reply.usage is not None
    assert reply.usage.output_tokens == 3
    events = list(sdk.responses.create(model="offline:echo", input="streamed response text",
                                       stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "streamed response text"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "streamed response text"
    with sdk.responses.stream(model="offline:echo", input="helper too") as stream:
        final = stream.get_final_response()
    assert final.output_text == "helper too"


def test_tools_and_response_format_pass_through(server: nl.Server) -> None:
    # Seen by the provider: a middleware (the library's own hook) records the request.
    seen: list[Any] = []

    class Record(Middleware):
        async def before(self, ctx: CallContext) -> Completion | None:
            seen.append(ctx.request)
            return None

    client = nl.Client(log=False, middlewares=[Record()])
    with nl.serve(client=client, models=["offline:echo"]) as srv:
        tools = [{"type": "function", "function": {
            "name": "weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
        status, _, body = post(f"{srv.url}/chat/completions", {
            "model": "offline:echo", "messages": [{"role": "user", "content": "{\"a\": 1}"}],
            "tools": tools, "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "response_format": {"type": "json_object"}, "seed": 7, "api_base": "http://evil/",
        })
    assert status == 200, body
    request = seen[0]
    assert [t.name for t in request.tools] == ["weather"]
    assert request.tools[0].parameters["properties"]["city"] == {"type": "string"}
    assert request.tool_choice == "weather"
    assert request.response_format == {"type": "json_object"}
    assert request.extra == {"seed": 7}  # api_base never comes from a caller


# -- refusals and errors ----------------------------------------------------------


def test_unknown_and_unserved_models_are_404(server: nl.Server, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="nosuch:model",
                                    messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"
    with nl.serve(client=nl.Client(log=False), models=["offline:story"]) as srv:
        status, _, body = post(f"{srv.url}/chat/completions", {
            "model": "offline:echo", "messages": [{"role": "user", "content": "x"}]})
        assert status == 404
        assert_openai_error(body, "model_not_found")
        listed = openai.OpenAI(base_url=srv.url, api_key="x").models.list()
        assert [m.id for m in listed.data] == ["offline:story"]


@pytest.mark.parametrize("body,param", [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "offline:echo"}, "messages"),
    ({"model": "offline:echo", "messages": []}, "messages"),
    ({"model": "offline:echo", "messages": [{"role": "user", "content": "x"}], "n": 3}, "n"),
    ({"model": "offline:echo", "messages": [{"role": "user", "content": "x"}],
      "temperature": "hot"}, "temperature"),
])
def test_bad_requests_are_400_in_openai_shape(server: nl.Server, body: Any, param: str) -> None:
    status, _, answer = post(f"{server.url}/chat/completions", body)
    assert status == 400
    assert_openai_error(answer)
    assert answer["error"]["param"] == param
    assert answer["error"]["type"] == "invalid_request_error"


def test_invalid_json_and_unknown_path(server: nl.Server) -> None:
    status, _, body = post(f"{server.url}/chat/completions", None, raw=b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, _, body = post(f"{server.url}/nowhere", {})
    assert status == 404
    assert_openai_error(body, "not_found")


def test_oversized_body_is_413(server: nl.Server) -> None:
    with nl.serve(client=nl.Client(log=False), max_body_bytes=4096) as srv:
        big = {"model": "offline:echo", "messages": [{"role": "user", "content": "x" * 10000}]}
        status, _, body = post(f"{srv.url}/chat/completions", big)
        assert status == 413
        assert_openai_error(body, "request_too_large")
        status, _, _ = post(f"{srv.url}/chat/completions", {
            "model": "offline:echo", "messages": [{"role": "user", "content": "small"}]})
        assert status == 200


async def test_overload_is_429_with_retry_after() -> None:
    import aiohttp

    release = asyncio.Event()
    entered = asyncio.Event()

    class Hold(Middleware):
        """Holds each call until released: a server that is busy."""

        async def before(self, ctx: CallContext) -> Completion | None:
            entered.set()
            await release.wait()
            return None

    loop = asyncio.get_running_loop()
    srv = nl.serve(client=nl.Client(log=False, middlewares=[Hold()]), max_concurrent=1)
    body = {"model": "offline:echo", "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with aiohttp.ClientSession() as session:
            first = asyncio.ensure_future(session.post(f"{srv.url}/chat/completions", json=body))
            for _ in range(200):
                if srv.traffic.in_flight:
                    break
                await asyncio.sleep(0.01)
            async with session.post(f"{srv.url}/chat/completions", json=body) as second:
                assert second.status == 429
                assert second.headers["Retry-After"] == "1"
                assert_openai_error(await second.json(), "too_many_requests")
            # The held call's loop is the server's (the library's), not this one.
            from notebook_llm.core.loop import get_loop

            get_loop().loop.call_soon_threadsafe(release.set)
            response = await first
            assert response.status == 200
            response.release()
    finally:
        await loop.run_in_executor(None, srv.stop)


def test_non_loopback_needs_a_key_and_then_checks_it() -> None:
    with pytest.raises(ValueError, match="api_key"):
        nl.serve(host="0.0.0.0")
    key = "serve-test-key-0123456789"
    with nl.serve(host="0.0.0.0", api_key=key, client=nl.Client(log=False)) as srv:
        url = f"http://127.0.0.1:{srv.port}/v1"
        body = {"model": "offline:echo", "messages": [{"role": "user", "content": "hi"}]}
        status, _, answer = post(f"{url}/chat/completions", body)
        assert status == 401
        assert_openai_error(answer, "invalid_api_key")
        assert key not in json.dumps(answer)
        status, _, _ = post(f"{url}/chat/completions", body,
                            {"Authorization": "Bearer wrong-key-000000000"})
        assert status == 401
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
        assert ok.chat.completions.create(
            model="offline:echo", messages=[{"role": "user", "content": "keyed"}]
        ).choices[0].message.content == "keyed"
        assert key not in repr(srv) and key not in srv._repr_html_()
        assert key not in repr(srv._settings)


@pytest.mark.parametrize("reply,status,code", [
    (Fault.status(429, retry_after=7), 429, "rate_limit_exceeded"),
    (Fault.status(500), 502, "upstream_error"),
    (Fault.status(404, message="The model `x` does not exist"), 404, "model_not_found"),
])
def test_upstream_errors_map_to_openai_codes(reply: Any, status: int, code: str) -> None:
    with ReplayServer() as upstream:
        upstream.enqueue(reply, reply)
        client = nl.Client(log=False, max_retries=0,
                           api_bases={"openai-compatible": upstream.url},
                           api_keys={"openai-compatible": "upstream-key-0123456789"})
        with nl.serve(client=client) as srv:
            # Plain, then streamed: an error before the first chunk is an HTTP status too.
            answers = [post(f"{srv.url}/chat/completions", {
                "model": "openai-compatible:gpt-x", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}) for stream in (False, True)]
    for got, headers, body in answers:
        assert got == status
        assert_openai_error(body, code)
        if status == 429:
            assert headers["Retry-After"] == "7"


def test_upstream_401_is_mapped_and_the_key_redacted() -> None:
    secret = "sk-proj-upstreamSecretKey0123456789abcdef"
    recorded = load_fixture("openai__chat_completions__157e5d158091")
    with ReplayServer() as upstream:
        # The recorded 401, and one that echoes the key sent (as some servers do).
        upstream.enqueue(recorded, Fault.status(401, message=f"bad key {secret} refused"))
        client = nl.Client(log=False, max_retries=0,
                           api_bases={"openai-compatible": upstream.url},
                           api_keys={"openai-compatible": secret})
        with nl.serve(client=client) as srv:
            body = {"model": "openai-compatible:gpt-3.5-turbo",
                    "messages": [{"role": "user", "content": "hi"}]}
            first = post(f"{srv.url}/chat/completions", body)
            second = post(f"{srv.url}/chat/completions", body)
            health = urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/health").read()
            models = urllib.request.urlopen(f"{srv.url}/models").read()
    for status, _, answer in (first, second):
        assert status == 401
        assert_openai_error(answer, "invalid_api_key")
        assert secret not in json.dumps(answer)
    assert "refused" in second[2]["error"]["message"]
    assert secret not in health.decode() and secret not in models.decode()


def test_a_call_routed_back_to_the_server_is_refused() -> None:
    client = nl.Client(log=False, max_retries=0)
    with nl.serve(client=client) as srv:
        client.api_bases["openai-compatible"] = f"http://localhost:{srv.port}/v1"
        status, _, body = post(f"{srv.url}/chat/completions", {
            "model": "openai-compatible:offline:echo",
            "messages": [{"role": "user", "content": "loop?"}]})
        assert status == 400
        assert_openai_error(body, "routing_loop")
        assert srv.traffic.in_flight == 0


async def test_discovery_never_finds_its_own_server(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    srv = await loop.run_in_executor(None, lambda: nl.serve(client=nl.Client(log=False)))
    try:
        ports = {"llamacpp": srv.port}
        assert await afind_local_servers(ports) == []
        # The same probe finds it once the port is no longer marked as ours.
        unignore_port(srv.port)
        found = await afind_local_servers(ports)
        assert [s.base_url for s in found] == [srv.url]
        ignore_port(srv.port)
    finally:
        await loop.run_in_executor(None, srv.stop)


# -- one client, one ledger ---------------------------------------------------------


def test_calls_are_logged_with_the_callers_address(server: nl.Server, db: Path,
                                                   sdk: openai.OpenAI) -> None:
    sdk.chat.completions.create(model="offline:echo",
                                messages=[{"role": "user", "content": "ledger entry"}])
    list(sdk.chat.completions.create(model="offline:echo", stream=True,
                                     messages=[{"role": "user", "content": "streamed entry"}]))
    assert call_log(db).flush()
    frame = nl.usage(tag="serve", db_path=db)
    assert {"ledger entry", "streamed entry"} <= set(frame["response"])
    assert all("serve:127.0.0.1" in tags for tags in frame["tags"])
    assert (frame["cost_usd"] == 0).all()


def test_health_and_the_handle(server: nl.Server) -> None:
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health").read())
    assert health["status"] == "ok"
    assert health["memory"]["rss_bytes"] > 0
    assert isinstance(health["loaded_models"], list)
    assert health["traffic"]["requests"] >= 1
    html = server._repr_html_()
    assert server.url in html and "requests" in html
    assert "running" in repr(server)


def test_the_repr_escapes_what_callers_send() -> None:
    name = "<img src=x onerror=alert(1)>"
    client = nl.Client(log=False, aliases={name: "offline:echo"})
    with nl.serve(client=client, models=[name]) as srv:
        html = srv._repr_html_()
    assert "<img" not in html and "&lt;img" in html


def _sse_tool_calls(body: str) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for line in body.splitlines():
        if not line.startswith("data: {"):
            continue
        for choice in json.loads(line[6:]).get("choices") or []:
            for part in (choice.get("delta") or {}).get("tool_calls") or []:
                call = calls.setdefault(part["index"], {"name": "", "arguments": ""})
                function = part.get("function") or {}
                call["name"] += function.get("name") or ""
                call["arguments"] += function.get("arguments") or ""
    return calls


@pytest.mark.parametrize("name", ["groq__chat_completions__fe1bc0479819",
                                  "openai__chat_completions__face3b6318a3"])
def test_recorded_tool_calls_reach_the_caller(name: str) -> None:
    fixture = load_fixture(name)
    asked = fixture.request_json
    with ReplayServer() as upstream:
        upstream.enqueue(fixture)
        client = nl.Client(log=False, max_retries=0,
                           api_bases={"openai-compatible": upstream.url},
                           api_keys={"openai-compatible": "upstream-key-0123456789"})
        with nl.serve(client=client) as srv:
            sdk = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
            model = f"openai-compatible:{asked['model']}"
            if fixture.streaming:
                chunks = list(sdk.chat.completions.create(
                    model=model, messages=asked["messages"], tools=asked["tools"],
                    tool_choice=asked["tool_choice"], stream=True,
                    stream_options={"include_usage": True}))
                got: dict[int, dict[str, str]] = {}
                for chunk in chunks:
                    for part in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                        call = got.setdefault(part.index, {"name": "", "arguments": ""})
                        call["name"] += (part.function and part.function.name) or ""
                        call["arguments"] += (part.function and part.function.arguments) or ""
                expected = _sse_tool_calls(fixture.response_body)
                finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
                assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
            else:
                reply = sdk.chat.completions.create(
                    model=model, messages=asked["messages"], tools=asked["tools"],
                    tool_choice=asked["tool_choice"])
                message = json.loads(fixture.response_body)["choices"][0]["message"]
                expected = {i: {"name": c["function"]["name"],
                                "arguments": c["function"]["arguments"]}
                            for i, c in enumerate(message["tool_calls"])}
                got = {i: {"name": c.function.name, "arguments": c.function.arguments}
                       for i, c in enumerate(reply.choices[0].message.tool_calls or [])}
                finish = reply.choices[0].finish_reason
        sent = upstream.requests[0].json()
    assert got == expected and got
    assert finish == "tool_calls"
    # The tools reached the upstream provider as the caller sent them.
    assert [t["function"]["name"] for t in sent["tools"]] == [
        t["function"]["name"] for t in asked["tools"]]
    assert sent["tools"][0]["function"]["parameters"] == asked["tools"][0]["function"][
        "parameters"]


def test_repeated_calls_come_from_the_response_cache(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    client = nl.Client(db_path=db, cache=True)
    with nl.serve(client=client) as srv:
        for _ in range(2):
            status, _, body = post(f"{srv.url}/chat/completions", {
                "model": "offline:story", "messages": [{"role": "user", "content": "cached"}]})
            assert status == 200 and body["choices"][0]["message"]["content"]
    assert call_log(db).flush()
    frame = nl.usage(tag="serve", db_path=db)
    assert list(frame["cached"]) == [False, True]


def test_a_budget_refusal_is_429_insufficient_quota() -> None:
    with ReplayServer() as upstream:
        client = nl.Client(log=False, max_retries=0, budget_usd=1e-9,
                           api_bases={"openai": upstream.url},
                           api_keys={"openai": "sk-budget-test-0123456789"})
        with nl.serve(client=client) as srv:
            status, _, body = post(f"{srv.url}/chat/completions", {
                "model": "openai:gpt-4o-mini", "max_tokens": 500,
                "messages": [{"role": "user", "content": "spend money"}]})
        assert upstream.requests == []  # refused before anything was sent
    assert status == 429
    assert_openai_error(body, "insufficient_quota")
    assert body["error"]["type"] == "insufficient_quota"


def test_an_answer_that_fails_its_json_format_still_reaches_the_caller(
    sdk: openai.OpenAI,
) -> None:
    asked: dict[str, Any] = {"model": "offline:echo", "response_format": {"type": "json_object"},
                             "messages": [{"role": "user", "content": "not json at all"}]}
    reply = sdk.chat.completions.create(**asked)
    assert reply.choices[0].message.content == "not json at all"
    chunks = list(sdk.chat.completions.create(**asked, stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "not json at all")
    assert chunks[-1].usage is not None


@pytest.mark.parametrize("path,body,status,param", [
    ("/responses", {"model": "offline:echo", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "http://example.com/x.png"}]}]}, 400, "input"),
    ("/responses", {"model": "offline:echo"}, 400, "input"),
    ("/embeddings", {"model": "offline:hash", "input": [[1, 2, 3]]}, 400, "input"),
    ("/embeddings", {"model": "offline:hash", "input": "x", "encoding_format": "hex"}, 400,
     "encoding_format"),
])
def test_unsupported_inputs_are_refused_clearly(server: nl.Server, path: str, body: Any,
                                                status: int, param: str) -> None:
    got, _, answer = post(f"{server.url}{path}", body)
    assert got == status
    assert_openai_error(answer)
    assert answer["error"]["param"] == param


def test_wrong_method_is_405(server: nl.Server) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{server.url}/chat/completions")
    assert caught.value.code == 405
    assert_openai_error(json.loads(caught.value.read()))


async def test_a_chunked_body_over_the_limit_is_413() -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    srv = await loop.run_in_executor(
        None, lambda: nl.serve(client=nl.Client(log=False), max_body_bytes=4096))

    async def pieces() -> Any:
        for _ in range(10):
            yield b"x" * 1024

    try:
        async with aiohttp.ClientSession() as session, session.post(
            f"{srv.url}/chat/completions", data=pieces()
        ) as response:
            assert response.status == 413
            assert_openai_error(await response.json(), "request_too_large")
    finally:
        await loop.run_in_executor(None, srv.stop)
