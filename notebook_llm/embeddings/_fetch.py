"""Getting vectors for a list of texts: model, batches, concurrency, cache, progress, cost.

:func:`embed_texts` is the core under :func:`~notebook_llm.embeddings.embed`
and :meth:`~notebook_llm.embeddings.Embeddings.search`: it embeds each unique
text once, answers what it can from the ``embedding_cache`` table, sends the
rest in concurrent batches (caching each batch as it lands), and returns the
L2-normalised float32 matrix in input order with the usage and cost.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from notebook_llm._api import default_client
from notebook_llm.core.models import ModelRef, parse_model
from notebook_llm.core.registry import get_spec
from notebook_llm.core.types import ProviderInfo, Usage
from notebook_llm.embeddings._cache import (
    cache_model_key,
    read_cache,
    resolve_store,
    write_cache,
)

if TYPE_CHECKING:
    import numpy as np

    from notebook_llm.core.client import CoreClient
    from notebook_llm.store.db import Store

OPENAI_BATCH = 2048
"""Inputs per request the OpenAI embeddings endpoint accepts."""
LOCAL_BATCH = 64
"""Inputs per request for local servers and in-process models (small CPUs, small contexts)."""
DEFAULT_BATCH = 256
"""Inputs per request for every other provider."""
PROGRESS_THRESHOLD = 1000
"""``progress=None`` shows progress when at least this many texts must be embedded."""


# -- small helpers -------------------------------------------------------------


def need(module: str) -> Any:
    """Import an optional dependency (numpy, pandas, matplotlib), or say how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - all ship with the notebook extra
        package = module.partition(".")[0]
        raise ImportError(f"this needs {package}: pip install 'notebook-llm[notebook]'") from exc


def resolve_model(client: CoreClient, model: str | None) -> tuple[ModelRef, ProviderInfo]:
    """``model`` (or the client's default embedding model) parsed, and its provider's info."""
    ref = parse_model(model or client.default_embedding_model(), client.aliases)
    return ref, get_spec(ref.provider).info


def default_batch_size(info: ProviderInfo) -> int:
    """Inputs per request for a provider: 2048 for OpenAI, 64 for local servers, else 256."""
    if info.name == "openai":
        return OPENAI_BATCH
    if info.protocol == "local" or (info.protocol == "openai" and info.free):
        return LOCAL_BATCH
    return DEFAULT_BATCH


def normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); zero rows stay zero."""
    import numpy as np

    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: np.ndarray = (matrix / norms).astype(np.float32, copy=False)
    return normalised


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


def _price(info: ProviderInfo, ref: ModelRef, usage: Usage) -> tuple[float | None, str]:
    try:
        from notebook_llm.pricing import price
    except ImportError:  # pragma: no cover - pricing is part of the package today
        return (0.0, "free") if info.free else (None, "unpriced")
    return price(info.pricing_id or ref.provider, ref.name, usage, free=info.free)


# -- fetching --------------------------------------------------------------------


@dataclass
class _Fetched:
    """Vectors for the unique texts, plus what fetching them cost."""

    vectors: dict[str, np.ndarray]
    usage: Usage = field(default_factory=Usage)
    requests: int = 0
    cached_texts: set[str] = field(default_factory=set)


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

    model_key = cache_model_key(str(ref), kwargs)
    fetched = _Fetched(vectors={})
    if cache and store is not None:
        fetched.vectors = read_cache(store, model_key, unique)
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
        matrix = normalise(np.asarray(response.vectors, dtype=np.float32))
        # Cache each batch as it lands, so an interrupted run resumes where it stopped.
        if cache and store is not None:
            write_cache(store, model_key, batch, matrix)
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


@dataclass
class Embedded:
    """Vectors for a list of texts, in input order, and what getting them cost."""

    matrix: np.ndarray
    """``n × d`` float32, one L2-normalised row per text."""
    model: str
    """The model as ``provider:model``."""
    usage: Usage
    cost_usd: float | None
    cost_status: str
    cached: int
    """How many of the texts (counting repeats) came from the cache."""
    requests: int
    client: CoreClient
    """The client used (the default client when none was given)."""
    store: Store | None
    """The store holding the cache, ``None`` with ``cache=False``."""


async def embed_texts(
    values: list[str],
    model: str | None,
    *,
    batch_size: int | None = None,
    concurrency: int = 4,
    cache: bool = True,
    progress: bool | Callable[[int, int], None] | None = None,
    client: CoreClient | None = None,
    store: Store | str | None = None,
    options: dict[str, Any] | None = None,
) -> Embedded:
    """Embed ``values`` (strings) as :func:`~notebook_llm.embeddings.aembed` does.

    Each unique text is embedded once; ``options`` go to the provider and
    into the cache key. Arguments are as for ``aembed``.
    """
    need("numpy")  # a clear message when numpy is missing
    import numpy as np

    kwargs = dict(options or {})
    client = client or default_client()
    ref, info = resolve_model(client, model)
    resolved_store = resolve_store(store, client) if cache else None
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
    return Embedded(
        matrix=matrix, model=str(ref), usage=fetched.usage, cost_usd=cost, cost_status=status,
        cached=sum(1 for text in values if text in fetched.cached_texts),
        requests=fetched.requests, client=client, store=resolved_store,
    )
