"""The two hooks between the library and SDK capture (:mod:`notebook_llm._capture`).

- The official SDK clients the library builds for itself, so that capturing
  other code's SDK calls (``nl.capture()``) never records the library's own
  calls twice: every place that constructs an ``openai`` or ``anthropic``
  client passes it through :func:`mark_own`, and the capture patch skips a
  client :func:`is_own` knows (a weak set: a dropped client is forgotten).
- The capture switch, for ``nl.track(capture=True)``: trackers sit below the
  capture module, so the package root registers a loader for it here
  (:func:`register_switch`), as it does for the progress UI. Only the
  standard library is imported, so registering costs nothing at import.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["is_own", "mark_own", "register_switch", "switch"]

T = TypeVar("T")

_own: weakref.WeakSet[Any] = weakref.WeakSet()
_loader: list[Callable[[], Any]] = []


def mark_own(client: T) -> T:
    """Note ``client`` as the library's own and return it."""
    _own.add(client)
    return client


def is_own(client: Any) -> bool:
    """Whether the library built ``client`` (its calls are logged already)."""
    try:
        return client in _own
    except TypeError:  # not weak-referenceable: not one of ours
        return False


def register_switch(loader: Callable[[], Any]) -> None:
    """Register ``loader``: it returns the capture switch, an object with
    ``acquire()`` and ``release()``."""
    _loader[:] = [loader]


def switch() -> Any:
    """The capture switch (loaded on first use)."""
    if not _loader:
        raise RuntimeError("capture=True needs the notebook_llm package imported")
    return _loader[0]()
