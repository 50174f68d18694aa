"""In-process local models (``local:`` model strings): load, unload, see what is loaded.

Models load on first use anyway; :func:`load` is for loading ahead of time or
with settings, :func:`unload` frees memory, :func:`loaded` shows what is in
memory. Idle models are unloaded after ``idle_s`` seconds (default 300, or
``NOTEBOOK_LLM_LOCAL_IDLE_S``; 0 keeps them loaded)::

    import notebook_llm.local as local
    local.load("smollm2", n_ctx=2048)
    local.loaded()      # [{'name': 'smollm2', 'n_ctx': 2048, ...}]
    local.unload()      # all of them

Nothing here imports llama-cpp-python until a model is loaded.
"""

from __future__ import annotations

import os
from typing import Any

from notebook_llm.providers.local import (
    load_model,
    loaded_models,
    register_model,
    unload_models,
)

__all__ = ["load", "loaded", "register", "unload"]


def load(name_or_path: str = "smollm2", **settings: Any) -> dict[str, Any]:
    """Load a local model now (or find it loaded) and return its :func:`loaded` row.

    Args:
        name_or_path: ``smollm2``, ``minilm``, a registered name, or a GGUF path.
        **settings: ``n_ctx`` (default: the model's, capped at 4096 and by memory),
            ``n_threads`` (default: 1 on ≤ 2 cores, or ``NOTEBOOK_LLM_LOCAL_THREADS``),
            ``n_threads_batch``, ``n_batch``, ``n_gpu_layers``, ``chat_format``,
            ``n_parallel`` (contexts for overlapping requests; default 2 when
            the cores allow), ``verbose``, ``idle_s`` (seconds unused before
            unloading; 0: never),
            ``embedding`` (force embedding mode for a path).

    Raises:
        notebook_llm.errors.ModelNotFoundError: unknown name or missing file.
        notebook_llm.errors.UnsupportedError: llama-cpp-python is not installed.
    """
    return load_model(name_or_path, **settings).info()


def unload(name_or_path: str | None = None) -> int:
    """Unload one model (by name or path), or every model when ``None``; returns how many.

    A request running on the model is stopped first.
    """
    return unload_models(name_or_path)


def loaded() -> list[dict[str, Any]]:
    """The models in memory: name, path, size, n_ctx, loaded_at, last_used, and more."""
    return loaded_models()


def register(name: str, path: str | os.PathLike[str], *, embedding: bool | None = None) -> None:
    """Make ``local:<name>`` mean the GGUF file at ``path``."""
    register_model(name, path, embedding=embedding)
