"""What a call cost, from the price data bundled with ``genai-prices``.

Only the snapshot shipped inside the installed ``genai_prices`` package is
read; nothing is fetched from the network. ``genai_prices`` is imported on
first use (loading its data takes a few hundred milliseconds).

A cost is one of three things, never a guess:

- ``(0.0, "free")``: local and offline models (:data:`FREE_PROVIDERS`, or ``free=True``);
- ``(dollars, "priced")``: the price data knows the model;
- ``(None, "unpriced")``: it does not. Unknown is never reported as ``0``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from notebook_llm.core.types import Usage

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, Provider

__all__ = [
    "FREE_PROVIDERS",
    "PROVIDER_IDS",
    "CostStatus",
    "context_window",
    "estimate",
    "model_prices",
    "price",
]

logger = logging.getLogger("notebook_llm.pricing")

CostStatus = Literal["priced", "free", "unpriced"]

FREE_PROVIDERS: set[str] = {
    "offline",
    "ollama",
    "llamacpp",
    "llama_cpp",
    "lmstudio",
    "vllm",
    "mistralrs",
    "universal",
    "local",
}
"""Providers whose calls cost nothing: in-process and self-hosted servers.

A set, so a plugin serving local models can add its own name.
"""

PROVIDER_IDS: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "groq": "groq",
    "mistral": "mistral",
    "deepseek": "deepseek",
    "openrouter": "openrouter",
    "together": "together",
    "fireworks": "fireworks",
    "cerebras": "cerebras",
    "perplexity": "perplexity",
    "cohere": "cohere",
    "novita": "novita",
    "azure": "azure",
    "bedrock": "aws",
    "aws": "aws",
    "gemini": "google",
    "google": "google",
    "vertex": "google",
    "xai": "x-ai",
    "grok": "x-ai",
    "moonshot": "moonshotai",
}
"""Our provider names mapped to genai-prices provider ids.

A name not listed is looked up as it is, and only an exact id match counts:
genai-prices would otherwise match ids by substring ("my-openai-proxy" would
get OpenAI's prices).
"""

_PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


def price(
    provider: str, model: str, usage: Usage, *, free: bool = False, batch: bool = False
) -> tuple[float | None, CostStatus]:
    """The cost of one call in US dollars.

    Args:
        provider: Our provider name (``"openai"``, ``"anthropic"``, ``"ollama"``, ...).
        model: The provider's model name; a ``provider:`` prefix is allowed.
        usage: Token counts as the provider reported them, normalised to our
            :class:`~notebook_llm.core.types.Usage` (``input_tokens`` includes
            cache reads and cache writes).
        free: The call ran locally or offline and costs nothing.
        batch: The call went through the provider's batch API (discounted
            rates where the price data has them).

    Returns:
        ``(cost_usd, status)``: ``(0.0, "free")``, ``(float, "priced")`` or
        ``(None, "unpriced")``. Never raises.
    """
    if free or provider in FREE_PROVIDERS:
        return 0.0, "free"
    model = _strip_prefix(provider, model)
    found = _lookup(provider, model)
    if found is None:
        return None, "unpriced"
    rates = _simple_rates(provider, model, batch, _hour())  # None: the general calculator
    if rates is not None:
        input_rate, output_rate, read_rate, write_rate, threshold = rates
        # _usage_counts, inlined: this runs once per call.
        read = max(usage.cached_input_tokens, 0)
        write = max(usage.cache_write_tokens, 0)
        input_tokens = max(usage.input_tokens, 0)
        if read + write > input_tokens:
            input_tokens += read + write
        if input_tokens < threshold:
            # Flat per-token rates (or below the first tier): plain arithmetic,
            # about 1 µs instead of the ~100 µs of genai-prices' general calculator.
            total = (
                (input_tokens - read - write) * input_rate
                + read * read_rate
                + write * write_rate
                + max(usage.output_tokens, 0) * output_rate
            )
            return total / 1_000_000, "priced"
    counts = _usage_counts(usage)
    genai_provider, genai_model = found
    try:
        from genai_prices import Usage as PriceUsage

        result = genai_model.calc_price(
            PriceUsage(**counts),
            genai_provider,
            genai_request_timestamp=datetime.now(timezone.utc),
            price_context={"processing": "batch"} if batch else None,
        )
        return float(result.total_price), "priced"
    except Exception as exc:  # noqa: BLE001 - bad counts must not break the call that is being priced
        logger.debug("could not price %s:%s: %s", provider, model, exc)
        return None, "unpriced"


_SIMPLE_KEYS = {"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"}
# Prices for things this library never counts (searches, audio, images, 1-hour
# cache writes, which providers report lumped with 5-minute ones).
_UNCOUNTED = ("_kcount", "audio", "image", "video", "1h")


def _hour() -> int:
    # Prices can change at a date; re-reading them hourly is plenty.
    return int(time.time() // 3600)


@lru_cache(maxsize=1024)
def _simple_rates(
    provider: str, model: str, batch: bool, hour: int
) -> tuple[float, float, float, float, float] | None:
    """Per-million rates (input, output, cache read, cache write) and the input
    size up to which they hold; None when the general calculator is needed."""
    found = _lookup(provider, model)
    if found is None:
        return None
    _provider, genai_model = found
    try:
        from decimal import Decimal

        from genai_prices.types import TieredPrices

        prices = genai_model.get_prices(
            datetime.fromtimestamp(hour * 3600, timezone.utc),
            {"processing": "batch"} if batch else None,
        )
        values = {k: v for k, v in vars(prices).items() if not k.startswith("_") and v is not None}
    except Exception:  # noqa: BLE001 - fall back to the general calculator
        return None
    threshold = float("inf")
    rates: dict[str, float] = {}
    for key, value in values.items():
        if key not in _SIMPLE_KEYS:
            if key == "requests_kcount" or not any(part in key for part in _UNCOUNTED):
                return None
            continue
        if isinstance(value, TieredPrices):
            # Tiers are cliffs on the whole prompt size: below the first, the base rate.
            threshold = min([threshold, *(float(tier.start) for tier in value.tiers)])
            value = value.base
        if not isinstance(value, Decimal):
            return None
        rates[key] = float(value)
    input_rate = rates.get("input_mtok", 0.0)
    return (
        input_rate,
        rates.get("output_mtok", 0.0),
        rates.get("cache_read_mtok", input_rate),
        rates.get("cache_write_mtok", input_rate),
        threshold,
    )


def estimate(provider: str, model: str, input_tokens: int, max_output_tokens: int) -> float | None:
    """An upper bound on a call's cost, for budget checks before sending it.

    Prices every input token at the uncached rate and assumes the model writes
    ``max_output_tokens``.

    Returns:
        Dollars, ``0.0`` for free providers, or ``None`` when the model is unpriced.
    """
    usage = Usage(input_tokens=max(input_tokens, 0), output_tokens=max(max_output_tokens, 0))
    cost, _status = price(provider, model, usage)
    return cost


def model_prices(provider: str, model: str) -> dict[str, Any] | None:
    """Current prices for a model, in US dollars per million tokens, for display.

    Returns:
        ``{"provider_id", "model_id", "input_mtok", "output_mtok",
        "cache_read_mtok", "cache_write_mtok", "tiered", "free"}`` plus any
        other ``*_mtok`` price the data has; a price the model lacks is
        ``None``. Tiered prices show their base (below the first threshold)
        with ``tiered=True``. ``None`` when the model is unpriced.
    """
    model = _strip_prefix(provider, model)
    if provider in FREE_PROVIDERS:
        return {
            "provider_id": provider,
            "model_id": model,
            **dict.fromkeys(_PRICE_KEYS, 0.0),
            "tiered": False,
            "free": True,
        }
    found = _lookup(provider, model)
    if found is None:
        return None
    genai_provider, genai_model = found
    from genai_prices.types import TieredPrices

    prices = genai_model.get_prices(datetime.now(timezone.utc))
    out: dict[str, Any] = {
        "provider_id": genai_provider.id,
        "model_id": genai_model.id,
        **dict.fromkeys(_PRICE_KEYS),
    }
    tiered = False
    for key, value in vars(prices).items():
        if not key.endswith("_mtok") or value is None:
            continue
        if isinstance(value, TieredPrices):
            tiered = True
            value = value.base
        out[key] = float(value)
    out["tiered"] = tiered
    out["free"] = False
    return out


def _usage_counts(usage: Usage) -> dict[str, int]:
    """Our usage in genai-prices' terms.

    genai-prices wants ``input_tokens`` to be the whole prompt, with
    ``cache_read_tokens`` and ``cache_write_tokens`` as parts of it; it bills
    the uncached rest (input - read - write) at the input rate and each part
    at its own rate. That is our convention too (OpenAI's ``prompt_tokens``
    already include cached tokens; for Anthropic, which reports the three
    counts separately, the provider sums them into ``input_tokens``).
    If the parts exceed the total, the provider passed Anthropic's raw,
    uncached ``input_tokens``: add the parts back rather than fail.

    ``output_tokens`` already include reasoning tokens, billed at the output
    rate; they are passed as ``output_reasoning_tokens`` too, which only
    matters for the rare model that prices reasoning separately.
    """
    cache_read = max(usage.cached_input_tokens, 0)
    cache_write = max(usage.cache_write_tokens, 0)
    input_tokens = max(usage.input_tokens, 0)
    if cache_read + cache_write > input_tokens:
        input_tokens += cache_read + cache_write
    output_tokens = max(usage.output_tokens, 0)
    counts = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cache_read:
        counts["cache_read_tokens"] = cache_read
    if cache_write:
        # Anthropic's 1-hour cache writes cost more; providers report them
        # lumped with 5-minute writes, which are billed at cache_write_mtok.
        counts["cache_write_tokens"] = cache_write
    if 0 < usage.reasoning_tokens <= output_tokens:
        counts["output_reasoning_tokens"] = usage.reasoning_tokens
    return counts


def context_window(provider: str, model: str) -> int | None:
    """The model's context window in tokens, from the genai-prices data; ``None``
    when unknown (and for the free local and demo providers, which it does not list)."""
    if provider in FREE_PROVIDERS:
        return None
    found = _lookup(provider, _strip_prefix(provider, model))
    window = getattr(found[1], "context_window", None) if found is not None else None
    return int(window) if window else None


def _strip_prefix(provider: str, model: str) -> str:
    prefix = f"{provider}:"
    return model[len(prefix) :] if model.startswith(prefix) else model


@lru_cache(maxsize=1024)
def _lookup(provider: str, model: str) -> tuple[Provider, ModelInfo] | None:
    """The genai-prices provider and model for ours, or None when unpriced."""
    provider_id = PROVIDER_IDS.get(provider, provider.lower())
    try:
        from genai_prices.data_snapshot import get_snapshot

        found_provider, found_model = get_snapshot().find_provider_model(
            model, None, provider_id, None
        )
    except LookupError:
        return None
    except Exception as exc:  # noqa: BLE001 - genai-prices missing or broken: costs become unknown
        logger.debug("price data unavailable: %s", exc)
        return None
    if found_provider.id != provider_id:
        return None
    return found_provider, found_model
