"""Which providers exist: the built-in ones, and third-party ones from entry points.

Built-in providers are registered through the same function as plugins, with
their classes named by import path so nothing heavy is imported until a
provider is first used. Third-party packages add providers through the
``notebook_llm.providers`` entry-point group; an entry point names a
:class:`~notebook_llm.providers.base.Provider` subclass with an ``INFO``
attribute (a :class:`ProviderInfo`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from notebook_llm.core.errors import UnknownProviderError, did_you_mean
from notebook_llm.core.types import Capabilities, ProviderInfo

if TYPE_CHECKING:
    from notebook_llm.providers.base import Provider

__all__ = [
    "ENTRY_POINT_GROUP",
    "ProviderSpec",
    "get_spec",
    "provider_names",
    "register_provider",
    "specs",
]

ENTRY_POINT_GROUP = "notebook_llm.providers"


@dataclass(slots=True)
class ProviderSpec:
    """A provider's record plus how to build it."""

    info: ProviderInfo
    target: type[Provider] | str
    """The Provider class, or ``"module:Class"`` to import on first use."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the class (presets of one protocol differ here)."""

    def load(self) -> type[Provider]:
        """The provider class, imported if needed."""
        if isinstance(self.target, str):
            module, _, name = self.target.partition(":")
            loaded: type[Provider] = getattr(importlib.import_module(module), name)
            self.target = loaded
        return self.target


_specs: dict[str, ProviderSpec] = {}
_plugins_loaded = False

_CHAT = Capabilities(streaming=True, tools=True, structured_output=True, list_models=True)
_OPENAI = "notebook_llm.providers.openai:OpenAIProvider"


def register_provider(info: ProviderInfo, target: Any, **settings: Any) -> None:
    """Add (or replace) a provider under ``info.name``."""
    _specs[info.name] = ProviderSpec(info, target, settings)


def _compatible(
    name: str,
    description: str,
    base_url: str | None,
    key_env: str,
    *,
    local: bool = False,
    capabilities: Capabilities = _CHAT,
    pricing_id: str | None = None,
) -> None:
    env_prefix = name.upper().replace("-", "_")
    register_provider(
        ProviderInfo(
            name=name,
            protocol="openai",
            description=description,
            capabilities=capabilities,
            key_env=(key_env,),
            base_url_env=f"{env_prefix}_BASE_URL",
            default_base_url=base_url,
            key_required=not local,
            free=local,
            pricing_id=pricing_id,
        ),
        _OPENAI,
    )


def _register_builtins() -> None:
    register_provider(
        ProviderInfo(
            name="openai",
            protocol="openai",
            description="OpenAI API (official openai SDK)",
            capabilities=Capabilities(
                streaming=True,
                tools=True,
                structured_output=True,
                reasoning=True,
                image_input=True,
                embeddings=True,
                list_models=True,
                batch=True,
            ),
            key_env=("OPENAI_API_KEY",),
            base_url_env="OPENAI_BASE_URL",
            default_base_url="https://api.openai.com/v1",
        ),
        _OPENAI,
    )
    register_provider(
        ProviderInfo(
            name="anthropic",
            protocol="anthropic",
            description="Anthropic Messages API (official anthropic SDK)",
            capabilities=Capabilities(
                streaming=True,
                tools=True,
                structured_output=True,
                reasoning=True,
                image_input=True,
                list_models=True,
                batch=True,
            ),
            key_env=("ANTHROPIC_API_KEY",),
            base_url_env="ANTHROPIC_BASE_URL",
            default_base_url="https://api.anthropic.com",
        ),
        "notebook_llm.providers.anthropic:AnthropicProvider",
    )
    local_caps = Capabilities(
        streaming=True,
        tools=True,
        structured_output=True,
        reasoning=True,
        embeddings=True,
        list_models=True,
    )
    _compatible(
        "ollama",
        "Ollama on this machine",
        "http://127.0.0.1:11434/v1",
        "OLLAMA_API_KEY",
        local=True,
        capabilities=local_caps,
    )
    _compatible(
        "lmstudio",
        "LM Studio's local server",
        "http://127.0.0.1:1234/v1",
        "LMSTUDIO_API_KEY",
        local=True,
        capabilities=local_caps,
    )
    _compatible(
        "llamacpp",
        "llama.cpp server (llama-server or llama-cpp-python)",
        "http://127.0.0.1:8080/v1",
        "LLAMACPP_API_KEY",
        local=True,
        capabilities=local_caps,
    )
    _compatible(
        "vllm",
        "vLLM's OpenAI-compatible server",
        "http://127.0.0.1:8000/v1",
        "VLLM_API_KEY",
        local=True,
        capabilities=local_caps,
    )
    _compatible(
        "mistralrs",
        "mistral.rs server",
        "http://127.0.0.1:1234/v1",
        "MISTRALRS_API_KEY",
        local=True,
        capabilities=local_caps,
    )
    _compatible(
        "universal",
        "Universal Runtime",
        "http://127.0.0.1:11540/v1",
        "UNIVERSAL_API_KEY",
        local=True,
        capabilities=local_caps,
    )
    _compatible(
        "groq",
        "Groq",
        "https://api.groq.com/openai/v1",
        "GROQ_API_KEY",
        capabilities=Capabilities(
            streaming=True,
            tools=True,
            structured_output=True,
            reasoning=True,
            image_input=True,
            list_models=True,
            batch=True,
        ),
    )
    _compatible(
        "mistral",
        "Mistral AI",
        "https://api.mistral.ai/v1",
        "MISTRAL_API_KEY",
        capabilities=Capabilities(
            streaming=True,
            tools=True,
            structured_output=True,
            image_input=True,
            embeddings=True,
            list_models=True,
        ),
    )
    _compatible(
        "deepseek",
        "DeepSeek",
        "https://api.deepseek.com",
        "DEEPSEEK_API_KEY",
        capabilities=Capabilities(
            streaming=True, tools=True, structured_output=True, reasoning=True, list_models=True
        ),
    )
    _compatible(
        "openrouter",
        "OpenRouter (many providers behind one key)",
        "https://openrouter.ai/api/v1",
        "OPENROUTER_API_KEY",
        capabilities=Capabilities(
            streaming=True,
            tools=True,
            structured_output=True,
            reasoning=True,
            image_input=True,
            list_models=True,
        ),
    )
    _compatible(
        "together",
        "Together AI",
        "https://api.together.xyz/v1",
        "TOGETHER_API_KEY",
        capabilities=Capabilities(
            streaming=True, tools=True, structured_output=True, embeddings=True, list_models=True
        ),
        pricing_id="together",
    )
    _compatible(
        "openai-compatible",
        "Any OpenAI-compatible server: pass api_base=...",
        None,
        "OPENAI_COMPATIBLE_API_KEY",
        local=False,
        capabilities=Capabilities(
            streaming=True, tools=True, structured_output=True, embeddings=True, list_models=True
        ),
    )
    register_provider(
        ProviderInfo(
            name="offline",
            protocol="offline",
            description="Demo models in-process: offline:echo, offline:story, offline:hash",
            capabilities=Capabilities(
                streaming=True,
                tools=False,
                structured_output=False,
                embeddings=True,
                list_models=True,
            ),
            key_required=False,
            free=True,
        ),
        "notebook_llm.providers.offline:OfflineProvider",
    )
    register_provider(
        ProviderInfo(
            name="local",
            protocol="local",
            description="GGUF models in-process via llama-cpp-python (local:smollm2, local:minilm)",
            capabilities=Capabilities(
                streaming=True,
                tools=False,
                structured_output=True,
                embeddings=True,
                list_models=True,
            ),
            key_required=False,
            free=True,
        ),
        "notebook_llm.providers.local:LocalProvider",
    )


def _load_plugins() -> None:
    global _plugins_loaded
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the library
            import warnings

            warnings.warn(f"could not load provider plugin {entry.name!r}: {exc}", stacklevel=2)
            continue
        register_provider(target.INFO, target)


def specs() -> dict[str, ProviderSpec]:
    """Every registered provider, plugins included, by name."""
    if not _specs:
        _register_builtins()
    if not _plugins_loaded:
        _load_plugins()
    return _specs


def provider_names() -> list[str]:
    """Names of all registered providers."""
    return list(specs())


def get_spec(name: str) -> ProviderSpec:
    """The spec for ``name``; an unknown name lists the known ones and the closest."""
    table = specs()
    try:
        return table[name]
    except KeyError:
        raise UnknownProviderError(
            f"Unknown provider {name!r}.{did_you_mean(name, table)} "
            f"Known providers: {', '.join(sorted(table))}"
        ) from None
