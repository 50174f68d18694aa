"""Module-level functions: the default client's methods (``nl.complete(...)``)."""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any

from notebook_llm._client import Client
from notebook_llm._settings import apply_saved
from notebook_llm.core import inflight

__all__ = [
    "acomplete",
    "alist_models",
    "astream",
    "complete",
    "default_client",
    "default_model",
    "list_models",
    "list_providers",
    "set_default_client",
    "stream",
]

_lock = threading.Lock()
_default: Client | None = None


def default_client() -> Client:
    """The client the module-level functions use, created on first use."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                client = Client()
                apply_saved(client)  # aliases and defaults saved with %llm_config --save
                _default = client
    return _default


def _default_model_setting() -> str | None:
    """The default client's configured model (no probing), for the JupyterLab panel."""
    return _default.default if _default is not None else None


inflight.add_status_source("default_model", _default_model_setting)


def set_default_client(client: Client | None) -> None:
    """Make ``client`` the one module-level functions use (``None``: a fresh default)."""
    global _default
    _default = client


def _delegate(name: str) -> Any:
    method = getattr(Client, name)
    function: Any
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def function(*args: Any, **kwargs: Any) -> Any:
            return await getattr(default_client(), name)(*args, **kwargs)

    else:

        @functools.wraps(method)
        def function(*args: Any, **kwargs: Any) -> Any:
            return getattr(default_client(), name)(*args, **kwargs)

    parameters = list(inspect.signature(method).parameters.values())[1:]
    function.__signature__ = inspect.Signature(parameters)
    function.__module__ = "notebook_llm"
    function.__qualname__ = name
    return function


complete = _delegate("complete")
acomplete = _delegate("acomplete")
stream = _delegate("stream")
astream = _delegate("astream")
list_models = _delegate("list_models")
alist_models = _delegate("alist_models")
list_providers = _delegate("list_providers")
default_model = _delegate("default_model")

