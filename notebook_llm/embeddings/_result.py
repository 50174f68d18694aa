"""What :func:`~notebook_llm.embeddings.embed` returns: :class:`Embeddings`, and its math.

An :class:`Embeddings` is a float32 matrix aligned with the input's index that
knows how to become a DataFrame, compare itself (cosine similarity), search,
cluster, project to 2D for a plot, and show itself. numpy, pandas, matplotlib,
scikit-learn and umap are imported on first use.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from notebook_llm.core import loop as _loop
from notebook_llm.core.types import Usage
from notebook_llm.embeddings._fetch import embed_texts, need

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes

    from notebook_llm.core.client import CoreClient
    from notebook_llm.store.db import Store

__all__ = ["Embeddings", "Labels", "as_vector", "top_k"]

_LABEL_CHARS = 30

Labels = Literal["auto", "text", "index"]


def _truncate(text: str, limit: int = _LABEL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_vector(query: Any) -> np.ndarray:
    """``query`` (any array-like) as a flat float32 vector of length 1 (zero stays zero)."""
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
            return need("pandas").RangeIndex(len(self.texts))
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
        pandas = need("pandas")
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
        pandas = need("pandas")
        other = self if other is None else other
        if other.dims != self.dims:
            raise ValueError(f"cannot compare {self.dims}-dim vectors with {other.dims}-dim ones")
        matrix = self.vectors @ other.vectors.T
        return pandas.DataFrame(matrix, index=self.labels(labels), columns=other.labels(labels))

    def _results(self, positions: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        pandas = need("pandas")
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
            vector = as_vector(query)
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
        found = await embed_texts(
            [query], self.model or None, client=self._client, store=self._store,
            cache=self._cache, progress=False, options=self._options,
        )
        vector: np.ndarray = found.matrix[0]
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
        return need("pandas").Series(labels, index=self.index, name="cluster")

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
        from notebook_llm._plots import new_axes, plot_embeddings

        coords = self.project(method)
        ax = new_axes(ax, figsize=(7.0, 6.0))
        return plot_embeddings(
            coords, self.texts, self._colour_values(color_by),
            title=f"{self.model} · {method.upper()}",
            color_label=getattr(color_by, "name", None),
            ax=ax, annotate=annotate, **scatter_kwargs,
        )

    def _colour_values(self, color_by: Any) -> list[Any] | None:
        """One colour value per text: a Series aligned on the index (or by position)."""
        if color_by is None:
            return None
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(color_by, pandas.Series):
            # Align on the index when the input had one; else by position.
            if len(color_by) != len(self) or self._has_labels():
                color_by = color_by.reindex(self.index)
            return list(color_by)
        if isinstance(color_by, str):
            raise TypeError(
                "color_by takes values (a Series or a list), not a column name: "
                "e.g. emb.plot(color_by=df['topic'])"
            )
        values = list(color_by)
        if len(values) != len(self):
            raise ValueError(f"color_by has {len(values)} values for {len(self)} texts")
        return values

    def heatmap(
        self, other: Embeddings | None = None, *, ax: Axes | None = None, labels: Labels = "auto"
    ) -> Axes:
        """The similarity matrix as a heat map (matplotlib); returns the Axes."""
        from notebook_llm._plots import plot_similarity

        return plot_similarity(self.similarity(other, labels=labels), ax=ax)

    # -- display ---------------------------------------------------------------

    def _summary(self) -> str:
        from notebook_llm.core.money import format_usd

        parts = [f"{len(self)} texts × {self.dims} dims", self.model or "unknown model"]
        if self.requests or self.cached:  # a subset or a hand-made object has no call to report
            plural = "" if self.requests == 1 else "s"
            parts.append(f"{self.requests} request{plural}, {self.cached} from cache")
            parts.append(f"{self.usage.input_tokens} tokens")
            parts.append(format_usd(self.cost_usd, self.cost_status))
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
