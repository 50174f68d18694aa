"""``notebook_llm.Client``: the core client with the standard middlewares."""

from __future__ import annotations

from typing import Any

from notebook_llm.core.client import CoreClient

__all__ = ["Client"]


class Client(CoreClient):
    """Holds configuration (default model, aliases, keys, timeouts, retries) and
    offers every operation, async (``acomplete``, ``astream``, ``aembed``,
    ``alist_models``) and sync (``complete``, ``stream``, ``embed``,
    ``list_models``).

    Args:
        model: the default model, ``provider:model`` or an alias.
        log: log every call to the SQLite call log.
        cache: answer repeated identical calls from the response cache.
        **kwargs: see :class:`notebook_llm.core.client.CoreClient`.
    """

    def __init__(
        self, model: str | None = None, *, log: bool = True, cache: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(model, **kwargs)
        self.log = log
        self.cache = cache

    def _log_default(self) -> bool:
        return self.log

    def _cache_default(self) -> bool:
        return self.cache
