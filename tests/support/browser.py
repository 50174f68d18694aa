"""Start JupyterLab for a browser test and drive its notebook from Playwright.

``start_lab(root, env)`` starts ``python -m jupyterlab`` on a free loopback
port with a random token, isolated config/runtime/workspace folders and the
app exposed to the page (``window.jupyterapp``), and waits until it answers.
``LabNotebook`` runs cells through JupyterLab's own commands and reads each
cell's rendered output area. Chromium comes from Debian (``/usr/bin/chromium``);
nothing here downloads a browser.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.llama_server import free_port

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "Lab", "LabNotebook", "browser_unavailable", "start_lab"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-dev-shm-usage",
]


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is absent (apt-get install chromium)"
    import importlib.util

    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install {package})"
    return None


@dataclass
class Lab:
    process: subprocess.Popen[bytes]
    url: str
    token: str
    log: Any
    home: str

    app: str = "jupyterlab"

    def notebook_url(self, name: str) -> str:
        if self.app == "notebook":
            return f"{self.url}notebooks/{name}?token={self.token}"
        return f"{self.url}lab/tree/{name}?token={self.token}&reset"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def tail(self, size: int = 4000) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-size:]


def start_lab(
    root: Path,
    env: dict[str, str],
    timeout: float = 90,
    *,
    app: str = "jupyterlab",
    config: dict[str, Any] | None = None,
) -> Lab:
    """JupyterLab (or Notebook 7, ``app="notebook"``) serving ``root`` on 127.0.0.1,
    ready when this returns. ``config`` is written as the server's
    ``jupyter_server_config.json`` (server extensions to enable, say)."""
    port = free_port()
    token = secrets.token_hex(16)
    home = tempfile.mkdtemp(prefix="lab-home-")
    env = {
        **env,
        "JUPYTER_CONFIG_DIR": os.path.join(home, "config"),
        "JUPYTER_RUNTIME_DIR": os.path.join(home, "runtime"),
    }
    if config:
        os.makedirs(env["JUPYTER_CONFIG_DIR"], exist_ok=True)
        Path(env["JUPYTER_CONFIG_DIR"], "jupyter_server_config.json").write_text(
            json.dumps(config))
    klass = "LabApp" if app == "jupyterlab" else "JupyterNotebookApp"
    command = [
        sys.executable, "-m", app, "--no-browser", "--ip=127.0.0.1",
        f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--ServerApp.port_retries=0",
        f"--{klass}.expose_app_in_browser=True",
        f"--{klass}.workspaces_dir={os.path.join(home, 'workspaces')}",
        f"--{klass}.user_settings_dir={os.path.join(home, 'settings')}",
    ]
    if app == "jupyterlab":
        command.append("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    # No "get notified about Jupyter news?" toast over the screenshots.
    settings = Path(home, "settings", "@jupyterlab", "apputils-extension")
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    lab = Lab(process, f"http://127.0.0.1:{port}/", token, log, home, app)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            message = f"JupyterLab exited ({process.returncode}):\n{lab.tail()}"
            lab.stop()
            raise RuntimeError(message)
        try:
            with urllib.request.urlopen(f"{lab.url}api/status?token={token}", timeout=1) as r:
                if r.status == 200:
                    return lab
        except OSError:
            pass
        time.sleep(0.2)
    lab.stop()
    raise RuntimeError(f"JupyterLab did not answer in {timeout:g}s")


class LabNotebook:
    """The notebook open in the page: run cells, read outputs."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def wait_ready(self, timeout: float = 90) -> None:
        """Wait until the notebook is open and its kernel is idle."""
        self.page.wait_for_function(
            """() => {
                const app = window.jupyterapp;
                const panel = app && app.shell.currentWidget;
                const kernel = panel && panel.sessionContext && panel.sessionContext.session
                    && panel.sessionContext.session.kernel;
                return !!(kernel && kernel.connectionStatus === 'connected'
                          && kernel.status === 'idle' && panel.content.widgets.length);
            }""",
            timeout=timeout * 1000,
        )

    def cell(self, index: int) -> Any:
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def output(self, index: int) -> Any:
        return self.cell(index).locator(".jp-OutputArea")

    def run(self, index: int) -> None:
        """Start running cell ``index`` (returns at once; see :meth:`wait_done`)."""
        self.page.evaluate(
            """(index) => {
                const app = window.jupyterapp;
                const notebook = app.shell.currentWidget.content;
                notebook.activeCellIndex = index;
                notebook.deselectAll();
                app.commands.execute('notebook:run-cell');
            }""",
            index,
        )
        self.cell(index).scroll_into_view_if_needed()

    def running(self, index: int) -> bool:
        return bool(self.page.evaluate(
            """(index) => {
                const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
                const prompt = cell.promptNode ? cell.promptNode.textContent : '';
                return cell.model.executionCount === null || prompt.includes('*');
            }""",
            index,
        ))

    def wait_done(self, index: int, timeout: float = 60) -> float:
        """Wait until cell ``index`` has run; returns the seconds waited."""
        started = time.monotonic()
        self.page.wait_for_function(
            """(index) => {
                const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
                const prompt = cell.promptNode ? cell.promptNode.textContent : '';
                return cell.model.executionCount !== null && !prompt.includes('*');
            }""",
            arg=index,
            timeout=timeout * 1000,
        )
        return time.monotonic() - started

    def text(self, index: int) -> str:
        return str(self.output(index).inner_text(timeout=5000))
