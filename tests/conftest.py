"""Shared test set-up: a private call log, no key prompts, shared llama.cpp servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.llama_server import (
    MODELS_DIR,
    llama_server_unavailable,
    start_llama_server,
    stop_llama_server,
)


@pytest.fixture(scope="session", autouse=True)
def _private_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Tests must never write to the user's own call log, or wait at a key prompt.
    # Nor read or write the user's saved settings and templates.
    names = ("NOTEBOOK_LLM_DB", "NOTEBOOK_LLM_NO_PROMPT", "NOTEBOOK_LLM_HOME")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["NOTEBOOK_LLM_DB"] = str(tmp_path_factory.mktemp("store") / "notebook_llm.db")
    os.environ["NOTEBOOK_LLM_HOME"] = str(tmp_path_factory.mktemp("home"))
    os.environ["NOTEBOOK_LLM_NO_PROMPT"] = "1"
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _server(model: str, alias: str, **kwargs: object) -> Iterator[str]:
    path = MODELS_DIR / model
    reason = llama_server_unavailable(path)
    if reason:
        pytest.skip(reason)
    process, base_url = start_llama_server(path, alias, **kwargs)  # type: ignore[arg-type]
    try:
        yield base_url
    finally:
        stop_llama_server(process)


@pytest.fixture
def llm_home(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh config directory and call log for one test, and a fresh default client
    (which reads the saved settings when it is made)."""
    import notebook_llm as nl

    monkeypatch.setenv("NOTEBOOK_LLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NOTEBOOK_LLM_DB", str(tmp_path / "log.db"))
    nl.set_default_client(None)
    yield tmp_path / "home"
    nl.set_default_client(None)


@pytest.fixture(scope="module")
def kernel(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One real Jupyter kernel per test module, in a fresh directory with its own
    call log. The module's ``SETUP`` code runs in it first and must succeed;
    ``KERNEL_ENV`` (a dict) adds environment variables."""
    from tests.support.kernel import KernelSession

    name = request.module.__name__.rsplit(".", 1)[-1]
    tmp = tmp_path_factory.mktemp(f"{name}-kernel")
    env = {"NOTEBOOK_LLM_DB": str(tmp / "log.db"), **getattr(request.module, "KERNEL_ENV", {})}
    session = KernelSession(env=env, cwd=str(tmp))
    try:
        setup = getattr(request.module, "SETUP", "")
        if setup:
            done = session.execute(setup)
            assert done.status == "ok", done.text
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def llama_chat_server() -> Iterator[str]:
    """A real llama.cpp server with stories260K; its ``/v1`` base URL."""
    yield from _server("stories260K.gguf", "stories260k")


@pytest.fixture(scope="session")
def llama_embedding_server() -> Iterator[str]:
    """A real llama.cpp server with all-MiniLM-L6-v2 in embedding mode; its ``/v1`` URL."""
    yield from _server("all-MiniLM-L6-v2-Q8_0.gguf", "all-minilm-l6-v2", embedding=True)
