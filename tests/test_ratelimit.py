"""Rate limits from response headers: reading them, and what the limiter does with them.

The header dicts come from recorded provider traffic (../shared/fixtures/recorded);
expected numbers are the recorded header values.
"""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from notebook_llm.core.ratelimit import (
    MAX_HEADER_PAUSE_S,
    RateLimit,
    RateLimiter,
    RateLimitInfo,
    parse_duration,
)
from notebook_llm.providers._errors import error_from_status
from tests.support.replay import load_fixture


def recorded_headers(name: str) -> dict[str, str]:
    return dict(load_fixture(name).response_headers)


def epoch(instant: str) -> float:
    return datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp()


# -- reading headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6ms", 0.006), ("20ms", 0.02), ("0s", 0.0), ("0", 0.0), ("60", 60.0), ("1m0s", 60.0),
     ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("1.5s", 1.5), (" 7s ", 7.0)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "s", "1s garbage", "-1s", "-3", "nan", "inf"])
def test_parse_duration_refuses_garbage(text: str) -> None:
    assert parse_duration(text) is None


def test_openai_headers() -> None:
    headers = recorded_headers("openai__chat_completions__0eb980349939")
    info = RateLimitInfo.from_headers(headers)
    assert info == RateLimitInfo(
        requests_limit=100000, requests_remaining=99998, requests_reset_s=0.0,
        tokens_limit=40000, tokens_remaining=39977, tokens_reset_s=pytest.approx(0.034),
        window_s=60.0,
    )  # fmt: skip


def test_names_match_in_any_case() -> None:
    headers = recorded_headers("openai__chat_completions__0eb980349939")
    expected = RateLimitInfo.from_headers(headers)
    assert expected is not None
    assert RateLimitInfo.from_headers({k.upper(): v for k, v in headers.items()}) == expected
    assert RateLimitInfo.from_headers({k.title(): v for k, v in headers.items()}) == expected
    assert RateLimitInfo.from_headers(httpx.Headers(headers)) == expected
    assert RateLimitInfo.from_headers(headers, lower_case=True) == expected


def test_litellm_proxy_headers_without_resets() -> None:
    headers = recorded_headers("litellm_proxy__chat_completions__e5707ae97266")
    info = RateLimitInfo.from_headers(headers)
    assert info == RateLimitInfo(
        requests_limit=15000, requests_remaining=14999, tokens_limit=2000000,
        tokens_remaining=1999994,
    )  # fmt: skip


def test_azure_renewal_period_sets_the_window() -> None:
    headers = recorded_headers("azure_openai__chat_completions__25cef98201eb")
    info = RateLimitInfo.from_headers(headers)
    assert info is not None
    assert (info.requests_limit, info.requests_remaining, info.requests_reset_s) == (2500, 2499, 0)
    assert (info.tokens_limit, info.tokens_remaining, info.tokens_reset_s) == (250000, 249988, 0)
    assert info.window_s == float(headers["x-ratelimit-renewalperiod-requests"]) == 60
    headers["x-ratelimit-renewalperiod-requests"] = "10"
    ten_seconds = RateLimitInfo.from_headers(headers)
    assert ten_seconds is not None and ten_seconds.window_s == 10


def test_azure_remaining_only() -> None:
    headers = recorded_headers("azure_openai__chat_completions__a636e2c088a7")
    info = RateLimitInfo.from_headers(headers)
    assert info == RateLimitInfo(requests_remaining=119, tokens_remaining=119984)


def test_anthropic_headers_with_requests() -> None:
    headers = recorded_headers("anthropic__messages__0bc6da3e74dd")
    reset = epoch(headers["anthropic-ratelimit-requests-reset"])
    info = RateLimitInfo.from_headers(headers, now=reset - 30)
    assert info == RateLimitInfo(
        requests_limit=4000, requests_remaining=3999, requests_reset_s=30.0,
        tokens_limit=480000, tokens_remaining=480000, tokens_reset_s=30.0,
    )  # fmt: skip
    # A reset already past is no wait at all.
    past = RateLimitInfo.from_headers(headers, now=reset + 3600)
    assert past is not None and past.requests_reset_s == past.tokens_reset_s == 0.0


def test_anthropic_headers_without_requests() -> None:
    headers = recorded_headers("anthropic__messages__03f16280e29c")
    reset = epoch(headers["anthropic-ratelimit-tokens-reset"])
    info = RateLimitInfo.from_headers(headers, now=reset - 5)
    assert info == RateLimitInfo(
        tokens_limit=22500000, tokens_remaining=22498000, tokens_reset_s=5.0
    )


def test_anthropic_falls_back_to_input_tokens() -> None:
    headers = {
        name: value
        for name, value in recorded_headers("anthropic__messages__03f16280e29c").items()
        if not name.startswith("anthropic-ratelimit-tokens-")
    }
    info = RateLimitInfo.from_headers(headers, now=epoch("2025-07-03T18:18:02Z"))
    assert info == RateLimitInfo(
        tokens_limit=20000000, tokens_remaining=19998000, tokens_reset_s=10.0
    )


@pytest.mark.parametrize(
    "name",
    [
        "ollama__chat_completions__bfa863f2faa2",  # no rate-limit headers at all
        "together__chat_completions__39e93ad7738b",  # x-ratelimit-limit with no kind
        "mistral__embeddings__0c932e9bba8e",  # x-ratelimit-limit-req-10-second, ...
    ],
)
def test_headers_without_known_names_give_none(name: str) -> None:
    assert RateLimitInfo.from_headers(recorded_headers(name)) is None
    assert RateLimitInfo.from_headers({}) is None


def test_garbage_values_are_left_out() -> None:
    headers = recorded_headers("openai__chat_completions__0eb980349939")
    headers.update({
        "x-ratelimit-limit-requests": "lots",
        "x-ratelimit-remaining-requests": "-3",
        "x-ratelimit-reset-requests": "soon",
        "x-ratelimit-limit-tokens": "nan",
        "x-ratelimit-renewalperiod-requests": "0",
    })  # fmt: skip
    assert RateLimitInfo.from_headers(headers) == RateLimitInfo(
        tokens_remaining=39977, tokens_reset_s=pytest.approx(0.034)
    )
    nothing_readable = {
        "x-ratelimit-limit-requests": "",
        "anthropic-ratelimit-requests-limit": "many",
        "anthropic-ratelimit-requests-reset": "yesterday",
        "anthropic-ratelimit-tokens-reset": "2025-13-45T99:00:00Z",
    }
    assert RateLimitInfo.from_headers(nothing_readable) is None


def test_errors_carry_the_rate_limits_of_their_response() -> None:
    fx = load_fixture("openai__chat_completions__720bf0910a2a")  # a recorded 400
    error = error_from_status("openai", fx.status, fx.response_body, fx.response_headers)
    assert error.rate_limits == RateLimitInfo.from_headers(fx.response_headers)
    assert error.rate_limits is not None and error.rate_limits.requests_limit == 30000
    assert "30000" not in str(error) and "30000" not in repr(error)
    assert error_from_status("openai", 500, "boom").rate_limits is None


# -- adapting the limiter ----------------------------------------------------------------


def test_adapt_creates_buckets_at_the_announced_rate() -> None:
    limiter = RateLimiter()
    assert not limiter.active and limiter.rpm is None
    limiter.adapt(RateLimitInfo(requests_limit=600, tokens_limit=90000))
    assert limiter.active
    assert (limiter.rpm, limiter.tpm) == (600, 90000)
    # Azure counts over its renewal period: 100 per 10 s is 600 a minute.
    windowed = RateLimiter()
    windowed.adapt(RateLimitInfo(requests_limit=100, tokens_limit=1000, window_s=10))
    assert (windowed.rpm, windowed.tpm) == (600, 6000)


def test_adapt_never_loosens_a_smaller_limit() -> None:
    limiter = RateLimiter(RateLimit(rpm=60))
    limiter.adapt(RateLimitInfo(requests_limit=600))
    assert limiter.rpm == 60 and limiter.limit.rpm == 60
    limiter.adapt(RateLimitInfo(requests_limit=30))  # the server is stricter: follow it
    assert limiter.rpm == 30
    limiter.adapt(RateLimitInfo(requests_limit=600))
    assert limiter.rpm == 30


def test_remaining_without_a_limit_creates_nothing() -> None:
    limiter = RateLimiter()
    limiter.adapt(RateLimitInfo(requests_remaining=5, tokens_remaining=0))
    assert not limiter.active


async def test_level_follows_the_announced_remaining() -> None:
    limiter = RateLimiter()
    # 6000 a minute refills one request every 10 ms; only 3 are left right now.
    limiter.adapt(RateLimitInfo(requests_limit=6000, requests_remaining=3))
    for _ in range(3):
        await limiter.acquire()
    assert limiter.waited_s == 0
    await limiter.acquire()
    assert limiter.waited_s > 0


async def test_nothing_remaining_pauses_until_the_reset() -> None:
    limiter = RateLimiter()
    limiter.adapt(RateLimitInfo(requests_limit=600000, requests_remaining=0, requests_reset_s=1.0))
    assert 0.9 < limiter.paused_for <= 1.0
    await limiter.acquire()
    assert limiter.waited_s >= 0.9


def test_tokens_used_up_pause_too() -> None:
    limiter = RateLimiter()
    limiter.adapt(RateLimitInfo(tokens_limit=1000, tokens_remaining=0, tokens_reset_s=2.0))
    assert 1.9 < limiter.paused_for <= 2.0


def test_a_long_reset_is_left_to_the_server() -> None:
    limiter = RateLimiter()
    # A daily quota used up: no silent hour-long wait here; the server's 429 says so.
    limiter.adapt(
        RateLimitInfo(requests_limit=200, requests_remaining=0,
                      requests_reset_s=MAX_HEADER_PAUSE_S * 60, window_s=86400)
    )  # fmt: skip
    assert limiter.paused_for == 0
    limiter.adapt(RateLimitInfo(requests_remaining=5, requests_reset_s=1.0))  # some left
    assert limiter.paused_for == 0
