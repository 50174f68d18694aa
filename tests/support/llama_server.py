"""Start and stop a real llama.cpp server (llama-cpp-python's ``llama_cpp.server``) for tests.

``start_llama_server(model, alias)`` picks a free loopback port, starts the
server with one thread (two batch threads stall on 2-core machines), waits
until ``/v1/models`` answers, and returns the process and the ``/v1`` base URL.
``stop_llama_server(process)`` ends it. ``llama_server_unavailable()`` says why
the server cannot run here (for ``pytest.skip``), or returns ``None``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "MODELS_DIR",
    "free_port",
    "llama_server_unavailable",
    "start_llama_server",
    "stop_llama_server",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = Path(os.environ.get("NOTEBOOK_LLM_SHARED") or _REPO_ROOT.parent / "shared") / "models"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def llama_server_unavailable(model_path: str | os.PathLike[str] | None = None) -> str | None:
    """Why a llama.cpp server cannot be started here, or ``None`` when it can."""
    for module in ("llama_cpp", "llama_cpp.server", "uvicorn", "fastapi"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return f"{module} is not importable: pip install 'llama-cpp-python[server]'"
    if model_path is not None and not Path(model_path).is_file():
        return f"model file {model_path} is absent"
    return None


def start_llama_server(
    model_path: str | os.PathLike[str],
    alias: str,
    *,
    embedding: bool = False,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 90.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m llama_cpp.server`` on a free port; return (process, base URL).

    The base URL ends in ``/v1``. Raises ``RuntimeError`` with the server's log
    when it exits or does not answer within ``startup_timeout`` seconds.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path), "--model_alias", alias,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "512", "--n_threads", "1", "--n_threads_batch", "1",
    ]
    if embedding:
        command += ["--embedding", "True"]
    command += list(extra_args)
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    process.log = log  # type: ignore[attr-defined]
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited ({process.returncode}):\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=1) as response:
                if response.status == 200 and json.load(response).get("data"):
                    return process, base_url
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.1)
    stop_llama_server(process)
    raise RuntimeError(f"llama.cpp server did not answer in {startup_timeout:g}s:\n{_tail(log)}")


def stop_llama_server(process: subprocess.Popen[bytes]) -> None:
    """Stop the server (SIGTERM, then SIGKILL after 5 s) and close its log."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    log = getattr(process, "log", None)
    if log is not None:
        log.close()


def _tail(log: object, size: int = 4000) -> str:
    try:
        log.seek(0)  # type: ignore[attr-defined]
        return log.read().decode("utf-8", "replace")[-size:]  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return ""
