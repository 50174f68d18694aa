"""Per-model rate limits: requests and tokens per minute, as token buckets.

A limiter is shared by every call to one model, so a 429's Retry-After pauses
all of them at once instead of each task hammering the server separately.

Providers read the rate-limit headers of every answer (errors included) into
a :class:`RateLimitInfo`, and the core hands it to :meth:`RateLimiter.adapt`:
the buckets then follow what the server announces, with no configuration.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = ["MAX_HEADER_PAUSE_S", "RateLimit", "RateLimitInfo", "RateLimiter", "parse_duration"]

MAX_HEADER_PAUSE_S = 60.0
"""The longest announced reset :meth:`RateLimiter.adapt` waits for on its own."""

_INF = float("inf")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|s|m|h)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|s|m|h))+")


def parse_duration(value: str) -> float | None:
    """Seconds in a Go duration (``"6ms"``, ``"1m0s"``, ``"1h2m3.5s"``: OpenAI's
    ``x-ratelimit-reset-*``) or a plain number of seconds (Azure's ``"0"``);
    ``None`` for anything else, negative numbers included."""
    value = value.strip()
    if not value[-1:].isdigit():  # a unit at the end: a Go duration, or nothing
        if not _DURATION.fullmatch(value):
            return None
        return sum(float(number) * _UNITS[unit] for number, unit in _DURATION_PART.findall(value))
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < _INF else None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Requests and tokens per minute (``None``: unlimited)."""

    rpm: float | None = None
    tpm: float | None = None


# Every header name from_headers reads: one set check says whether any is there.
_NAMES = frozenset(
    [
        f"x-ratelimit-{field}-{kind}"
        for field in ("limit", "remaining", "reset", "renewalperiod")
        for kind in ("requests", "tokens")
    ]
    + [
        f"anthropic-ratelimit-{kind}-{field}"
        for kind in ("requests", "tokens", "input-tokens")
        for field in ("limit", "remaining", "reset")
    ]
)


def _count(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0 <= number < _INF else None


def _duration(value: Any) -> float | None:
    return None if value is None else parse_duration(str(value))


def _seconds_until(value: Any, now: float) -> float | None:
    # Anthropic's resets are RFC 3339 instants ("2025-07-29T09:59:33Z"); Python
    # 3.10's fromisoformat wants "+00:00" for the "Z".
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value).strip().upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What a provider's rate-limit headers said with one answer.

    The counts are the API key's (or organisation's) as a whole, so they
    include what other clients, notebooks and jobs use. ``*_reset_s`` is how
    long until the count is full again, in seconds from when the answer was
    read. ``None``: not announced.
    """

    requests_limit: float | None = None
    """Requests allowed per ``window_s``."""
    requests_remaining: float | None = None
    requests_reset_s: float | None = None
    tokens_limit: float | None = None
    """Tokens allowed per ``window_s``."""
    tokens_remaining: float | None = None
    tokens_reset_s: float | None = None
    window_s: float = 60.0
    """The period the limits count over: Azure's renewal period, else a minute."""

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, Any], now: float | None = None, *, lower_case: bool = False
    ) -> RateLimitInfo | None:
        """Read the rate-limit headers of one response; ``None`` when it has none.

        Understood: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``
        (OpenAI, Azure, LiteLLM and other proxies; resets as Go durations or
        seconds) with Azure's ``x-ratelimit-renewalperiod-*``, and Anthropic's
        ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``
        (resets as RFC 3339 instants; ``input-tokens-*`` when ``tokens-*`` is
        missing). Values that cannot be read are left out, never raised.

        Args:
            headers: the response headers; names match case-insensitively.
            now: the current ``time.time()``, for Anthropic's reset instants.
            lower_case: the names are lower-case already (this library's
                transports make them so) and need no copy. It runs on every
                answer: without any rate-limit header it then costs one set
                check over the names.
        """
        if not lower_case:
            headers = {str(name).lower(): value for name, value in headers.items()}
        if _NAMES.isdisjoint(headers):
            return None
        get = headers.get
        return cls._openai(get) or cls._anthropic(get, time.time() if now is None else now)

    @classmethod
    def _openai(cls, get: Callable[[str], Any]) -> RateLimitInfo | None:
        values = (
            _count(get("x-ratelimit-limit-requests")),
            _count(get("x-ratelimit-remaining-requests")),
            _duration(get("x-ratelimit-reset-requests")),
            _count(get("x-ratelimit-limit-tokens")),
            _count(get("x-ratelimit-remaining-tokens")),
            _duration(get("x-ratelimit-reset-tokens")),
        )
        if values == (None,) * 6:
            return None
        window = _count(get("x-ratelimit-renewalperiod-requests")) or _count(
            get("x-ratelimit-renewalperiod-tokens")
        )
        return cls(*values, window_s=window or 60.0)

    @classmethod
    def _anthropic(cls, get: Callable[[str], Any], now: float) -> RateLimitInfo | None:
        tokens = "anthropic-ratelimit-tokens-"
        if get(tokens + "limit") is None and get(tokens + "remaining") is None:
            tokens = "anthropic-ratelimit-input-tokens-"
        values = (
            _count(get("anthropic-ratelimit-requests-limit")),
            _count(get("anthropic-ratelimit-requests-remaining")),
            _seconds_until(get("anthropic-ratelimit-requests-reset"), now),
            _count(get(tokens + "limit")),
            _count(get(tokens + "remaining")),
            _seconds_until(get(tokens + "reset"), now),
        )
        return None if values == (None,) * 6 else cls(*values)


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float, level: float | None = None) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.level = per_minute if level is None else min(level, per_minute)
        self.updated = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        # Refill, then say how long until `amount` is available (0: take it now).
        self.refill()
        amount = min(amount, self.capacity)
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.rate


def _adapted(
    bucket: _Bucket | None, limit: float | None, remaining: float | None, window_s: float
) -> _Bucket | None:
    if limit and window_s > 0:
        per_minute = limit * 60.0 / window_s
        if bucket is None:
            bucket = _Bucket(per_minute)
        elif per_minute < bucket.capacity:
            bucket.refill()
            bucket = _Bucket(per_minute, bucket.level)
    if bucket is not None and remaining is not None:
        bucket.refill()
        bucket.level = min(bucket.level, remaining)
    return bucket


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

    @property
    def rpm(self) -> float | None:
        """Requests per minute in force: the user's limit or the server's, the smaller."""
        return self._requests.capacity if self._requests else None

    @property
    def tpm(self) -> float | None:
        """Tokens per minute in force: the user's limit or the server's, the smaller."""
        return self._tokens.capacity if self._tokens else None

    @property
    def paused_for(self) -> float:
        """Seconds until a pause (Retry-After, an exhausted limit) ends; 0 when none."""
        return max(0.0, self._paused_until - time.monotonic())

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` (a 429 with Retry-After)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def adapt(self, info: RateLimitInfo) -> None:
        """Follow what the server announced with an answer (see :class:`RateLimitInfo`).

        - Each bucket is created, or tightened, to the announced limit per
          minute (``limit * 60 / window_s``), so calls queue here instead of
          collecting 429s. A smaller limit set by the user is never loosened.
        - Each bucket's level drops to the announced remaining count: the key's
          budget is shared with other clients, and only the server sees them.
        - Nothing remaining and a reset at most :data:`MAX_HEADER_PAUSE_S`
          away: every caller pauses until the reset. A longer reset (a daily
          quota) is left to the server's 429 and its error, so that a notebook
          call never blocks silently for hours.
        """
        self._requests = _adapted(
            self._requests, info.requests_limit, info.requests_remaining, info.window_s
        )
        self._tokens = _adapted(
            self._tokens, info.tokens_limit, info.tokens_remaining, info.window_s
        )
        for remaining, reset in (
            (info.requests_remaining, info.requests_reset_s),
            (info.tokens_remaining, info.tokens_reset_s),
        ):
            if remaining is not None and remaining <= 0 and reset is not None:
                if 0 < reset <= MAX_HEADER_PAUSE_S:
                    self.pause(reset)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request (and ``tokens`` tokens) may be sent."""
        got_request = self._requests is None
        got_tokens = self._tokens is None or not tokens
        while True:
            delay = self._paused_until - time.monotonic()
            # A bucket, once there, stays (adapt() replaces it, never removes it):
            # got_request / got_tokens start False only when there is one.
            if delay <= 0 and not got_request:
                assert self._requests is not None
                delay = self._requests.wait_for(1)
                got_request = delay <= 0
            if delay <= 0 and not got_tokens:
                assert self._tokens is not None
                delay = self._tokens.wait_for(tokens)
                got_tokens = delay <= 0
            if delay <= 0:
                return
            self.waited_s += delay
            await asyncio.sleep(delay)
