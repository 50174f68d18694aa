"""The client core against real OpenAI-compatible servers: llama.cpp (llama-cpp-python),
and ``nl.serve()`` over the same GGUF files in-process.

The client-side checks run on every transport against both servers (the
``chat_server`` and ``embedding_server`` fixtures); the cancel test watches
the llama.cpp server process's CPU time to prove that generation stopped, not
just that the client stopped reading (for ``nl.serve()`` the same is proved in
``tests/test_serve_clients.py``).
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

import notebook_llm as nl
from notebook_llm import errors
from notebook_llm.core.client import CoreClient
from notebook_llm.core.retry import RetryPolicy
from tests.support.llama_server import (
    MODELS_DIR,
    _tail,
    llama_server_unavailable,
    start_llama_server,
    stop_llama_server,
)

pytestmark = pytest.mark.llama
TRANSPORTS = ["fast", "aiohttp", "sdk"]
SERVERS = ["llama.cpp", "nl.serve"]
_seen_disconnects: dict[str, int] = {}


def _serve(alias: str, model: str) -> Iterator[str]:
    """``nl.serve()`` offering ``local:<model file>`` under the llama.cpp server's alias."""
    path = MODELS_DIR / model
    if not path.is_file():
        pytest.skip(f"model file {path} is absent")
    pytest.importorskip("llama_cpp")
    client = nl.Client(log=False, max_retries=0, aliases={alias: f"local:{path}"})
    server = nl.serve(client=client, models=[alias])
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def serve_chat_server() -> Iterator[str]:
    yield from _serve("stories260k", "stories260K.gguf")


@pytest.fixture(scope="module")
def serve_embedding_server() -> Iterator[str]:
    yield from _serve("all-minilm-l6-v2", "all-MiniLM-L6-v2-Q8_0.gguf")


@pytest.fixture(params=SERVERS)
def chat_server(request: pytest.FixtureRequest) -> str:
    """The ``/v1`` URL of a server answering ``stories260k``: llama.cpp's, or nl.serve()."""
    name = "llama_chat_server" if request.param == "llama.cpp" else "serve_chat_server"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(params=SERVERS)
def embedding_server(request: pytest.FixtureRequest) -> str:
    """The ``/v1`` URL of a server answering ``all-minilm-l6-v2`` embeddings."""
    name = "llama_embedding_server" if request.param == "llama.cpp" else "serve_embedding_server"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(scope="module")
def long_server() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """stories260K with room for long answers; (process, base URL)."""
    path = MODELS_DIR / "stories260K.gguf"
    reason = llama_server_unavailable(path)
    if reason:
        pytest.skip(reason)
    process, url = start_llama_server(
        path, "stories260k", extra_args=["--n_ctx", "4096", "--interrupt_requests", "False"]
    )
    try:
        yield process, url
    finally:
        stop_llama_server(process)


def client_for(url: str, transport: str) -> CoreClient:
    return CoreClient(
        api_bases={"llamacpp": url},
        provider_settings={"llamacpp": {"transport": transport}},
        retry=RetryPolicy(max_attempts=1),
    )


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_llama_complete(chat_server: str, transport: str) -> None:
    client = client_for(chat_server, transport)
    try:
        completion = await client.acomplete("Once upon a time", "llamacpp:stories260k",
                                            max_tokens=16, temperature=0)
    finally:
        await client.aclose()
    assert len(completion.text) > 10
    assert completion.finish_reason in ("stop", "length")
    assert completion.usage.output_tokens > 0 and completion.usage.input_tokens > 0
    assert completion.response_model


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_llama_stream(chat_server: str, transport: str) -> None:
    client = client_for(chat_server, transport)
    try:
        stream = client.astream("Once upon a time", "llamacpp:stories260k", max_tokens=24,
                                temperature=0)
        texts = [chunk.text async for chunk in stream]
    finally:
        await client.aclose()
    assert len([t for t in texts if t]) > 3
    assert stream.completion.text == "".join(texts)
    assert stream.completion.ttft_s is not None
    assert stream.completion.finish_reason in ("stop", "length")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_llama_list_models(chat_server: str, transport: str) -> None:
    client = client_for(chat_server, transport)
    try:
        models = await client.alist_models("llamacpp")
    finally:
        await client.aclose()
    assert [m.id for m in models] == ["stories260k"]
    assert models[0].model_string == "llamacpp:stories260k"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_llama_embed(embedding_server: str, transport: str) -> None:
    client = client_for(embedding_server, transport)
    try:
        result = await client.aembed(
            ["A cat sits on the mat.", "A kitten rests on a rug.", "Quarterly tax filing rules."],
            "llamacpp:all-minilm-l6-v2",
        )
    finally:
        await client.aclose()
    cat, kitten, tax = result.vectors
    assert len(cat) == 384

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    assert cosine(cat, kitten) > cosine(cat, tax) + 0.2


async def test_llama_connection_refused_is_clear() -> None:
    client = CoreClient(api_bases={"llamacpp": "http://127.0.0.1:9/v1"},
                        retry=RetryPolicy(max_attempts=1))
    with pytest.raises(errors.ConnectionError) as caught:
        await client.acomplete("hi", "llamacpp:any")
    await client.aclose()
    assert "127.0.0.1:9" in str(caught.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_llama_cancel_stops_generation_on_the_server(
    long_server: tuple[subprocess.Popen[bytes], str], transport: str
) -> None:
    process, url = long_server
    pid = process.pid
    client = client_for(url, transport)
    # A large bias against the end-of-story token keeps the model writing.
    stream = client.astream("Once upon a time", "llamacpp:stories260k", max_tokens=3500,
                            temperature=1.0, logit_bias={"2": -100})
    received = 0
    try:
        async for chunk in stream:
            received += bool(chunk.text)
            if received == 5:
                stream.cancel()
        # Give the server a moment to notice, then watch its CPU: a server still
        # generating 3,500 tokens would burn about a second of CPU per second.
        await asyncio.sleep(0.7)
        before = cpu_seconds(pid)
        await asyncio.sleep(1.5)
        burnt = cpu_seconds(pid) - before
    finally:
        await client.aclose()
    assert stream.completion.finish_reason == "cancelled"
    assert stream.completion.text
    assert burnt < 0.3, f"the server kept generating ({burnt:.2f}s of CPU after cancel)"
    # The server saw the client go away and ended the generation (its own log
    # line); a client that merely stopped reading would leave it paused instead.
    log = _tail(process.log, size=10**8)  # type: ignore[attr-defined]
    disconnects = log.count("Disconnected from client")
    assert disconnects > _seen_disconnects.get(url, 0)
    _seen_disconnects[url] = disconnects
    # And it answers the next request at once.
    client = client_for(url, transport)
    started = time.perf_counter()
    try:
        await client.acomplete("Once", "llamacpp:stories260k", max_tokens=4)
    finally:
        await client.aclose()
    assert time.perf_counter() - started < 3
