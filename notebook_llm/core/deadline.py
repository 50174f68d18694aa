"""Deadlines: a ``timeout=`` bounds the whole call, not each read.

Transports apply their timeout to connecting and to each wait for data, so a
server that drips a byte every few seconds never trips them. The core sets one
deadline when a call starts and ends the call when it passes, wherever the
call is waiting then: in the rate limiter, between retries, or reading. A
stream keeps one timer for its whole life, not one per chunk, so the hot path
pays nothing per token.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import sys
import time
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

from notebook_llm.core.errors import LLMError, TimeoutError as LLMTimeoutError

__all__ = ["Deadline", "within"]

T = TypeVar("T")


class Deadline:
    """The moment (``loop.time()``, i.e. monotonic) by which a call must end.

    Args:
        timeout: seconds from now; ``None`` or ``0`` means no deadline.
        provider: named in the error raised when it passes.
        model: named in the error raised when it passes.
    """

    __slots__ = ("at", "model", "provider", "started", "timeout")

    def __init__(
        self, timeout: float | None, *, provider: str | None = None, model: str | None = None
    ) -> None:
        self.timeout = timeout if timeout and timeout > 0 else None
        self.started = time.monotonic()
        self.at = None if self.timeout is None else self.started + self.timeout
        self.provider = provider
        self.model = model

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a deadline."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def error(self) -> LLMTimeoutError:
        """The error a call that ran past this deadline ends with."""
        return LLMTimeoutError(
            f"No complete answer within timeout={self.timeout:g}s",
            provider=self.provider,
            model=self.model,
        )


class _Deadlines:
    """Every pending :func:`within` deadline on one event loop, behind one loop timer.

    ``asyncio.timeout_at`` costs a ``TimerHandle`` per call, pushed into and
    popped from the loop's heap with Python-level comparisons: about 10 µs a
    call with 64 calls in flight, a tenth of what the rest of a call costs.
    Here a deadline is a small list in a private heap (C comparisons), and
    the loop holds a single timer, for the earliest one. Deadlines of calls
    that ended are dropped lazily: when they reach the top of the heap, or all
    at once when they make up most of it.
    """

    __slots__ = ("handle", "handle_at", "heap", "stale")

    def __init__(self) -> None:
        # No reference to the loop: it is the key of a weak dictionary.
        self.heap: list[list[Any]] = []
        self.handle: asyncio.TimerHandle | None = None
        self.handle_at = math.inf
        self.stale = 0  # entries of ended calls still in the heap

    def add(self, at: float, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> list[Any]:
        # [when, order, task (None once the call ended), expired]
        entry = [at, next(_order), task, False]
        heapq.heappush(self.heap, entry)
        if at < self.handle_at:
            self._schedule(at, loop)
        return entry

    def discard(self, entry: list[Any]) -> None:
        """The call ended before its deadline."""
        entry[2] = None
        self.stale += 1
        heap = self.heap
        if self.stale > 64 and self.stale * 2 > len(heap):
            heap[:] = [e for e in heap if e[2] is not None]
            heapq.heapify(heap)
            self.stale = 0

    def _schedule(self, at: float, loop: asyncio.AbstractEventLoop) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.handle = loop.call_at(at, self._fire, loop)
        self.handle_at = at

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.handle, self.handle_at = None, math.inf
        heap = self.heap
        now = loop.time()
        while heap and (heap[0][2] is None or heap[0][0] <= now):
            entry = heapq.heappop(heap)
            task = entry[2]
            if task is None:
                self.stale -= 1
                continue
            entry[2], entry[3] = None, True
            task.cancel()
        if heap:
            self._schedule(heap[0][0], loop)


_order = itertools.count()
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
    weakref.WeakKeyDictionary()
)
_last: list[Any] = [lambda: None, None]  # a weak reference to the last loop, its _Deadlines


def _deadlines(loop: asyncio.AbstractEventLoop) -> _Deadlines | None:
    """The loop's deadlines (None for a loop that takes no weak reference)."""
    last = _last
    if last[0]() is loop:
        return last[1]  # type: ignore[no-any-return]  # its _Deadlines (see _last): no cast per call
    try:
        found = _per_loop.get(loop)
        if found is None:
            found = _per_loop[loop] = _Deadlines()
        last[0], last[1] = weakref.ref(loop), found
    except TypeError:  # pragma: no cover - a loop class without weak references
        return None
    return found


async def within(deadline: Deadline, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``, cancelling it and raising the library's
    ``TimeoutError`` when ``deadline`` passes first.

    An ``LLMError`` raised inside (a provider's own timeout included) passes
    through unchanged. Cancellation follows ``asyncio.timeout``: the task is
    cancelled when the deadline passes, and a cancellation that came from
    elsewhere (``task.cancel()``, a Stop button) stays a cancellation.
    """
    if deadline.at is None:
        return await awaitable
    if sys.version_info >= (3, 11):
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        deadlines = _deadlines(loop)
        if task is None or deadlines is None:  # pragma: no cover - outside a task
            return await _within_timeout(deadline, awaitable, loop)
        cancelling = task.cancelling()
        entry = deadlines.add(loop.time() + (deadline.remaining() or 0.0), task, loop)
        try:
            result = await awaitable
        except asyncio.CancelledError:
            if entry[3] and task.uncancel() <= cancelling:
                raise deadline.error() from None  # ours: the deadline passed
            raise
        except BaseException as exc:
            if entry[3]:
                task.uncancel()
            if isinstance(exc, TimeoutError) and not isinstance(exc, LLMError):
                raise deadline.error() from None
            raise
        finally:
            if not entry[3]:
                deadlines.discard(entry)
        if entry[3]:  # the deadline passed, but the call finished anyway
            task.uncancel()
        return result
    try:  # pragma: no cover - Python 3.10
        return await asyncio.wait_for(awaitable, deadline.remaining())
    except asyncio.TimeoutError as exc:  # pragma: no cover - Python 3.10
        if isinstance(exc, LLMError):
            raise
        raise deadline.error() from None


async def _within_timeout(
    deadline: Deadline, awaitable: Awaitable[T], loop: asyncio.AbstractEventLoop
) -> T:  # pragma: no cover - awaited outside a task
    remaining = deadline.remaining() or 0.0
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout_at(loop.time() + remaining):
                return await awaitable
        else:  # asyncio.timeout_at is new in 3.11
            return await asyncio.wait_for(awaitable, remaining)
    except (TimeoutError, asyncio.TimeoutError) as exc:  # the same class from 3.11
        if isinstance(exc, LLMError):
            raise
        raise deadline.error() from None
