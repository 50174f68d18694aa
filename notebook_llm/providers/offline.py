"""Offline demo models: in-process, no network, no key, free.

They exist so that a new user, Binder, CI and the cookbooks can run every
path end to end. They are demo models, not language models:

- ``offline:echo`` answers with the last user message, streamed in small chunks.
- ``offline:story`` writes a deterministic little story seeded by the prompt.
- ``offline:hash`` embeds text by feature hashing (L2-normalised, 256 dims).

Options (as keyword arguments to a call): ``chunk_delay`` (seconds between
streamed chunks, to watch streaming or try Stop), ``fail`` (raise a
``ProviderError``, to see how errors look).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
import struct
from collections.abc import AsyncIterator
from typing import Any

from notebook_llm.core.errors import ModelNotFoundError, ProviderError, did_you_mean
from notebook_llm.core.types import (
    Chunk,
    Completion,
    EmbeddingResponse,
    FinishReason,
    ModelInfo,
    Request,
    Usage,
)
from notebook_llm.providers.base import Provider

__all__ = ["OfflineProvider", "count_tokens"]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_CHUNK = re.compile(r"\s*\S+")

CHAT_MODELS = ("echo", "story")
EMBEDDING_MODELS = ("hash",)
HASH_DIMS = 256

_NOUNS = ("robot", "river", "lantern", "fox", "garden", "teapot", "comet", "violin", "map", "owl")
_PLACES = (
    "by the sea",
    "in a quiet town",
    "under the old bridge",
    "on a windy hill",
    "in the library",
)
_VERBS = ("found", "painted", "followed", "repaired", "borrowed", "sang to", "counted")
_ENDINGS = (
    "and everyone learned something new.",
    "and the day ended with tea.",
    "and nothing was ever quite the same.",
    "and it was good.",
)


def count_tokens(text: str) -> int:
    """Words and punctuation marks: the offline models' notion of a token."""
    return len(_TOKEN.findall(text))


def _last_user_text(request: Request) -> str:
    for message in reversed(request.messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


def _prompt_tokens(request: Request) -> int:
    total = count_tokens(request.system or "")
    for message in request.messages:
        total += count_tokens(str(message.get("content") or "")) + 3
    return total


def _story(seed_text: str, max_words: int) -> str:
    rng = random.Random(hashlib.sha256(seed_text.encode()).digest())
    sentences = []
    words = 0
    while words < max_words:
        sentence = (
            f"Once, {rng.choice(_PLACES)}, a {rng.choice(_NOUNS)} {rng.choice(_VERBS)} "
            f"a {rng.choice(_NOUNS)}, {rng.choice(_ENDINGS)}"
        )
        sentences.append(sentence[0].upper() + sentence[1:])
        words += len(sentence.split())
    return " ".join(sentences)


def hash_embedding(text: str, dims: int = HASH_DIMS) -> list[float]:
    """Feature hashing of words and character trigrams, L2-normalised."""
    vector = [0.0] * dims
    lowered = text.lower()
    features = _TOKEN.findall(lowered)
    padded = f"  {lowered}  "
    features += [padded[i : i + 3] for i in range(len(padded) - 2)]
    for feature in features:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        index, sign = struct.unpack("<IL", digest)
        vector[index % dims] += 1.0 if sign & 1 else -1.0
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]


class OfflineProvider(Provider):
    """The ``offline:`` demo models."""

    in_process = True

    def _answer(self, request: Request) -> str:
        if request.extra.get("fail"):
            raise ProviderError(str(request.extra["fail"]), provider=self.name, model=request.model)
        if request.model == "echo":
            return _last_user_text(request)
        if request.model == "story":
            return _story(_last_user_text(request), request.max_tokens or 60)
        raise ModelNotFoundError(
            f"No offline model {request.model!r}."
            f"{did_you_mean(request.model, CHAT_MODELS + EMBEDDING_MODELS)} Offline models are "
            f"{', '.join(CHAT_MODELS + EMBEDDING_MODELS)}",
            provider=self.name,
            model=request.model,
        )

    def _limit(self, text: str, request: Request) -> tuple[str, FinishReason]:
        # Honour max_tokens the way a real model would: cut and say "length".
        if request.max_tokens is None:
            return text, "stop"
        limit = request.max_tokens
        if count_tokens(text) <= limit:
            return text, "stop"
        # The longest run of whole pieces whose token count fits (a binary search).
        pieces = _CHUNK.findall(text)
        low, high = 0, min(len(pieces), limit)
        while low < high:
            middle = (low + high + 1) // 2
            if count_tokens("".join(pieces[:middle])) <= limit:
                low = middle
            else:
                high = middle - 1
        if low == 0:  # the first word and its punctuation are over the limit already
            return "".join(_TOKEN.findall(text)[:limit]), "length"
        return "".join(pieces[:low]), "length"

    async def complete(self, request: Request) -> Completion:
        """Answer at once."""
        text, reason = self._limit(self._answer(request), request)
        return Completion(
            text=text,
            response_model=f"offline-{request.model}",
            finish_reason=reason,
            usage=Usage(input_tokens=_prompt_tokens(request), output_tokens=count_tokens(text)),
            raw={"model": request.model, "text": text},
        )

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        """Yield the answer a word at a time."""
        text, reason = self._limit(self._answer(request), request)
        delay = float(request.extra.get("chunk_delay", 0.0))
        yield Chunk(response_model=f"offline-{request.model}")
        for piece in _CHUNK.findall(text):
            if delay:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # stay cancellable, like a network read
            yield Chunk(text=piece)
        yield Chunk(
            finish_reason=reason,
            usage=Usage(input_tokens=_prompt_tokens(request), output_tokens=count_tokens(text)),
        )

    async def embed(self, texts: list[str], model: str, **kwargs: Any) -> EmbeddingResponse:
        """Feature-hashing vectors (``offline:hash``)."""
        if model not in EMBEDDING_MODELS:
            raise ModelNotFoundError(
                f"No offline embedding model {model!r}; use 'offline:hash'",
                provider=self.name,
                model=model,
            )
        dims = int(kwargs.get("dimensions", HASH_DIMS))
        return EmbeddingResponse(
            vectors=[hash_embedding(text, dims) for text in texts],
            usage=Usage(input_tokens=sum(count_tokens(text) for text in texts)),
        )

    async def list_models(self) -> list[ModelInfo]:
        """The demo models."""
        return [
            ModelInfo(id=name, provider=self.name, owned_by="notebook-llm")
            for name in CHAT_MODELS + EMBEDDING_MODELS
        ]
