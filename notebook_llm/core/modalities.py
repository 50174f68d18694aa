"""Which models read images, documents and audio, and how large each may be.

A provider's :class:`~notebook_llm.core.types.Capabilities` say what its
models can take in general (``image_input``, ``document_input``,
``audio_input``); the table here says it per model where models of one
provider differ (``gpt-3.5-turbo`` reads no images, ``gpt-4o-audio-preview``
listens, ``llava`` on Ollama sees). The first matching rule wins; a model no
rule names follows its provider's flags. :func:`register_modalities` adds a
rule (a fine-tuned or newly released model).

:func:`check_parts` runs before a call is sent: a part the model cannot take,
or one over the provider's size limit, is a clear
:class:`~notebook_llm.core.errors.UnsupportedError` /
:class:`~notebook_llm.core.errors.InvalidRequestError`, never a 400 paid for.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from notebook_llm.core.errors import InvalidRequestError, UnsupportedError
from notebook_llm.core.types import ContentPart, Modality, ProviderInfo

__all__ = ["MAX_BYTES", "check_parts", "modalities", "register_modalities"]

_IMAGE: frozenset[Modality] = frozenset({"image"})
_VISION_DOCS: frozenset[Modality] = frozenset({"image", "document"})
_NONE: frozenset[Modality] = frozenset()


@dataclass(frozen=True, slots=True)
class _Rule:
    providers: frozenset[str] | None
    """Providers the rule is for (``None``: any)."""
    pattern: re.Pattern[str]
    takes: frozenset[Modality]


def _rule(providers: str | None, pattern: str, takes: frozenset[Modality]) -> _Rule:
    names = None if providers is None else frozenset(providers.split(","))
    return _Rule(names, re.compile(pattern, re.I), takes)


# Public documentation of each family (OpenAI's and Anthropic's model pages,
# the model cards of the open vision models), most specific first.
_BUILTIN: tuple[_Rule, ...] = (
    _rule("openai,azure", r"(^|/)(gpt-4o(-mini)?-audio|gpt-audio|gpt-4o(-mini)?-realtime)",
          frozenset({"audio"})),
    _rule("openai,azure",
          r"(^|/)(gpt-3\.5|gpt-4(-0314|-0613|-32k)?$|davinci|babbage|o1-mini|o3-mini)", _NONE),
    _rule("openai,azure", r"(^|/)(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-4-turbo|gpt-4-vision|"
                          r"o1|o3|o4|chatgpt-4o)", _VISION_DOCS),
    _rule("anthropic", r"^claude-(2|instant)", _NONE),
    _rule("anthropic", r"^claude-", _VISION_DOCS),
    # Open-weight vision models, served by Ollama, vLLM, LM Studio, llama.cpp, Groq...
    _rule(None, r"(llava|bakllava|vision|[-_.]vl\b|-vl-|qwen2(\.5)?-?vl|pixtral|moondream|"
                r"minicpm-v|gemma-?3|llama-?4|internvl|idefics|smolvlm|molmo|phi-?3\.5-vision|"
                r"mistral-small-3\.[12]|granite3?\.?2?-vision)", _IMAGE),
)  # fmt: skip

_TEXT_ONLY_PROVIDERS = frozenset({"local"})
"""In-process GGUF models through llama-cpp-python: text only here."""

_extra: list[_Rule] = []
_lock = threading.Lock()

MAX_BYTES: dict[str, dict[Modality, int]] = {
    "openai": {"image": 20 * 2**20, "document": 32 * 2**20, "audio": 25 * 2**20},
    "anthropic": {"image": 5 * 2**20, "document": 32 * 2**20, "audio": 0},
    "*": {"image": 20 * 2**20, "document": 32 * 2**20, "audio": 25 * 2**20},
}
"""The largest part each provider takes, in bytes before base64 (OpenAI:
20 MB an image, 32 MB a PDF, 25 MB of audio; Anthropic: 5 MB an image,
32 MB a request). ``"*"``: every other provider."""


def register_modalities(
    model: str, *, image: bool = False, document: bool = False, audio: bool = False
) -> None:
    """Say what a model reads besides text; this rule wins over the built-in ones.

    Args:
        model: ``provider:name`` for one model, or ``provider:`` plus a regular
            expression searched in the name (``"ollama:my-vlm.*"``); without a
            provider the rule applies to that name on every provider.
        image: it takes images.
        document: it takes PDFs as files.
        audio: it takes recordings.
    """
    provider, sep, name = model.partition(":")
    if not sep:
        provider, name = "", model
    flags: tuple[tuple[Modality, bool], ...] = (
        ("image", image), ("document", document), ("audio", audio))
    takes = frozenset(m for m, on in flags if on)
    exact = re.escape(name)
    pattern = f"^{exact}$" if exact == name else f"^(?:{name})$"
    with _lock:
        _extra.insert(0, _rule(provider or None, pattern, takes))


def modalities(info: ProviderInfo, model: str) -> frozenset[Modality]:
    """What ``model`` on the provider ``info`` reads besides text."""
    if info.name in _TEXT_ONLY_PROVIDERS and not any(
        r.providers and info.name in r.providers for r in _extra
    ):
        return _NONE
    for rule in (*_extra, *_BUILTIN):
        if rule.providers is not None and info.name not in rule.providers:
            continue
        if rule.pattern.search(model):
            return rule.takes
    caps = info.capabilities
    flags: tuple[tuple[Modality, bool], ...] = (
        ("image", caps.image_input), ("document", caps.document_input),
        ("audio", caps.audio_input))
    return frozenset(m for m, on in flags if on)


_WHAT = {"image": "images", "document": "PDF documents", "audio": "audio"}


def check_parts(info: ProviderInfo, model: str, parts: Sequence[ContentPart]) -> None:
    """Raise, before anything is sent, when ``model`` cannot take one of ``parts``.

    Raises:
        UnsupportedError: the model reads no images (documents, audio).
        InvalidRequestError: a part is larger than the provider accepts.
    """
    takes = modalities(info, model)
    limits = MAX_BYTES.get(info.pricing_id or info.name) or MAX_BYTES["*"]
    for part in parts:
        modality = part.modality
        if modality is None:
            continue
        label = part.label or modality
        if modality not in takes:
            readable = ", ".join(_WHAT[m] for m in sorted(takes)) or "text only"
            raise UnsupportedError(
                f"{info.name}:{model} cannot read {_WHAT[modality]} ({label}); it takes "
                f"{readable}. Nothing was sent. Use a model that reads {_WHAT[modality]} "
                f"(for example openai:gpt-4o-mini or anthropic:claude-haiku-4-5), or "
                f"nl.register_modalities('{info.name}:{model}', {modality}=True) if it does"
            )
        limit = limits.get(modality, 0)
        if part.size > limit:
            raise InvalidRequestError(
                f"{label} is {part.size / 2**20:.1f} MB; {info.name} takes "
                f"{_WHAT[modality]} up to {limit / 2**20:.0f} MB. Nothing was sent. "
                "Shrink it (a smaller image, fewer pages) or send a part of it",
                provider=info.name,
                model=model,
            )
