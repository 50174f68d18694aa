"""Model strings: ``provider:model``, aliases, and choosing a default model."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from notebook_llm.core.errors import UnknownProviderError
from notebook_llm.core.registry import get_spec, specs

__all__ = ["DEFAULT_ALIASES", "DefaultModel", "ModelRef", "parse_model"]

DEFAULT_ALIASES: dict[str, str] = {
    "echo": "offline:echo",
    "story": "offline:story",
    "smollm2": "local:smollm2",
    "4o-mini": "openai:gpt-4o-mini",
    "gpt-4o-mini": "openai:gpt-4o-mini",
    "gpt-4.1-mini": "openai:gpt-4.1-mini",
    "haiku": "anthropic:claude-haiku-4-5",
    "sonnet": "anthropic:claude-sonnet-4-5",
}

# Bare model names that clearly belong to one provider.
_PREFIX_GUESSES = (
    ("gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("chatgpt-", "openai"),
    ("text-embedding-", "openai"),
    ("claude-", "anthropic"),
)

# The model a provider uses when only its name is given (``model="offline"``).
_PROVIDER_DEFAULTS = {
    "offline": "echo",
    "local": "smollm2",
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
}


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A resolved model: which provider, and the provider's own model name."""

    provider: str
    name: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.name}"


def parse_model(model: str, aliases: Mapping[str, str] | None = None) -> ModelRef:
    """Resolve ``model`` (``provider:name``, an alias, or a well-known bare name).

    Only the first colon splits, so ``ollama:llama3.2:1b`` and
    ``local:/models/x.gguf`` work.
    """
    model = model.strip()
    table = {**DEFAULT_ALIASES, **(aliases or {})}
    seen = 0
    while model in table and seen < 10:  # aliases may point at aliases
        model = table[model]
        seen += 1
    provider, sep, name = model.partition(":")
    if sep and provider in specs():
        return ModelRef(provider, name or _PROVIDER_DEFAULTS.get(provider, ""))
    if not sep and model in specs():
        return ModelRef(model, _PROVIDER_DEFAULTS.get(model, ""))
    if not sep:
        for prefix, guess in _PREFIX_GUESSES:
            if model.startswith(prefix):
                return ModelRef(guess, model)
        raise UnknownProviderError(
            f"Cannot tell which provider serves {model!r}: write it as 'provider:{model}' "
            f"(providers: {', '.join(sorted(specs()))}) or define an alias"
        )
    get_spec(provider)  # raises with the known providers and the closest match
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class DefaultModel:
    """The model used when none is given, and why it was chosen."""

    model: str
    reason: str

    def __str__(self) -> str:
        return self.model


def choose_default(configured: str | None, keys_present: Mapping[str, bool]) -> DefaultModel | None:
    """The first of: ``NOTEBOOK_LLM_MODEL``, the configured default, a provider
    with a key. ``None`` means: try local servers and in-process models next."""
    if os.environ.get("NOTEBOOK_LLM_MODEL"):
        return DefaultModel(os.environ["NOTEBOOK_LLM_MODEL"], "NOTEBOOK_LLM_MODEL is set")
    if configured:
        return DefaultModel(configured, "configured default")
    for provider in ("openai", "anthropic"):
        if keys_present.get(provider):
            model = f"{provider}:{_PROVIDER_DEFAULTS[provider]}"
            env = get_spec(provider).info.key_env[0]
            return DefaultModel(model, f"a key for {provider} was found ({env})")
    return None
