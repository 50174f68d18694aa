"""The ``local:`` provider: models in-process, GGUF through llama-cpp-python.

Model strings are ``local:<name>`` (``smollm2``, ``minilm``, or a name given to
:func:`register_model`) or ``local:/path/to/model.gguf``. ``minilm`` runs on
llama.cpp when a GGUF is given, else on sentence-transformers. Models load on
first use, are shared by the whole process, serve overlapping requests from a
small pool of llama.cpp contexts, stop within a token when cancelled, and are
unloaded when idle. Nothing heavy (llama_cpp, sentence_transformers, torch) is
imported until a model loads.

The built-in models, what to install, the design and its measurements:
``docs/local-models.md``.

Modules, bottom up: ``_gguf`` (GGUF metadata), ``_names`` (names to files),
``_settings`` (load settings and their defaults), ``_llama`` (llama.cpp
models and cancellation), ``_sentence_transformers``, ``_registry`` (loaded
models, idle unloading), ``_provider`` (:class:`LocalProvider`).
"""

from notebook_llm.providers.local._gguf import read_gguf_metadata
from notebook_llm.providers.local._llama import LoadedModel, LocalJob
from notebook_llm.providers.local._names import ResolvedModel, register_model, resolve_model
from notebook_llm.providers.local._provider import LocalProvider
from notebook_llm.providers.local._registry import load_model, loaded_models, unload_models
from notebook_llm.providers.local._sentence_transformers import SentenceTransformerModel
from notebook_llm.providers.local._settings import (
    DEFAULT_CTX_CAP,
    DEFAULT_IDLE_S,
    DEFAULT_MAX_TOKENS as DEFAULT_MAX_TOKENS,
    default_threads,
)

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
