"""The SQLite side of embeddings: which store to use, and the ``embedding_cache`` table.

Vectors are cached keyed by the sha256 of the model string (plus any provider
options that change vectors, such as ``dimensions``) and the text, as
little-endian float32 BLOBs. The key does not include the server's URL: two
servers that serve different models under one ``provider:alias`` share cache
entries.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import numpy as np

    from notebook_llm.core.client import CoreClient
    from notebook_llm.store.db import Store

SQL_CHUNK = 500
"""Ids or hashes per ``IN (...)`` query."""

# Options that change how a request is sent, not the vectors it returns.
_TRANSPORT_OPTIONS = frozenset({"api_key", "api_base", "timeout"})

_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def db_path_of(db_path: Any, store: Any, function: str) -> Any:
    """``db_path``, or the deprecated ``store=`` with a DeprecationWarning."""
    if store is None:
        return db_path
    warnings.warn(
        f"{function}(store=...) is now db_path=...; store= will be removed in a future release",
        DeprecationWarning,
        stacklevel=3,
    )
    return store if db_path is None else db_path


def resolve_store(store: Store | str | None, client: CoreClient | None) -> Store:
    """``store`` itself, a Store for a path, the client's store or ``db_path``, or the default."""
    from notebook_llm.store.db import Store, default_db_path

    if isinstance(store, Store):
        return store
    if store is None:
        attached = getattr(client, "store", None)
        if isinstance(attached, Store):
            return attached
        store = getattr(client, "db_path", None)  # notebook_llm.Client(db_path=...)
    path = str(default_db_path() if store is None else store)
    with _stores_lock:
        found = _stores.get(path)
        if found is None:
            found = _stores[path] = Store(path)
        return found


def cache_model_key(model: str, kwargs: Mapping[str, Any]) -> str:
    """The model string plus the options that change vectors (e.g. ``dimensions``)."""
    options = {k: v for k, v in sorted(kwargs.items()) if k not in _TRANSPORT_OPTIONS}
    if not options:
        return model
    return f"{model}?{json.dumps(options, sort_keys=True, default=str)}"


def _content_hash(model_key: str, text: str) -> str:
    return hashlib.sha256(f"{model_key}\n{text}".encode()).hexdigest()


def to_blob(vector: np.ndarray) -> bytes:
    """A vector as the little-endian float32 bytes stored in SQLite."""
    import numpy as np

    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _from_blob(blob: bytes) -> np.ndarray:
    import numpy as np

    return np.frombuffer(blob, dtype="<f4")


def read_cache(store: Store, model_key: str, texts: list[str]) -> dict[str, np.ndarray]:
    """The cached vector of each of ``texts`` that has one, by text."""
    by_hash = {_content_hash(model_key, text): text for text in texts}
    hashes = list(by_hash)
    found: dict[str, np.ndarray] = {}
    for start in range(0, len(hashes), SQL_CHUNK):
        chunk = hashes[start : start + SQL_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = store.execute(
            f"SELECT content_hash, vector FROM embedding_cache "
            f"WHERE model = ? AND content_hash IN ({marks})",
            (model_key, *chunk),
        )
        for row in rows:
            found[by_hash[str(row["content_hash"])]] = _from_blob(cast(bytes, row["vector"]))
    return found


def write_cache(store: Store, model_key: str, texts: list[str], matrix: np.ndarray) -> None:
    """Store one vector per text (rows of ``matrix``), replacing any cached before."""
    rows = [
        (model_key, _content_hash(model_key, text), to_blob(vector))
        for text, vector in zip(texts, matrix, strict=True)
    ]
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO embedding_cache (model, content_hash, vector) VALUES (?, ?, ?)",
            rows,
        )
