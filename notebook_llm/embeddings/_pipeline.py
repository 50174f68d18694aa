"""``embed`` and ``aembed``: texts in (a list, a Series, a one-column DataFrame), Embeddings out.

This module handles the input (the texts and the pandas index to keep);
:mod:`notebook_llm.embeddings._fetch` gets the vectors (batches, concurrency,
cache, progress, cost) and :mod:`notebook_llm.embeddings._result` is what
comes back.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from notebook_llm._api import default_client
from notebook_llm.core import loop as _loop
from notebook_llm.embeddings._cache import db_path_of
from notebook_llm.embeddings._fetch import embed_texts, need
from notebook_llm.embeddings._result import Embeddings

if TYPE_CHECKING:
    from notebook_llm.core.client import CoreClient
    from notebook_llm.store.db import Store

__all__ = ["EmbedOptions", "aembed", "embed", "texts_and_index"]


def texts_and_index(texts: Any) -> tuple[list[str], Any]:
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


@dataclass(frozen=True, kw_only=True)
class EmbedOptions:
    """The options of :func:`embed` and :func:`aembed` (one record for both)."""

    batch_size: int | None = None
    concurrency: int = 4
    cache: bool = True
    progress: bool | Callable[[int, int], None] | None = None
    client: CoreClient | None = None
    db_path: Store | str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    """Provider options (``dimensions=256``); part of the cache key."""


async def _embed(texts: Any, model: str | None, options: EmbedOptions) -> Embeddings:
    need("numpy")  # a clear message when numpy is missing
    client = options.client or default_client()
    values, index = texts_and_index(texts)
    found = await embed_texts(
        values, model,
        batch_size=options.batch_size, concurrency=options.concurrency, cache=options.cache,
        progress=options.progress, client=client, store=options.db_path, options=options.params,
    )  # fmt: skip
    return Embeddings(
        found.matrix, values, index=index, model=found.model, usage=found.usage,
        cost_usd=found.cost_usd, cost_status=found.cost_status, cached=found.cached,
        requests=found.requests, client=found.client, store=found.store,
        cache=options.cache, options=options.params,
    )


async def aembed(
    texts: Any,
    model: str | None = None,
    *,
    batch_size: int | None = None,
    concurrency: int = 4,
    cache: bool = True,
    progress: bool | Callable[[int, int], None] | None = None,
    client: CoreClient | None = None,
    db_path: Store | str | None = None,
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
        db_path: the database (a path or a :class:`~notebook_llm.store.Store`)
            holding the cache; the client's, else the default database.
        store: the old name of ``db_path`` (deprecated).
        **kwargs: passed to the provider (e.g. ``dimensions=256``); they are
            part of the cache key.

    Returns:
        The vectors in input order, with the texts, index, model, usage and cost.
    """
    options = EmbedOptions(
        batch_size=batch_size, concurrency=concurrency, cache=cache, progress=progress,
        client=client, db_path=db_path_of(db_path, store, "aembed"), params=kwargs,
    )
    return await _embed(texts, model, options)


def embed(
    texts: Any,
    model: str | None = None,
    *,
    batch_size: int | None = None,
    concurrency: int = 4,
    cache: bool = True,
    progress: bool | Callable[[int, int], None] | None = None,
    client: CoreClient | None = None,
    db_path: Store | str | None = None,
    store: Store | str | None = None,
    **kwargs: Any,
) -> Embeddings:
    """Sync version of :func:`aembed` (runs on the library's loop); same arguments."""
    from notebook_llm.progress import run as run_with_ui

    options = EmbedOptions(
        batch_size=batch_size, concurrency=concurrency, cache=cache, progress=progress,
        client=client, db_path=db_path_of(db_path, store, "embed"), params=kwargs,
    )
    # A progress display may be shown: wait so that its Stop button works (in a kernel).
    wait = _loop.run if progress is False or callable(progress) else run_with_ui
    return wait(_embed(texts, model, options))
