"""Module-level functions: the default client's methods (``nl.complete(...)``)."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from notebook_llm._client import Client

if TYPE_CHECKING:
    from notebook_llm.embeddings import Embeddings
    from notebook_llm.store.db import Store

__all__ = [
    "acomplete",
    "aembed",
    "alist_models",
    "astream",
    "complete",
    "default_client",
    "default_model",
    "embed",
    "list_models",
    "providers",
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
                _default = Client()
    return _default


def set_default_client(client: Client | None) -> None:
    """Make ``client`` the one module-level functions use (``None``: a fresh default)."""
    global _default
    _default = client


def _delegate(name: str) -> Any:
    method = getattr(Client, name)

    @functools.wraps(method)
    def function(*args: Any, **kwargs: Any) -> Any:
        return getattr(default_client(), name)(*args, **kwargs)

    parameters = list(inspect.signature(method).parameters.values())[1:]
    function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    function.__module__ = "notebook_llm"
    function.__qualname__ = name
    return function


complete = _delegate("complete")
acomplete = _delegate("acomplete")
stream = _delegate("stream")
astream = _delegate("astream")
list_models = _delegate("list_models")
alist_models = _delegate("alist_models")
providers = _delegate("providers")
default_model = _delegate("default_model")


def embed(
    texts: Any,
    model: str | None = None,
    *,
    batch_size: int | None = None,
    concurrency: int = 4,
    cache: bool = True,
    progress: bool | Callable[[int, int], None] | None = None,
    client: Client | None = None,
    store: Store | str | None = None,
    **kwargs: Any,
) -> Embeddings:
    """Embed texts (a list, a Series or a DataFrame column) as :class:`~notebook_llm.Embeddings`.

    Vectors are L2-normalised float32, aligned with the input's index, cached
    by model and text, and fetched in concurrent batches. See
    :func:`notebook_llm.embeddings.aembed` for every argument; ``client``
    defaults to :func:`default_client`.
    """
    from notebook_llm.embeddings import embed as embed_texts

    return embed_texts(
        texts, model, batch_size=batch_size, concurrency=concurrency, cache=cache,
        progress=progress, client=client or default_client(), store=store, **kwargs,
    )


async def aembed(
    texts: Any,
    model: str | None = None,
    *,
    batch_size: int | None = None,
    concurrency: int = 4,
    cache: bool = True,
    progress: bool | Callable[[int, int], None] | None = None,
    client: Client | None = None,
    store: Store | str | None = None,
    **kwargs: Any,
) -> Embeddings:
    """Async version of :func:`embed`; same arguments."""
    from notebook_llm.embeddings import aembed as aembed_texts

    return await aembed_texts(
        texts, model, batch_size=batch_size, concurrency=concurrency, cache=cache,
        progress=progress, client=client or default_client(), store=store, **kwargs,
    )


embed.__module__ = aembed.__module__ = "notebook_llm"
