"""Where features find the notebook layer's views without importing it.

A feature (the arena) shows widgets that live in ``notebook_llm.notebook``,
which sits above it. The package root registers a loader per view here at
import (it may import any layer; registering costs nothing, this module needs
only the standard library), and the feature calls :func:`load` when, inside
a Jupyter kernel, it shows one. ``notebook_llm.progress`` does the same for
the progress UI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["load", "register"]

_loaders: dict[str, Callable[[], Any]] = {}


def register(name: str, loader: Callable[[], Any]) -> None:
    """Register ``loader``, which imports and returns the view module called ``name``."""
    _loaders[name] = loader


def load(name: str) -> Any:
    """The view module ``name``; ``RuntimeError`` when none is registered."""
    loader = _loaders.get(name)
    if loader is None:
        raise RuntimeError(f"no {name} view is registered: import notebook_llm as a package")
    return loader()
