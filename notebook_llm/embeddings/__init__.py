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

Modules: ``_cache`` (the store and the cache table), ``_fetch`` (batches,
concurrency, progress, cost), ``_result`` (:class:`Embeddings` and its math),
``_pipeline`` (:func:`embed`, :func:`aembed`, input handling) and
``_collection`` (:class:`Collection`).
"""

from notebook_llm.embeddings._collection import (
    Collection,
    collection,
    collections,
    delete_collection,
)
from notebook_llm.embeddings._pipeline import aembed, embed
from notebook_llm.embeddings._result import Embeddings, top_k

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
