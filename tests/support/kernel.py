"""Run code in a real Jupyter kernel and see every message it sends.

``KernelSession`` starts one ipykernel (the ``python3`` kernelspec, which
jupyter_client resolves to this interpreter), executes code as a frontend
would, and records the IOPub messages of each request: outputs with display
updates applied, the raw ``update_display_data`` messages, errors, and comm
traffic. It can interrupt the kernel and send comm messages (a widget click)
while a cell is still running. ``run_notebook`` executes a notebook with
nbclient for "Run all" style tests.

Both run on one asyncio loop per thread, jupyter_core's
(:func:`_one_event_loop`): jupyter_client 7 (Colab's) runs its blocking calls
on the thread's current loop, creating one when there is none, while nbclient
makes jupyter_core's loop current; without sharing, the first loop would be
dropped unclosed (a ResourceWarning, an error under this suite's filters).
"""

from __future__ import annotations

import json
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nbformat
from jupyter_client.manager import KernelManager
from jupyter_core.utils import ensure_event_loop
from nbclient import NotebookClient

__all__ = ["Execution", "KernelSession", "buttons", "ok", "run_notebook", "strip_ansi", "value"]


def strip_ansi(text: str) -> str:
    """Remove ANSI colour codes (tracebacks and error lines)."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@dataclass
class Execution:
    """What one execute request produced."""

    msg_id: str
    reply: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def status(self) -> str | None:
        """``ok``, ``error`` or ``aborted`` once replied."""
        return None if self.reply is None else self.reply["content"]["status"]

    @property
    def updates(self) -> list[dict[str, Any]]:
        """The ``update_display_data`` messages, in order."""
        return [m for m in self.messages if m["msg_type"] == "update_display_data"]

    @property
    def text(self) -> str:
        """Every text/plain, stream and error line of the final outputs, joined."""
        parts: list[str] = []
        for out in self.outputs:
            if out["output_type"] == "stream":
                parts.append(out["text"])
            elif out["output_type"] == "error":
                parts.append(strip_ansi("\n".join(out["traceback"])))
            else:
                parts.append(str(out.get("data", {}).get("text/plain", "")))
        return "\n".join(parts)

    @property
    def html(self) -> str:
        """Every text/html of the final outputs, joined."""
        return "\n".join(str(o.get("data", {}).get("text/html", "")) for o in self.outputs)

    @property
    def error(self) -> dict[str, Any] | None:
        """The error output, if the cell failed."""
        return next((o for o in self.outputs if o["output_type"] == "error"), None)


def _one_event_loop() -> None:
    """Create jupyter_core's loop for this thread (it becomes the current one) before
    jupyter_client 7 would make a loop of its own (see the module doc)."""
    ensure_event_loop()


class KernelSession:
    """One running kernel; ``execute`` waits for the reply and the outputs."""

    def __init__(self, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        _one_event_loop()
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env={**os.environ, **(env or {})}, cwd=cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def close(self) -> None:
        """Stop the kernel."""
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def submit(self, code: str, *, stop_on_error: bool = True) -> Execution:
        """Send an execute request without waiting (as "Run all" does)."""
        msg_id = self.kc.execute(code, stop_on_error=stop_on_error)
        return Execution(msg_id)

    def execute(self, code: str, timeout: float = 60, **kwargs: Any) -> Execution:
        """Execute ``code`` and wait until it has finished (reply and idle)."""
        execution = self.submit(code)
        self.wait([execution], timeout=timeout, **kwargs)
        return execution

    def wait(
        self,
        executions: list[Execution],
        timeout: float = 60,
        on_message: Callable[[Execution, dict[str, Any]], None] | None = None,
    ) -> None:
        """Collect IOPub and shell messages until every execution is done."""
        by_id = {e.msg_id: e for e in executions}
        idle: set[str] = set()
        deadline = time.monotonic() + timeout
        while any(e.reply is None or e.msg_id not in idle for e in executions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"kernel did not finish in {timeout}s")
            self._drain_shell(by_id)
            try:
                msg = self.kc.get_iopub_msg(timeout=0.02)
            except queue.Empty:
                continue
            parent = msg["parent_header"].get("msg_id")
            execution = by_id.get(parent)
            if execution is None:
                continue
            execution.messages.append(msg)
            _apply(execution, msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle.add(parent)
                execution.finished = time.monotonic()
            if on_message is not None:
                on_message(execution, msg)
        self._drain_shell(by_id)

    def _drain_shell(self, by_id: dict[str, Execution]) -> None:
        while True:
            try:
                reply = self.kc.get_shell_msg(timeout=0)
            except queue.Empty:
                return
            execution = by_id.get(reply["parent_header"].get("msg_id"))
            if execution is not None:
                execution.reply = reply

    def click(self, comm_id: str) -> None:
        """Send exactly what a frontend sends when a widget Button is clicked."""
        msg = self.kc.session.msg(
            "comm_msg",
            {"comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}},
        )
        self.kc.shell_channel.send(msg)

    def interrupt(self) -> None:
        """The frontend's Interrupt (SIGINT to the kernel)."""
        self.km.interrupt_kernel()


def _apply(execution: Execution, msg: dict[str, Any]) -> None:
    kind = msg["msg_type"]
    content = msg["content"]
    if kind == "stream":
        execution.outputs.append({"output_type": "stream", "name": content["name"],
                                  "text": content["text"]})
    elif kind in ("display_data", "execute_result"):
        output = {"output_type": kind, "data": content["data"],
                  "display_id": content.get("transient", {}).get("display_id")}
        execution.outputs.append(output)
    elif kind == "update_display_data":
        display_id = content.get("transient", {}).get("display_id")
        for output in execution.outputs:
            if output.get("display_id") == display_id:
                output["data"] = content["data"]
    elif kind == "error":
        execution.outputs.append({"output_type": "error", "ename": content["ename"],
                                  "evalue": content["evalue"],
                                  "traceback": content["traceback"]})


def run_notebook(cells: list[str], timeout: float = 60) -> tuple[Any, BaseException | None]:
    """Execute code cells with nbclient ("Run all"); returns (notebook, error or None)."""
    _one_event_loop()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3")
    try:
        client.execute()
    except Exception as exc:  # noqa: BLE001 - CellExecutionError: returned to the test
        return nb, exc
    return nb, None


def value(kernel: KernelSession, expression: str) -> Any:
    """Evaluate ``expression`` in the kernel and return it (via JSON)."""
    done = kernel.execute(f"import json as _j; print(_j.dumps({expression}))")
    assert done.status == "ok", done.text
    return json.loads(done.text)


def ok(kernel: KernelSession, code: str, **kwargs: Any) -> Execution:
    """Execute ``code`` and assert that the cell succeeded."""
    done = kernel.execute(code, **kwargs)
    assert done.status == "ok", done.text
    return done


def buttons(done: Execution) -> dict[str, str]:
    """The Button widgets the cell opened: description -> comm id."""
    found = {}
    for msg in done.messages:
        content = msg["content"]
        if msg["msg_type"] == "comm_open" and content["data"]["state"].get(
                "_model_name") == "ButtonModel":
            found[content["data"]["state"]["description"]] = content["comm_id"]
    return found
