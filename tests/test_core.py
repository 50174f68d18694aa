"""The client core on the offline provider: API shape, sync/async twins, streams, errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest
from pydantic import BaseModel

import notebook_llm as nl
from notebook_llm import errors
from notebook_llm.core.client import CoreClient, Middleware
from notebook_llm.core.keys import find_key, mask
from notebook_llm.core.models import parse_model
from notebook_llm.core.retry import RetryPolicy, parse_retry_after
from notebook_llm.core.tools import function_tool


@pytest.fixture
def client() -> CoreClient:
    return CoreClient("offline:echo")


def test_complete_returns_echo_with_usage(client: CoreClient) -> None:
    completion = client.complete("hello there, world")
    assert completion.text == "hello there, world"
    assert completion.model == "offline:echo"
    assert completion.provider == "offline"
    assert completion.finish_reason == "stop"
    assert completion.usage.output_tokens == 4  # hello there , world
    assert completion.usage.total_tokens > completion.usage.output_tokens
    assert str(completion) == completion.text
    assert "offline:echo" in completion._repr_markdown_()


def test_complete_max_tokens_cuts_with_length(client: CoreClient) -> None:
    completion = client.complete("one two three four five", max_tokens=2)
    assert completion.text == "one two"
    assert completion.finish_reason == "length"
    assert completion.footer().endswith("cut off at max_tokens")


@pytest.mark.parametrize("limit", [1, 5, 17, 40])
def test_offline_story_never_writes_more_than_max_tokens(client: CoreClient, limit: int) -> None:
    completion = client.complete("A lighthouse by the sea", "offline:story", max_tokens=limit)
    assert 0 < completion.usage.output_tokens <= limit
    assert completion.finish_reason == "length"
    streamed = client.stream("A lighthouse by the sea", "offline:story", max_tokens=limit)
    assert "".join(chunk.text for chunk in streamed) == completion.text


def test_stream_sync_yields_chunks_and_completion(client: CoreClient) -> None:
    stream = client.stream("a b c d")
    texts = [chunk.text for chunk in stream]
    assert "".join(texts) == "a b c d"
    assert len([t for t in texts if t]) == 4
    assert stream.completion is not None and stream.completion.text == "a b c d"
    assert stream.completion.ttft_s is not None


def test_stream_leaving_early_cancels(client: CoreClient) -> None:
    stream = client.stream(" ".join(["w"] * 200), chunk_delay=0.005)
    for index, _ in enumerate(stream):
        if index == 3:
            break
    assert stream.completion is not None
    assert stream.completion.finish_reason == "cancelled"
    assert 0 < len(stream.completion.text.split()) < 200


def test_stream_cancel_from_another_thread(client: CoreClient) -> None:
    stream = client.stream(" ".join(["w"] * 500), chunk_delay=0.01)
    threading.Timer(0.1, stream.cancel).start()
    chunks = list(stream)
    assert stream.completion.finish_reason == "cancelled"
    assert 0 < len(chunks) < 500


async def test_astream_cancel_keeps_partial_text(client: CoreClient) -> None:
    stream = client.astream(" ".join(str(i) for i in range(100)), chunk_delay=0.001)
    async for chunk in stream:
        if chunk.text.strip() == "4":
            stream.cancel()
    assert stream.completion.finish_reason == "cancelled"
    assert stream.completion.text == "0 1 2 3 4"


async def test_task_cancellation_stops_stream(client: CoreClient) -> None:
    stream = client.astream(" ".join(["w"] * 1000), chunk_delay=0.01)

    async def consume() -> None:
        async for _ in stream:
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.completion.finish_reason == "cancelled"


async def test_sync_api_inside_running_loop(client: CoreClient) -> None:
    # A Jupyter cell runs inside a loop: the sync API must still work.
    assert client.complete("inside a loop").text == "inside a loop"
    assert (await client.acomplete("async too")).text == "async too"


def test_sync_api_with_nest_asyncio_applied() -> None:
    code = (
        "import asyncio, nest_asyncio\nnest_asyncio.apply()\n"
        "import notebook_llm as nl\n"
        "async def main():\n    return nl.complete('ok', model='offline:echo').text\n"
        "print(asyncio.run(main()))\n"
    )
    pytest.importorskip("nest_asyncio")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_iterate_drives_any_async_iterator_on_the_library_loop() -> None:
    from notebook_llm.core import loop as library_loop

    class Ticks:
        # __anext__ is a plain method returning a future of the running loop:
        # it must be called on the library's loop, and its result awaited there.
        def __init__(self) -> None:
            self.n = 0

        def __aiter__(self) -> Ticks:
            return self

        def __anext__(self) -> asyncio.Future[int]:
            future = asyncio.get_running_loop().create_future()
            if self.n == 3:
                future.set_exception(StopAsyncIteration())
            else:
                future.set_result(self.n)
            self.n += 1
            return future

    async def numbers():
        for n in range(3):
            yield n

    assert list(library_loop.iterate(Ticks())) == [0, 1, 2]
    assert list(library_loop.iterate(numbers())) == [0, 1, 2]


def test_module_level_functions_use_default_client() -> None:
    assert nl.complete("hi", model="offline:echo").text == "hi"
    assert [c.text for c in nl.stream("x y", model="offline:echo") if c.text] == ["x", " y"]
    vectors = nl.embed(["cat", "cat", "spaceship"], model="offline:hash").vectors
    assert len(vectors) == 3 and len(vectors[0]) == 256
    assert abs(sum(float(v) * v for v in vectors[0]) - 1) < 1e-5
    assert [m.id for m in nl.list_models("offline")] == ["echo", "story", "hash"]
    names = {p.name for p in nl.list_providers()}
    assert {
        "openai",
        "anthropic",
        "ollama",
        "vllm",
        "llamacpp",
        "lmstudio",
        "mistralrs",
        "universal",
        "groq",
        "mistral",
        "deepseek",
        "openrouter",
        "together",
        "openai-compatible",
        "offline",
        "local",
    } <= names


def test_providers_records_carry_env_and_capabilities() -> None:
    by_name = {p.name: p for p in nl.list_providers()}
    assert by_name["openai"].key_env == ("OPENAI_API_KEY",)
    assert by_name["openai"].base_url_env == "OPENAI_BASE_URL"
    assert by_name["groq"].default_base_url == "https://api.groq.com/openai/v1"
    assert by_name["anthropic"].capabilities.reasoning
    assert not by_name["offline"].key_required
    assert set(by_name["openai"].to_dict()) >= {
        "streaming",
        "tools",
        "structured_output",
        "reasoning",
        "image_input",
        "embeddings",
        "list_models",
        "batch",
    }


def test_unknown_provider_suggests_closest() -> None:
    with pytest.raises(errors.UnknownProviderError) as caught:
        parse_model("opneai:gpt-4o")
    assert "'openai'" in str(caught.value) and "anthropic" in str(caught.value)


def test_model_strings_and_aliases() -> None:
    assert str(parse_model("ollama:llama3.2:1b")) == "ollama:llama3.2:1b"
    assert str(parse_model("local:/models/x.gguf")) == "local:/models/x.gguf"
    assert str(parse_model("gpt-4o-mini")) == "openai:gpt-4o-mini"
    assert str(parse_model("claude-sonnet-4-5")) == "anthropic:claude-sonnet-4-5"
    assert str(parse_model("fast", {"fast": "offline:echo"})) == "offline:echo"
    assert str(parse_model("offline")) == "offline:echo"
    with pytest.raises(errors.UnknownProviderError):
        parse_model("mystery-model")


def test_default_model_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTEBOOK_LLM_MODEL", "offline:story")
    chosen = CoreClient().default_model()
    assert chosen.model == "offline:story" and "NOTEBOOK_LLM_MODEL" in chosen.reason


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.MissingKeyError) as caught:
        CoreClient().complete("hi", "groq:llama-3.1-8b-instant")
    assert "GROQ_API_KEY" in str(caught.value)


def test_key_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("X_TEST_KEY", raising=False)
    (tmp_path / ".env").write_text("export X_TEST_KEY='from-dotenv-123456'\n")
    assert find_key(("X_TEST_KEY",), prompt=False) == ("from-dotenv-123456", ".env")
    monkeypatch.setenv("X_TEST_KEY", "from-env-123456789")
    assert find_key(("X_TEST_KEY",), prompt=False) == ("from-env-123456789", "environment")
    assert find_key(("X_TEST_KEY",), explicit="arg", prompt=False) == ("arg", "argument")
    assert mask("sk-" + "proj-abcdefghijklmnop1234") == "sk-...1234"


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"x-ratelimit-reset-requests": "6m0s"}) == 360
    assert parse_retry_after({"x-ratelimit-reset-tokens": "20ms"}) == pytest.approx(0.02)
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470) == 10
    assert parse_retry_after({}) is None


def test_retry_policy_backoff_and_classes() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=1, jitter=0)
    assert policy.delay(errors.ProviderError("x"), 1) == 1
    assert policy.delay(errors.ProviderError("x"), 2) == 2
    assert policy.delay(errors.RateLimitError("x", retry_after=5), 1) == pytest.approx(5)
    assert policy.should_retry(errors.ProviderError("x"), 1)
    assert not policy.should_retry(errors.ProviderError("x"), 3)
    assert not policy.should_retry(errors.InvalidRequestError("x"), 1)
    assert not policy.should_retry(errors.AuthenticationError("x"), 1)


def test_retries_provider_errors_then_gives_up() -> None:
    client = CoreClient("offline:echo", retry=RetryPolicy(max_attempts=3, initial_delay=0.001))
    seen = []

    class Count(Middleware):
        async def after(self, ctx, completion, error):
            seen.append((ctx.attempts, type(error).__name__))

    client.middlewares.append(Count())
    with pytest.raises(errors.ProviderError):
        client.complete("hi", fail="boom")
    assert seen == [(3, "ProviderError")]


def test_error_messages_redact_keys() -> None:
    error = errors.AuthenticationError(
        "Incorrect API key provided: sk-" + "proj-abcdefghijklmnopqrstuv"
    )
    assert "abcdefghijkl" not in str(error) and "[REDACTED]" in str(error)


def test_tools_from_functions_and_loop() -> None:
    def get_weather(city: str, unit: str = "C") -> str:
        """Current weather for a city.

        Args:
            city: the city name.
            unit: C or F.
        """
        return f"sunny in {city}"

    tool = function_tool(get_weather)
    assert tool.name == "get_weather"
    assert tool.description == "Current weather for a city."
    assert tool.parameters["required"] == ["city"]
    assert tool.parameters["properties"]["city"] == {
        "type": "string",
        "description": "the city name.",
    }


class Person(BaseModel):
    name: str
    age: int


def test_structured_output_parsed_into_pydantic(client: CoreClient) -> None:
    completion = client.complete('{"name": "Ada", "age": 36}', response_format=Person)
    assert completion.parsed == Person(name="Ada", age=36)
    with pytest.raises(errors.ProviderError):
        client.complete("not json", response_format=Person)


def test_keyboard_interrupt_cancels_sync_call() -> None:
    # A real SIGINT to a child process blocked in a sync streaming call.
    code = (
        "import notebook_llm as nl, time, sys\n"
        "s = nl.stream(' '.join(['w']*100000), model='offline:echo', chunk_delay=0.01)\n"
        "try:\n"
        "    print('started', flush=True)\n"
        "    for c in s: pass\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', s.completion.finish_reason, flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.3)
    proc.send_signal(2)
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "interrupted cancelled"


def test_import_is_cheap() -> None:
    heavy = "('openai', 'anthropic', 'pandas', 'IPython', 'pydantic', 'httpx', 'aiohttp')"
    code = f"import sys, notebook_llm; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_mistyped_names_get_the_closest_suggested(client: CoreClient) -> None:
    from notebook_llm.core.errors import did_you_mean

    with pytest.raises(errors.ModelNotFoundError, match="Did you mean 'story'"):
        client.complete("hi", "offline:stroy")
    with pytest.raises(errors.UnknownProviderError, match="Did you mean 'openai'"):
        client.complete("hi", "opnai:gpt-4o-mini")
    assert did_you_mean("smolm2", ["minilm", "smollm2"]) == " Did you mean 'smollm2'?"
    assert did_you_mean("SMOLLM2", ["smollm2"]) == " Did you mean 'smollm2'?"
    assert did_you_mean("zzz", ["smollm2"]) == ""

