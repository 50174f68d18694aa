"""Embeddings as arrays and DataFrames: embed, compare, search, cluster, plot, collections.

``embed(texts)`` turns a list, a pandas Series or a one-column DataFrame into an
:class:`Embeddings`: a float32 matrix aligned with the input's index that knows
how to become a DataFrame, compare itself (cosine similarity), search, cluster
and draw a 2D map. :func:`collection` keeps documents and their vectors in the
SQLite store and searches them by brute force with numpy.

Conventions:

- Every vector is **L2-normalised** (length 1) before it is returned or
  stored, so a dot product is the cosine similarity. Providers that already
  normalise (OpenAI, ``offline:hash``) are unaffected; llama.cpp's MiniLM
  (norm about 6.5) is not normalised by the server. A zero vector stays zero.
- Vectors are cached in the ``embedding_cache`` table, keyed by the sha256 of
  the model string (plus any provider options such as ``dimensions``) and the
  text, as little-endian float32 BLOBs. Texts already cached are not sent
  again; ``cache=False`` neither reads nor writes the cache. The key does not
  include the server's URL: two servers that serve different models under one
  ``provider:alias`` share cache entries.
- numpy, pandas, matplotlib and scikit-learn are imported on first use.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import math
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from notebook_llm.core import loop as _loop
from notebook_llm.core.models import ModelRef, parse_model
from notebook_llm.core.registry import get_spec
from notebook_llm.core.types import ProviderInfo, Usage

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes

    from notebook_llm.core.client import CoreClient
    from notebook_llm.store.db import Store

__all__ = [
    "Collection",
    "Embeddings",
    "aembed",
    "collection",
    "collections",
    "delete_collection",
    "embed",
    "top_k",
]

OPENAI_BATCH = 2048
"""Inputs per request the OpenAI embeddings endpoint accepts."""
LOCAL_BATCH = 64
"""Inputs per request for local servers and in-process models (small CPUs, small contexts)."""
DEFAULT_BATCH = 256
"""Inputs per request for every other provider."""
PROGRESS_THRESHOLD = 1000
"""``progress=None`` shows progress when at least this many texts must be embedded."""

_LABEL_CHARS = 30
_SQL_CHUNK = 500
# Options that change how a request is sent, not the vectors it returns.
_TRANSPORT_OPTIONS = frozenset({"api_key", "api_base", "timeout"})

Labels = Literal["auto", "text", "index"]
Where: TypeAlias = "Mapping[str, Any] | Callable[[dict[str, Any]], bool]"
"""A metadata filter: ``{column: value or [values]}``, or a function of the metadata dict."""


# -- small helpers -------------------------------------------------------------


def _need(module: str) -> Any:
    """Import an optional dependency (numpy, pandas, matplotlib), or say how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - all ship with the notebook extra
        package = module.partition(".")[0]
        raise ImportError(f"this needs {package}: pip install 'notebook-llm[notebook]'") from exc


def _default_client(client: CoreClient | None) -> CoreClient:
    if client is not None:
        return client
    from notebook_llm._api import default_client

    return default_client()


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def _resolve_store(store: Store | str | None, client: CoreClient | None) -> Store:
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


def _store_key(store: Store) -> str:
    return f"memory:{id(store)}" if store.is_memory else store.path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _truncate(text: str, limit: int = _LABEL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _resolve_model(client: CoreClient, model: str | None) -> tuple[ModelRef, ProviderInfo]:
    ref = parse_model(model or client.default_embedding_model(), client.aliases)
    return ref, get_spec(ref.provider).info


def default_batch_size(info: ProviderInfo) -> int:
    """Inputs per request for a provider: 2048 for OpenAI, 64 for local servers, else 256."""
    if info.name == "openai":
        return OPENAI_BATCH
    if info.protocol == "local" or (info.protocol == "openai" and info.free):
        return LOCAL_BATCH
    return DEFAULT_BATCH


def _cache_model_key(model: str, kwargs: Mapping[str, Any]) -> str:
    """The model string plus the options that change vectors (e.g. ``dimensions``)."""
    options = {k: v for k, v in sorted(kwargs.items()) if k not in _TRANSPORT_OPTIONS}
    if not options:
        return model
    return f"{model}?{json.dumps(options, sort_keys=True, default=str)}"


def _content_hash(model_key: str, text: str) -> str:
    return hashlib.sha256(f"{model_key}\n{text}".encode()).hexdigest()


def _to_blob(vector: np.ndarray) -> bytes:
    import numpy as np

    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _from_blob(blob: bytes) -> np.ndarray:
    import numpy as np

    return np.frombuffer(blob, dtype="<f4")


def _normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); zero rows stay zero."""
    import numpy as np

    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: np.ndarray = (matrix / norms).astype(np.float32, copy=False)
    return normalised


def _as_vector(query: Any) -> np.ndarray:
    import numpy as np

    vector = np.asarray(query, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first (``np.argpartition``, then a sort of k).

    ``-inf`` scores (rows filtered out) are never returned.
    """
    import numpy as np

    n = scores.shape[0]
    k = max(0, min(k, n))
    if k == 0:
        return np.empty(0, dtype=np.intp)
    if k < n:
        candidates = np.argpartition(scores, n - k)[n - k :]
    else:
        candidates = np.arange(n)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    return order[scores[order] > -np.inf]


def _texts_and_index(texts: Any) -> tuple[list[str], Any]:
    """The texts as a list, and the pandas index to keep (``None`` for plain sequences)."""
    index = None
    pandas = sys.modules.get("pandas")
    if isinstance(texts, str):
        values: list[Any] = [texts]
    elif pandas is not None and isinstance(texts, pandas.DataFrame):
        if texts.shape[1] != 1:
            raise ValueError(
                f"embed() got a DataFrame with {texts.shape[1]} columns; pass one column, "
                "e.g. df['body']"
            )
        index = texts.index
        values = texts.iloc[:, 0].tolist()
    elif pandas is not None and isinstance(texts, (pandas.Series, pandas.Index)):
        index = texts.index if isinstance(texts, pandas.Series) else None
        values = texts.tolist()
    else:
        values = list(texts)
    for position, value in enumerate(values):
        if not isinstance(value, str):
            label = index[position] if index is not None else position
            raise TypeError(
                f"texts[{label!r}] is {type(value).__name__} ({value!r}), not a string; "
                "drop or fill missing values first (e.g. series.dropna() or .fillna(''))"
            )
    return values, index


# -- progress ------------------------------------------------------------------


def _progress(
    progress: bool | Callable[[int, int], None] | None, missing: int, total: int, title: str
) -> Any:
    """A started :class:`~notebook_llm.progress.Progress`, or ``None`` when none is wanted."""
    if callable(progress) or progress is False or missing == 0:
        return None
    if progress is None and missing < PROGRESS_THRESHOLD:
        return None
    from notebook_llm.progress import Progress

    return Progress(total, title=title).start()


# -- the embedding pipeline ----------------------------------------------------


@dataclass
class _Fetched:
    """Vectors for the unique texts, plus what fetching them cost."""

    vectors: dict[str, np.ndarray]
    usage: Usage = field(default_factory=Usage)
    requests: int = 0
    cached_texts: set[str] = field(default_factory=set)


def _read_cache(store: Store, model_key: str, texts: list[str]) -> dict[str, np.ndarray]:
    by_hash = {_content_hash(model_key, text): text for text in texts}
    hashes = list(by_hash)
    found: dict[str, np.ndarray] = {}
    for start in range(0, len(hashes), _SQL_CHUNK):
        chunk = hashes[start : start + _SQL_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = store.execute(
            f"SELECT content_hash, vector FROM embedding_cache "
            f"WHERE model = ? AND content_hash IN ({marks})",
            (model_key, *chunk),
        )
        for row in rows:
            found[by_hash[str(row["content_hash"])]] = _from_blob(row["vector"])  # type: ignore[arg-type]
    return found


def _write_cache(store: Store, model_key: str, texts: list[str], matrix: np.ndarray) -> None:
    rows = [
        (model_key, _content_hash(model_key, text), _to_blob(vector))
        for text, vector in zip(texts, matrix, strict=True)
    ]
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO embedding_cache (model, content_hash, vector) VALUES (?, ?, ?)",
            rows,
        )


async def _fetch(
    client: CoreClient,
    ref: ModelRef,
    info: ProviderInfo,
    unique: list[str],
    *,
    batch_size: int | None,
    concurrency: int,
    cache: bool,
    store: Store | None,
    progress: bool | Callable[[int, int], None] | None,
    kwargs: dict[str, Any],
) -> _Fetched:
    """Vectors for ``unique`` texts: from the cache, then in concurrent batches."""
    import numpy as np

    model_key = _cache_model_key(str(ref), kwargs)
    fetched = _Fetched(vectors={})
    if cache and store is not None:
        fetched.vectors = _read_cache(store, model_key, unique)
        fetched.cached_texts = set(fetched.vectors)
    missing = [text for text in unique if text not in fetched.vectors]
    if not missing:
        return fetched
    size = max(1, batch_size or default_batch_size(info))
    batches = [missing[i : i + size] for i in range(0, len(missing), size)]
    display = _progress(progress, len(missing), len(unique), f"embed {ref}")
    callback = progress if callable(progress) else None
    done = 0
    semaphore = asyncio.Semaphore(max(1, concurrency))

    def report() -> None:
        if callback is not None:
            callback(done, len(missing))
        if display is not None:
            display.update(
                done=len(fetched.cached_texts) + done, cached=len(fetched.cached_texts),
                requests=fetched.requests, tokens=fetched.usage.input_tokens,
                cost_usd=_price(info, ref, fetched.usage)[0],
            )

    async def run(batch: list[str]) -> None:
        nonlocal done
        async with semaphore:
            response = await client.aembed(batch, str(ref), **kwargs)
        if len(response.vectors) != len(batch):
            from notebook_llm.core.errors import ProviderError

            raise ProviderError(
                f"{ref} returned {len(response.vectors)} vectors for {len(batch)} texts",
                provider=ref.provider,
                model=ref.name,
            )
        matrix = _normalise(np.asarray(response.vectors, dtype=np.float32))
        # Cache each batch as it lands, so an interrupted run resumes where it stopped.
        if cache and store is not None:
            _write_cache(store, model_key, batch, matrix)
        fetched.vectors.update(zip(batch, matrix, strict=True))
        fetched.requests += 1
        for name in ("input_tokens", "output_tokens"):
            total = getattr(fetched.usage, name) + getattr(response.usage, name)
            setattr(fetched.usage, name, total)
        done += len(batch)
        report()

    tasks = [asyncio.ensure_future(run(batch)) for batch in batches]
    gathered = asyncio.gather(*tasks)
    if display is not None:
        loop = asyncio.get_running_loop()
        display.on_stop = lambda: loop.call_soon_threadsafe(gathered.cancel)
    state = "failed"
    try:
        await gathered
        state = "done"
    except asyncio.CancelledError:
        if display is None or not display.stopped:
            state = "interrupted"
            raise
        state = "stopped"
        from notebook_llm.core.errors import CancelledError

        raise CancelledError(
            f"stopped: {done} of {len(missing)} texts were embedded"
            + (" and cached; run again to resume" if cache and store is not None else ""),
            provider=ref.provider,
            model=ref.name,
        ) from None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if display is not None:
            display.close(state)
    return fetched


def _price(info: ProviderInfo, ref: ModelRef, usage: Usage) -> tuple[float | None, str]:
    try:
        from notebook_llm.pricing import price
    except ImportError:  # pragma: no cover - pricing is part of the package today
        return (0.0, "free") if info.free else (None, "unpriced")
    return price(ref.provider, ref.name, usage, free=info.free)


async def aembed(
    texts: Any,
    model: str | None = None,
    *,
    batch_size: int | None = None,
    concurrency: int = 4,
    cache: bool = True,
    progress: bool | Callable[[int, int], None] | None = None,
    client: CoreClient | None = None,
    store: Store | str | None = None,
    **kwargs: Any,
) -> Embeddings:
    """Embed ``texts`` and return them as :class:`Embeddings` (L2-normalised float32).

    Args:
        texts: a list of strings, a pandas Series or a one-column DataFrame
            (its index is kept), or one string.
        model: ``provider:model`` (e.g. ``openai:text-embedding-3-small``,
            ``ollama:nomic-embed-text``, ``local:minilm``, ``offline:hash``);
            the client's default embedding model when omitted.
        batch_size: inputs per request; by default 2048 for OpenAI, 64 for
            local servers and in-process models, 256 otherwise.
        concurrency: how many requests may be in flight at once.
        cache: read and write the ``embedding_cache`` table, so texts already
            embedded with this model are not sent again.
        progress: ``True`` or ``False`` to force or hide the progress line,
            ``None`` to show it for 1000 texts or more, or a callable
            ``(done, total)``.
        client: the client to use (the default client when omitted).
        store: the :class:`~notebook_llm.store.Store` (or a path) holding the
            cache; the client's store or the default database when omitted.
        **kwargs: passed to the provider (e.g. ``dimensions=256``); they are
            part of the cache key.

    Returns:
        The vectors in input order, with the texts, index, model, usage and cost.
    """
    _need("numpy")  # a clear message when numpy is missing
    import numpy as np

    client = _default_client(client)
    values, index = _texts_and_index(texts)
    ref, info = _resolve_model(client, model)
    resolved_store = _resolve_store(store, client) if cache else None
    unique = list(dict.fromkeys(values))
    fetched = await _fetch(
        client, ref, info, unique,
        batch_size=batch_size, concurrency=concurrency, cache=cache,
        store=resolved_store, progress=progress, kwargs=kwargs,
    )
    dims = {vector.shape[0] for vector in fetched.vectors.values()}
    if len(dims) > 1:
        raise ValueError(
            f"{ref} gave vectors of different lengths {sorted(dims)}: the cache holds "
            "vectors from another model served under this name; pass cache=False"
        )
    width = dims.pop() if dims else 0
    matrix = np.empty((len(values), width), dtype=np.float32)
    for row, text in enumerate(values):
        matrix[row] = fetched.vectors[text]
    cost, status = _price(info, ref, fetched.usage)
    return Embeddings(
        matrix, values, index=index, model=str(ref), usage=fetched.usage,
        cost_usd=cost, cost_status=status,
        cached=sum(1 for text in values if text in fetched.cached_texts),
        requests=fetched.requests, client=client, store=resolved_store,
        cache=cache, options=kwargs,
    )


def embed(
    texts: Any,
    model: str | None = None,
    *,
    batch_size: int | None = None,
    concurrency: int = 4,
    cache: bool = True,
    progress: bool | Callable[[int, int], None] | None = None,
    client: CoreClient | None = None,
    store: Store | str | None = None,
    **kwargs: Any,
) -> Embeddings:
    """Sync version of :func:`aembed` (runs on the library's loop); same arguments."""
    from notebook_llm.progress import run as run_with_ui

    # A progress display may be shown: wait so that its Stop button works (in a kernel).
    wait = _loop.run if progress is False or callable(progress) else run_with_ui
    return wait(
        aembed(
            texts, model, batch_size=batch_size, concurrency=concurrency, cache=cache,
            progress=progress, client=client, store=store, **kwargs,
        )
    )


# -- Embeddings ----------------------------------------------------------------


class Embeddings:
    """Vectors for a list of texts: a float32 matrix aligned with the input's index.

    Every row is L2-normalised, so ``vectors @ vectors.T`` is the cosine
    similarity. ``len(e)`` is the number of texts; ``e[i]`` is row ``i`` (a
    vector) and ``e[1:3]``, ``e[[0, 2]]`` or ``e[mask]`` a new Embeddings
    (positions, as in numpy; use ``.to_pandas().loc[...]`` for labels).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        texts: Sequence[str],
        *,
        index: Any = None,
        model: str = "",
        usage: Usage | None = None,
        cost_usd: float | None = None,
        cost_status: str = "unknown",
        cached: int = 0,
        requests: int = 0,
        client: CoreClient | None = None,
        store: Store | None = None,
        cache: bool = True,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        import numpy as np

        self.vectors: np.ndarray = np.asarray(vectors, dtype=np.float32)
        """The vectors, ``n × d`` float32, one L2-normalised row per text."""
        self.texts: list[str] = list(texts)
        """The texts, in input order."""
        self._index = index
        self.model: str = model
        """The model as ``provider:model``."""
        self.usage: Usage = usage or Usage()
        """Tokens sent for this call (texts answered from the cache cost none)."""
        self.cost_usd: float | None = cost_usd
        """Cost in US dollars of the requests made, or ``None`` when the model is unpriced."""
        self.cost_status: str = cost_status
        """``"free"``, ``"priced"`` or ``"unpriced"``."""
        self.cached: int = cached
        """How many texts came from the embedding cache."""
        self.requests: int = requests
        """How many requests were sent to the provider."""
        self._client = client
        self._store = store
        self._cache = cache
        self._options = dict(options or {})
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.texts):
            raise ValueError(
                f"vectors must be n × d with one row per text; got {self.vectors.shape} "
                f"for {len(self.texts)} texts"
            )

    # -- shape and access ------------------------------------------------------

    @property
    def index(self) -> pd.Index:
        """The input's pandas index (a RangeIndex for plain lists)."""
        if self._index is None:
            return _need("pandas").RangeIndex(len(self.texts))
        return self._index

    @property
    def dims(self) -> int:
        """Vector length."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, key: Any) -> Any:
        import numpy as np

        if isinstance(key, (int, np.integer)):
            return self.vectors[int(key)]
        positions = np.arange(len(self))[key]
        index = None if self._index is None else self._index[positions]
        return self._with(self.vectors[positions], [self.texts[i] for i in positions], index)

    def _with(self, vectors: np.ndarray, texts: list[str], index: Any) -> Embeddings:
        return Embeddings(
            vectors, texts, index=index, model=self.model, client=self._client,
            store=self._store, cache=self._cache, options=self._options,
        )

    def _has_labels(self) -> bool:
        pandas = sys.modules.get("pandas")
        return not (
            self._index is None
            or (pandas is not None and isinstance(self._index, pandas.RangeIndex)
                and self._index.start == 0 and self._index.step == 1)
        )

    def labels(self, how: Labels = "auto") -> list[Any]:
        """Row labels: the index (``"index"``), the texts cut to 30 characters
        (``"text"``), or ``"auto"``: the index when it is not the default 0..n-1."""
        if how == "index" or (how == "auto" and self._has_labels()):
            return list(self.index)
        return [_truncate(text) for text in self.texts]

    # -- DataFrames ------------------------------------------------------------

    def to_pandas(self, wide: bool = False, *, text: bool = True) -> pd.DataFrame:
        """A DataFrame aligned with the input's index.

        Args:
            wide: one column per dimension (``e0`` ... ``e{d-1}``) instead of one
                ``embedding`` column holding each row's vector.
            text: include the ``text`` column (leave it out to ``df.join`` the result).
        """
        pandas = _need("pandas")
        if wide:
            frame = pandas.DataFrame(
                self.vectors, index=self.index, columns=[f"e{i}" for i in range(self.dims)]
            )
        else:
            frame = pandas.DataFrame({"embedding": list(self.vectors)}, index=self.index)
        if text:
            frame.insert(0, "text", self.texts)
        return frame

    def similarity(
        self, other: Embeddings | None = None, *, labels: Labels = "auto"
    ) -> pd.DataFrame:
        """Cosine similarity of every pair: rows are these texts, columns ``other``'s (or these).

        Labels are the texts (cut to 30 characters) or, when the input had its
        own index, the index; ``labels=`` chooses.
        """
        pandas = _need("pandas")
        other = self if other is None else other
        if other.dims != self.dims:
            raise ValueError(f"cannot compare {self.dims}-dim vectors with {other.dims}-dim ones")
        matrix = self.vectors @ other.vectors.T
        return pandas.DataFrame(matrix, index=self.labels(labels), columns=other.labels(labels))

    def _results(self, positions: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        pandas = _need("pandas")
        return pandas.DataFrame(
            {"text": [self.texts[i] for i in positions], "score": scores[positions]},
            index=self.index[positions],
        )

    def nearest(self, query: Any, k: int = 5) -> pd.DataFrame:
        """The ``k`` texts closest to a vector, or to one of these texts.

        Args:
            query: a vector (any array-like of length ``dims``), or an index
                label of this object (then that text itself is left out).
            k: how many to return.

        Returns:
            A DataFrame indexed like the input, with ``text`` and ``score``, best first.
        """
        import numpy as np

        exclude = None
        if np.ndim(query) == 0:
            matches = np.flatnonzero(np.asarray(self.index == query))
            if matches.size == 0:
                raise KeyError(f"{query!r} is not in the index")
            exclude = int(matches[0])
            vector = self.vectors[exclude]
        else:
            vector = _as_vector(query)
            if vector.shape[0] != self.dims:
                raise ValueError(
                    f"query has {vector.shape[0]} dims; these vectors have {self.dims}"
                )
        scores = self.vectors @ vector
        if exclude is not None:
            scores[exclude] = -np.inf
        return self._results(top_k(scores, k), scores)

    async def asearch(self, query: str, k: int = 5) -> pd.DataFrame:
        """Embed ``query`` with the same model and return the ``k`` closest texts."""
        query_vector = await self._embed_query(query)
        scores = self.vectors @ query_vector
        return self._results(top_k(scores, k), scores)

    def search(self, query: str, k: int = 5) -> pd.DataFrame:
        """Sync version of :meth:`asearch`: a DataFrame of ``text`` and ``score``, best first."""
        return _loop.run(self.asearch(query, k))

    async def _embed_query(self, query: str) -> np.ndarray:
        if not isinstance(query, str):
            raise TypeError(
                f"search() takes a string, not {type(query).__name__}; use nearest() for a vector"
            )
        found = await aembed(
            [query], self.model or None, client=self._client, store=self._store,
            cache=self._cache, progress=False, **self._options,
        )
        vector: np.ndarray = found.vectors[0]
        return vector

    # -- analysis and plots ----------------------------------------------------

    def cluster(self, k: int, **kwargs: Any) -> pd.Series:
        """k-means cluster labels (scikit-learn), as a Series aligned with the input's index.

        ``kwargs`` go to ``sklearn.cluster.KMeans`` (default ``n_init=10, random_state=0``).
        """
        try:
            from sklearn.cluster import KMeans
        except ImportError as exc:
            raise ImportError(
                "Embeddings.cluster() needs scikit-learn: pip install scikit-learn"
            ) from exc
        options = {"n_init": 10, "random_state": 0, **kwargs}
        labels = KMeans(n_clusters=k, **options).fit_predict(self.vectors)
        return _need("pandas").Series(labels, index=self.index, name="cluster")

    def project(self, method: Literal["pca", "umap", "tsne"] = "pca") -> np.ndarray:
        """Two coordinates per text (``n × 2``).

        ``"pca"`` uses numpy's SVD; ``"umap"`` needs umap-learn, ``"tsne"`` scikit-learn.
        """
        return _project(self.vectors, method)

    def plot(
        self,
        color_by: Any = None,
        method: Literal["pca", "umap", "tsne"] = "pca",
        *,
        ax: Axes | None = None,
        annotate: bool | None = None,
        **scatter_kwargs: Any,
    ) -> Axes:
        """A 2D map of the texts (matplotlib); returns the Axes and never calls ``plt.show()``.

        Args:
            color_by: values to colour points by: a Series (aligned on the
                index), or a sequence with one value per text. Categories get
                a legend, numbers a colour bar.
            method: ``"pca"`` (numpy, default), ``"umap"`` or ``"tsne"``.
            ax: draw into these Axes (a new figure otherwise).
            annotate: label points with their texts (default: up to 40 points).
            **scatter_kwargs: passed to ``Axes.scatter``.
        """
        from notebook_llm.plots import plot_embeddings

        return plot_embeddings(
            self, color_by, method, ax=ax, annotate=annotate, **scatter_kwargs
        )

    def heatmap(
        self, other: Embeddings | None = None, *, ax: Axes | None = None, labels: Labels = "auto"
    ) -> Axes:
        """The similarity matrix as a heat map (matplotlib); returns the Axes."""
        from notebook_llm.plots import plot_similarity

        return plot_similarity(self.similarity(other, labels=labels), ax=ax)

    # -- display ---------------------------------------------------------------

    def _summary(self) -> str:
        from notebook_llm.core.types import format_cost

        parts = [f"{len(self)} texts × {self.dims} dims", self.model or "unknown model"]
        if self.requests or self.cached:  # a subset or a hand-made object has no call to report
            plural = "" if self.requests == 1 else "s"
            parts.append(f"{self.requests} request{plural}, {self.cached} from cache")
            parts.append(f"{self.usage.input_tokens} tokens")
            parts.append(format_cost(self.cost_usd, self.cost_status))
        return " · ".join(parts)

    def __repr__(self) -> str:
        return f"<Embeddings {self._summary()}>"

    def _repr_html_(self) -> str:
        from notebook_llm._render import html_escape, plain_table_html

        rows = []
        count = min(5, len(self))
        labels = list(self._index[:count]) if self._index is not None else list(range(count))
        for position, label in enumerate(labels):
            preview = ", ".join(f"{value:.3f}" for value in self.vectors[position][:4])
            more = ", …" if self.dims > 4 else ""
            rows.append([label, _truncate(self.texts[position], 60), f"[{preview}{more}]"])
        table = plain_table_html(["", "text", "vector"], rows)
        more_rows = f"<p>… {len(self) - 5} more</p>" if len(self) > 5 else ""
        summary = html_escape(self._summary())
        return f"<div><p><b>Embeddings</b>: {summary}</p>{table}{more_rows}</div>"


def _project(vectors: np.ndarray, method: str) -> np.ndarray:
    import numpy as np

    n = vectors.shape[0]
    if method == "pca":
        if n == 0:
            return np.zeros((0, 2), dtype=np.float32)
        centred = vectors - vectors.mean(axis=0, keepdims=True)
        _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
        components = vt[:2]
        # Fix each axis' sign so the same data always gives the same picture.
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
        components = components * np.where(signs == 0, 1, signs)[:, None]
        coords: np.ndarray = centred @ components.T
        if coords.shape[1] < 2:
            coords = np.hstack([coords, np.zeros((n, 2 - coords.shape[1]), dtype=coords.dtype)])
        return coords
    if method == "umap":
        try:
            import umap
        except ImportError as exc:
            raise ImportError("method='umap' needs umap-learn: pip install umap-learn") from exc
        reducer = umap.UMAP(n_components=2, metric="cosine", random_state=0)
        return np.asarray(reducer.fit_transform(vectors))
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError as exc:
            raise ImportError("method='tsne' needs scikit-learn: pip install scikit-learn") from exc
        perplexity = float(max(1, min(30, n - 1)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0)
        return np.asarray(tsne.fit_transform(vectors))
    raise ValueError(f"method must be 'pca', 'umap' or 'tsne', not {method!r}")


# -- collections -----------------------------------------------------------------


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
        texts, index = _texts_and_index(data)
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
        seen: set[str] = set()
        duplicates = sorted({key for key in keys if key in seen or seen.add(key)})  # type: ignore[func-returns-value]
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
        for start in range(0, len(keys), _SQL_CHUNK):
            chunk = keys[start : start + _SQL_CHUNK]
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
                client=self._client, store=self.store,
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
                        (self.name, key, _text_hash(value), value, _to_blob(vector), meta, now)
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
            for start in range(0, len(keys), _SQL_CHUNK):
                chunk = keys[start : start + _SQL_CHUNK]
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
        blob = b"".join(row["vector"] for row in rows)  # type: ignore[misc]
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
                [query], self.model, client=self._client, store=self.store, progress=False
            )
            vector = found.vectors[0]
        else:
            vector = _as_vector(query)
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
        pandas = _need("pandas")
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
        pandas = _need("pandas")
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
        pandas = _need("pandas")
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
        store: the :class:`~notebook_llm.store.Store` or database path.
    """
    client = _default_client(client)
    resolved = _resolve_store(store, client)
    wanted = str(_resolve_model(client, model)[0]) if model else None
    rows = resolved.execute("SELECT model FROM collections WHERE name = ?", (name,))
    if not rows:
        with resolved.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO collections (name, model, dims, created_at, meta_json) "
                "VALUES (?, ?, NULL, ?, ?)",
                (name, wanted or str(_resolve_model(client, None)[0]), _now(),
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
    *, store: Store | str | None = None, client: CoreClient | None = None
) -> pd.DataFrame:
    """Every collection: ``name``, ``model``, ``dims``, ``items`` and ``created_at``."""
    pandas = _need("pandas")
    resolved = _resolve_store(store, client)
    rows = resolved.execute(
        "SELECT c.name, c.model, c.dims, "
        "(SELECT COUNT(*) FROM collection_items i WHERE i.collection = c.name) AS items, "
        "c.created_at FROM collections c ORDER BY c.name"
    )
    return pandas.DataFrame(rows, columns=["name", "model", "dims", "items", "created_at"])


def delete_collection(
    name: str, *, store: Store | str | None = None, client: CoreClient | None = None
) -> bool:
    """Delete a collection and its rows; returns whether it existed."""
    resolved = _resolve_store(store, client)
    with resolved.transaction() as conn:
        conn.execute("DELETE FROM collection_items WHERE collection = ?", (name,))
        existed = conn.execute("DELETE FROM collections WHERE name = ?", (name,)).rowcount > 0
    with _loaded_lock:
        _loaded.pop((_store_key(resolved), name), None)
    return existed

