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
import sys
import time
from collections.abc import Awaitable
from typing import TypeVar

from notebook_llm.core.errors import LLMError
from notebook_llm.core.errors import TimeoutError as LLMTimeoutError

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


async def within(deadline: Deadline, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``, cancelling it and raising the library's
    ``TimeoutError`` when ``deadline`` passes first.

    An ``LLMError`` raised inside (a provider's own timeout included) passes
    through unchanged.
    """
    if deadline.at is None:
        return await awaitable
    if sys.version_info >= (3, 11):
        # asyncio.timeout_at needs no extra task (wait_for makes one before 3.12).
        loop_at = asyncio.get_running_loop().time() + (deadline.remaining() or 0.0)
        try:
            async with asyncio.timeout_at(loop_at):
                return await awaitable
        except TimeoutError as exc:
            if isinstance(exc, LLMError):
                raise
            raise deadline.error() from None
    try:  # pragma: no cover - Python 3.10
        return await asyncio.wait_for(awaitable, deadline.remaining())
    except asyncio.TimeoutError as exc:  # pragma: no cover - Python 3.10
        if isinstance(exc, LLMError):
            raise
        raise deadline.error() from None
