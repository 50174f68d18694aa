"""The models in memory: load once, share, list, unload, and unload when idle.

Loaded models are shared by the whole process, keyed by path, embedding mode
and load settings. A request without explicit settings reuses whatever is
loaded for its path, so ``notebook_llm.local.load(..., n_ctx=...)`` sticks
(settings that do not apply, such as llama.cpp's for a sentence-transformers
model, are ignored). A daemon thread unloads a model once it has been unused
for its ``idle_s`` seconds (0 disables); it sleeps while nothing is loaded
and is woken whenever a model is loaded or used.
"""

from __future__ import annotations

import threading
from typing import Any

from notebook_llm.core.errors import ModelNotFoundError, UnsupportedError
from notebook_llm.providers.local._llama import LoadedModel
from notebook_llm.providers.local._names import (
    PROVIDER,
    SENTENCE_TRANSFORMERS,
    ResolvedModel,
    resolve_model,
)
from notebook_llm.providers.local._sentence_transformers import SentenceTransformerModel
from notebook_llm.providers.local._settings import (
    check_settings,
    default_idle_s,
    full_settings,
)

__all__ = ["load_model", "load_resolved", "loaded_models", "unload_models"]

_AnyModel = LoadedModel | SentenceTransformerModel
_models: list[_AnyModel] = []
_models_lock = threading.RLock()
_reaper_wake = threading.Event()
_reaper: threading.Thread | None = None


def _find(resolved: ResolvedModel, given: dict[str, Any]) -> _AnyModel | None:
    for model in _models:
        if model.path != resolved.path or model.embedding != resolved.embedding:
            continue
        if model.backend != resolved.backend:
            continue
        if model.backend == SENTENCE_TRANSFORMERS:  # llama.cpp's settings do not apply
            return model
        if all(model.given.get(k) == v for k, v in given.items() if k != "idle_s"):
            return model
    return None


def load_resolved(resolved: ResolvedModel, given: dict[str, Any]) -> _AnyModel:
    """The loaded model for ``resolved`` and ``given`` settings, loading it if needed."""
    check_settings(given)
    with _models_lock:
        model = _find(resolved, given)
        if model is None and resolved.backend == SENTENCE_TRANSFORMERS:
            idle = given.get("idle_s")
            model = SentenceTransformerModel(
                resolved, given, default_idle_s() if idle is None else float(idle)
            )
            _models.append(model)
            _start_reaper()
        elif model is None:
            settings = full_settings(resolved, given)
            kwargs: dict[str, Any] = {
                "n_ctx": settings.n_ctx,
                "n_threads": settings.n_threads,
                "n_threads_batch": settings.n_threads_batch,
                "n_batch": settings.n_batch,
                "n_gpu_layers": settings.n_gpu_layers,
                "verbose": settings.verbose,
                "embedding": resolved.embedding,
            }
            if settings.chat_format:
                kwargs["chat_format"] = settings.chat_format
            idle = given.get("idle_s")
            model = LoadedModel(
                resolved, settings, given, default_idle_s() if idle is None else float(idle),
                kwargs,
            )
            _models.append(model)
            _start_reaper()
        elif given.get("idle_s") is not None:
            model.idle_s = float(given["idle_s"])
        model.touch()
    _reaper_wake.set()
    return model


def load_model(name_or_path: str = "smollm2", *, embedding: bool | None = None,
               **settings: Any) -> LoadedModel | SentenceTransformerModel:
    """Load (or find already loaded) a local model; see :mod:`notebook_llm.local`.

    ``local:minilm`` without a GGUF gives a :class:`SentenceTransformerModel`;
    llama.cpp's settings (``n_ctx``, ``n_threads``, ...) do not apply to it.
    """
    resolved = resolve_model(name_or_path)
    if resolved.backend == SENTENCE_TRANSFORMERS:
        if embedding is False:
            raise UnsupportedError(
                f"local:{name_or_path} is a sentence-transformers embedding model",
                provider=PROVIDER,
                model=name_or_path,
            )
    elif embedding is not None and embedding != resolved.embedding:
        resolved = ResolvedModel(resolved.name, resolved.path, embedding)
    return load_resolved(resolved, settings)


def unload_models(name_or_path: str | None = None) -> int:
    """Unload one model (by name or path) or all of them; returns how many."""
    with _models_lock:
        if name_or_path is None:
            chosen = list(_models)
        else:
            resolved_path: str | None
            try:
                resolved_path = resolve_model(name_or_path).path
            except ModelNotFoundError:
                resolved_path = None
            chosen = [
                m for m in _models
                if m.name == name_or_path or m.path in (resolved_path, name_or_path)
            ]
        for model in chosen:
            _models.remove(model)
    for model in chosen:
        model.close()
    return len(chosen)


def loaded_models() -> list[dict[str, Any]]:
    """One dict per loaded model: name, path, size, n_ctx, loaded_at, last_used, ..."""
    with _models_lock:
        return [model.info() for model in _models]


def _start_reaper() -> None:
    global _reaper
    if _reaper is None or not _reaper.is_alive():
        _reaper = threading.Thread(
            target=_reap_forever, name="notebook-llm-local-idle", daemon=True
        )
        _reaper.start()


def _reap_forever() -> None:
    while True:
        with _models_lock:
            limits = [m.idle_s for m in _models if m.idle_s > 0]
        if not _models:
            wait: float | None = None
        elif limits:
            wait = min(max(min(limits) / 4, 0.05), 30.0)
        else:
            wait = 30.0
        _reaper_wake.wait(wait)
        _reaper_wake.clear()
        idle: list[_AnyModel] = []
        with _models_lock:
            for model in list(_models):
                if model.idle_s > 0 and not model.busy and model.idle_for() >= model.idle_s:
                    _models.remove(model)
                    idle.append(model)
        for model in idle:
            model.close()
