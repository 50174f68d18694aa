"""Streams: folding chunks into a Completion, and the async and sync stream objects.

``AsyncStream`` is an async iterator of :class:`Chunk` with ``cancel()`` and,
once finished, ``completion``. ``Stream`` is its sync twin: a background task
on the library loop feeds a thread-safe queue, so the caller's thread never
blocks the loop and Ctrl-C or leaving the loop early closes the HTTP response.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from notebook_llm.core import inflight
from notebook_llm.core.errors import LLMError
from notebook_llm.core.types import Chunk, Completion, FinishReason, ToolCall, Usage

if TYPE_CHECKING:
    from notebook_llm.core.deadline import Deadline
    from notebook_llm.core.ratelimit import RateLimitInfo

__all__ = [
    "AsyncStream",
    "CompletionBuilder",
    "Stream",
    "aclose_quietly",
    "call_on_loop",
    "prepend_chunk",
    "replay",
    "replay_chunks",
]


class CompletionBuilder:
    """Folds streamed chunks into one :class:`Completion` (pure, no I/O)."""

    def __init__(self, started: float | None = None) -> None:
        self.started = time.perf_counter() if started is None else started
        self.first_token_at: float | None = None
        self.text_parts: list[str] = []
        self.reasoning_parts: list[str] = []
        self.tool_parts: dict[int, dict[str, Any]] = {}
        self.legacy_parts: dict[int, dict[str, Any]] = {}
        self.usage: Usage | None = None
        self.finish_reason: FinishReason | None = None
        self.response_model: str | None = None
        self.id: str | None = None
        self.rate_limits: RateLimitInfo | None = None
        self.events: list[Any] = []

    @property
    def text(self) -> str:
        """The text so far."""
        return "".join(self.text_parts)

    def add(self, chunk: Chunk) -> None:
        """Fold one chunk in."""
        if chunk.text:
            self.text_parts.append(chunk.text)
        if chunk.reasoning:
            self.reasoning_parts.append(chunk.reasoning)
        if self.first_token_at is None and (chunk.text or chunk.reasoning or chunk.tool_calls):
            self.first_token_at = time.perf_counter()
        if chunk.tool_calls:
            for fragment in chunk.tool_calls:
                # A legacy ``function_call`` fragment ("legacy": True) is kept
                # apart: servers that send it beside ``tool_calls`` repeat the
                # first call, which must not run twice.
                parts = self.legacy_parts if fragment.get("legacy") else self.tool_parts
                slot = parts.setdefault(
                    fragment.get("index", len(parts)),
                    {"id": "", "name": "", "arguments": []},
                )
                if fragment.get("id"):
                    slot["id"] = fragment["id"]
                if fragment.get("name"):
                    slot["name"] = fragment["name"]
                if fragment.get("arguments"):
                    slot["arguments"].append(fragment["arguments"])
        if chunk.usage is not None:
            self.usage = _merge_usage(self.usage, chunk.usage)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.response_model:
            self.response_model = chunk.response_model
        if chunk.id:
            self.id = chunk.id
        if chunk.rate_limits is not None and self.rate_limits is None:
            self.rate_limits = chunk.rate_limits
        if chunk.raw is not None:
            self.events.append(chunk.raw)

    def build(self, finish_reason: FinishReason | None = None) -> Completion:
        """The completion so far; ``finish_reason`` overrides (e.g. ``cancelled``)."""
        now = time.perf_counter()
        parts = self.tool_parts or self.legacy_parts
        tool_calls = [
            make_tool_call(slot["id"], slot["name"], "".join(slot["arguments"]))
            for _, slot in sorted(parts.items())
        ]
        reason = finish_reason or self.finish_reason or ("tool_calls" if tool_calls else "stop")
        return Completion(
            text=self.text,
            response_model=self.response_model,
            reasoning="".join(self.reasoning_parts) or None,
            tool_calls=tool_calls,
            finish_reason=reason,
            usage=self.usage or Usage(),
            latency_s=now - self.started,
            ttft_s=None if self.first_token_at is None else self.first_token_at - self.started,
            id=self.id,
            raw=self.events,
            rate_limits=self.rate_limits,
        )


def make_tool_call(call_id: str, name: str, arguments_json: str) -> ToolCall:
    """A ToolCall from its JSON arguments; unparseable JSON is kept under ``_raw``."""
    try:
        arguments = json.loads(arguments_json) if arguments_json.strip() else {}
    except json.JSONDecodeError:
        arguments = {"_raw": arguments_json}
    if not isinstance(arguments, dict):
        arguments = {"value": arguments}
    return ToolCall(id=call_id, name=name, arguments=arguments, arguments_json=arguments_json)


def _merge_usage(old: Usage | None, new: Usage) -> Usage:
    # Anthropic sends input counts at the start and output counts at the end;
    # OpenAI sends one usage chunk. Keeping the larger of each field covers both.
    if old is None:
        return new
    return Usage(
        input_tokens=max(old.input_tokens, new.input_tokens),
        output_tokens=max(old.output_tokens, new.output_tokens),
        cached_input_tokens=max(old.cached_input_tokens, new.cached_input_tokens),
        cache_write_tokens=max(old.cache_write_tokens, new.cache_write_tokens),
        reasoning_tokens=max(old.reasoning_tokens, new.reasoning_tokens),
    )


Opener = Callable[[], Awaitable[tuple[AsyncIterator[Chunk], CompletionBuilder]]]
Finisher = Callable[[Completion | None, BaseException | None], Awaitable[Completion | None]]


class AsyncStream:
    """An async iterator of chunks; ``completion`` holds the result once it ends.

    ``cancel()`` may be called from any thread: the pending read is cancelled,
    the HTTP response is closed, and iteration ends normally with
    ``completion.finish_reason == "cancelled"`` and the partial text kept.
    """

    def __init__(
        self,
        opener: Opener,
        finisher: Finisher,
        *,
        deadline: Callable[[], Deadline] | None = None,
        model: str = "",
    ) -> None:
        self._opener = opener
        self.model = model
        self._entry: inflight.Entry | None = None
        self._finisher = finisher
        self._make_deadline = deadline
        self._timer: asyncio.TimerHandle | None = None
        self._expired: Deadline | None = None
        self._source: AsyncIterator[Chunk] | None = None
        self._builder: CompletionBuilder | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        self._done = False
        self.completion: Completion | None = None
        """The aggregated result, set when the stream ends (also when cancelled)."""
        self.error: BaseException | None = None

    def __aiter__(self) -> AsyncStream:
        return self

    @property
    def text(self) -> str:
        """The text received so far."""
        if self.completion is not None:
            return self.completion.text
        return self._builder.text if self._builder else ""

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called."""
        return self._cancel_requested

    def cancel(self) -> None:
        """Stop the stream now, from any thread; the partial text is kept."""
        self._cancel_requested = True
        loop, waiter = self._loop, self._waiter
        if loop is None or waiter is None or loop.is_closed():
            return
        call_on_loop(loop, waiter.cancel)

    def stop(self, by: str = "button") -> None:
        """Stop it through the registry of work in flight, noting who stopped it
        (``"button"``, ``"interrupt"``); the same as :meth:`cancel` otherwise."""
        entry = self._entry
        if entry is not None and entry.stopped_by is None:
            entry.stop(by)
        else:
            self.cancel()

    def _register(self, kind: inflight.Kind = "stream") -> None:
        # In the registry of work in flight from the first read to the end. The
        # entry holds the stream weakly, so the registry keeps nothing alive.
        ref = weakref.ref(self)

        def cancel() -> None:
            stream = ref()
            if stream is not None:
                stream.cancel()

        entry = self._entry = inflight.register(kind, self.model, cancel)
        weakref.finalize(self, inflight.unregister, entry)

    def _start_deadline(self, loop: asyncio.AbstractEventLoop) -> None:
        # One timer for the stream's whole life (set when iteration starts),
        # not one per chunk: the deadline bounds the call, not each read.
        make, self._make_deadline = self._make_deadline, None
        deadline = make() if make is not None else None
        remaining = None if deadline is None else deadline.remaining()
        if deadline is not None and remaining is not None:
            self._timer = loop.call_later(remaining, self._expire, deadline)

    def _expire(self, deadline: Deadline) -> None:
        self._timer = None
        if self._done:
            return
        self._expired = deadline
        waiter = self._waiter
        if waiter is not None:
            waiter.cancel()

    async def __anext__(self) -> Chunk:
        if self._done:
            raise StopAsyncIteration
        self._loop = asyncio.get_running_loop()
        self._waiter = asyncio.current_task()
        if self._entry is None:
            self._register()
        if self._make_deadline is not None:
            self._start_deadline(self._loop)
        try:
            if self._cancel_requested:
                raise asyncio.CancelledError
            if self._expired is not None:
                raise self._expired.error()
            if self._source is None:
                self._source, self._builder = await self._opener()
            chunk = await self._source.__anext__()
        except StopAsyncIteration:
            self._waiter = None
            try:
                await self._finish(None)
            except LLMError as late:  # the answer fails its format: see _finish
                raise late from None
            raise
        except asyncio.CancelledError:
            self._waiter = None
            if self._expired is not None and not self._cancel_requested:
                # Our deadline cancelled the read: end with a TimeoutError,
                # keeping the text that arrived.
                task = asyncio.current_task()
                if task is not None and hasattr(task, "uncancel"):
                    task.uncancel()
                error = self._expired.error()
                await self._finish(error)
                raise error from None
            if not self._cancel_requested:
                # Someone cancelled the consuming task: record, then propagate.
                await self._finish(None, "cancelled")
                raise
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            await self._finish(None, "cancelled")
            raise StopAsyncIteration from None
        except BaseException as exc:
            self._waiter = None
            await self._finish(exc)
            raise
        self._waiter = None
        self._builder.add(chunk)  # type: ignore[union-attr]  # set with _source; no check per chunk
        return chunk

    async def _finish(
        self, error: BaseException | None, reason: FinishReason | None = None
    ) -> None:
        if self._done:
            return
        self._done = True
        if self._entry is not None:
            inflight.unregister(self._entry)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.aclose_source()
        completion = None
        if self._builder is not None and (error is None or not isinstance(error, LLMError)):
            completion = self._builder.build(reason)
        elif self._builder is not None and self._builder.text:
            completion = self._builder.build("error")
        self.error = error
        try:
            result = await self._finisher(completion, error)
        except LLMError as late:
            # The stream ended but its answer is unusable (it fails the
            # requested format): keep the text, and raise to the reader.
            self.completion, self.error = completion, late
            raise
        self.completion = result if result is not None else completion

    async def aclose_source(self) -> None:
        """Close the provider's generator, which closes the HTTP response."""
        source, self._source = self._source, None
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 - closing is best effort
                pass

    async def aclose(self) -> None:
        """Stop early (as when leaving an ``async for`` with ``break``)."""
        if not self._done:
            self._cancel_requested = True
            await self._finish(None, "cancelled")

    async def collect(self) -> Completion:
        """Read the stream to the end and return the completion."""
        async for _ in self:
            pass
        assert self.completion is not None
        return self.completion


_END = object()


class Stream:
    """The sync twin of :class:`AsyncStream`: iterate it in any thread.

    Chunks are read on the library's background loop into a queue, so the
    reading never waits for the consumer's rendering, and Ctrl-C, ``cancel()``
    or leaving the loop early stops the request.
    """

    def __init__(self, inner: AsyncStream) -> None:
        self._inner = inner
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._started = False
        self._lock = threading.Lock()

    @property
    def completion(self) -> Completion | None:
        """The aggregated result, once the stream has ended."""
        return self._inner.completion

    @property
    def text(self) -> str:
        """The text received so far."""
        return self._inner.text

    @property
    def cancelled(self) -> bool:
        """True once the stream was cancelled."""
        return self._inner.cancelled

    def cancel(self) -> None:
        """Stop the stream now; callable from any thread (a Stop button)."""
        self._inner.cancel()

    def stop(self, by: str = "button") -> None:
        """Stop it through the registry of work in flight, noting who stopped it."""
        self._inner.stop(by)

    def _start(self) -> None:
        from notebook_llm.core.loop import get_loop

        with self._lock:
            if self._started:
                return
            self._started = True
        get_loop().submit(self._pump())

    async def _pump(self) -> None:
        put = self._queue.put
        try:
            async for chunk in self._inner:
                put(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            put(_Raise(exc))
            return
        put(_END)

    def __iter__(self) -> Iterator[Chunk]:
        self._start()
        get = self._queue.get
        finished = False
        try:
            while True:
                try:
                    item = get(timeout=0.25)
                except queue.Empty:
                    continue
                if item is _END:
                    finished = True
                    return
                if isinstance(item, _Raise):
                    finished = True
                    raise item.error
                yield item
        finally:
            if not finished:
                # Left early, Ctrl-C, or an exception in the consumer: stop the
                # request and wait until the stream has wound down.
                self._inner.cancel()
                self._drain()

    def _drain(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                item = self._queue.get(timeout=0.25)
            except queue.Empty:
                continue
            if item is _END or isinstance(item, _Raise):
                return

    def collect(self) -> Completion:
        """Read to the end and return the completion."""
        for _ in self:
            pass
        assert self.completion is not None
        return self.completion

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.completion is None:
            self.cancel()
            if self._started:
                self._drain()


class _Raise:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def prepend_chunk(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """``first``, then the chunks of ``rest`` (closed when this one is)."""
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await aclose_quietly(rest)


async def replay_chunks(chunks: list[Chunk]) -> AsyncIterator[Chunk]:
    """Chunks already at hand, as a provider stream."""
    for chunk in chunks:
        yield chunk


def replay(completion: Completion) -> AsyncIterator[Chunk]:
    """A completion (a cache hit) as a one-chunk stream."""
    return replay_chunks(
        [
            Chunk(
                text=completion.text,
                reasoning=completion.reasoning or "",
                usage=completion.usage,
                finish_reason=completion.finish_reason,
                response_model=completion.response_model,
            )
        ]
    )


async def aclose_quietly(source: Any) -> None:
    """Close an async generator if it has ``aclose``; closing is best effort."""
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def call_on_loop(loop: asyncio.AbstractEventLoop, function: Callable[[], object]) -> None:
    """Call ``function`` on ``loop``: now when this thread runs it, else soon."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        function()
    else:
        loop.call_soon_threadsafe(function)
