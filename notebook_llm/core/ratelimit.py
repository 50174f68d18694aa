"""Per-model rate limits: requests and tokens per minute, as token buckets.

A limiter is shared by every call to one model, so a 429's Retry-After pauses
all of them at once instead of each task hammering the server separately.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RateLimit", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Requests and tokens per minute (``None``: unlimited)."""

    rpm: float | None = None
    tpm: float | None = None


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.level = per_minute
        self.updated = time.monotonic()

    def wait_for(self, amount: float) -> float:
        # Refill, then say how long until `amount` is available (0: take it now).
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        amount = min(amount, self.capacity)
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.rate


class RateLimiter:
    """Token buckets for one model, plus a shared pause after a 429."""

    def __init__(self, limit: RateLimit | None = None) -> None:
        self.limit = limit or RateLimit()
        self._requests = _Bucket(self.limit.rpm) if self.limit.rpm else None
        self._tokens = _Bucket(self.limit.tpm) if self.limit.tpm else None
        self._paused_until = 0.0
        self.waited_s = 0.0
        """Total seconds callers spent waiting here."""

    @property
    def active(self) -> bool:
        """True when there is anything to wait for."""
        return bool(self._requests or self._tokens or self._paused_until)

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` (a 429 with Retry-After)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def adapt(self, headers: Mapping[str, str]) -> None:
        """Tighten the limits to what ``x-ratelimit-limit-*`` headers announce."""
        lower = {k.lower(): v for k, v in headers.items()}
        for name, attribute in (("requests", "_requests"), ("tokens", "_tokens")):
            value = lower.get(f"x-ratelimit-limit-{name}")
            try:
                per_minute = float(value) if value is not None else None
            except ValueError:
                per_minute = None
            bucket = getattr(self, attribute)
            if per_minute and (bucket is None or per_minute < bucket.capacity):
                setattr(self, attribute, _Bucket(per_minute))

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request (and ``tokens`` tokens) may be sent."""
        got_request = self._requests is None
        got_tokens = self._tokens is None or not tokens
        while True:
            delay = self._paused_until - time.monotonic()
            if delay <= 0 and not got_request:
                delay = self._requests.wait_for(1)  # type: ignore[union-attr]
                got_request = delay <= 0
            if delay <= 0 and not got_tokens:
                delay = self._tokens.wait_for(tokens)  # type: ignore[union-attr]
                got_tokens = delay <= 0
            if delay <= 0:
                return
            self.waited_s += delay
            await asyncio.sleep(delay)
