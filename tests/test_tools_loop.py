"""The tool loop in complete() and stream(): rounds, limits, validation, errors,
timeouts, threads and Stop, against the in-process ``offline:tools`` model (it
calls the tools its prompt names) and the real call log."""

from __future__ import annotations

import asyncio
import contextvars
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import notebook_llm as nl
from notebook_llm import errors
from notebook_llm._client import Client
from notebook_llm.core import inflight
from notebook_llm.core.client import CoreClient
from notebook_llm.core.types import Tool

MODEL = "offline:tools"
seen_var: contextvars.ContextVar[str] = contextvars.ContextVar("seen_var", default="unset")


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


def test_complete_runs_the_loop_by_default_and_keeps_the_runs() -> None:
    client = CoreClient()
    completion = client.complete('call add {"a": 2, "b": 3}', model=MODEL, tools=[add])
    assert completion.text == "Tool results: add: 5"
    [run] = completion.tool_runs
    assert (run.call.name, run.status, run.output, run.round) == ("add", "ok", "5", 1)
    assert run.duration_s is not None and run.duration_s >= 0
    # The second request carried the call and its result back.
    assert completion.messages[-2]["tool_calls"][0]["function"]["name"] == "add"
    assert completion.messages[-1] == {"role": "tool", "tool_call_id": "call_0_0", "content": "5"}


def test_stream_runs_the_loop_and_yields_tool_events() -> None:
    client = CoreClient()
    stream = client.stream('call add {"a": 2, "b": 3}\ncall add {"a": 1, "b": 1}',
                           model=MODEL, tools=[add])
    events = [(c.tool_run.call.name, c.tool_run.status, c.tool_run.output)
              for c in stream if c.tool_run is not None]
    assert events == [("add", "running", ""), ("add", "ok", "5"),
                      ("add", "running", ""), ("add", "ok", "2")]
    assert stream.completion is not None
    assert stream.completion.text == "Tool results: add: 5; add: 2"
    assert [run.round for run in stream.completion.tool_runs] == [1, 2]


async def test_astream_parallel_calls_and_text() -> None:
    client = CoreClient()
    stream = client.astream('call add {"a": 1, "b": 2} & add {"a": 3, "b": 4}', model=MODEL,
                            tools=[add])
    texts = [chunk.text async for chunk in stream if chunk.text]
    assert "".join(texts) == "Tool results: add: 3; add: 7"
    assert stream.text == "Tool results: add: 3; add: 7"
    assert [r.output for r in stream.completion.tool_runs] == ["3", "7"]


@pytest.mark.parametrize("streaming", [False, True])
def test_default_round_limit_stops_a_model_that_never_stops(streaming: bool) -> None:
    client = CoreClient()
    prompt = 'call* add {"a": 1, "b": 1}'
    if streaming:
        completion = client.stream(prompt, model=MODEL, tools=[add]).collect()
    else:
        completion = client.complete(prompt, model=MODEL, tools=[add])
    assert len(completion.tool_runs) == 5  # the default max_tool_rounds
    assert completion.finish_reason == "tool_calls" and completion.tool_calls


def test_max_tool_rounds_and_zero_turns_the_loop_off() -> None:
    client = CoreClient()
    completion = client.complete('call* add {"a": 1, "b": 1}', model=MODEL, tools=[add],
                                 max_tool_rounds=2)
    assert len(completion.tool_runs) == 2
    off = client.complete('call add {"a": 1, "b": 1}', model=MODEL, tools=[add],
                          max_tool_rounds=0)
    assert off.tool_runs == [] and off.tool_calls[0].name == "add"


def test_total_call_cap_per_message() -> None:
    client = CoreClient()
    completion = client.complete('call* add {"a": 1, "b": 1} & add {"a": 2, "b": 2}',
                                 model=MODEL, tools=[add], max_tool_calls=3)
    statuses = [run.status for run in completion.tool_runs]
    assert statuses[:3] == ["ok", "ok", "ok"]
    assert set(statuses[3:]) == {"limit"}
    assert "limit of 3 tool calls" in completion.tool_runs[3].output


def test_invalid_arguments_are_refused_before_running() -> None:
    ran: list[Any] = []

    def record(n: int) -> str:
        """Record a number."""
        ran.append(n)
        return "ok"

    client = CoreClient()
    completion = client.complete('call record {"n": "seven"}\ncall record {"n": 7, "x": 1}\n'
                                 "call record not json", model=MODEL, tools=[record])
    first, second, third = completion.tool_runs
    assert ran == []
    assert first.status == "invalid" and "argument n must be integer" in first.output
    assert "Nothing was run" in first.output
    assert second.status == "invalid" and "unexpected keyword argument 'x'" in second.output
    assert third.status == "invalid" and "not valid JSON" in third.output


def test_unknown_tool_is_told_to_the_model() -> None:
    completion = CoreClient().complete("call delete_everything {}", model=MODEL, tools=[add])
    [run] = completion.tool_runs
    assert run.status == "unknown"
    assert "no tool named 'delete_everything'" in run.output and "add" in run.output
    assert completion.text.startswith("Tool results: delete_everything: Error")


def test_a_tool_that_raises_tells_the_model_and_keeps_the_traceback() -> None:
    def broken() -> str:
        """Always fails."""
        raise ValueError("the disk is on fire")

    completion = CoreClient().complete("call broken {}", model=MODEL, tools=[broken])
    [run] = completion.tool_runs
    assert run.status == "error"
    assert run.output == "Error: ValueError: the disk is on fire"
    assert run.traceback is not None and "Traceback" in run.traceback
    assert 'raise ValueError("the disk is on fire")' in run.traceback


def test_cancel_tool_call_raised_by_the_tool() -> None:
    def careful(path: str) -> str:
        """Refuses some paths."""
        raise errors.CancelToolCall(f"{path} is off limits")

    completion = CoreClient().complete('call careful {"path": "/etc"}', model=MODEL,
                                       tools=[careful])
    [run] = completion.tool_runs
    assert run.status == "denied" and "/etc is off limits" in run.output
    assert nl.errors.CancelToolCall is errors.CancelToolCall


def test_sync_tool_past_its_timeout_is_abandoned() -> None:
    release = threading.Event()

    @nl.tool(timeout=0.2)
    def hang() -> str:
        """Waits forever."""
        release.wait(10)
        return "late"

    try:
        completion = CoreClient().complete("call hang {}", model=MODEL, tools=[hang])
    finally:
        release.set()
    [run] = completion.tool_runs
    assert run.status == "timeout" and "longer than 0.2 s and was abandoned" in run.output


def test_async_tool_runs_on_the_loop_under_tool_timeout() -> None:
    threads: list[str] = []

    async def quick() -> str:
        """Async and quick."""
        threads.append(threading.current_thread().name)
        return "fine"

    async def slow() -> str:
        """Async and slow."""
        await asyncio.sleep(10)
        return "late"

    completion = CoreClient().complete("call quick {} & slow {}", model=MODEL,
                                       tools=[quick, slow], tool_timeout=0.2)
    assert [r.status for r in completion.tool_runs] == ["ok", "timeout"]
    assert threads == ["notebook-llm-loop"]


def test_sync_tools_run_on_worker_threads_in_the_callers_context() -> None:
    seen: list[tuple[str, str]] = []

    def where() -> str:
        """Where am I."""
        seen.append((threading.current_thread().name, seen_var.get()))
        return "here"

    token = seen_var.set("from the caller")
    try:
        CoreClient().complete("call where {}", model=MODEL, tools=[where])
        CoreClient().stream("call where {}", model=MODEL, tools=[where]).collect()
    finally:
        seen_var.reset(token)
    assert [name.startswith("notebook-llm-tool") for name, _ in seen] == [True, True]
    assert [value for _, value in seen] == ["from the caller", "from the caller"]


async def test_a_slow_sync_tool_does_not_hold_other_streams() -> None:
    # While one conversation's tool blocks its thread, another stream on the
    # same client finishes: the loop is free.
    started, release = threading.Event(), threading.Event()

    def block() -> str:
        """Blocks until released."""
        started.set()
        release.wait(20)
        return "released"

    client = CoreClient()
    slow = asyncio.ensure_future(client.astream("call block {}", model=MODEL,
                                                tools=[block]).collect())
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
    other = await client.astream("other words", model="offline:echo").collect()
    assert other.text == "other words" and not slow.done()
    release.set()
    assert (await slow).text == "Tool results: block: released"


def test_model_timeout_does_not_count_time_in_tools() -> None:
    def slow() -> str:
        """Takes a while."""
        time.sleep(0.6)
        return "done"

    client = CoreClient()
    completion = client.complete("call slow {}", model=MODEL, tools=[slow], timeout=0.3)
    assert completion.text == "Tool results: slow: done"
    streamed = client.stream("call slow {}", model=MODEL, tools=[slow], timeout=0.3).collect()
    assert streamed.text == "Tool results: slow: done"


def test_stop_during_a_tool_ends_the_whole_loop() -> None:
    started = threading.Event()
    finished: list[bool] = []

    def sleepy() -> str:
        """Sleeps."""
        started.set()
        time.sleep(1.5)
        finished.append(True)
        return "woke"

    client = CoreClient()
    stream = client.stream("call sleepy {}\ncall sleepy {}", model=MODEL, tools=[sleepy])
    threading.Thread(target=lambda: (started.wait(10), stream.cancel()), daemon=True).start()
    events = [c.tool_run.status for c in stream if c.tool_run is not None]
    assert stream.completion is not None
    assert stream.completion.finish_reason == "cancelled"
    assert events == ["running"]  # the stream ends at once: no result event
    assert [r.status for r in stream.completion.tool_runs] == ["cancelled"]  # no second round


def test_stop_all_ends_a_tool_loop_waiting_for_a_person() -> None:
    asked = threading.Event()

    async def before_call(tool: Any, arguments: Any) -> bool:
        asked.set()
        await asyncio.Event().wait()  # nobody ever answers
        return True

    client = CoreClient()
    stream = client.stream("call add {\"a\": 1, \"b\": 2}", model=MODEL, tools=[add],
                           approve=before_call)
    kinds: list[str] = []

    def stop_when_asked() -> None:
        asked.wait(10)
        kinds.extend(entry.kind for entry in inflight.running())
        nl.stop_all()

    threading.Thread(target=stop_when_asked, daemon=True).start()
    started = time.monotonic()
    list(stream)
    assert time.monotonic() - started < 5
    assert "tool_loop" in kinds  # the loop itself is in the registry, not only its rounds
    assert stream.completion is not None and stream.completion.finish_reason == "cancelled"
    assert [entry.kind for entry in inflight.running()] == []


def test_bad_options_are_refused_before_sending() -> None:
    client = CoreClient()
    with pytest.raises(errors.InvalidRequestError, match="approve='sometimes'"):
        client.complete("x", model=MODEL, tools=[add], approve="sometimes")
    with pytest.raises(errors.InvalidRequestError, match="max_tool_rounds=-1"):
        client.stream("x", model=MODEL, tools=[add], max_tool_rounds=-1)
    with pytest.raises(errors.InvalidRequestError, match="tool_timeout=0"):
        client.complete("x", model=MODEL, tools=[add], tool_timeout=0)
    with pytest.raises(errors.InvalidRequestError, match="takes a list"):
        client.complete("x", model=MODEL, tools=add)
    with pytest.raises(errors.InvalidRequestError, match="Two tools are named add"):
        client.complete("x", model=MODEL, tools=[add, add])


class Calculator:
    """A toolbox: its public methods are the tools."""

    def __init__(self) -> None:
        self.memory = 0

    def store(self, value: int) -> str:
        """Remember a value."""
        self.memory = value
        return "stored"

    def recall(self) -> int:
        """The value remembered."""
        return self.memory

    def _private(self) -> None:
        raise AssertionError("not a tool")


def test_a_toolbox_object_and_the_tool_decorator() -> None:
    box = Calculator()

    @nl.tool(name="double", dangerous=False, timeout=5)
    def twice(x: int) -> int:
        """Double it."""
        return 2 * x

    assert isinstance(twice, Tool) and twice(4) == 8 and twice.timeout == 5
    completion = CoreClient().complete('call store {"value": 41}\ncall recall {} & double '
                                       '{"x": 21}', model=MODEL, tools=[box, twice])
    assert completion.text == "Tool results: store: stored; recall: 41; double: 42"
    names = [t["function"]["name"] for t in completion.messages[3]["tool_calls"]]
    assert names == ["recall", "double"]


def test_tool_runs_are_logged_with_the_request_that_carries_them(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    client = Client(db_path=db)
    client.complete('call add {"a": 2, "b": 3}', model=MODEL, tools=[add], tags=["t"])
    client.stream("call nope {}", model=MODEL, tools=[add]).collect()
    from notebook_llm.store.log import call_log

    call_log(db).flush()
    rows = sqlite3.connect(db).execute(
        "SELECT tool_calls_json, tool_results_json FROM calls ORDER BY created_at").fetchall()
    assert len(rows) == 4
    assert json.loads(rows[0][0])[0]["name"] == "add" and rows[0][1] is None
    [result] = json.loads(rows[1][1])
    assert (result["name"], result["arguments"], result["status"], result["output"]) == (
        "add", {"a": 2, "b": 3}, "ok", "5")
    assert result["duration_s"] >= 0
    assert json.loads(rows[3][1])[0]["status"] == "unknown"


def test_compare_and_batch_take_tools(tmp_path: Path) -> None:
    comparison = nl.compare('call add {"a": 1, "b": 2}', models=[MODEL, "offline:echo"],
                            tools=[add], client=CoreClient())
    tools_cell, echo_cell = comparison.cells
    assert tools_cell.text == "Tool results: add: 3"
    assert [r.output for r in tools_cell.completion.tool_runs] == ["3"]
    assert echo_cell.completion.tool_runs == []
    prompts = ['call add {"a": 1, "b": 2}', 'call add {"a": 5, "b": 2}']
    first = nl.batch(prompts, MODEL, tools=[add], db_path=tmp_path / "b.db", progress=False)
    assert list(first.to_pandas()["text"]) == ["Tool results: add: 3", "Tool results: add: 7"]

    def add_again(a: int, b: int) -> int:  # another function object, the same tool
        """Add two numbers.

        Args:
            a: the first number
            b: the second number
        """
        return a + b

    add_again.__name__ = "add"
    again = nl.batch(prompts, MODEL, tools=[add_again], db_path=tmp_path / "b.db",
                     progress=False)
    assert again.job_id == first.job_id  # resumable: the job is named by the tools' schemas
