"""A GGUF model loaded by llama-cpp-python: a small pool of contexts, and cancellation.

- One model per path and settings, shared by every request. A llama.cpp
  context is not thread-safe, so a context serves one request at a time.
  :class:`LoadedModel` keeps a small pool: the first context at load, more
  (up to ``n_parallel``) only when requests overlap; further requests wait
  for a free context, polling their cancel flag, so a cancelled request that
  is still queued never starts. The weights are memory-mapped, so the OS
  shares them between contexts; a context costs its KV cache and compute
  buffers.
- Cancelling stops generation within one token. ``create_chat_completion``
  in llama-cpp-python 0.3.x takes no ``stopping_criteria``, and a
  ``logits_processor`` costs a numpy pass over the vocabulary per token, so
  each context's ``Llama.sample`` is wrapped: ``Llama.generate`` calls it once
  per token, right after the previous token's decode, and the wrapper raises
  :class:`Cancelled` when the job's ``threading.Event`` is set (it also
  counts tokens for usage). Prompt processing happens before any sampling;
  for that phase a llama.cpp abort callback (``llama_set_abort_callback``),
  checked by ggml between graph nodes, abandons a long prompt within
  milliseconds. The callback is a Python function called for every graph
  node and needs the GIL each time, so it is removed as soon as the first
  token is sampled.
- :class:`Resident` is what every loaded model shares, this one and
  :class:`~notebook_llm.providers.local._sentence_transformers.SentenceTransformerModel`:
  identity, the idle clock, the lock requests queue on, and the row of
  ``loaded_models()``.

llama-cpp-python is imported when the first model loads, not before.
Measurements are in ``docs/local-models.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from notebook_llm.core.errors import ModelNotFoundError, UnsupportedError
from notebook_llm.providers.local._names import (
    INSTALL_HINT,
    LLAMA_CPP,
    PROVIDER,
    ResolvedModel,
)
from notebook_llm.providers.local._settings import Settings

__all__ = ["Cancelled", "Closed", "Context", "LoadedModel", "LocalJob", "Resident"]


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise UnsupportedError(
            f"The local provider needs llama-cpp-python ({exc}). {INSTALL_HINT}",
            provider=PROVIDER,
            original=exc,
        ) from exc
    return llama_cpp


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


class Closed(Exception):
    """The model was unloaded while a request waited for it."""


class Cancelled(Exception):
    """Raised inside llama-cpp-python's generation loop to stop it."""


class Context:
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
                    raise Cancelled
            token: int = sample(*args, **kwargs)
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


class Resident:
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


class LoadedModel(Resident):
    """One model file and settings, shared by every request: a small pool of contexts.

    A llama.cpp context serves one request at a time. Up to ``n_parallel``
    contexts are created, the second only when two requests overlap; further
    requests wait for a free one.
    """

    backend = LLAMA_CPP

    def __init__(
        self, resolved: ResolvedModel, settings: Settings, given: dict[str, Any],
        idle_s: float, llama_kwargs: dict[str, Any],
    ) -> None:
        super().__init__(resolved, given, idle_s)
        self.embedding = resolved.embedding
        self.settings = settings
        self.size = os.path.getsize(resolved.path)
        self._llama_kwargs = llama_kwargs
        self._llama_cpp = _import_llama_cpp()
        self._creating = 0
        self.contexts: list[Context] = [self._new_context()]
        self._mark_loaded()

    def _new_context(self) -> Context:
        try:
            llm = self._llama_cpp.Llama(model_path=self.path, **self._llama_kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelNotFoundError(
                f"llama.cpp could not load {self.path}: {exc}. Is it a GGUF model "
                "that this llama-cpp-python version supports?",
                provider=PROVIDER,
                model=self.name,
                original=exc,
            ) from exc
        finally:
            if not self.settings.verbose:
                # llama.cpp logs an error line when a decode is aborted (cancel);
                # the library reports errors as exceptions instead.
                logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)
        return Context(llm, self._llama_cpp, self)

    @property
    def llm(self) -> Any:
        """The first context's ``Llama`` (for inspection and benchmarks)."""
        return self.contexts[0].llm

    @property
    def busy(self) -> bool:
        """True while a request holds one of the contexts."""
        return any(context.busy for context in self.contexts) or self._creating > 0

    def acquire(self, job: LocalJob) -> Context | None:
        """A free context for ``job``; ``None`` when the job was cancelled while waiting.

        Raises:
            Closed: the model was unloaded meanwhile.
        """
        create = False
        with self._cond:
            while True:
                if self.closed:
                    raise Closed
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
                    raise Closed
        assert context is not None
        context.job = job
        self.requests += 1
        job.started = True
        self.touch()
        context.set_abort_callback(True)
        return context

    def release(self, context: Context) -> None:
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
