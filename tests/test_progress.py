"""The progress display: text fallback, the notebook UI registry, and Stop in a kernel.

The kernel tests run ``nl.batch(...)`` in a real ipykernel (tests/support/kernel.py)
and click the progress widget's Stop button through the comm path, as a
frontend would, while the blocking call is still running.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from notebook_llm import progress as progress_module
from notebook_llm.progress import Progress
from tests.support.kernel import Execution, KernelSession

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


# -- text fallback ---------------------------------------------------------------


def test_text_fallback_outside_a_kernel_imports_no_widgets() -> None:
    code = (
        "import io, sys\n"
        "from notebook_llm.progress import Progress\n"
        "out = io.StringIO()\n"
        "p = Progress(500, title='job', stream=out, line_interval_s=0).start()\n"
        "for i in range(1, 501):\n"
        "    p.update(done=i, requests=i, tokens=3 * i, cost_usd=i * 1e-5)\n"
        "p.close('done')\n"
        "bad = [m for m in sys.modules if m.startswith(('ipywidgets', 'IPython',"
        " 'notebook_llm.notebook'))]\n"
        "print(p._backend, p.renders < 20, bad)\n"
        "print(out.getvalue().splitlines()[-1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, last = out.stdout.splitlines()
    assert first == "text True []"
    assert last.startswith("job ") and "500/500" in last and last.endswith("done")


def test_text_lines_are_throttled_and_plain() -> None:
    out = io.StringIO()
    shown = Progress(1000, title="t", backend="text", stream=out, max_rate_hz=10,
                     line_interval_s=3600).start()
    for i in range(1000):
        shown.update(done=i + 1, cached=10, requests=i, tokens=5 * i, cost_usd=i * 1e-4)
    shown.close("stopped")
    # Not a tty and not a kernel: the first line, then only the forced final one.
    lines = out.getvalue().splitlines()
    assert shown.renders <= 3 and len(lines) == 2
    assert "1000/1000" in lines[-1] and lines[-1].endswith("stopped")
    assert "<" in lines[-1] and "$" in lines[-1] and "\r" not in out.getvalue()


def test_stop_calls_on_stop_once() -> None:
    calls: list[int] = []
    shown = Progress(5, backend="none", on_stop=lambda: calls.append(1)).start()
    shown.stop()
    shown.stop()
    assert shown.stopped and calls == [1]


# -- the notebook UI registry -------------------------------------------------------


class FakeView:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def draw(self) -> None:
        self.calls.append("draw")

    def stopping(self) -> None:
        self.calls.append("stopping")

    def close(self) -> None:
        self.calls.append("close")


class FakeUI:
    def __init__(self, view: FakeView | None) -> None:
        self._view = view
        self.waited = 0

    def view(self, progress: Progress) -> FakeView | None:
        return self._view

    def wait(self, future: Future[Any]) -> Any:
        self.waited += 1
        return future.result(timeout=10)


@pytest.fixture
def in_kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Pretend to run in a kernel; restore the package's registration afterwards."""
    monkeypatch.setattr(progress_module, "in_kernel", lambda: True)
    saved = progress_module._ui_loader
    yield lambda ui: progress_module.register_ui(lambda: ui)
    progress_module.register_ui(saved)


def test_registered_ui_draws_the_widget_view_and_waits(in_kernel: Any) -> None:
    view = FakeView()
    ui = FakeUI(view)
    in_kernel(ui)
    shown = Progress(10, stream=io.StringIO()).start()
    shown.update(done=3, force=True)
    shown.stop()
    shown.close("stopped")
    assert shown._backend == "widget"
    assert view.calls[:2] == ["draw", "draw"] and "stopping" in view.calls
    assert view.calls[-1] == "close"

    async def answer() -> int:
        return 42

    assert progress_module.run(answer()) == 42 and ui.waited == 1


def test_widget_stop_button_reads_stopped_then_goes_away() -> None:
    pytest.importorskip("ipywidgets")
    from notebook_llm.notebook._progress import WidgetView

    view = WidgetView(Progress(10, stream=io.StringIO()))
    assert view.stop.description == "Stop" and view.stop.layout.display is None
    view.stopping()
    assert view.stop.description == "Stopped" and view.stop.disabled
    view.close()
    assert view.stop.layout.display == "none"


def test_no_widgets_or_a_broken_ui_falls_back_to_text(in_kernel: Any) -> None:
    in_kernel(FakeUI(None))  # as if ipywidgets were missing
    out = io.StringIO()
    shown = Progress(4, title="x", stream=out).start()
    shown.close("done")
    assert shown._backend == "text" and "x " in out.getvalue()

    def broken() -> Any:
        raise ImportError("no notebook layer")

    progress_module.register_ui(broken)
    shown = Progress(4, stream=io.StringIO()).start()
    assert shown._backend == "text"

    async def answer() -> int:
        return 7

    assert progress_module.run(answer()) == 7  # the plain wait


def test_outside_a_kernel_the_registered_ui_is_not_loaded() -> None:
    assert progress_module._ui_loader is not None  # registered by the package root
    assert Progress(3, stream=io.StringIO())._backend == "text"


# -- Stop in a real kernel ------------------------------------------------------------

SETUP = """
import notebook_llm as nl
rows = [f"row {i}" for i in range(200)]
"""

# rpm=120: the job's bucket lets 120 rows through at once, then 2 a second, so the
# 200 rows would take ~40 s; the click comes after ~1 s.
BLOCKING = """
result = nl.batch(rows, "offline:echo", rpm=120, job="stoppable")
print("state", result.state, result.done)
"""




def _click_stop_after(kernel: KernelSession, delay: float, state: dict[str, Any]) -> Any:
    def on_message(execution: Execution, msg: dict[str, Any]) -> None:
        content = msg["content"]
        if (msg["msg_type"] == "comm_open"
                and content["data"]["state"].get("_model_name") == "ButtonModel"):
            state["comm"], state["opened"] = content["comm_id"], time.monotonic()
        if ("comm" in state and "clicked" not in state
                and time.monotonic() - state["opened"] > delay):
            kernel.click(state["comm"])
            state["clicked"] = time.monotonic()

    return on_message


def _figures(done: Execution) -> tuple[str, int]:
    line = next(x for x in done.text.splitlines() if x.startswith("state "))
    _, state, count = line.split()
    return state, int(count)


def test_stop_button_stops_a_blocking_batch_and_a_rerun_finishes(kernel: KernelSession) -> None:
    state: dict[str, Any] = {}
    click = _click_stop_after(kernel, 1.0, state)
    shown: list[dict[str, Any]] = []

    def on_message(execution: Execution, msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "display_data":
            shown.append(msg["content"]["data"])
        click(execution, msg)

    done = kernel.execute(BLOCKING, timeout=60, on_message=on_message)
    assert done.status == "ok", done.text
    assert "clicked" in state, "no Stop button was shown"
    # While live, the widget's output carries a static form too (a notebook saved
    # then shows a bar, not "Loading widget...").
    [live] = [data for data in shown if WIDGET_MIME in data]
    assert "<progress" in live["text/html"] and "stoppable" in live["text/plain"]
    # The widgets gave way to their static form: a saved notebook shows the bar.
    assert not any(WIDGET_MIME in o.get("data", {}) for o in done.outputs)
    assert "<progress" in done.html and "stopped" in done.html
    assert done.finished - state["clicked"] < 3.0  # type: ignore[operator]
    job_state, count = _figures(done)
    assert job_state == "stopped" and 0 < count < 200
    # Once the job has ended the Stop button goes away (its layout is hidden).
    states = [m["content"]["data"].get("state", {}) for m in done.messages
              if m["msg_type"] == "comm_msg"]
    assert {"display": "none"} in states, states

    again = kernel.execute(
        'result = nl.batch(rows, "offline:echo", job="stoppable")\n'
        'print("state", result.state, result.done, result.cached)', timeout=60,
    )
    assert again.status == "ok", again.text
    line = next(x for x in again.text.splitlines() if x.startswith("state "))
    assert line.split()[1:] == ["done", "200", str(count)]


def test_cells_queued_behind_a_blocking_batch_still_run_in_order(kernel: KernelSession) -> None:
    ok = kernel.execute("order = []")
    assert ok.status == "ok"
    cells = [BLOCKING.replace("stoppable", "queued"), "order.append(1)", "order.append(2)"]
    state: dict[str, Any] = {}
    executions = [kernel.submit(code) for code in cells]
    kernel.wait(executions, timeout=60, on_message=_click_stop_after(kernel, 1.0, state))
    assert [e.status for e in executions] == ["ok", "ok", "ok"]
    assert "clicked" in state and _figures(executions[0])[0] == "stopped"
    check = kernel.execute("print(order)")
    assert check.text.strip() == "[1, 2]"


SLOW_EMBED = """
import asyncio
_client = nl.default_client()
_aembed = _client.aembed
async def _slow_aembed(*args, **kwargs):  # test-only: ~0.2 s a request
    await asyncio.sleep(0.2)
    return await _aembed(*args, **kwargs)
_client.aembed = _slow_aembed
texts = [f"text {i}" for i in range(3000)]
"""


def test_stop_button_stops_a_blocking_embed_and_a_rerun_resumes(kernel: KernelSession) -> None:
    assert kernel.execute(SLOW_EMBED).status == "ok"
    state: dict[str, Any] = {}
    done = kernel.execute('e = nl.embed(texts, "offline:hash", batch_size=10, progress=True)',
                          timeout=60, on_message=_click_stop_after(kernel, 1.0, state))
    assert "clicked" in state, "no Stop button was shown"
    assert done.finished - state["clicked"] < 3.0  # type: ignore[operator]
    # embed() reports a stop as the library's CancelledError, saying how to resume.
    assert done.error is not None and done.error["ename"] == "CancelledError"
    assert "stopped:" in done.error["evalue"] and "run again to resume" in done.error["evalue"]
    again = kernel.execute('e = nl.embed(texts, "offline:hash", batch_size=1000, progress=True)\n'
                           "print('embedded', len(e.texts), e.cached)", timeout=60)
    assert again.status == "ok", again.text
    line = next(x for x in again.text.splitlines() if x.startswith("embedded "))
    _, total, cached = line.split()
    assert total == "3000" and 0 < int(cached) < 3000
