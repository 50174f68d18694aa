"""Collections: documents and their vectors kept in the SQLite store, searched with numpy.

:func:`collection` opens (or creates) one; :class:`Collection` adds rows
(re-embedding only rows whose text changed), deletes them, and searches them
by brute force: a float32 matrix, read once and kept in memory until the
collection's version moves, times the query vector.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from notebook_llm._api import default_client
from notebook_llm.core import loop as _loop
from notebook_llm.embeddings._cache import SQL_CHUNK, db_path_of, resolve_store, to_blob
from notebook_llm.embeddings._fetch import need, resolve_model
from notebook_llm.embeddings._pipeline import aembed, texts_and_index
from notebook_llm.embeddings._result import Embeddings, as_vector, top_k

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from notebook_llm.core.client import CoreClient
    from notebook_llm.store.db import Store

__all__ = ["Collection", "Where", "collection", "collections", "delete_collection"]

Where: TypeAlias = "Mapping[str, Any] | Callable[[dict[str, Any]], bool]"
"""A metadata filter: ``{column: value or [values]}``, or a function of the metadata dict."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _store_key(store: Store) -> str:
    return f"memory:{id(store)}" if store.is_memory else store.path


@dataclass
class _Loaded:
    """One collection's rows and float32 matrix, as last read from the store."""

    version: int
    ids: list[str]
    texts: list[str]
    metadata: list[dict[str, Any]]
    matrix: np.ndarray


_loaded: dict[tuple[str, str], _Loaded] = {}
_loaded_lock = threading.Lock()


def _json_value(value: Any) -> Any:
    """Metadata values as JSON: numpy scalars unwrapped, NaN as null, the rest as strings."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _rows(
    data: Any, text: str, id: str | Sequence[Any] | None, metadata: Sequence[str] | None
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(id, text, metadata)`` for each row of a DataFrame, Series or list of texts."""
    pandas = sys.modules.get("pandas")
    metadata = list(metadata or [])
    if pandas is not None and isinstance(data, pandas.DataFrame):
        if text not in data.columns:
            raise KeyError(f"no text column {text!r}; columns are {list(data.columns)}")
        missing = [name for name in metadata if name not in data.columns]
        if missing:
            raise KeyError(f"no metadata column(s) {missing}; columns are {list(data.columns)}")
        texts = data[text].tolist()
        if isinstance(id, str):
            ids = data[id].tolist() if id in data.columns else list(data.index)
        elif id is None:
            ids = list(data.index)
        else:
            ids = list(id)
        metas = [
            {name: _json_value(value) for name, value in zip(metadata, row, strict=True)}
            for row in data[metadata].itertuples(index=False, name=None)
        ] if metadata else [{} for _ in texts]
    else:
        if metadata:
            raise ValueError("metadata= names DataFrame columns; pass a DataFrame")
        texts, index = texts_and_index(data)
        if id is not None and not isinstance(id, str):
            ids = list(id)
        elif index is not None:
            ids = list(index)
        else:
            # Plain texts: the id is the text's hash, so adding them again changes nothing.
            ids = [_text_hash(value)[:16] for value in texts]
        metas = [{} for _ in texts]
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
    for position, value in enumerate(texts):
        if not isinstance(value, str):
            raise TypeError(f"row {ids[position]!r}: text is {type(value).__name__} ({value!r})")
    keys = [str(_json_value(value)) for value in ids]
    if len(set(keys)) != len(keys):
        duplicates = sorted(key for key, count in Counter(keys).items() if count > 1)
        raise ValueError(f"duplicate ids: {duplicates[:5]}")
    return list(zip(keys, texts, metas, strict=True))


class Collection:
    """Documents and their vectors, kept in the SQLite store and searched with numpy.

    Get one with :func:`collection`. Adding re-embeds only rows whose text
    changed; searching multiplies a float32 matrix (read once, kept in memory
    until the collection changes) by the query vector.
    """

    def __init__(self, name: str, model: str, *, store: Store, client: CoreClient | None) -> None:
        self.name = name
        """The collection's name."""
        self.model = model
        """The embedding model, ``provider:model``; fixed when the collection is created."""
        self.store = store
        """Where the rows live."""
        self._client = client

    def __repr__(self) -> str:
        return f"<Collection {self.name!r} · {self.model} · {len(self)} items>"

    def _repr_html_(self) -> str:
        from notebook_llm._render import html_escape

        row = self._row()
        dims = row.get("dims") or "?"
        return (
            f"<div><b>Collection</b> {html_escape(self.name)}: {len(self)} items × {dims} dims · "
            f"{html_escape(self.model)}</div>"
        )

    def _row(self) -> dict[str, Any]:
        rows = self.store.execute(
            "SELECT model, dims, meta_json FROM collections WHERE name = ?", (self.name,)
        )
        if not rows:
            raise KeyError(f"collection {self.name!r} was deleted")
        return rows[0]

    def _version(self) -> int:
        meta = json.loads(str(self._row().get("meta_json") or "{}"))
        return int(meta.get("version", 0))

    def __len__(self) -> int:
        rows = self.store.execute(
            "SELECT COUNT(*) AS n FROM collection_items WHERE collection = ?", (self.name,)
        )
        count = rows[0]["n"]
        assert isinstance(count, int)
        return count

    # -- writing ---------------------------------------------------------------

    async def aadd(
        self,
        data: Any,
        text: str = "body",
        id: str | Sequence[Any] | None = "doc_id",
        metadata: Sequence[str] | None = None,
        *,
        batch_size: int | None = None,
        concurrency: int = 4,
        progress: bool | Callable[[int, int], None] | None = None,
    ) -> dict[str, int]:
        """Add or update rows; only rows whose text changed are embedded again.

        Args:
            data: a DataFrame, a Series (its index gives the ids) or a list of texts.
            text: the DataFrame column holding the text.
            id: the DataFrame column holding ids (the index when there is no
                such column), or a sequence of ids. Lists of texts without ids
                use a hash of each text.
            metadata: DataFrame columns kept with each row (JSON), returned by
                :meth:`search` and usable in ``where=``.
            batch_size, concurrency, progress: as for :func:`embed`.

        Returns:
            Counts: ``added``, ``updated`` (text changed, re-embedded),
            ``metadata_updated`` and ``unchanged``.
        """
        rows = _rows(data, text, id, metadata)
        existing: dict[str, tuple[str, str]] = {}
        keys = [key for key, _text, _meta in rows]
        for start in range(0, len(keys), SQL_CHUNK):
            chunk = keys[start : start + SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self.store.execute(
                f"SELECT id, content_hash, metadata_json FROM collection_items "
                f"WHERE collection = ? AND id IN ({marks})",
                (self.name, *chunk),
            ):
                existing[str(row["id"])] = (str(row["content_hash"]), str(row["metadata_json"]))
        to_embed: list[tuple[str, str, str]] = []
        meta_only: list[tuple[str, str]] = []
        counts = {"added": 0, "updated": 0, "metadata_updated": 0, "unchanged": 0}
        for key, value, meta in rows:
            meta_json = json.dumps(meta, sort_keys=True)
            before = existing.get(key)
            if before is None or before[0] != _text_hash(value):
                counts["added" if before is None else "updated"] += 1
                to_embed.append((key, value, meta_json))
            elif before[1] != meta_json:
                counts["metadata_updated"] += 1
                meta_only.append((key, meta_json))
            else:
                counts["unchanged"] += 1
        if not to_embed and not meta_only:
            return counts
        vectors = None
        if to_embed:
            found = await aembed(
                [value for _key, value, _meta in to_embed], self.model,
                batch_size=batch_size, concurrency=concurrency, progress=progress,
                client=self._client, db_path=self.store,
            )
            vectors = found.vectors
        now = _now()
        with self.store.transaction() as conn:
            current = conn.execute(
                "SELECT dims, meta_json FROM collections WHERE name = ?", (self.name,)
            ).fetchone()
            if current is None:
                raise KeyError(f"collection {self.name!r} was deleted")
            dims = current["dims"]
            if vectors is not None:
                if dims is not None and vectors.shape[1] != dims:
                    raise ValueError(
                        f"{self.model} now returns {vectors.shape[1]}-dim vectors; "
                        f"collection {self.name!r} holds {dims}-dim ones"
                    )
                dims = vectors.shape[1]
                conn.executemany(
                    "INSERT INTO collection_items "
                    "(collection, id, content_hash, text, vector, metadata_json, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (collection, id) DO UPDATE SET "
                    "content_hash = excluded.content_hash, "
                    "text = excluded.text, vector = excluded.vector, "
                    "metadata_json = excluded.metadata_json, updated_at = excluded.updated_at",
                    [
                        (self.name, key, _text_hash(value), value, to_blob(vector), meta, now)
                        for (key, value, meta), vector in zip(to_embed, vectors, strict=True)
                    ],
                )
            conn.executemany(
                "UPDATE collection_items SET metadata_json = ?, updated_at = ? "
                "WHERE collection = ? AND id = ?",
                [(meta, now, self.name, key) for key, meta in meta_only],
            )
            self._bump(conn, current["meta_json"], dims)
        return counts

    def add(
        self,
        data: Any,
        text: str = "body",
        id: str | Sequence[Any] | None = "doc_id",
        metadata: Sequence[str] | None = None,
        *,
        batch_size: int | None = None,
        concurrency: int = 4,
        progress: bool | Callable[[int, int], None] | None = None,
    ) -> dict[str, int]:
        """Sync version of :meth:`aadd` (runs on the library's loop); same arguments."""
        return _loop.run(
            self.aadd(data, text, id, metadata, batch_size=batch_size,
                      concurrency=concurrency, progress=progress)
        )

    def _bump(self, conn: Any, meta_json: Any, dims: Any) -> None:
        # The version tells every kernel's in-memory matrix that it is stale.
        meta = json.loads(str(meta_json or "{}"))
        meta["version"] = int(meta.get("version", 0)) + 1
        conn.execute(
            "UPDATE collections SET meta_json = ?, dims = ? WHERE name = ?",
            (json.dumps(meta), dims, self.name),
        )
        with _loaded_lock:
            _loaded.pop((_store_key(self.store), self.name), None)

    def delete(self, ids: Any) -> int:
        """Remove rows by id (one id or several); returns how many were removed."""
        keys = [str(_json_value(ids))] if isinstance(ids, (str, int)) else [
            str(_json_value(value)) for value in ids
        ]
        removed = 0
        with self.store.transaction() as conn:
            for start in range(0, len(keys), SQL_CHUNK):
                chunk = keys[start : start + SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                removed += conn.execute(
                    f"DELETE FROM collection_items WHERE collection = ? AND id IN ({marks})",
                    (self.name, *chunk),
                ).rowcount
            current = conn.execute(
                "SELECT dims, meta_json FROM collections WHERE name = ?", (self.name,)
            ).fetchone()
            if removed and current is not None:
                self._bump(conn, current["meta_json"], current["dims"])
        return removed

    # -- reading ---------------------------------------------------------------

    def _load(self) -> _Loaded:
        """The rows and matrix, read from the store only when the version moved."""
        import numpy as np

        key = (_store_key(self.store), self.name)
        version = self._version()
        with _loaded_lock:
            loaded = _loaded.get(key)
        if loaded is not None and loaded.version == version:
            return loaded
        rows = self.store.execute(
            "SELECT id, text, vector, metadata_json FROM collection_items "
            "WHERE collection = ? ORDER BY id",
            (self.name,),
        )
        dims = int(str(self._row().get("dims") or 0))
        blob = b"".join(cast("Iterator[bytes]", (row["vector"] for row in rows)))  # BLOBs
        matrix = np.frombuffer(blob, dtype="<f4").astype(np.float32, copy=False)
        matrix = matrix.reshape(len(rows), dims if rows else 0)
        loaded = _Loaded(
            version=version,
            ids=[str(row["id"]) for row in rows],
            texts=[str(row["text"]) for row in rows],
            metadata=[json.loads(str(row["metadata_json"] or "{}")) for row in rows],
            matrix=matrix,
        )
        with _loaded_lock:
            _loaded[key] = loaded
        return loaded

    async def asearch(
        self,
        query: Any,
        k: int = 5,
        where: Where | None = None,
    ) -> pd.DataFrame:
        """The ``k`` rows closest to ``query``.

        Args:
            query: text (embedded with the collection's model) or a vector.
            k: how many rows to return.
            where: keep only rows whose metadata matches: a dict of
                ``column: value`` (a list, tuple or set means any of these), or
                a function of the row's metadata dict.

        Returns:
            A DataFrame with ``id``, ``text``, ``score`` and the metadata columns, best first.
        """
        import numpy as np

        if isinstance(query, str):
            found = await aembed(
                [query], self.model, client=self._client, db_path=self.store, progress=False
            )
            vector = found.vectors[0]
        else:
            vector = as_vector(query)
        loaded = self._load()
        if loaded.matrix.shape[0] and vector.shape[0] != loaded.matrix.shape[1]:
            raise ValueError(
                f"query has {vector.shape[0]} dims; collection {self.name!r} holds "
                f"{loaded.matrix.shape[1]}-dim vectors"
            )
        scores = loaded.matrix @ vector if loaded.matrix.shape[0] else np.empty(0, np.float32)
        if where is not None:
            keep = np.fromiter(
                (_matches(meta, where) for meta in loaded.metadata), dtype=bool,
                count=len(loaded.metadata),
            )
            scores = np.where(keep, scores, -np.inf).astype(np.float32)
        positions = top_k(scores, k)
        return self._frame(loaded, positions, scores)

    def search(
        self,
        query: Any,
        k: int = 5,
        where: Where | None = None,
    ) -> pd.DataFrame:
        """Sync version of :meth:`asearch`; same arguments."""
        return _loop.run(self.asearch(query, k, where))

    def _frame(self, loaded: _Loaded, positions: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        pandas = need("pandas")
        records = []
        for position in positions:
            record = {
                "id": loaded.ids[position],
                "text": loaded.texts[position],
                "score": float(scores[position]),
            }
            for name, value in loaded.metadata[position].items():
                record.setdefault(name, value)
            records.append(record)
        return pandas.DataFrame.from_records(records, columns=_columns(records, "score"))

    def to_pandas(self, *, vectors: bool = False) -> pd.DataFrame:
        """Every row: ``id``, ``text`` and the metadata columns.

        ``vectors=True`` adds an ``embedding`` column holding each row's vector.
        """
        pandas = need("pandas")
        loaded = self._load()
        records = []
        for position, key in enumerate(loaded.ids):
            record: dict[str, Any] = {"id": key, "text": loaded.texts[position]}
            for name, value in loaded.metadata[position].items():
                record.setdefault(name, value)
            if vectors:
                record["embedding"] = loaded.matrix[position]
            records.append(record)
        return pandas.DataFrame.from_records(records, columns=_columns(records, "text"))

    def embeddings(self) -> Embeddings:
        """The whole collection as :class:`Embeddings` (indexed by id), e.g. to ``.plot()`` it."""
        pandas = need("pandas")
        loaded = self._load()
        return Embeddings(
            loaded.matrix, loaded.texts, index=pandas.Index(loaded.ids, name="id"),
            model=self.model, client=self._client, store=self.store,
        )


def _columns(records: list[dict[str, Any]], last_fixed: str) -> list[str]:
    fixed = ["id", "text", "score"][: ["id", "text", "score"].index(last_fixed) + 1]
    extra = dict.fromkeys(name for record in records for name in record if name not in fixed)
    return [*fixed, *extra]


def _matches(meta: dict[str, Any], where: Where) -> bool:
    if callable(where):
        return bool(where(meta))
    for name, wanted in where.items():
        value = meta.get(name)
        if isinstance(wanted, (list, tuple, set, frozenset)):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


def collection(
    name: str,
    model: str | None = None,
    *,
    client: CoreClient | None = None,
    db_path: Store | str | None = None,
    store: Store | str | None = None,
) -> Collection:
    """The collection called ``name``, created on first use.

    Args:
        name: the collection's name.
        model: its embedding model; a new collection takes the client's default
            embedding model when omitted. An existing collection keeps its
            model, and naming a different one is an error (its vectors could
            not be compared).
        client: the client used to embed (the default client when omitted).
        db_path: the database path (or a :class:`~notebook_llm.store.Store`).
        store: the old name of ``db_path`` (deprecated).
    """
    client = client or default_client()
    resolved = resolve_store(db_path_of(db_path, store, "collection"), client)
    wanted = str(resolve_model(client, model)[0]) if model else None
    rows = resolved.execute("SELECT model FROM collections WHERE name = ?", (name,))
    if not rows:
        with resolved.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO collections (name, model, dims, created_at, meta_json) "
                "VALUES (?, ?, NULL, ?, ?)",
                (name, wanted or str(resolve_model(client, None)[0]), _now(),
                 json.dumps({"version": 0})),
            )
        rows = resolved.execute("SELECT model FROM collections WHERE name = ?", (name,))
    stored = str(rows[0]["model"])
    if wanted is not None and wanted != stored:
        raise ValueError(
            f"collection {name!r} uses {stored}, not {wanted}; vectors from different models "
            "cannot be compared. Use another name, or delete_collection() first"
        )
    return Collection(name, stored, store=resolved, client=client)


def collections(
    *,
    db_path: Store | str | None = None,
    client: CoreClient | None = None,
    store: Store | str | None = None,
) -> pd.DataFrame:
    """Every collection: ``name``, ``model``, ``dims``, ``items`` and ``created_at``.

    ``db_path``: the database (default: the client's, else the library's);
    ``store`` is its old name."""
    pandas = need("pandas")
    resolved = resolve_store(db_path_of(db_path, store, "collections"), client)
    rows = resolved.execute(
        "SELECT c.name, c.model, c.dims, "
        "(SELECT COUNT(*) FROM collection_items i WHERE i.collection = c.name) AS items, "
        "c.created_at FROM collections c ORDER BY c.name"
    )
    return pandas.DataFrame(rows, columns=["name", "model", "dims", "items", "created_at"])


def delete_collection(
    name: str,
    *,
    db_path: Store | str | None = None,
    client: CoreClient | None = None,
    store: Store | str | None = None,
) -> bool:
    """Delete a collection and its rows; returns whether it existed (``store`` is
    the old name of ``db_path``)."""
    resolved = resolve_store(db_path_of(db_path, store, "delete_collection"), client)
    with resolved.transaction() as conn:
        conn.execute("DELETE FROM collection_items WHERE collection = ?", (name,))
        existed = conn.execute("DELETE FROM collections WHERE name = ?", (name,)).rowcount > 0
    with _loaded_lock:
        _loaded.pop((_store_key(resolved), name), None)
    return existed

