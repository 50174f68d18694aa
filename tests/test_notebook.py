"""The notebook layer in a real kernel: magics, streaming display, Stop and interrupt.

One kernel per module (``kernel`` fixture); cells are sent as a frontend
sends them and every IOPub message is recorded (tests/support/kernel.py).
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.kernel import Execution, KernelSession, ok, run_notebook, strip_ansi, value

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT.parent / "shared" / "models" / "stories260K.gguf"
# Built from parts so secret scanners do not mistake it for a real key.
FAKE_KEY = "sk-" + "test-abcdefghijklmnopqrstuvwxyz0123456789WXYZ"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# Test-only: slow the offline stream down so that Stop and throttling can be seen.
SETUP = """
%load_ext notebook_llm
import functools, notebook_llm as nl
from notebook_llm.core.client import Middleware
class _Count(Middleware):
    calls = 0
    async def before(self, ctx):
        type(self).calls += 1
_client = nl.default_client()
_client.middlewares.append(_Count())
_client.astream = functools.partial(_client.astream, chunk_delay=0.02)
words = " ".join(f"w{i}" for i in range(100))
"""


KERNEL_ENV = {"OPENAI_API_KEY": FAKE_KEY}


def count(done: Execution) -> int:
    return int(done.reply["content"]["execution_count"])  # type: ignore[index]


# -- interpolation ------------------------------------------------------------


def test_interpolation_fills_names_specs_history_and_escapes(kernel: KernelSession) -> None:
    ok(kernel, "x = 3.14159\nname = 'Ada'")
    first = ok(kernel, "40 + 2")
    failed = kernel.execute("def boom():\n    raise ValueError('bad value')\nboom()")
    assert failed.status == "error"
    ok(kernel, "%%llm -m offline:echo\n"
               f"{{name}} {{x:.2f}} {{name!r}} {{{{braces}}}} in={{In[{count(first)}]}} "
               f"out={{Out[{count(first)}]}} err={{Err[{count(failed)}]}}")
    text = value(kernel, "_llm.text")
    assert text.startswith("Ada 3.14 'Ada' {braces} in=40 + 2 out=42 err=ValueError: bad value")
    assert "boom" in text  # the short traceback names the failing function


def test_undefined_name_fails_short_before_sending(kernel: KernelSession) -> None:
    before = value(kernel, "_Count.calls")
    done = kernel.execute("%%llm -m offline:echo\nhello {undefined_thing}")
    assert done.status == "error"
    assert done.reply["content"]["ename"] == "InterpolationError"  # type: ignore[index]
    lines = strip_ansi("\n".join(done.error["traceback"])).splitlines()  # type: ignore[index]
    assert "undefined_thing" in lines[0] and len(lines) <= 3
    assert "Traceback" not in done.text
    assert value(kernel, "_Count.calls") == before  # nothing was sent


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("{Out[99999]}", "cell 99999 has no output"), ("{x:d}", "cannot format float"),
     ("{}", "positional"), ("{ oops", "braces")],
)
def test_interpolation_errors_name_the_problem(
    kernel: KernelSession, prompt: str, message: str
) -> None:
    ok(kernel, "x = 1.5")
    done = kernel.execute(f"%%llm -m offline:echo\n{prompt}")
    assert done.status == "error" and message in done.text


def test_run_all_stops_at_a_failing_cell() -> None:
    nb, error = run_notebook(
        ["%load_ext notebook_llm", "%%llm -m offline:echo\nhi {nope}", "ran = True"]
    )
    assert error is not None and "nope" in str(error)
    assert nb.cells[2].execution_count is None and not nb.cells[2].outputs


# -- results, formats, schema ------------------------------------------------------


def test_output_variable_and_underscore_llm(kernel: KernelSession) -> None:
    ok(kernel, "%%llm -m offline:echo -o answer\nhello there")
    assert value(kernel, "[answer is _llm, answer.text, answer.finish_reason]") == [
        True, "hello there", "stop"]


def test_line_magic_returns_the_completion(kernel: KernelSession) -> None:
    ok(kernel, "r = %llm -m offline:echo what's {x} -- all of it\nkind = type(r).__name__")
    assert value(kernel, "[kind, r.text, r is _llm]") == [
        "Completion", "what's 1.5 -- all of it", True]
    done = ok(kernel, "%llm -m offline:echo shown once")
    assert [o["output_type"] for o in done.outputs] == ["execute_result"]
    assert "shown once" in done.outputs[0]["data"]["text/markdown"]


def test_line_magic_rejects_unknown_flags_as_the_cell_magic_does(kernel: KernelSession) -> None:
    for code in ("r = %llm -m offline:echo --temprature 0.2 hello",
                 "%%llm -m offline:echo --temprature 0.2\nhello"):
        done = kernel.execute(code)
        assert done.status == "error", code
        assert "unrecognized" in done.text and "--temprature" in done.text
    # -- ends the options: a prompt may start with a dash.
    ok(kernel, "r = %llm -m offline:echo -- --not-a-flag")
    assert value(kernel, "r.text") == "--not-a-flag"


def test_markdown_is_rendered_and_sanitised(kernel: KernelSession) -> None:
    done = ok(kernel, "%%llm -m offline:echo\n# Title\n\n<script>alert(1)</script> "
                      "[x](javascript:alert(1)) **bold**")
    html = done.html
    assert "<h1>Title</h1>" in html and "<strong>bold</strong>" in html
    assert "<script" not in html and 'href="javascript' not in html
    assert "offline:echo" in done.text  # the footer


def test_format_text_and_html(kernel: KernelSession) -> None:
    done = ok(kernel, "%%llm -m offline:echo -f text\n# not a heading <b>")
    assert "<h1>" not in done.html and "&lt;b&gt;" in done.html
    done = ok(kernel, "%%llm -m offline:echo -f html\n<strong>bold</strong>"
                      '<img src=x onerror="alert(1)"><script>alert(2)</script>'
                      '<div style="color:red">red</div>')
    # A sandboxed frame (no allow-scripts) holds the page, styles kept, script gone.
    frame = re.search(r'<iframe sandbox="" srcdoc="([^"]*)"', done.html)
    assert frame is not None, done.html
    page = html.unescape(frame.group(1))
    assert "<strong>bold</strong>" in page and '<div style="color:red">red</div>' in page
    assert "onerror" not in page and "<script" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_format_code_goes_into_a_new_cell(kernel: KernelSession) -> None:
    done = ok(kernel, "%%llm -m offline:echo -f code\nHere:\n```python\nprint('hi')\n```\nbye")
    payload = done.reply["content"]["payload"]  # type: ignore[index]
    assert {"source": "set_next_input", "text": "print('hi')", "replace": False} in payload
    assert "print" in done.html and "bye" not in done.outputs[0]["data"]["text/plain"]


def test_format_json_is_parsed(kernel: KernelSession) -> None:
    done = ok(kernel, '%%llm -m offline:echo -f json\n{{"a": [1, 2]}}')
    assert done.outputs[0]["data"]["application/json"] == {"a": [1, 2]}
    assert value(kernel, "_llm.parsed") == {"a": [1, 2]}
    bad = kernel.execute("%%llm -m offline:echo -f json\nnot json")
    assert bad.status == "error" and "not valid JSON" in bad.text
    assert value(kernel, "_llm.text") == "not json"  # still stored


def test_schema_dsl_builds_a_model(kernel: KernelSession) -> None:
    done = ok(kernel, "%%llm -m offline:echo --schema 'name: str, age: int, tags: list[str]'\n"
                      '{{"name": "Ada", "age": 36, "tags": ["math"]}}')
    assert done.outputs[0]["data"]["application/json"] == {
        "name": "Ada", "age": 36, "tags": ["math"]}
    assert value(kernel, "[type(_llm.parsed).__name__, _llm.parsed.age]") == ["Answer", 36]
    ok(kernel, "from pydantic import BaseModel\nclass City(BaseModel):\n    name: str")
    ok(kernel, '%%llm -m offline:echo --schema City --no-stream\n{{"name": "Oslo"}}')
    assert value(kernel, "repr(_llm.parsed)") == "City(name='Oslo')"
    bad = kernel.execute("%%llm -m offline:echo --schema 'name: strr'\nx")
    assert bad.status == "error" and "unknown type 'strr'" in bad.text


# -- chat, models, config, keys ---------------------------------------------------


def test_chat_keeps_history_across_cells(kernel: KernelSession) -> None:
    ok(kernel, "%%chat -m offline:echo --new\nfirst message")
    ok(kernel, "%%chat -m offline:echo\nsecond message")
    ok(kernel, "%%chat -m offline:echo --name other\nelsewhere")
    assert value(kernel, "len(_llm.messages)") == 1
    history = ok(kernel, "%chat_history")
    assert history.text.count("user:") == 2 and "second message" in history.text
    assert value(kernel, "len(get_ipython().magics_manager.registry['LLMMagics']"
                         ".chats['default'].messages)") == 4
    ok(kernel, "%%chat -m offline:echo --new\nagain")
    assert value(kernel, "_llm.messages") == [{"role": "user", "content": "again"}]
    ok(kernel, "%chat_clear")
    assert "No messages" in ok(kernel, "%chat_history").text


def test_llm_models_lists_providers_and_models(kernel: KernelSession) -> None:
    done = ok(kernel, "%llm_models")
    assert "offline" in done.text and "structured_output" in done.html
    assert "offline:story" in ok(kernel, "%llm_models offline").text
    bad = kernel.execute("%llm_models nosuchprovider")
    assert bad.status == "error" and "Unknown provider" in bad.text


def test_llm_config_sets_the_default_model(kernel: KernelSession) -> None:
    try:
        ok(kernel, "%llm_config model offline:story")
        ok(kernel, "%llm_config alias e offline:echo")
        ok(kernel, "%llm_config temperature 0.2")
        shown = ok(kernel, "%llm_config").text
        assert "offline:story" in shown and "0.2" in shown and "alias e" in shown
        ok(kernel, "%%llm\na seed")
        assert value(kernel, "_llm.model") == "offline:story"
        ok(kernel, "%%llm -m e\nvia alias")
        assert value(kernel, "[_llm.model, _llm.text]") == ["offline:echo", "via alias"]
        ok(kernel, "%llm_config log off")
        assert value(kernel, "_client.log") is False
        assert kernel.execute("%llm_config model nosuch:model").status == "error"
    finally:
        ok(kernel, "%llm_config --reset")
    assert value(kernel, "[_client.default, _client.log]") == [None, True]


def test_remote_images_are_links_until_llm_config_images_on(kernel: KernelSession) -> None:
    cell = "%%llm -m offline:echo\n![leak](https://evil.example/?q=secret) **bold**"
    remote = "__import__('notebook_llm._render')._render.remote_images()"
    try:
        html = ok(kernel, cell).html
        assert "<img" not in html and "image: leak" in html and "<strong>bold</strong>" in html
        assert "<td>images</td><td>off</td>" in ok(kernel, "%llm_config").html
        ok(kernel, "%llm_config images on")
        assert value(kernel, remote) is True
        assert '<img src="https://evil.example/?q=secret"' in ok(kernel, cell).html
        bad = kernel.execute("%llm_config images maybe")
        assert bad.status == "error" and "cannot understand" in bad.text
    finally:
        ok(kernel, "%llm_config --reset")
    assert value(kernel, remote) is False


def test_llm_keys_shows_masked_keys_only(kernel: KernelSession) -> None:
    done = ok(kernel, "%llm_keys")
    assert "OPENAI_API_KEY" in done.text and "environment" in done.text
    assert "WXYZ" in done.text  # the masked tail
    assert FAKE_KEY not in json.dumps([m["content"] for m in done.messages])


def test_llm_usage_tabulates_the_call_log(kernel: KernelSession) -> None:
    ok(kernel, "%llm -m offline:echo hello usage table")
    done = ok(kernel, "%llm_usage --by model")
    assert "offline:echo" in done.text and "calls" in done.text
    failed = kernel.execute("%llm_usage --by colour")
    assert failed.status == "error"


def test_llm_error_is_a_short_failure(kernel: KernelSession) -> None:
    done = kernel.execute("%%llm -m nosuch:model\nhi")
    assert done.status == "error"
    lines = strip_ansi("\n".join(done.error["traceback"])).splitlines()  # type: ignore[index]
    assert lines[0].startswith("UnknownProviderError: ") and len(lines) <= 3


# -- streaming, Stop, interrupt ------------------------------------------------------


def test_stream_updates_one_handle_at_most_15_times_a_second(kernel: KernelSession) -> None:
    done = ok(kernel, "%%llm -m offline:echo\n{words}")  # 100 words x 20 ms: ~2 s
    assert done.finished - done.started > 1.8  # type: ignore[operator]
    stream_updates = [m for m in done.updates
                      if "w" in m["content"]["data"].get("text/plain", "")]
    times = [time.mktime(m["header"]["date"].timetuple()) + m["header"]["date"].microsecond / 1e6
             for m in stream_updates]
    assert len(stream_updates) >= 10
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 16
    ids = {m["content"]["transient"]["display_id"] for m in stream_updates}
    assert len(ids) == 1
    assert done.text.count("w99") == 1 and "100 out" in done.text


def _click_after(kernel: KernelSession, delay: float, state: dict[str, Any]) -> Any:
    def on_message(execution: Execution, msg: dict[str, Any]) -> None:
        content = msg["content"]
        if (msg["msg_type"] == "comm_open"
                and content["data"]["state"].get("_model_name") == "ButtonModel"):
            state["comm"], state["opened"] = content["comm_id"], time.monotonic()
        if msg["msg_type"] == "comm_close":
            state["closed"] = content["comm_id"]
        if ("comm" in state and "clicked" not in state
                and time.monotonic() - state["opened"] > delay):
            kernel.click(state["comm"])
            state["clicked"] = time.monotonic()

    return on_message


def test_stop_button_click_stops_the_stream(kernel: KernelSession) -> None:
    state: dict[str, Any] = {}
    done = kernel.execute("%%llm -m offline:echo\n{words} {words} {words}",
                          on_message=_click_after(kernel, 0.5, state))
    assert done.status == "ok" and "clicked" in state
    assert done.finished - state["clicked"] < 1.0  # type: ignore[operator]
    assert state.get("closed") == state["comm"]  # the widget was closed
    assert value(kernel, "[_llm.finish_reason, len(_llm.text.split()) < 300]") == [
        "cancelled", True]
    assert "stopped" in done.text and "w0 w1" in done.text
    assert not any(WIDGET_MIME in o.get("data", {}) for o in done.outputs)


def test_run_all_stays_sequential_while_a_stream_polls_for_clicks(kernel: KernelSession) -> None:
    ok(kernel, "order = []")
    cells = ["%%llm -m offline:echo\n{words}", "order.append(1)", "order.append(2)",
             "%%llm -m offline:echo\n{nope}", "order.append(3)"]
    state: dict[str, Any] = {}
    executions = [kernel.submit(code) for code in cells]
    kernel.wait(executions, on_message=_click_after(kernel, 0.5, state))
    assert [e.status for e in executions] == ["ok", "ok", "ok", "error", "aborted"]
    assert value(kernel, "order") == [1, 2]
    assert "clicked" in state  # the click overtook the queued cells
    assert value(kernel, "_llm.finish_reason") in ("cancelled", "stop")


def test_interrupt_offline_stream_keeps_partial_text(kernel: KernelSession) -> None:
    execution = kernel.submit("%%llm -m offline:echo\n{words} {words}")
    state: dict[str, Any] = {}

    def on_message(_: Execution, msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "update_display_data" and "sent" not in state:
            state["sent"] = time.monotonic()
            kernel.interrupt()

    kernel.wait([execution], on_message=on_message)
    assert execution.status == "error"
    assert strip_ansi(execution.error["traceback"][0]).startswith(  # type: ignore[index]
        "KeyboardInterrupt: the stream was stopped")
    assert "stopped" in execution.text and "w0" in execution.text
    assert value(kernel, "_llm.finish_reason") == "cancelled"
    started = time.monotonic()
    ok(kernel, "1 + 1")
    assert time.monotonic() - started < 2


def test_no_widget_output_survives_in_a_saved_notebook() -> None:
    nb, error = run_notebook(["%load_ext notebook_llm", "%%llm -m offline:echo\nhello *world*"])
    assert error is None
    outputs = nb.cells[1].outputs
    assert outputs and all(WIDGET_MIME not in o.get("data", {}) for o in outputs)
    assert not [o for o in outputs if o.output_type in ("stream", "error")]
    assert "<em>world</em>" in outputs[0].data["text/html"]


# -- without a kernel -------------------------------------------------------------------


def test_terminal_ipython_streams_plain_text(tmp_path: Path) -> None:
    script = tmp_path / "demo.ipy"
    # An .ipy file is one cell, so the cell magic is called the way IPython would.
    script.write_text(
        "%load_ext notebook_llm\n"
        "get_ipython().run_cell_magic('llm', '-m offline:echo', 'hello **terminal**')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--quick", "--colors=nocolor",
         str(script)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "NOTEBOOK_LLM_DB": str(tmp_path / "log.db")},
    )
    assert result.returncode == 0, result.stderr
    assert "hello **terminal**" in result.stdout and "-- offline:echo" in result.stdout
    assert "<" not in result.stdout


def test_kernel_runs_this_interpreter(kernel: KernelSession) -> None:
    assert value(kernel, "__import__('sys').executable") == sys.executable


def test_import_notebook_llm_does_not_import_the_notebook_layer() -> None:
    code = ("import sys, notebook_llm; "
            "print(any(m.startswith(('notebook_llm.notebook', 'IPython', 'ipywidgets')) "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


# -- a real server: interrupt stops the generation ------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server() -> Any:
    if not MODEL.exists():
        pytest.skip(f"model file {MODEL} is absent")
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    # n_ctx 4096: room for a stream of several seconds, so that a server which
    # kept generating after the interrupt would visibly delay the next request.
    try:
        from tests.support.llama_server import start_llama_server, stop_llama_server
    except ImportError:  # the shared helper is not there: start it here
        start_llama_server = stop_llama_server = None
    if start_llama_server is not None:
        # argparse keeps the last --n_ctx, so this overrides the helper's 512.
        process, base_url = start_llama_server(MODEL, "stories260k",
                                               extra_args=("--n_ctx", "4096"))
    else:
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(MODEL),
             "--model_alias", "stories260k", "--host", "127.0.0.1", "--port", str(port),
             "--n_ctx", "4096", "--n_threads", "1", "--n_threads_batch", "1",
             "--interrupt_requests", "False"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    pytest.fail("llama_cpp.server did not start")
                time.sleep(0.2)
    try:
        yield base_url
    finally:
        if stop_llama_server is not None:
            stop_llama_server(process)
        else:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.mark.llama
@pytest.mark.slow
def test_interrupt_stops_a_real_server_stream(llama_server: str, tmp_path: Path) -> None:
    session = KernelSession(env={"NOTEBOOK_LLM_DB": str(tmp_path / "log.db"),
                                 "LLAMACPP_BASE_URL": llama_server})
    try:
        ok(session, "%load_ext notebook_llm")
        # Warm up (model load), and measure a short request on an idle server.
        ok(session, "%%llm -m llamacpp:stories260k --max-tokens 5\nOnce")
        execution = session.submit(
            "%%llm -m llamacpp:stories260k --max-tokens 4000\nOnce upon a time")
        state: dict[str, Any] = {}

        def on_message(_: Execution, msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "update_display_data" and "sent" not in state:
                state["seen"] = state.get("seen", 0) + 1
                if state["seen"] >= 5:  # a second or so of streaming
                    state["sent"] = time.monotonic()
                    session.interrupt()

        session.wait([execution], timeout=120, on_message=on_message)
        assert "sent" in state, "the stream ended before it could be interrupted"
        assert execution.finished - state["sent"] < 3  # type: ignore[operator]
        assert execution.status == "error" and "stopped" in execution.text
        assert value(session, "[_llm.finish_reason, 0 < len(_llm.text)]") == ["cancelled", True]
        # 4000 tokens take ~15 s; a server still generating would hold this one back.
        started = time.monotonic()
        ok(session, "%%llm -m llamacpp:stories260k --max-tokens 5\nOnce")
        assert time.monotonic() - started < 4
    finally:
        session.close()
