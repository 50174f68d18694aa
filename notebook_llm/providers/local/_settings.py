"""Load settings: threads, context size, idle time, contexts, with their defaults.

- Threads: ``n_threads`` (setting or ``NOTEBOOK_LLM_LOCAL_THREADS``); by
  default 1 on machines with 2 cores or fewer (two threads spin-wait against
  everything else there), else half the usable cores, at most 8.
- Context size: the GGUF's ``<arch>.context_length``, capped at
  :data:`DEFAULT_CTX_CAP` and at what a KV cache can take from a quarter of
  the available memory; an explicit ``n_ctx`` wins (``n_ctx=0``: the model's
  full length).
- Contexts (``n_parallel``): 2 when the machine has at least twice
  ``n_threads`` cores, else 1; embedding models get 1.
- Idle time: ``idle_s`` or ``NOTEBOOK_LLM_LOCAL_IDLE_S``, default
  :data:`DEFAULT_IDLE_S`; 0 keeps a model loaded.

The figures behind these defaults are in ``docs/local-models.md``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

from notebook_llm.core.errors import InvalidRequestError
from notebook_llm.providers.local._gguf import read_gguf_metadata
from notebook_llm.providers.local._names import PROVIDER, ResolvedModel

__all__ = [
    "DEFAULT_CTX_CAP",
    "DEFAULT_IDLE_S",
    "DEFAULT_MAX_TOKENS",
    "Settings",
    "check_settings",
    "default_idle_s",
    "default_threads",
    "full_settings",
]

DEFAULT_CTX_CAP = 4096
"""The largest context used unless ``n_ctx`` is given (KV memory and speed)."""
DEFAULT_IDLE_S = 300.0
"""Seconds a model may stay unused before it is unloaded."""
DEFAULT_MAX_TOKENS = 512
"""The output cap when a call sets no ``max_tokens``: small models easily loop
until their context is full (a "short poem" once ran 4,058 tokens). Change it
with the provider setting ``max_tokens``; a call's own ``max_tokens`` wins."""

_LOAD_SETTINGS = frozenset(
    {"n_ctx", "n_threads", "n_threads_batch", "n_batch", "n_gpu_layers", "chat_format",
     "verbose", "idle_s", "n_parallel"}
)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads() -> int:
    """``NOTEBOOK_LLM_LOCAL_THREADS``, else 1 on 2 cores or fewer, else half the cores (≤ 8)."""
    env = os.environ.get("NOTEBOOK_LLM_LOCAL_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    cpus = _usable_cpus()
    return 1 if cpus <= 2 else max(1, min(cpus // 2, 8))


def default_idle_s() -> float:
    """``NOTEBOOK_LLM_LOCAL_IDLE_S``, else :data:`DEFAULT_IDLE_S`."""
    try:
        return float(os.environ.get("NOTEBOOK_LLM_LOCAL_IDLE_S", DEFAULT_IDLE_S))
    except ValueError:
        return DEFAULT_IDLE_S


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _choose_n_ctx(path: str, embedding: bool) -> int:
    """The model's context length, capped at DEFAULT_CTX_CAP and by memory."""
    try:
        metadata = read_gguf_metadata(path)
    except (OSError, ValueError, struct.error):
        return min(2048, DEFAULT_CTX_CAP)
    arch = str(metadata.get("general.architecture", "llama"))
    trained = int(metadata.get(f"{arch}.context_length") or 2048)
    n_ctx = min(trained, DEFAULT_CTX_CAP)
    if embedding:
        return n_ctx
    layers = int(metadata.get(f"{arch}.block_count") or 0)
    heads = int(metadata.get(f"{arch}.attention.head_count") or 0)
    heads_kv = int(metadata.get(f"{arch}.attention.head_count_kv") or heads or 0)
    width = int(metadata.get(f"{arch}.embedding_length") or 0)
    head_dim = int(metadata.get(f"{arch}.attention.key_length") or (width // heads if heads else 0))
    available = _available_memory()
    if layers and heads_kv and head_dim and available:
        # K and V, f16: 2 tensors x 2 bytes x layers x kv heads x head size, per token.
        per_token = 4 * layers * heads_kv * head_dim
        budget = max(0, available - os.path.getsize(path)) // 4
        fits = budget // per_token
        if fits < n_ctx:
            n_ctx = max(min(512, trained), fits // 256 * 256)
    return n_ctx


@dataclass(frozen=True, slots=True)
class Settings:
    """Load settings with every default filled in."""

    n_ctx: int
    n_threads: int
    n_threads_batch: int
    n_batch: int
    n_gpu_layers: int
    chat_format: str | None
    verbose: bool
    n_parallel: int


def _default_parallel(resolved: ResolvedModel, threads: int) -> int:
    # Two contexts when the cores allow two requests side by side; embedding
    # calls are short, so one context serves them.
    if resolved.embedding:
        return 1
    return 2 if _usable_cpus() >= 2 * threads else 1


def check_settings(settings: dict[str, Any]) -> None:
    """Raise :class:`InvalidRequestError` for a setting that is not a load setting."""
    unknown = set(settings) - _LOAD_SETTINGS
    if unknown:
        raise InvalidRequestError(
            f"Unknown local model setting(s): {', '.join(sorted(unknown))}. "
            f"Known: {', '.join(sorted(_LOAD_SETTINGS))}",
            provider=PROVIDER,
        )


def full_settings(resolved: ResolvedModel, given: dict[str, Any]) -> Settings:
    """``given`` with every missing setting chosen for this model and machine."""
    n_ctx = given.get("n_ctx")
    if n_ctx is None:
        n_ctx = _choose_n_ctx(resolved.path, resolved.embedding)
    threads = int(given.get("n_threads") or default_threads())
    return Settings(
        n_ctx=int(n_ctx),
        n_threads=threads,
        n_threads_batch=int(given.get("n_threads_batch") or threads),
        n_batch=int(given.get("n_batch") or 512),
        n_gpu_layers=int(given.get("n_gpu_layers") or 0),
        chat_format=given.get("chat_format"),
        verbose=bool(given.get("verbose", False)),
        n_parallel=int(given.get("n_parallel") or _default_parallel(resolved, threads)),
    )
