"""Approval of tool calls: always, never, ask, a before_call function,
CancelToolCall, dangerous tools, Stop while a question waits; and the magics'
tool flags, Approve/Deny buttons and the unattended refusal in real kernels."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import notebook_llm as nl
from notebook_llm import errors
from notebook_llm.core._toolloop import asking
from notebook_llm.core.client import CoreClient
from notebook_llm.core.types import Tool, ToolRun
from tests.support.kernel import Execution, KernelSession, ok, run_notebook, value

MODEL = "offline:tools"
ROOT = Path(__file__).resolve().parents[1]


def remove(path: str) -> str:
    """Delete a file."""
    return f"removed {path}"


def test_never_refuses_and_the_loop_goes_on() -> None:
    completion = CoreClient().complete('call remove {"path": "a.txt"}', model=MODEL,
                                       tools=[remove], approve="never")
    [run] = completion.tool_runs
    assert run.status == "denied" and run.output.startswith("Denied")
    assert completion.text.startswith("Tool results: remove: Denied")  # the model was told


def test_before_call_function_decides_per_call() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def before_call(tool: Tool, arguments: dict[str, Any]) -> bool:
        seen.append((tool.name, arguments))
        if arguments["path"] == "/":
            raise errors.CancelToolCall("not the root")
        return arguments["path"].endswith(".tmp")

    completion = CoreClient().complete(
        'call remove {"path": "x.tmp"} & remove {"path": "notes.md"} & remove {"path": "/"}',
        model=MODEL, tools=[remove], approve=before_call)
    assert [r.status for r in completion.tool_runs] == ["ok", "denied", "denied"]
    assert completion.tool_runs[2].output == "Denied: not the root"
    # Each call was asked about once (the questions may come in any order).
    assert sorted(seen, key=lambda item: item[1]["path"]) == [
        ("remove", {"path": "/"}), ("remove", {"path": "notes.md"}), ("remove", {"path": "x.tmp"})]


async def test_async_before_call() -> None:
    async def before_call(tool: Tool, arguments: dict[str, Any]) -> bool:
        await asyncio.sleep(0)
        return True

    completion = await CoreClient().acomplete('call remove {"path": "x"}', model=MODEL,
                                              tools=[remove], approve=before_call)
    assert completion.tool_runs[0].status == "ok"


def test_dangerous_tools_ask_and_no_one_can_answer_here() -> None:
    # pytest's stdin is no terminal: "ask" refuses and says why.
    danger = nl.tool(remove, dangerous=True)
    completion = CoreClient().complete('call remove {"path": "x"}', model=MODEL, tools=[danger])
    [run] = completion.tool_runs
    assert run.status == "denied" and "no one can answer here" in run.output
    allowed = CoreClient().complete('call remove {"path": "x"}', model=MODEL, tools=[danger],
                                    approve="always")
    assert allowed.tool_runs[0].status == "ok"
    plain = CoreClient().complete('call remove {"path": "x"}', model=MODEL, tools=[remove])
    assert plain.tool_runs[0].status == "ok"  # plain functions: "always"


def test_an_asker_answers_questions_one_at_a_time() -> None:
    asked: list[str] = []
    busy = threading.Lock()

    async def asker(tool: Tool, run: ToolRun) -> bool:
        assert busy.acquire(blocking=False), "two questions at once"
        try:
            asked.append(run.call.arguments["path"])
            await asyncio.sleep(0.05)
            return run.call.arguments["path"] == "yes"
        finally:
            busy.release()

    with asking(asker):
        stream = CoreClient().stream('call remove {"path": "yes"} & remove {"path": "no"}',
                                     model=MODEL, tools=[remove], approve="ask")
    statuses = [c.tool_run.status for c in stream if c.tool_run is not None]
    assert sorted(asked) == ["no", "yes"]
    assert "asking" in statuses
    assert [r.status for r in stream.completion.tool_runs] == ["ok", "denied"]


def test_stop_cancels_a_question_that_waits() -> None:
    waiting = threading.Event()

    async def never_answers(tool: Tool, run: ToolRun) -> bool:
        waiting.set()
        await asyncio.sleep(3600)
        return True

    with asking(never_answers):
        stream = CoreClient().stream('call remove {"path": "x"}', model=MODEL,
                                     tools=[remove], approve="ask")
    threading.Thread(target=lambda: (waiting.wait(10), stream.cancel()), daemon=True).start()
    started = time.monotonic()
    completion = stream.collect()
    assert time.monotonic() - started < 30
    assert completion.finish_reason == "cancelled"
    assert [r.status for r in completion.tool_runs] == ["cancelled"]


# -- in a real kernel -----------------------------------------------------------

SETUP = """
%load_ext notebook_llm
import notebook_llm as nl
removed = []
def remove(path: str) -> str:
    '''Delete a file.'''
    removed.append(path)
    return f"removed {path}"
danger = nl.tool(remove, dangerous=True)
def add(a: int, b: int) -> int:
    '''Add.'''
    return a + b
class Box:
    def shout(self, text: str) -> str:
        '''Upper case.'''
        print("printed by the tool:", text)
        return text.upper()
box = Box()
def broken(path: str) -> str:
    '''Fails.'''
    raise OSError(f"cannot read <{path}>")
"""


def _button(label: str, state: dict[str, Any], kernel: KernelSession) -> Any:
    def on_message(execution: Execution, msg: dict[str, Any]) -> None:
        content = msg["content"]
        if (msg["msg_type"] == "comm_open"
                and content["data"]["state"].get("description") == label
                and "clicked" not in state):
            state["clicked"] = content["comm_id"]
            kernel.click(content["comm_id"])

    return on_message


def test_llm_tool_flag_shows_escaped_collapsible_blocks(kernel: KernelSession) -> None:
    done = ok(kernel, '%%llm -m offline:tools --tool add --tool box\n'
                      'call add {{"a": 1, "b": 2}} & shout {{"text": "<script>x</script>"}}')
    html = done.html
    assert html.count('<details class="nl-tool">') == 2
    assert "add · ok" in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<script>x" not in html
    assert "printed by the tool: <script>x</script>" in done.text  # output in this cell
    assert value(kernel, "[r.status for r in _llm.tool_runs]") == ["ok", "ok"]
    assert value(kernel, "_llm.text") == "Tool results: add: 3; shout: <SCRIPT>X</SCRIPT>"


def test_a_failing_tool_shows_its_traceback_and_no_stream_shows_blocks(
        kernel: KernelSession) -> None:
    done = ok(kernel, '%%llm -m offline:tools --tool broken\ncall broken {{"path": "<b>x"}}')
    assert "Traceback" in done.html and "OSError: cannot read &lt;&lt;b&gt;x&gt;" in done.html
    assert value(kernel, "_llm.tool_runs[0].output") == "Error: OSError: cannot read <<b>x>"
    quiet = ok(kernel, '%%llm -m offline:tools --tool add --no-stream\n'
                       'call add {{"a": 1, "b": 2}}')
    assert quiet.html.count('<details class="nl-tool">') == 1


def test_stop_while_a_question_waits_ends_the_cell(kernel: KernelSession) -> None:
    ok(kernel, "removed.clear()")
    state: dict[str, Any] = {}

    def on_message(execution: Execution, msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] != "comm_open":
            return
        label = content["data"]["state"].get("description")
        if label == "Stop":
            state["stop"] = content["comm_id"]
        if label == "Approve" and "stop" in state and "clicked" not in state:
            state["clicked"] = True
            kernel.click(state["stop"])

    done = kernel.execute('%%llm -m offline:tools --tool danger\ncall remove {{"path": "z"}}',
                          on_message=on_message, timeout=60)
    assert state.get("clicked") and done.status == "ok"
    assert value(kernel, "[removed, _llm.finish_reason, _llm.tool_runs[0].status]") == [
        [], "cancelled", "cancelled"]
    assert "stopped" in done.text


def test_max_tool_rounds_flag_and_unknown_names(kernel: KernelSession) -> None:
    ok(kernel, '%%llm -m offline:tools --tool add --max-tool-rounds 2\n'
               'call* add {{"a": 1, "b": 1}}')
    assert value(kernel, "len(_llm.tool_runs)") == 2
    done = kernel.execute("%%llm -m offline:tools --tool nothing_here\nhi")
    assert done.status == "error" and "--tool nothing_here: no such variable" in done.text


def test_approve_button_runs_the_dangerous_tool(kernel: KernelSession) -> None:
    ok(kernel, "removed.clear()")
    state: dict[str, Any] = {}
    done = kernel.execute('%%llm -m offline:tools --tool danger\ncall remove {{"path": "a.txt"}}',
                          on_message=_button("Approve", state, kernel))
    assert done.status == "ok" and "clicked" in state
    assert value(kernel, "removed") == ["a.txt"]
    assert "approved" in done.text
    assert "application/vnd.jupyter.widget-view+json" not in str(done.outputs)


def test_deny_button_refuses_and_the_model_hears_it(kernel: KernelSession) -> None:
    ok(kernel, "removed.clear()")
    state: dict[str, Any] = {}
    done = kernel.execute('%%llm -m offline:tools --tool danger\ncall remove {{"path": "b.txt"}}',
                          on_message=_button("Deny", state, kernel))
    assert done.status == "ok" and "clicked" in state
    assert value(kernel, "removed") == []
    assert value(kernel, "_llm.tool_runs[0].status") == "denied"
    assert value(kernel, "_llm.text").startswith("Tool results: remove: Denied")


def test_chat_keeps_its_tools_across_turns(kernel: KernelSession) -> None:
    ok(kernel, '%%chat -m offline:tools --name t --tool add\ncall add {{"a": 2, "b": 2}}')
    ok(kernel, '%%chat -m offline:tools --name t\ncall add {{"a": 3, "b": 3}}')
    assert value(kernel, "_llm.text") == "Tool results: add: 6"
    ok(kernel, '%%chat -m offline:tools --name t --max-tool-rounds 1\n'
               'call* add {{"a": 1, "b": 1}}')
    # The rounds ran out with calls unanswered: the chat keeps the text only,
    # so the next turn's request stays valid.
    kept = ("[sorted(get_ipython().magics_manager.registry['LLMMagics']"
            ".chats['t'].turns[-1].answer)]")
    assert value(kernel, f"[m.get('tool_calls') for m in _llm.messages[:1]] + {kept}") == [
        None, ["content", "role"]]
    ok(kernel, "%chat --new --name t")
    ok(kernel, '%%chat -m offline:tools --name t\ncall add {{"a": 3, "b": 3}}')
    assert value(kernel, "_llm.tool_runs") == []  # a new conversation has no tools


def test_llm_mcp_add_and_list(kernel: KernelSession, tmp_path: Path) -> None:
    pytest.importorskip("mcp_server_time")
    ok(kernel, f"%llm_mcp add clock {sys.executable} -m mcp_server_time --local-timezone UTC")
    listed = ok(kernel, "%llm_mcp list")
    assert "clock_get_current_time" in listed.text and "connected" in listed.text
    ok(kernel, '%%llm -m offline:tools --tool clock\n'
               'call clock_get_current_time {{"timezone": "UTC"}}')
    assert value(kernel, "_llm.tool_runs[0].status") == "ok"
    ok(kernel, "%llm_mcp remove clock")
    assert "No MCP servers" in ok(kernel, "%llm_mcp list").text


def test_unattended_run_denies_and_says_so() -> None:
    # nbclient sends allow_stdin=False, as nbval and papermill do: no one can answer.
    nb, error = run_notebook([
        SETUP,
        '%%llm -m offline:tools --tool danger\ncall remove {{"path": "c.txt"}}',
        "print(removed, _llm.tool_runs[0].status, _llm.tool_runs[0].output)",
    ], timeout=120)
    assert error is None
    printed = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert printed.startswith("[] denied Denied: remove needs approval and no one answered")


TERMINAL_SCRIPT = '''
ip = get_ipython()
ip.run_line_magic("load_ext", "notebook_llm")
import notebook_llm as nl
removed = []
def remove(path: str) -> str:
    """Delete a file."""
    removed.append(path)
    return "removed " + path
ip.user_ns.update(danger=nl.tool(remove, dangerous=True))
ip.run_cell_magic("llm", "-m offline:tools --tool danger",
                  'call remove {{"path": "t1"}}\\ncall remove {{"path": "t2"}}')
print("REMOVED", removed)
'''


def test_terminal_ipython_asks_with_input(tmp_path: Path) -> None:
    import os
    import subprocess

    script = tmp_path / "term.py"
    script.write_text(TERMINAL_SCRIPT)
    env = {**os.environ, "NOTEBOOK_LLM_DB": str(tmp_path / "log.db"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", str(script)],
        input="y\nn\n", capture_output=True, text=True, env=env, timeout=120)
    out = done.stdout
    assert out.count('Run tool remove({"path": ') == 2
    assert "[tool] ✓ remove · ok" in out and "[tool] ⊘ remove · denied" in out
    assert "REMOVED ['t1']" in out
