"""The client core: one async implementation, sync twins on the background loop.

``CoreClient`` knows providers, keys, retries, rate limits, tools and
streaming. Logging, pricing, caching and budgets are *middlewares* added by
the layers above (``notebook_llm.Client`` wires the standard ones), so this
module imports nothing from the store or the features.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import os
import time
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from notebook_llm.core import inflight, loop as _loop
from notebook_llm.core._toolloop import ToolLoop, ToolLoopStream, completion_runs
from notebook_llm.core.context import CallContext, Middleware
from notebook_llm.core.deadline import Deadline, within
from notebook_llm.core.errors import (
    CancelledError,
    InvalidRequestError,
    LLMError,
    MissingKeyError,
    ProviderError,
    UnsupportedError,
)
from notebook_llm.core.keys import (
    NO_KEY,
    KeyStatus,
    check_base_url,
    checked_key,
    find_key,
    key_status,
)
from notebook_llm.core.models import DefaultModel, ModelRef, choose_default, parse_model
from notebook_llm.core.options import CallOptions
from notebook_llm.core.parts import plain_parts, with_parts
from notebook_llm.core.ratelimit import RateLimit, RateLimiter
from notebook_llm.core.registry import ProviderSpec, get_spec, specs
from notebook_llm.core.retry import RetryPolicy, retry_async
from notebook_llm.core.secrets import SecretHeaders
from notebook_llm.core.stream import (
    AsyncStream,
    CompletionBuilder,
    Stream,
    aclose_quietly,
    prepend_chunk,
    replay,
    replay_chunks,
)
from notebook_llm.core.tokens import estimate_prompt_tokens, estimated_usage
from notebook_llm.core.tools import as_tools, normalise_response_format, parse_structured
from notebook_llm.core.types import (
    Chunk,
    Completion,
    ContentPart,
    EmbeddingResponse,
    Message,
    ModelInfo,
    ProviderInfo,
    Request,
    ToolRun,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from notebook_llm.providers.base import Provider

__all__ = ["CallContext", "CoreClient", "Middleware"]

T = TypeVar("T")


def _sync(async_method: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """The sync twin of an async method: same arguments, run on the background loop."""

    @functools.wraps(async_method)
    def method(self: CoreClient, *args: Any, **kwargs: Any) -> T:
        return _loop.run(async_method(self, *args, **kwargs))

    method.__name__ = async_method.__name__[1:]
    method.__qualname__ = method.__qualname__.replace(async_method.__name__, method.__name__)
    method.__doc__ = (
        f"Sync version of :meth:`{async_method.__name__}` (runs on the library's loop)."
    )
    return method


def _sync_stream(astream: Callable[..., AsyncStream]) -> Callable[..., Stream]:
    """The sync twin of ``astream``: the same arguments, a :class:`Stream`."""

    @functools.wraps(astream)
    def stream(self: CoreClient, *args: Any, **kwargs: Any) -> Stream:
        return Stream(self.astream(*args, **kwargs))

    stream.__name__ = "stream"
    stream.__qualname__ = stream.__qualname__.replace("astream", "stream")
    stream.__doc__ = (
        "Stream a completion in sync code: ``for chunk in client.stream(...)``.\n\n"
        "Takes the arguments of :meth:`astream`. The stream has ``cancel()``\n"
        "(callable from any thread, e.g. a Stop button) and, once it ends,\n"
        "``completion``; Ctrl-C or leaving the loop early stops the request."
    )
    return stream


class CoreClient:
    """Configuration plus the async operations, with sync twins.

    Args:
        model: the default model (``provider:model`` or an alias).
        aliases: short names for model strings.
        api_keys: keys by provider name (otherwise found in the environment).
        api_bases: base URLs by provider name.
        timeout: seconds before a request gives up.
        retry: the retry policy; ``max_retries`` is a shortcut for its attempts.
        rate_limits: ``RateLimit`` by model string or provider name.
        provider_settings: extra options by provider name, e.g.
            ``{"openai": {"transport": "sdk"}}``.
        middlewares: hooks run around every call (logging, pricing, cache, budgets).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        aliases: dict[str, str] | None = None,
        api_keys: dict[str, str] | None = None,
        api_bases: dict[str, str] | None = None,
        timeout: float | None = 120.0,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        rate_limits: dict[str, RateLimit] | None = None,
        provider_settings: dict[str, dict[str, Any]] | None = None,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        self.default = model
        self.aliases = dict(aliases or {})
        self._api_keys = dict(api_keys or {})
        self.api_bases = dict(api_bases or {})
        self.timeout = timeout
        policy = retry or RetryPolicy()
        if max_retries is not None:
            policy = RetryPolicy(
                max_attempts=max_retries + 1,
                initial_delay=policy.initial_delay,
                max_delay=policy.max_delay,
                jitter=policy.jitter,
                retry_timeouts=policy.retry_timeouts,
            )
        self.retry = policy
        self.rate_limits = dict(rate_limits or {})
        self.provider_settings = dict(provider_settings or {})
        self.middlewares: list[Middleware] = list(middlewares)
        self._providers: dict[tuple[Any, ...], Provider] = {}
        self._resolved: dict[tuple[Any, ...], Provider] = {}
        self._refs: dict[str, ModelRef] = {}
        self._refs_aliases: dict[str, str] = dict(self.aliases)
        self._limiters: dict[str, RateLimiter] = {}
        self._default_cache: DefaultModel | None = None
        self._limiter_for: Callable[[ModelRef], RateLimiter] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.default!r}, providers={len(self._providers)})"

    # -- configuration -------------------------------------------------

    def set_key(self, provider: str, key: str | None) -> None:
        """Use ``key`` for ``provider`` (``None`` forgets it)."""
        if key is None:
            self._api_keys.pop(provider, None)
        else:
            self._api_keys[provider] = key
        self._default_cache = None
        self._resolved.clear()

    def key_status(self) -> list[KeyStatus]:
        """Which providers have a key and where it comes from (masked)."""
        return [
            key_status(name, spec.info.key_env, self._api_keys.get(name))
            for name, spec in specs().items()
            if spec.info.key_env
        ]

    def list_providers(self) -> list[ProviderInfo]:
        """One record per provider, built-in or plugged in: key and base-URL
        variables, capabilities."""
        return [spec.info for spec in specs().values()]

    def providers(self) -> list[ProviderInfo]:
        """The old name of :meth:`list_providers` (deprecated)."""
        warnings.warn(
            "providers() is now list_providers(); providers() will be removed in a future "
            "release",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.list_providers()

    def resolve(self, model: str | None = None) -> ModelRef:
        """The provider and model name that ``model`` (or the default) means."""
        name = model or self.default_model().model
        if self.aliases != self._refs_aliases:
            self._refs.clear()
            self._refs_aliases = dict(self.aliases)
        ref = self._refs.get(name)
        if ref is None:
            ref = self._refs[name] = parse_model(name, self.aliases)
        return ref

    def default_model(self) -> DefaultModel:
        """The model used when none is given, and why it was chosen."""
        if self.default:
            return DefaultModel(self.default, "set on this client")
        if self._default_cache is None:
            keys = {
                name: key_status(name, specs()[name].info.key_env, self._api_keys.get(name)).found
                for name in ("openai", "anthropic")
            }
            self._default_cache = choose_default(None, keys) or self._fallback_default()
        return self._default_cache

    def _fallback_default(self) -> DefaultModel:
        """The default when no key is found: ``offline:echo``. ``notebook_llm.Client``
        looks for local servers and the in-process model first."""
        return DefaultModel("offline:echo", "no API key was found")

    def with_options(
        self,
        *,
        retry: RetryPolicy | None = None,
        limiter: Callable[[ModelRef], RateLimiter] | None = None,
        middlewares: Sequence[Middleware] | None = None,
    ) -> Self:
        """A client that shares this one's configuration, keys, connections and rate
        limiters, with another retry policy, limiter lookup or middleware list.

        For work that needs its own policy without a second set of connections:
        a batch job's retries, its own rpm/tpm in front of the shared limiter,
        and a middleware that watches its calls.

        Args:
            retry: the retry policy.
            limiter: returns the limiter for a model (``limiter(ref)``); it may
                fall back to this client's :meth:`limiter`.
            middlewares: the whole list (pass ``[*client.middlewares, extra]`` to add).
        """
        clone = copy.copy(self)
        if retry is not None:
            clone.retry = retry
        if middlewares is not None:
            clone.middlewares = list(middlewares)
        if limiter is not None:
            clone._limiter_for = limiter
        return clone

    def limiter(self, ref: ModelRef) -> RateLimiter:
        """The shared rate limiter for one model."""
        if self._limiter_for is not None:
            return self._limiter_for(ref)
        return self._shared_limiter(ref)

    def _shared_limiter(self, ref: ModelRef) -> RateLimiter:
        key = str(ref)
        limiter = self._limiters.get(key)
        if limiter is None:
            limit = self.rate_limits.get(key) or self.rate_limits.get(ref.provider)
            limiter = self._limiters[key] = RateLimiter(limit)
        return limiter

    # -- providers -------------------------------------------------------

    def _provider(
        self, spec: ProviderSpec, api_key: str | None, api_base: str | None
    ) -> Provider:
        info = spec.info
        try:
            loop_id = id(asyncio.get_running_loop())
        except RuntimeError:
            # Not in a loop: a sync call, whose coroutine runs on the library's loop.
            loop_id = id(_loop.get_loop().loop)
        # Resolving keys reads the environment and .env: do it once per setting.
        fast_key = (
            info.name,
            api_key,
            api_base,
            loop_id,
            self.api_bases.get(info.name),
            self._api_keys.get(info.name),
        )
        provider = self._resolved.get(fast_key)
        if provider is None:
            provider = self._resolved[fast_key] = self._build_provider(
                spec, api_key, api_base, loop_id
            )
        return provider

    def credentials(
        self, provider: str, *, api_key: str | None = None, api_base: str | None = None
    ) -> tuple[str | None, str | None]:
        """The key and base URL this client would use for ``provider``.

        The key: ``api_key``, this client's ``api_keys``, then the environment,
        ``.env``, Colab secrets and (interactive sessions) a prompt; ``None`` for a
        provider that needs none. The base URL: ``api_base``, this client's
        ``api_bases``, the ``<PROVIDER>_BASE_URL`` variable, then the default.
        Both are checked: a key with a line break and a base URL without
        ``http(s)://`` are refused. For code that talks to a provider without
        a request of this client's (provider batch APIs, say).

        Raises:
            MissingKeyError: the provider needs a key and none was found.
            InvalidRequestError: the key or the base URL is malformed.
        """
        info = get_spec(provider).info
        base = (
            api_base
            or self.api_bases.get(info.name)
            or (os.environ.get(info.base_url_env) if info.base_url_env else None)
            or info.default_base_url
        )
        key: str | None = None
        if info.key_env or api_key:
            key, _ = find_key(
                info.key_env,
                explicit=api_key,
                configured=self._api_keys.get(info.name),
                prompt=info.key_required,
                provider=info.name,
            )
            if key is None and info.key_required:
                raise MissingKeyError(info.name, info.key_env)
            if key is None and info.protocol in ("openai", "anthropic"):
                key = NO_KEY
            key = checked_key(key, info.name)
        if info.protocol == "openai" and not base:
            raise InvalidRequestError(
                f"{info.name} needs a base URL: pass api_base=... or set {info.base_url_env}",
                provider=info.name,
            )
        if base:
            check_base_url(base, info.name, info.base_url_env)
        return key, base

    def _build_provider(
        self, spec: ProviderSpec, api_key: str | None, api_base: str | None, loop_id: int
    ) -> Provider:
        info = spec.info
        key, base = self.credentials(info.name, api_key=api_key, api_base=api_base)
        # Providers hold connections bound to one event loop; the key enters the
        # cache key only as a digest.
        digest = hashlib.sha256(key.encode()).hexdigest()[:16] if key else ""
        cache_key = (info.name, base, digest, loop_id)
        provider = self._providers.get(cache_key)
        if provider is None:
            cls = spec.load()
            settings = {**spec.settings, **self.provider_settings.get(info.name, {})}
            if settings.get("default_headers"):
                try:
                    settings["default_headers"] = SecretHeaders.checked(settings["default_headers"])
                except (ValueError, TypeError) as exc:
                    raise InvalidRequestError(
                        f"default_headers: {exc}", provider=info.name
                    ) from None
            provider = cls(info, api_key=key, api_base=base, **settings)
            self._providers[cache_key] = provider
        return provider

    def _prepare(
        self,
        kind: Literal["complete", "stream"],
        prompt_or_messages: str | Sequence[Message] | None,
        model: str | None,
        options: CallOptions,
        provider_kwargs: dict[str, Any],
    ) -> tuple[Callable[[], Provider], CallContext]:
        """The request and its context; the provider is looked up later (``resolve``)."""
        if options.uses_assets() or prompt_or_messages is None:
            raise InvalidRequestError("pass a prompt or messages (template=, params= and "
                                      "fragments= need notebook_llm.Client, as nl.complete's)")
        ref = self.resolve(model)
        spec = get_spec(ref.provider)
        if isinstance(prompt_or_messages, str):
            messages: list[Message] = [{"role": "user", "content": prompt_or_messages}]
        else:
            messages = [dict(message) for message in prompt_or_messages]
            if not messages:
                raise InvalidRequestError(
                    "messages is empty: pass a prompt or at least one message"
                )
        system = options.system
        if messages and messages[0].get("role") == "system" and system is None:
            system = messages.pop(0).get("content")
        messages = with_parts(spec.info, ref.name, messages, self._content_parts(options))
        format_dict, format_model = normalise_response_format(options.response_format)
        headers = _extra_headers(provider_kwargs, ref)
        request = Request(
            model=ref.name,
            messages=messages,
            system=system,
            temperature=options.temperature,
            max_tokens=options.max_tokens,
            tools=as_tools(options.tools),
            tool_choice=options.tool_choice,
            response_format=format_dict,
            reasoning_effort=options.reasoning_effort,
            timeout=options.timeout if options.timeout is not None else self.timeout,
            extra=provider_kwargs,
            headers=headers,
        )
        # The provider (and so the key) is looked up only once the middlewares
        # have had their say: a cache hit or a budget refusal needs no key.
        provider = functools.partial(self._provider, spec, options.api_key, options.api_base)
        ctx = CallContext(
            kind=kind,
            ref=ref,
            info=spec.info,
            request=request,
            log=self._log_default() if options.log is None else options.log,
            cache=self._cache_default() if options.cache is None else options.cache,
            tags=list(options.tags or []),
            metadata=dict(options.metadata or {}),
            format_model=format_model,
            model_as_written=model,
        )
        return provider, ctx

    def _content_parts(self, options: CallOptions) -> list[ContentPart]:
        """``context=`` and ``attachments=`` as parts (``Client`` takes more kinds)."""
        return [*plain_parts(options.context, "context"),
                *plain_parts(options.attachments, "attachments")]

    def _log_default(self) -> bool:
        return False

    def _cache_default(self) -> bool:
        return False

    async def _before(self, ctx: CallContext) -> Completion | None:
        for middleware in self.middlewares:
            hit = await middleware.before(ctx)
            if hit is not None:
                return hit
        return None

    async def _after(
        self, ctx: CallContext, completion: Completion | None, error: BaseException | None
    ) -> None:
        for middleware in self.middlewares:
            await middleware.after(ctx, completion, error)

    def _finalise(
        self, completion: Completion, ctx: CallContext, *, parse: bool = True
    ) -> Completion:
        completion.model = ctx.model
        completion.provider = ctx.ref.provider
        completion.messages = ctx.request.messages
        completion.attempts = ctx.attempts
        if parse and ctx.request.response_format and completion.text and completion.parsed is None:
            try:
                completion.parsed = parse_structured(completion.text, ctx.format_model)
            except ValueError as exc:
                raise ProviderError(
                    f"The model's answer is not valid for the requested format: {exc}. "
                    "The answer is kept on the error's .completion",
                    provider=ctx.ref.provider,
                    model=ctx.ref.name,
                    original=exc,
                    completion=completion,
                ) from exc
        return completion

    # -- operations ------------------------------------------------------

    async def acomplete(
        self,
        prompt_or_messages: str | Sequence[Message] | None = None,
        model: str | None = None,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        reasoning_effort: str | None = None,
        api_key: str | None = None,
        api_base: str | None = None,
        timeout: float | None = None,
        max_tool_rounds: int | None = None,
        max_tool_calls: int | None = None,
        tool_timeout: float | None = None,
        approve: Any = None,
        log: bool | None = None,
        cache: bool | None = None,
        tags: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        template: Any = None,
        params: Mapping[str, Any] | None = None,
        fragments: Sequence[Any] | None = None,
        system_fragments: Sequence[Any] | None = None,
        context: Sequence[Any] | None = None,
        attachments: Sequence[Any] | None = None,
        context_tokens: int | None = None,
        **provider_kwargs: Any,
    ) -> Completion:
        """Send a prompt (or a list of messages) and return the completion.

        Args:
            prompt_or_messages: a string, or OpenAI-style ``{"role", "content"}`` messages.
            model: ``provider:model`` or an alias; the default model when omitted.
            system: a system prompt.
            temperature: sampling temperature.
            max_tokens: the most tokens to generate.
            tools: Python functions (type hints and docstrings describe them), or tool dicts.
            tool_choice: ``"auto"``, ``"none"``, ``"required"`` or a tool name.
            response_format: a Pydantic model (the result's ``parsed``), ``"json"``, or a dict.
            reasoning_effort: ``"low"``, ``"medium"`` or ``"high"`` for reasoning models.
            api_key: a key for this call (otherwise found in the environment).
            api_base: a base URL for this call.
            timeout: seconds each model request may take (not time in tools).
            max_tool_rounds: run the model's tool calls and send the results back,
                up to this many times (default: 5 when a tool has a function).
            max_tool_calls: the most tool calls for this message (default: 25).
            tool_timeout: seconds a tool may run unless it sets its own (default: 60).
            approve: ``"always"``, ``"never"``, ``"ask"`` or ``before_call(tool,
                arguments) -> bool`` (default: ask for ``dangerous`` tools only).
            log: log this call (default: the client's setting).
            cache: answer from the response cache when possible.
            tags: labels stored with the call in the log.
            metadata: extra fields for middlewares (conversation id, batch id).
            template, params: a saved template (or its name) and its ``$names``' values.
            fragments, system_fragments: files, URLs or aliases before the (system) prompt.
            context: objects sent as compact cards (DataFrames, figures as PNG, ...).
            attachments: paths, URLs or bytes: images, PDFs, text, audio.
            context_tokens: the token budget of all context cards together.
            **provider_kwargs: passed to the provider untouched.

        Returns:
            The :class:`Completion`.

        Raises:
            notebook_llm.errors.LLMError: a subclass saying what went wrong and what to do.
        """
        options = CallOptions(
            system=system, temperature=temperature, max_tokens=max_tokens, tools=tools,
            tool_choice=tool_choice, response_format=response_format,
            reasoning_effort=reasoning_effort, api_key=api_key, api_base=api_base,
            timeout=timeout, max_tool_rounds=max_tool_rounds, max_tool_calls=max_tool_calls,
            tool_timeout=tool_timeout, approve=approve, log=log, cache=cache, tags=tags,
            metadata=metadata, template=template, params=params, fragments=fragments,
            system_fragments=system_fragments, context=context, attachments=attachments,
            context_tokens=context_tokens,
        )  # fmt: skip
        resolve, ctx = self._prepare(
            "complete", prompt_or_messages, model, options, provider_kwargs
        )
        loop = ToolLoop.for_call(ctx.request.tools, options)
        kind: inflight.Kind = "tool_loop" if loop is not None else "complete"
        with inflight.tracked(kind, ctx.model, inflight.task_canceller()) as entry:
            try:
                return await self._rounds(resolve, ctx, loop)
            except asyncio.CancelledError:
                if not inflight.stopped_at_top(entry):
                    raise  # cancelled by its caller, or part of a batch that was stopped
                raise CancelledError(
                    f"Stopped ({entry.stopped_by}): the call to {ctx.model} was cancelled "
                    "and nothing more is sent", provider=ctx.ref.provider, model=ctx.ref.name,
                ) from None

    async def _rounds(
        self, resolve: Callable[[], Provider], ctx: CallContext, loop: ToolLoop | None
    ) -> Completion:
        completion = await self._run_once(resolve, ctx)
        while loop is not None and loop.wants(completion.tool_calls):
            results = await loop.run(completion.tool_calls)
            _next_round(ctx, [*ctx.request.messages, completion.to_message(), *results], loop)
            completion = await self._run_once(resolve, ctx)
        if loop is not None:
            completion.tool_runs = list(loop.runs)
        return completion

    async def _run_once(
        self, resolve: Callable[[], Provider], ctx: CallContext
    ) -> Completion:
        limiter = self.limiter(ctx.ref)

        def on_retry(error: BaseException, attempt_number: int, delay: float) -> None:
            _adapt_to_error(limiter, error, delay)

        async def acquire() -> None:
            if limiter.active:
                await limiter.acquire(_estimate_tokens(ctx.request))

        started = time.perf_counter()
        try:
            # Inside the try, like a stream's opener: a call refused by a
            # middleware (a budget) or failing for want of a key ends like any
            # failed call, and the middlewares (the call log) hear of it.
            hit = await self._before(ctx)
            if hit is not None:
                completion = hit
            else:
                provider = resolve()

                async def attempt() -> Completion:
                    ctx.attempts += 1
                    return await provider.complete(ctx.request)

                completion = await within(
                    _deadline(ctx),
                    retry_async(attempt, self.retry, on_retry=on_retry, before_attempt=acquire),
                )
                if completion.rate_limits is not None:
                    limiter.adapt(completion.rate_limits)
                completion.latency_s = time.perf_counter() - started
                completion = self._finalise(completion, ctx)
        except asyncio.CancelledError:
            await self._after(ctx, None, CancelledError("cancelled", provider=ctx.ref.provider))
            raise
        except BaseException as error:
            # An answer that arrived but cannot be used (a structured answer
            # that fails validation) was paid for: the middlewares log and
            # price it, and the error carries it.
            await self._after(ctx, getattr(error, "completion", None), _as_llm_error(error, ctx))
            raise
        await self._after(ctx, completion, None)
        return completion

    def astream(
        self,
        prompt_or_messages: str | Sequence[Message] | None = None,
        model: str | None = None,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        response_format: Any = None,
        reasoning_effort: str | None = None,
        api_key: str | None = None,
        api_base: str | None = None,
        timeout: float | None = None,
        max_tool_rounds: int | None = None,
        max_tool_calls: int | None = None,
        tool_timeout: float | None = None,
        approve: Any = None,
        log: bool | None = None,
        cache: bool | None = None,
        tags: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        template: Any = None,
        params: Mapping[str, Any] | None = None,
        fragments: Sequence[Any] | None = None,
        system_fragments: Sequence[Any] | None = None,
        context: Sequence[Any] | None = None,
        attachments: Sequence[Any] | None = None,
        context_tokens: int | None = None,
        **provider_kwargs: Any,
    ) -> AsyncStream:
        """Stream a completion: ``async for chunk in client.astream(...)``.

        Takes the arguments of :meth:`acomplete`. The returned stream has
        ``cancel()``, ``text`` and, once it ends, ``completion``. Nothing is
        sent until iteration starts. With tools, the loop runs between rounds
        and each tool event arrives as a chunk with ``tool_run`` set.
        """
        options = CallOptions(
            system=system, temperature=temperature, max_tokens=max_tokens, tools=tools,
            tool_choice=tool_choice, response_format=response_format,
            reasoning_effort=reasoning_effort, api_key=api_key, api_base=api_base,
            timeout=timeout, max_tool_rounds=max_tool_rounds, max_tool_calls=max_tool_calls,
            tool_timeout=tool_timeout, approve=approve, log=log, cache=cache, tags=tags,
            metadata=metadata, template=template, params=params, fragments=fragments,
            system_fragments=system_fragments, context=context, attachments=attachments,
            context_tokens=context_tokens,
        )  # fmt: skip
        resolve, ctx = self._prepare("stream", prompt_or_messages, model, options, provider_kwargs)
        loop = ToolLoop.for_call(ctx.request.tools, options)
        first = self._round_stream(resolve, ctx)
        if loop is None:
            return first

        def next_round(messages: list[Message], runs: list[ToolRun]) -> AsyncStream:
            _next_round(ctx, messages, loop)
            return self._round_stream(resolve, ctx)

        return ToolLoopStream(first, loop, next_round)

    def _round_stream(self, resolve: Callable[[], Provider], ctx: CallContext) -> AsyncStream:
        """One request streamed: its opener (retries until the first chunk) and its
        finisher (the middlewares)."""

        async def opener() -> tuple[AsyncIterator[Chunk], CompletionBuilder]:
            hit = await self._before(ctx)
            if hit is not None:
                ctx.metadata["_cache_hit"] = hit
                return replay(hit), CompletionBuilder()
            provider = resolve()
            limiter = self.limiter(ctx.ref)
            builder = CompletionBuilder()

            async def open_stream() -> AsyncIterator[Chunk]:
                # Retry only until the first chunk: after that, text has been shown.
                ctx.attempts += 1
                source = provider.stream(ctx.request)
                try:
                    first = await source.__anext__()
                except StopAsyncIteration:
                    return replay_chunks([])
                except BaseException:
                    await aclose_quietly(source)
                    raise
                # Providers put the headers' rate limits on the first chunk: adapt
                # now, not when the stream ends, so the calls started meanwhile
                # already wait (and a stream stopped early still counts).
                if first.rate_limits is not None:
                    limiter.adapt(first.rate_limits)
                return prepend_chunk(first, source)

            async def acquire() -> None:
                if limiter.active:
                    await limiter.acquire(_estimate_tokens(ctx.request))

            def on_retry(error: BaseException, attempt_number: int, delay: float) -> None:
                _adapt_to_error(limiter, error, delay)

            source = await retry_async(
                open_stream, self.retry, on_retry=on_retry, before_attempt=acquire
            )
            return source, builder

        async def finisher(
            completion: Completion | None, error: BaseException | None
        ) -> Completion | None:
            hit: Completion | None = ctx.metadata.pop("_cache_hit", None)
            if hit is not None:
                await self._after(ctx, hit, None)
                return hit
            parse_error: LLMError | None = None
            if completion is not None and not completion.usage.total_tokens and (
                completion.text or completion.reasoning
            ):
                # Stopped, cut off, or a server that reports no usage in streams:
                # what arrived was paid for, so count it (marked estimated).
                completion.usage = estimated_usage(
                    ctx.request, completion.text, completion.reasoning
                )
            if completion is not None:
                # A stopped or failed stream's partial text is not held to the format.
                ended = error is None and completion.finish_reason != "cancelled"
                try:
                    completion = self._finalise(completion, ctx, parse=ended)
                except LLMError as exc:
                    completion.parsed = None
                    parse_error = exc
            first = error or parse_error
            llm_error = None if first is None else _as_llm_error(first, ctx)
            await self._after(ctx, completion, llm_error)
            if parse_error is not None and error is None:
                # Raised to the reader as complete() raises it; the text stays
                # on the stream's completion.
                raise parse_error
            return completion

        return AsyncStream(opener, finisher, deadline=lambda: _deadline(ctx), model=ctx.model)

    async def aembed(
        self,
        texts: Sequence[str],
        model: str | None = None,
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        timeout: float | None = None,
        **provider_kwargs: Any,
    ) -> EmbeddingResponse:
        """Embed ``texts``; vectors come back in input order.

        ``timeout`` (default: the client's) bounds the whole call, retries included.
        """
        ref = parse_model(model or self.default_embedding_model(), self.aliases)
        spec = get_spec(ref.provider)
        provider = self._provider(spec, api_key, api_base)
        items = list(texts)
        if not items:
            return EmbeddingResponse(vectors=[], model=str(ref))

        async def attempt() -> EmbeddingResponse:
            return await provider.embed(items, ref.name, **provider_kwargs)

        deadline = Deadline(
            self.timeout if timeout is None else timeout, provider=ref.provider, model=ref.name
        )
        response = await within(deadline, retry_async(attempt, self.retry))
        response.model = str(ref)
        return response

    def default_embedding_model(self) -> str:
        """``NOTEBOOK_LLM_EMBEDDING_MODEL``, or ``offline:hash``."""
        return os.environ.get("NOTEBOOK_LLM_EMBEDDING_MODEL") or "offline:hash"

    async def alist_models(
        self, provider: str | None = None, *, api_base: str | None = None
    ) -> list[ModelInfo]:
        """The models a provider offers (the default model's provider when omitted)."""
        name = provider or self.resolve().provider
        spec = get_spec(name.rstrip(":"))
        if not spec.info.capabilities.list_models:
            raise UnsupportedError(f"{name} cannot list its models", provider=name)
        deadline = Deadline(self.timeout, provider=spec.info.name)
        return await within(deadline, self._provider(spec, None, api_base).list_models())

    async def aclose(self) -> None:
        """Close the providers created on the running loop."""
        loop_id = id(asyncio.get_running_loop())
        self._resolved = {k: v for k, v in self._resolved.items() if k[3] != loop_id}
        for key in [k for k in self._providers if k[-1] == loop_id]:
            await self._providers.pop(key).aclose()

    complete = _sync(acomplete)
    stream = _sync_stream(astream)
    embed = _sync(aembed)
    list_models = _sync(alist_models)
    close = _sync(aclose)


def _adapt_to_error(limiter: RateLimiter, error: BaseException, delay: float) -> None:
    """Before a retry: follow the error response's rate-limit headers, and make a
    Retry-After pause every call to the model, not only this one."""
    rate_limits = getattr(error, "rate_limits", None)
    if rate_limits is not None:
        limiter.adapt(rate_limits)
    if getattr(error, "retry_after", None):
        limiter.pause(delay)


def _extra_headers(provider_kwargs: dict[str, Any], ref: ModelRef) -> SecretHeaders:
    """``extra_headers=`` taken out of the provider keywords (so it never reaches a
    request body or the log) and checked before anything is sent."""
    given = provider_kwargs.pop("extra_headers", None)
    if not given:
        return SecretHeaders()
    try:
        return SecretHeaders.checked(dict(given))
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(
            f"extra_headers: {exc}", provider=ref.provider, model=ref.name
        ) from None


def _deadline(ctx: CallContext) -> Deadline:
    return Deadline(ctx.request.timeout, provider=ctx.ref.provider, model=ctx.ref.name)


def _as_llm_error(error: BaseException, ctx: CallContext) -> BaseException:
    if isinstance(error, LLMError):
        error.attempts = ctx.attempts
        if error.provider is None:
            error.provider = ctx.ref.provider
        if error.model is None:
            error.model = ctx.ref.name
        return error
    if isinstance(error, asyncio.CancelledError):
        return CancelledError("cancelled", provider=ctx.ref.provider, model=ctx.ref.name)
    return error


def _estimate_tokens(request: Request) -> int:
    # An upper bound for token buckets: the prompt plus the output allowance;
    # exact counts come back in the usage.
    return estimate_prompt_tokens(request) + (request.max_tokens or 256)


def _next_round(ctx: CallContext, messages: list[Message], tools: ToolLoop) -> None:
    """Make ``ctx`` the next request of a tool loop: the conversation so far, and
    the runs whose results it carries back (the call log records them)."""
    ctx.request.messages = messages
    if ctx.request.tool_choice not in (None, "auto", "none"):
        ctx.request.tool_choice = "auto"  # a forced call once, or the model loops on it
    ctx.tool_runs = completion_runs(tools)
    ctx.started_at = time.time()
    ctx.attempts = 0
