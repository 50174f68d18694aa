"""Costs from genai-prices' bundled data, checked against that data by hand."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from notebook_llm import pricing
from notebook_llm.core.types import Usage
from notebook_llm.pricing import FREE_PROVIDERS, estimate, model_prices, price

ROOT = Path(__file__).resolve().parents[1]
MTOK = Decimal(1_000_000)


def data_prices(provider_id: str, model: str) -> dict[str, Decimal]:
    """Per-million prices straight from genai-prices' data, for hand computation."""
    from genai_prices.data_snapshot import get_snapshot

    _provider, info = get_snapshot().find_provider_model(model, None, provider_id, None)
    prices = info.get_prices(datetime.now(timezone.utc))
    return {key: value for key, value in vars(prices).items() if isinstance(value, Decimal)}


def test_price_openai_with_cached_tokens() -> None:
    p = data_prices("openai", "gpt-4o-mini")
    assert p["cache_read_mtok"] < p["input_mtok"]  # the test means something
    usage = Usage(input_tokens=10_000, output_tokens=2_000, cached_input_tokens=6_000)
    # OpenAI: prompt_tokens include cached ones; the cached part gets the cache-read rate.
    expected = (
        4_000 * p["input_mtok"] + 6_000 * p["cache_read_mtok"] + 2_000 * p["output_mtok"]
    ) / MTOK
    cost, status = price("openai", "gpt-4o-mini", usage)
    assert status == "priced"
    assert cost == pytest.approx(float(expected), rel=1e-12)
    no_cache, _ = price("openai", "gpt-4o-mini", Usage(input_tokens=10_000, output_tokens=2_000))
    assert no_cache is not None and cost < no_cache


def test_price_accepts_provider_prefix_and_dated_model() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    plain = price("openai", "gpt-4o-mini", usage)
    assert price("openai", "openai:gpt-4o-mini", usage) == plain
    assert price("openai", "gpt-4o-mini-2024-07-18", usage) == plain


def test_price_anthropic_with_cache_read_and_write() -> None:
    model = "claude-3-5-sonnet-latest"
    p = data_prices("anthropic", model)
    assert p["cache_write_mtok"] > p["input_mtok"] > p["cache_read_mtok"]
    # Anthropic reports input 1,000 + cache read 3,000 + cache write 4,000 separately;
    # our input_tokens is their sum, as genai-prices expects.
    usage = Usage(
        input_tokens=8_000, output_tokens=500, cached_input_tokens=3_000, cache_write_tokens=4_000
    )
    expected = (
        1_000 * p["input_mtok"]
        + 3_000 * p["cache_read_mtok"]
        + 4_000 * p["cache_write_mtok"]
        + 500 * p["output_mtok"]
    ) / MTOK
    cost, status = price("anthropic", model, usage)
    assert status == "priced"
    assert cost == pytest.approx(float(expected), rel=1e-12)


def test_price_anthropic_raw_uncached_input_is_not_undercounted() -> None:
    # A provider that forgot to sum Anthropic's counts (input < cache read + write)
    # is priced as if it had: never an error, never a negative uncached count.
    model = "claude-3-5-sonnet-latest"
    summed = Usage(
        input_tokens=8_000, output_tokens=500, cached_input_tokens=3_000, cache_write_tokens=4_000
    )
    raw = Usage(
        input_tokens=1_000, output_tokens=500, cached_input_tokens=3_000, cache_write_tokens=4_000
    )
    assert price("anthropic", model, raw) == price("anthropic", model, summed)


def test_price_reasoning_tokens_billed_as_output() -> None:
    p = data_prices("openai", "o3-mini")
    usage = Usage(input_tokens=1_000, output_tokens=5_000, reasoning_tokens=4_200)
    expected = (1_000 * p["input_mtok"] + 5_000 * p["output_mtok"]) / MTOK
    cost, status = price("openai", "o3-mini", usage)
    assert status == "priced"
    assert cost == pytest.approx(float(expected), rel=1e-12)
    without_reasoning_count = Usage(input_tokens=1_000, output_tokens=5_000)
    assert price("openai", "o3-mini", without_reasoning_count) == (cost, "priced")


def test_price_batch_is_discounted() -> None:
    usage = Usage(input_tokens=100_000, output_tokens=10_000)
    standard, _ = price("openai", "gpt-4o-mini", usage)
    batch, status = price("openai", "gpt-4o-mini", usage, batch=True)
    assert status == "priced"
    assert standard is not None and batch is not None and batch < standard


@pytest.mark.parametrize(
    "provider", ["offline", "ollama", "llamacpp", "lmstudio", "vllm", "mistralrs", "universal"]
)
def test_price_free_providers(provider: str) -> None:
    assert provider in FREE_PROVIDERS
    assert price(provider, "anything", Usage(input_tokens=10**6, output_tokens=10**6)) == (
        0.0,
        "free",
    )
    assert estimate(provider, "anything", 1000, 1000) == 0.0
    prices = model_prices(provider, "anything")
    assert prices is not None and prices["free"] is True and prices["input_mtok"] == 0.0


def test_price_free_flag_overrides_known_model() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    assert price("openai", "gpt-4o-mini", usage, free=True) == (0.0, "free")


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-nonexistent-9000"),
        ("anthropic", "claude-imaginary"),
        ("no-such-provider", "gpt-4o-mini"),
        ("my-openai-proxy", "gpt-4o-mini"),  # no substring matching on provider ids
    ],
)
def test_price_unknown_is_unpriced_never_zero(provider: str, model: str) -> None:
    cost, status = price(provider, model, Usage(input_tokens=1_000, output_tokens=1_000))
    assert cost is None
    assert status == "unpriced"
    assert estimate(provider, model, 1_000, 1_000) is None
    assert model_prices(provider, model) is None


def test_price_zero_tokens_is_priced_zero() -> None:
    assert price("openai", "gpt-4o-mini", Usage()) == (0.0, "priced")


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("groq", "llama-3.1-8b-instant"),
        ("mistral", "mistral-small-latest"),
        ("deepseek", "deepseek-chat"),
        ("openrouter", "openai/gpt-4o-mini"),
        ("xai", "grok-3"),
        ("gemini", "gemini-2.0-flash"),
    ],
)
def test_price_other_providers_map_to_price_data(provider: str, model: str) -> None:
    cost, status = price(provider, model, Usage(input_tokens=1_000, output_tokens=1_000))
    assert status == "priced"
    assert cost is not None and cost > 0


def test_estimate_is_an_upper_bound() -> None:
    p = data_prices("openai", "gpt-4o-mini")
    bound = estimate("openai", "gpt-4o-mini", 10_000, 1_000)
    assert bound == pytest.approx(
        float((10_000 * p["input_mtok"] + 1_000 * p["output_mtok"]) / MTOK)
    )
    actual, _ = price(
        "openai",
        "gpt-4o-mini",
        Usage(input_tokens=10_000, output_tokens=700, cached_input_tokens=5_000),
    )
    assert actual is not None and actual <= bound


def test_model_prices_per_million() -> None:
    p = data_prices("anthropic", "claude-3-5-sonnet-latest")
    prices = model_prices("anthropic", "claude-3-5-sonnet-latest")
    assert prices is not None
    assert prices["provider_id"] == "anthropic"
    assert prices["input_mtok"] == float(p["input_mtok"])
    assert prices["output_mtok"] == float(p["output_mtok"])
    assert prices["cache_read_mtok"] == float(p["cache_read_mtok"])
    assert prices["cache_write_mtok"] == float(p["cache_write_mtok"])
    assert prices["free"] is False
    openai = model_prices("openai", "gpt-4o-mini")
    assert openai is not None and openai["cache_write_mtok"] is None  # OpenAI has no write price


def test_lookup_is_cached() -> None:
    pricing._lookup.cache_clear()
    usage = Usage(input_tokens=1, output_tokens=1)
    price("openai", "gpt-4o-mini", usage)
    price("openai", "gpt-4o-mini", usage)
    info = pricing._lookup.cache_info()
    assert info.misses == 1 and info.hits == 1


def test_import_does_not_load_genai_prices() -> None:
    code = (
        "import sys; import notebook_llm.pricing; "
        "assert 'genai_prices' not in sys.modules, 'genai_prices imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-4o-mini"), ("openai", "o3-mini"), ("openai", "gpt-4.1"),
     ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-haiku-4-5"),
     ("groq", "llama-3.1-8b-instant")],
)
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("prompt_tokens", [1_000, 300_000])
def test_price_fast_path_matches_genai_prices_calculator(
    provider: str, model: str, batch: bool, prompt_tokens: int
) -> None:
    from genai_prices import Usage as PriceUsage

    usage = Usage(input_tokens=prompt_tokens, output_tokens=200, cached_input_tokens=100,
                  cache_write_tokens=50 if provider == "anthropic" else 0)
    found = pricing._lookup(provider, model)
    assert found is not None
    expected = found[1].calc_price(
        PriceUsage(**pricing._usage_counts(usage)), found[0],
        price_context={"processing": "batch"} if batch else None,
    )
    cost, status = pricing.price(provider, model, usage, batch=batch)
    assert status == "priced"
    assert cost == pytest.approx(float(expected.total_price), rel=1e-12)


@pytest.mark.parametrize(
    ("value", "status", "shown"),
    [
        (0.000123, "priced", "$0.000123"),
        (0.0123, "priced", "$0.0123"),
        (12.3456, "priced", "$12.3456"),
        (1234.5, "priced", "$1,234.50"),
        (0.0, "priced", "$0"),
        (-0.5, "priced", "-$0.5000"),
        (None, "unpriced", "unpriced"),
        (float("nan"), "priced", "unpriced"),
        (0.0, "free", "free"),
        (0.0, "cached", "$0 (cached)"),
    ],
)
def test_one_money_format_everywhere(value: float | None, status: str, shown: str) -> None:
    from notebook_llm.core.money import format_usd

    assert format_usd(value, status) == shown
