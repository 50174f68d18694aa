"""The JupyterLab extension in a real browser: JupyterLab 4 and Notebook 7.

For each app, one server (with the built extension on ``JUPYTER_PATH`` and the
server extension enabled) and one page, running a notebook's cells in order:

- the extension loads with no console errors;
- the status item counts a ``%%llm`` stream while it runs, and drops to 0;
- "Stop all LLM work" ends a stream (in a busy cell), a compare and a batch
  (in threads) together;
- the panel lists the calls and opens one into its prompt and answer, and
  model output with ``<img onerror>`` runs no script there;
- the notebook, saved and reopened on a fresh kernel, shows the stream, the
  compare dashboard and the batch bar as static output, and a widget saved
  while live shows its fallback, never "Loading widget…".

Chromium comes from Debian (``/usr/bin/chromium``), driven by ``playwright``
with ``executable_path``; nothing downloads a browser. The extension must be
built first (``npm ci && npm run build:prod`` in
``extensions/jupyterlab-notebook-llm``; ``.ci/run`` does it).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LabNotebook,
    browser_unavailable,
    start_lab,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BUILT = ROOT / "notebook_llm" / "labextension"
ARTIFACTS = ROOT / "tests" / "artifacts" / "lab-extension"
KEY_VARIABLES = (
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY",
    "DEEPSEEK_API_KEY", "OPENROUTER_API_KEY", "TOGETHER_API_KEY", "OPENAI_COMPATIBLE_API_KEY",
    "NOTEBOOK_LLM_MODEL",
)

# Test-only: offline streams get a delay between words so they run for a while.
SETUP = """
%load_ext notebook_llm
import notebook_llm as nl, threading
_client = nl.default_client()
_plain_astream = _client.astream
def _slow_offline(request, model=None, **options):
    if str(model or "").startswith("offline:"):
        options.setdefault("chunk_delay", 0.05)
    return _plain_astream(request, model, **options)
_client.astream = _slow_offline
"""
BACKGROUND = """
results = {}
def _stream():
    results["stream"] = nl.stream("a tale", "offline:story", max_tokens=3000).collect()
def _compare():
    results["compare"] = nl.compare("a tale", ["offline:story", "offline:echo"],
                                    max_tokens=3000)
def _batch():
    results["batch"] = nl.batch([f"row {i}" for i in range(600)], "offline:echo", rpm=60,
                                progress=False)
threads = [threading.Thread(target=f) for f in (_stream, _compare, _batch)]
for t in threads:
    t.start()
"""
REPORT = """
for t in threads:
    t.join(5)
print("alive", sum(t.is_alive() for t in threads))
print("stream", results["stream"].finish_reason)
print("compare", sorted({c.status for c in results["compare"].cells}))
print("batch", results["batch"].state, results["batch"].done < 600)
"""
CELLS = {
    "setup": SETUP,
    "background": BACKGROUND,
    "long_stream": "%%llm -m offline:story --max-tokens 3000\nA long tale of a lighthouse",
    "report": REPORT,
    "budget": 'budget = nl.Tracker(budget_usd=0.5, name="demo budget")',
    "hostile": '%%llm -m offline:echo\nhostile <img src=x onerror="window.__xss=1"> end',
    "default": "print('default is', nl.default_client().default)",
    "stream": "%%llm -m offline:echo\nShort and sweet answer",
    "dashboard": "%%llm -m offline:echo,offline:story --max-tokens 20\nA lighthouse by the sea",
    "batch": 'nl.batch([f"row {i}" for i in range(30)], "offline:echo", rpm=1200)',
    # A live widget as the library shows one (a Stop button with its fallback),
    # left in the notebook as if it were saved while a stream ran.
    "live_widget": (
        "import ipywidgets\n"
        "from IPython.display import display\n"
        "from notebook_llm.notebook._widgets import widget_bundle\n"
        "display(widget_bundle(ipywidgets.Button(description='Stop'),\n"
        "                      {'text/plain': 'saved while live',\n"
        "                       'text/html': '<b>saved while live</b>'}), raw=True)"
    ),
}
INDEX = {name: i for i, name in enumerate(CELLS)}
STATUS = ".jp-NotebookLLM-status"
STOP = ".jp-NotebookLLM-stopAll"


def _extension_unavailable() -> str | None:
    reason = browser_unavailable()
    if reason:
        return reason
    if not (BUILT / "package.json").exists():
        return ("the JupyterLab extension is not built: cd extensions/jupyterlab-notebook-llm "
                "&& npm ci && npm run build:prod")
    return None


class Session:
    """A server, a page on the notebook, and what the page said."""

    def __init__(self, app: str, lab: Any, page: Any, root: Path) -> None:
        self.app, self.lab, self.page, self.root = app, lab, page, root
        self.notebook = LabNotebook(page)
        self.console_errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(
            f"pageerror: {error}\n{error.stack or ''}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            where = (message.location or {}).get("url", "")
            self.console_errors.append(f"{message.text}\n{where}")

    def foreign_errors(self) -> list[str]:
        """Errors that are not the app's own: Notebook 7 (7.6) itself throws
        "reading 'schema'" from its core bundle on load, with or without this
        extension; anything else counts."""
        return [e for e in self.console_errors
                if not (self.app == "notebook" and "reading 'schema'" in e
                        and "/static/notebook/notebook_core" in e)]

    def status_text(self) -> str:
        return str(self.page.locator(STATUS).first.inner_text(timeout=10_000))

    def run(self, name: str) -> None:
        self.notebook.run(INDEX[name])

    def wait(self, name: str, timeout: float = 60) -> str:
        self.notebook.wait_done(INDEX[name], timeout=timeout)
        return self.notebook.text(INDEX[name])

    def wait_for_status(self, predicate: Any, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.status_text()
            if predicate(text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"the status item never matched; it reads {text!r}")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{self.app}-{name}.png"))


def _data_dir(tmp: Path) -> Path:
    """A JUPYTER_PATH entry whose labextensions/ holds the built extension."""
    data = tmp / "jupyter-data"
    (data / "labextensions").mkdir(parents=True)
    (data / "labextensions" / "jupyterlab-notebook-llm").symlink_to(BUILT)
    return data


@pytest.fixture(scope="module", params=["jupyterlab", "notebook"])
def session(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    app = request.param
    reason = _extension_unavailable()
    if reason:
        pytest.skip(reason)
    if app == "notebook" and importlib.util.find_spec("notebook") is None:
        pytest.skip("Notebook 7 is not installed (pip install 'notebook>=7')")
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp(f"{app}-root")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS.values()]
    nbformat.write(nb, root / "extension.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    env["NOTEBOOK_LLM_DB"] = str(root / "notebook_llm.db")
    env["NOTEBOOK_LLM_NO_PROMPT"] = "1"
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    env["JUPYTER_PATH"] = str(_data_dir(tmp_path_factory.mktemp(f"{app}-data")))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    config = {"ServerApp": {"jpserver_extensions": {"notebook_llm._server_ext": True}}}
    lab = start_lab(root, env, app=app, config=config)
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path_factory.mktemp(f"{app}-profile")),
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 900},
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                current = Session(app, lab, page, root)
                page.goto(lab.notebook_url("extension.ipynb"), timeout=60_000)
                current.notebook.wait_ready()
                current.run("setup")
                assert "Error" not in current.wait("setup")
                yield current
            finally:
                context.close()
    finally:
        lab.stop()


def test_the_extension_loads_without_console_errors(session: Session) -> None:
    page = session.page
    page.locator(STATUS).first.wait_for(timeout=30_000)
    page.locator(STOP).first.wait_for(timeout=30_000)
    assert session.wait_for_status(lambda t: t.endswith("· 0 running")).startswith("$")
    status = page.locator(STATUS).first
    assert status.get_attribute("role") == "button"
    # Focusable: in Lab's status bar by Tab; in Notebook 7's toolbar, which moves
    # focus between its items with the arrow keys, by the toolbar's roving tabindex.
    assert status.get_attribute("tabindex") in ("0", "-1")
    status.focus()
    page.keyboard.press("Enter")
    page.locator("#notebook-llm-panel").wait_for(state="visible", timeout=10_000)
    assert "open the call log" in (status.get_attribute("aria-label") or "")
    ours = [e for e in session.console_errors
            if "notebook-llm" in e.lower() or "notebook_llm" in e.lower()]
    assert ours == [], ours
    assert session.foreign_errors() == [], session.console_errors
    session.shot("loaded")


def test_status_counts_a_stream_and_stop_all_ends_stream_compare_and_batch(
    session: Session,
) -> None:
    session.run("background")
    session.wait("background")
    session.run("long_stream")  # the kernel's main thread is now busy streaming
    text = session.wait_for_status(lambda t: t.endswith("· 4 running"))
    assert text.startswith("$")
    assert session.page.locator(STATUS).first.get_attribute("data-running") == "4"
    session.shot("four-running")
    time.sleep(0.5)
    session.page.locator(STOP).first.click()
    clicked = time.monotonic()
    session.wait_for_status(lambda t: t.endswith("· 0 running"), timeout=10)
    assert time.monotonic() - clicked < 5
    streamed = session.wait("long_stream", timeout=15)
    assert "stopped" in streamed and "3000 out" not in streamed
    session.run("report")
    report = session.wait("report", timeout=30)
    assert "alive 0" in report, report
    assert "stream cancelled" in report, report
    assert "compare [" in report and "'stopped']" in report, report  # echo may finish first
    assert "batch stopped True" in report, report
    session.shot("stopped")


def test_the_panel_lists_calls_opens_one_and_runs_no_model_script(session: Session) -> None:
    page = session.page
    session.run("budget")
    session.wait("budget")
    session.run("hostile")
    assert "hostile" in session.wait("hostile")
    page.locator(STATUS).first.click()
    panel = page.locator("#notebook-llm-panel")
    panel.wait_for(state="visible", timeout=10_000)
    calls = panel.locator(".jp-NotebookLLM-call")
    calls.first.wait_for(timeout=10_000)
    assert panel.locator("table.jp-NotebookLLM-table").count() >= 1
    assert "offline:echo" in panel.locator(".jp-NotebookLLM-table").first.inner_text()
    search = panel.locator(".jp-NotebookLLM-search")
    search.fill("onerror")
    page.wait_for_function(
        """() => [...document.querySelectorAll('#notebook-llm-panel .jp-NotebookLLM-call')]
                 .length === 1""", timeout=10_000)
    call = calls.first
    assert "<img src=x onerror" in call.inner_text()  # shown as text
    call.click()
    answer = panel.locator(".jp-NotebookLLM-answer")
    answer.wait_for(timeout=10_000)
    assert '<img src=x onerror="window.__xss=1">' in answer.inner_text()
    assert call.get_attribute("aria-expanded") == "true"
    assert panel.locator("img, script, iframe, [onerror]").count() == 0
    time.sleep(0.5)
    assert page.evaluate("window.__xss") is None
    search.fill("")
    # Budgets come from the kernel: the live tracker with a budget.
    page.wait_for_function(
        """() => (document.querySelector('[aria-labelledby=notebook-llm-budgets]') || {})
                 .textContent.includes('demo budget: $0 of $0.5000')""", timeout=10_000)
    # The model picker sets the kernel's default model (what %llm_config model M sets).
    panel.locator(".jp-NotebookLLM-model input").fill("offline:story")
    panel.locator(".jp-NotebookLLM-model button").click()
    page.wait_for_function(
        """() => document.querySelector('#notebook-llm-panel .jp-NotebookLLM-note[role=status]')
                 .textContent === 'default model: offline:story'""", timeout=20_000)
    session.run("default")
    assert "default is offline:story" in session.wait("default")
    session.shot("panel")


def test_a_saved_notebook_reopened_shows_static_fallbacks(session: Session) -> None:
    page = session.page
    for name in ("stream", "dashboard", "batch", "live_widget"):
        session.run(name)
        session.wait(name, timeout=60)
    session.notebook.output(INDEX["live_widget"]).locator("button").wait_for(timeout=10_000)
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    path = session.root / "extension.ipynb"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        saved = nbformat.read(path, as_version=4)
        if saved.cells[INDEX["batch"]].outputs:
            break
        time.sleep(0.2)
    for name in ("stream", "dashboard", "batch"):
        outputs = saved.cells[INDEX[name]].outputs
        bundles = [o.get("data", {}) for o in outputs if "data" in o]
        assert bundles, name
        for data in bundles:
            assert "text/plain" in data, (name, data.keys())
            # Widgets gave way to static output when the work ended.
            assert "application/vnd.jupyter.widget-view+json" not in data, name
    # Reopen on a fresh kernel: no widget model from the old one exists.
    page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.restartKernel()")
    page.reload()
    session.notebook.wait_ready()
    for name in ("stream", "dashboard", "batch"):
        text = session.notebook.text(INDEX[name])
        assert "Loading widget" not in text and "Error displaying widget" not in text, text
    assert "Short and sweet answer" in session.notebook.text(INDEX["stream"])
    assert "offline:story" in session.notebook.text(INDEX["dashboard"])
    batch = session.notebook.output(INDEX["batch"])
    assert batch.locator("progress").count() == 1
    assert "30/30" in batch.inner_text()
    # The widget saved while live: its fallback, not "Loading widget..." for ever.
    live = session.notebook.output(INDEX["live_widget"])
    live.locator("b:has-text('saved while live')").wait_for(timeout=15_000)
    assert "Loading widget" not in live.inner_text()
    assert "Error displaying widget" not in live.inner_text()
    session.shot("reopened")
