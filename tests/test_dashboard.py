"""The live comparison dashboard in a real kernel: columns, Stop, interrupt, throttle.

One kernel per module; cells are sent as a frontend sends them and every IOPub
message is recorded (tests/support/kernel.py). Offline streams are slowed down
with ``chunk_delay`` (the ``DELAY`` variable in the kernel) so that Stop, the
interrupt and the throttle can be seen.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tests.support.kernel import Execution, KernelSession, ok, run_notebook, strip_ansi, value

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# Test-only: every stream gets chunk_delay=DELAY; "slow" is a second name for
# offline:echo, so that two columns stream the same words.
SETUP = """
%load_ext notebook_llm
import notebook_llm as nl
from notebook_llm.notebook._dashboard import show_compare
_client = nl.default_client()
_client.aliases["slow"] = "offline:echo"
DELAY = 0.0
_astream = _client.astream
def _delayed(*args, **kwargs):
    kwargs.setdefault("chunk_delay", DELAY)
    return _astream(*args, **kwargs)
_client.astream = _delayed
words = " ".join(f"w{i}" for i in range(100))
"""




class Tags(HTMLParser):
    """Records every start tag and its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, attrs))


def delay(kernel: KernelSession, seconds: float) -> None:
    ok(kernel, f"DELAY = {seconds}")


def all_html(done: Execution) -> str:
    """Every text/html the cell ever sent: displays and every update."""
    return "\n".join(
        str(m["content"].get("data", {}).get("text/html", ""))
        for m in done.messages
        if m["msg_type"] in ("display_data", "update_display_data", "execute_result")
    )


def buttons(done: Execution) -> dict[str, str]:
    """The Button widgets the cell opened: description -> comm id."""
    found = {}
    for msg in done.messages:
        content = msg["content"]
        if msg["msg_type"] == "comm_open" and content["data"]["state"].get(
                "_model_name") == "ButtonModel":
            found[content["data"]["state"]["description"]] = content["comm_id"]
    return found


def click_after(kernel: KernelSession, description: str, seconds: float,
                state: dict[str, Any]) -> Callable[[Execution, dict[str, Any]], None]:
    """An ``on_message`` that clicks the button ``description`` ``seconds`` after it opened."""

    def on_message(_: Execution, msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] == "comm_open":
            widget = content["data"]["state"]
            if (widget.get("_model_name") == "ButtonModel"
                    and widget.get("description") == description):
                state["comm"], state["opened"] = content["comm_id"], time.monotonic()
        if msg["msg_type"] == "comm_close":
            state.setdefault("closed", set()).add(content["comm_id"])
        if ("comm" in state and "clicked" not in state
                and time.monotonic() - state["opened"] > seconds):
            kernel.click(state["comm"])
            state["clicked"] = time.monotonic()

    return on_message


def statuses(kernel: KernelSession) -> list[str]:
    return value(kernel, "[c.status for c in _llm.cells]")  # type: ignore[no-any-return]


def word_counts(kernel: KernelSession) -> list[int]:
    return value(kernel, "[len(c.row()['text'].split()) for c in _llm.cells]")  # type: ignore[no-any-return]


# -- what the dashboard shows ------------------------------------------------------------


def test_comma_in_model_shows_one_column_per_model_then_the_summary(
    kernel: KernelSession,
) -> None:
    delay(kernel, 0.0)
    ok(kernel, "animal = 'fox'")
    done = ok(kernel, "%%llm -m offline:echo,offline:story\nthe quick brown {animal}")
    grid = next(o for o in done.outputs if "notebook-llm-compare" in
                str(o.get("data", {}).get("text/html", "")))
    html = grid["data"]["text/html"]
    assert html.count("flex:1 1 280px") == 2 and "flex-wrap:wrap" in html
    assert "offline:echo" in html and "offline:story" in html
    assert "the quick brown fox" in html and "Once" in html  # text in each column
    assert "TTFT" in html and "tok" in html and "done" in html
    assert "| prompt | model |" in grid["data"]["text/markdown"]
    # The summary comes after the columns.
    last = done.outputs[-1]["data"]
    assert "Summary" in last["text/html"] and "latency_mean_s" in last["text/html"]
    assert "offline:story" in last["text/plain"]
    # Stop buttons were shown while it ran, then closed and replaced by text.
    opened = buttons(done)
    assert {"Stop all", "Stop offline:echo", "Stop offline:story"} <= set(opened)
    closed = {m["content"]["comm_id"] for m in done.messages if m["msg_type"] == "comm_close"}
    assert set(opened.values()) <= closed
    assert not any(WIDGET_MIME in o.get("data", {}) for o in done.outputs)
    assert "compared 2 models" in done.text
    assert value(kernel, "[type(_llm).__name__, _llm.models]") == [
        "Comparison", ["offline:echo", "offline:story"]]
    assert statuses(kernel) == ["done", "done"]


def test_llm_compare_unknown_model_shows_its_error_and_others_finish(
    kernel: KernelSession,
) -> None:
    delay(kernel, 0.0)
    done = ok(kernel, "%%llm_compare -m offline:echo -m nosuch:model -o res\nhello there")
    html = done.html
    assert "UnknownProviderError" in html and "hello there" in html
    assert value(kernel, "res is _llm") is True
    assert statuses(kernel) == ["done", "error"]
    assert value(kernel, "_llm.cell('offline:echo').text") == "hello there"


def test_runs_and_options_reach_every_call(kernel: KernelSession) -> None:
    delay(kernel, 0.0)
    done = ok(kernel, "%%llm_compare -m offline:echo -m slow --runs 2 --max-tokens 3\n"
                      "one two three four five")
    assert "(run 2)" in done.html
    assert value(kernel, "[len(_llm.cells), _llm.runs]") == [4, 2]
    assert value(kernel, "sorted({c.completion.finish_reason for c in _llm.cells})") == ["length"]
    assert "cut off at max_tokens" in done.html  # each card says why it ended early
    assert "latency_p95_s" in done.outputs[-1]["data"]["text/html"]


def test_usage_errors_are_short(kernel: KernelSession) -> None:
    for cell, message in [("%%llm_compare\nhi", "name the models"),
                          ("%%llm -m offline:echo,offline:echo\nhi", "named twice"),
                          ("%%llm -m offline:echo,slow -f json\nhi", "do not apply"),
                          ("%%llm_compare -m offline:echo --runs 0\nhi", "--runs")]:
        done = kernel.execute(cell)
        assert done.status == "error" and message in done.text, done.text
        assert "Traceback" not in done.text


def test_text_is_sanitised(kernel: KernelSession) -> None:
    delay(kernel, 0.005)
    done = ok(kernel, '%%llm -m offline:echo,slow\n<script>alert(1)</script> '
                      '[x](javascript:alert(1)) <img src=x onerror="alert(1)"> '
                      '<a href="javascript:alert(2)">y</a> **bold**')
    html = all_html(done)
    assert "<strong>bold</strong>" in html and "&lt;script&gt;" in html
    assert "<script" not in html and "<img" not in html and "<a " not in html
    # Escaped text may say "onerror=" or "javascript:"; no tag or attribute does.
    tags = Tags()
    tags.feed(html)
    assert tags.starts and "script" not in {tag for tag, _ in tags.starts}
    attributes = [(name, value or "") for _, attrs in tags.starts for name, value in attrs]
    assert not [name for name, _ in attributes if name.startswith("on")]
    assert not [v for _, v in attributes if "javascript:" in v.replace(" ", "").lower()]


# -- Stop, interrupt, throttle -------------------------------------------------------------


def test_stop_all_click_stops_every_column_and_keeps_partial_text(kernel: KernelSession) -> None:
    delay(kernel, 0.03)  # 100 words: 3 s per column
    state: dict[str, Any] = {}
    done = kernel.execute("%%llm_compare -m offline:echo -m slow\n{words}",
                          on_message=click_after(kernel, "Stop all", 0.6, state))
    assert done.status == "ok", done.text
    assert "clicked" in state
    assert done.finished - state["clicked"] < 1.0  # type: ignore[operator]
    assert statuses(kernel) == ["stopped", "stopped"]
    counts = word_counts(kernel)
    assert all(0 < n < 100 for n in counts), counts
    assert value(kernel, "[c.completion.finish_reason for c in _llm.cells]") == [
        "cancelled", "cancelled"]
    assert "stopped" in done.html and "w0 w1" in done.html
    assert set(buttons(done).values()) <= state["closed"]
    assert not any(WIDGET_MIME in o.get("data", {}) for o in done.outputs)


def test_stop_one_column_stops_only_that_model(kernel: KernelSession) -> None:
    delay(kernel, 0.02)  # 100 words: 2 s per column
    state: dict[str, Any] = {}
    done = kernel.execute("%%llm_compare -m offline:echo -m slow\n{words}",
                          on_message=click_after(kernel, "Stop slow", 0.5, state))
    assert done.status == "ok", done.text
    assert "clicked" in state
    assert statuses(kernel) == ["done", "stopped"]
    echo, slow = word_counts(kernel)
    assert echo == 100 and 0 < slow < 100


def test_interrupt_stops_everything_and_keeps_partial_text(kernel: KernelSession) -> None:
    delay(kernel, 0.03)
    execution = kernel.submit("%%llm -m offline:echo,slow\n{words}")
    state: dict[str, Any] = {}

    def on_message(_: Execution, msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "update_display_data" and "sent" not in state:
            state["seen"] = state.get("seen", 0) + 1
            if state["seen"] >= 3:
                state["sent"] = time.monotonic()
                kernel.interrupt()

    kernel.wait([execution], on_message=on_message)
    assert "sent" in state
    assert execution.finished - state["sent"] < 2.0  # type: ignore[operator]
    assert execution.status == "error"
    assert strip_ansi(execution.error["traceback"][0]).startswith(  # type: ignore[index]
        "KeyboardInterrupt: the comparison was stopped")
    assert "stopped" in execution.html and "w0" in execution.html
    assert statuses(kernel) == ["stopped", "stopped"]
    assert all(0 < n < 100 for n in word_counts(kernel))
    assert not any(WIDGET_MIME in o.get("data", {}) for o in execution.outputs)
    started = time.monotonic()
    ok(kernel, "1 + 1")
    assert time.monotonic() - started < 2


def test_display_updates_are_throttled(kernel: KernelSession) -> None:
    delay(kernel, 0.01)  # 200 words in two columns: ~2 s of chunks every 10 ms
    done = ok(kernel, "%%llm_compare -m offline:echo -m slow -m offline:story\n{words} {words}")
    assert done.finished - done.started > 1.8  # type: ignore[operator]
    times = [m["header"]["date"].timestamp() for m in done.updates]
    assert len(times) >= 10
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 16
    assert done.html.count("w199") == 0 and "w99" in done.html


# -- the Python API ----------------------------------------------------------------------------


def test_nl_compare_displays_nothing_and_shows_itself_when_returned(
    kernel: KernelSession,
) -> None:
    delay(kernel, 0.0)
    done = ok(kernel, "r = nl.compare('hi there', ['offline:echo', 'slow'])")
    assert not done.outputs
    assert not [m for m in done.messages if m["msg_type"] == "comm_open"]
    shown = ok(kernel, "r")
    assert [o["output_type"] for o in shown.outputs] == ["execute_result"]
    assert "hi there" in shown.outputs[0]["data"]["text/html"]


def test_show_compare_is_the_live_dashboard_for_python_cells(kernel: KernelSession) -> None:
    delay(kernel, 0.0)
    done = ok(kernel, "res = show_compare('hi there', ['offline:echo', 'slow'], max_tokens=1)\n"
                      "kind = type(res).__name__")
    assert "notebook-llm-compare" in done.html and "Summary" in done.html
    assert value(kernel, "[kind, [c.text for c in res.cells]]") == ["Comparison", ["hi", "hi"]]


# -- without widgets or without a kernel ----------------------------------------------------


def test_no_widget_output_survives_in_a_saved_notebook() -> None:
    nb, error = run_notebook(
        ["%load_ext notebook_llm", "%%llm -m offline:echo,offline:story\nhello *world*"])
    assert error is None, error
    outputs = nb.cells[1].outputs
    assert outputs and all(WIDGET_MIME not in o.get("data", {}) for o in outputs)
    assert not [o for o in outputs if o.output_type in ("stream", "error")]
    grid = next(o for o in outputs if "notebook-llm-compare" in o.data.get("text/html", ""))
    assert "<em>world</em>" in grid.data["text/html"]
    assert "hello" in grid.data["text/markdown"]


def test_terminal_ipython_prints_a_markdown_table(tmp_path: Path) -> None:
    script = tmp_path / "demo.ipy"
    script.write_text(
        "%load_ext notebook_llm\n"
        "get_ipython().run_cell_magic('llm_compare', '-m offline:echo -m offline:story',"
        " 'hello **terminal**')\n"
        "print('stored', type(_llm).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--quick", "--colors=nocolor",
         str(script)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "NOTEBOOK_LLM_DB": str(tmp_path / "log.db")},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "| prompt | model | answer | status |" in out
    assert "offline:echo" in out and "offline:story" in out and "latency_mean_s" in out
    assert "stored Comparison" in out
    assert "<div" not in out and "Error" not in result.stderr
