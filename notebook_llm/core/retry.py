"""The one retry policy: exponential backoff with jitter that honours Retry-After.

The SDKs' own retries are turned off; every provider's calls go through
:func:`retry_async`, so attempts, delays and what is retried are decided here
and nowhere else.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar

from notebook_llm.core.errors import (
    RETRYABLE,
    LLMError,
    TimeoutError as LLMTimeoutError,
)
from notebook_llm.core.ratelimit import parse_duration

__all__ = ["RetryPolicy", "parse_retry_after", "retry_async"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed calls are retried.

    Args:
        max_attempts: total tries, the first included (1 disables retries).
        initial_delay: the first backoff in seconds; doubles each attempt.
        max_delay: the cap on any single wait, Retry-After included.
        jitter: the fraction of each delay randomised (avoids thundering herds).
        retry_timeouts: also retry after a timeout.
    """

    max_attempts: int = 4
    initial_delay: float = 0.5
    max_delay: float = 60.0
    jitter: float = 0.25
    retry_timeouts: bool = False

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether ``error`` on try number ``attempt`` (1-based) is worth another go."""
        if attempt >= self.max_attempts:
            return False
        if isinstance(error, LLMTimeoutError):
            return self.retry_timeouts
        return isinstance(error, RETRYABLE)

    def delay(self, error: BaseException, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1``."""
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after is not None and retry_after >= 0:
            # The server said when; add a little jitter upward only.
            return min(self.max_delay, retry_after * (1 + random.random() * self.jitter * 0.2))
        base = min(self.max_delay, self.initial_delay * 2.0 ** (attempt - 1))
        return base * (1 - self.jitter + 2 * self.jitter * random.random())


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, ``retry-after`` (seconds or an
    HTTP date), ``x-ratelimit-reset-*`` or ``anthropic-ratelimit-*-reset``."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    now = time.time() if now is None else now
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    if "retry-after" in lower:
        value = lower["retry-after"].strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                pass
    waits = []
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        if name in lower and (seconds := parse_duration(lower[name])) is not None:
            waits.append(seconds)
    for name, value in lower.items():
        if name.startswith("anthropic-ratelimit-") and name.endswith("-reset"):
            try:
                reset = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if reset.tzinfo is None:
                reset = reset.replace(tzinfo=timezone.utc)
            waits.append(max(0.0, reset.timestamp() - now))
    return max(waits) if waits else None


async def retry_async(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    before_attempt: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Await ``call()`` until it succeeds or the policy gives up.

    ``before_attempt()`` is awaited before every try (a rate limiter's
    acquire); ``on_retry(error, attempt, delay)`` hears of each retry.
    """
    attempt = 1
    while True:
        if before_attempt is not None:
            await before_attempt()
        try:
            return await call()
        except LLMError as error:
            if not policy.should_retry(error, attempt):
                raise
            delay = policy.delay(error, attempt)
            if on_retry is not None:
                on_retry(error, attempt, delay)
            await asyncio.sleep(delay)
            attempt += 1
