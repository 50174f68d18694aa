"""Offline demo models: in-process, no network, no key, free.

They exist so that a new user, Binder, CI and the cookbooks can run every
path end to end. They are demo models, not language models:

- ``offline:echo`` answers with the last user message, streamed in small chunks.
- ``offline:story`` writes a deterministic little story seeded by the prompt.
- ``offline:hash`` embeds text by feature hashing (L2-normalised, 256 dims).
- ``offline:tools`` calls tools as the prompt says, to try the tool loop: each
  line ``call NAME {"arg": 1}`` of the last user message is one round of tool
  calls (``call a {} & b {}`` asks for two at once; ``call* NAME {...}`` asks
  again every round). Once the lines are used up it answers with the results
  it got; without tools it echoes.

Options (as keyword arguments to a call): ``chunk_delay`` (seconds between
streamed chunks, to watch streaming or try Stop), ``fail`` (raise a
``ProviderError``, to see how errors look).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import struct
from collections.abc import AsyncIterator
from typing import Any

from notebook_llm.core.errors import ModelNotFoundError, ProviderError, did_you_mean
from notebook_llm.core.stream import make_tool_call
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

CHAT_MODELS = ("echo", "story", "tools")
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


_PLACEHOLDERS = {"image_url": "[image]", "file": "[document]", "input_audio": "[audio]"}


def _part_text(part: dict[str, Any]) -> str:
    """A part's text; an image, document or audio part as a placeholder, so
    ``offline:echo`` shows what it was sent without the base64 data."""
    return str(part.get("text") or _PLACEHOLDERS.get(str(part.get("type")), ""))


def _last_user_text(request: Request) -> str:
    for message in reversed(request.messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(_part_text(part) for part in content if isinstance(part, dict))
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


_DECODE = json.JSONDecoder().raw_decode


def _parse_calls(text: str) -> list[tuple[str, str]]:
    """``a {"x": 1} & b`` -> ``[("a", '{"x": 1}'), ("b", "")]``: names and the
    arguments' JSON text as written (not checked: a model may send anything)."""
    calls: list[tuple[str, str]] = []
    rest = text.strip()
    while rest:
        name, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        arguments = ""
        if rest and not rest.startswith("&"):
            try:
                _, end = _DECODE(rest)
            except ValueError:
                end = len(rest.split(" &", 1)[0])
            arguments, rest = rest[:end], rest[end:].lstrip()
        calls.append((name, arguments))
        rest = rest.removeprefix("&").lstrip()
    return calls


def _tool_round(request: Request) -> list[Any] | None:
    """The calls ``offline:tools`` asks for now, or None when it should answer."""
    if not request.tools:
        return None
    last_user = max(
        (i for i, m in enumerate(request.messages) if m.get("role") == "user"), default=-1
    )
    done = sum(1 for m in request.messages[last_user + 1 :]
               if m.get("role") == "assistant" and m.get("tool_calls"))
    lines = [line.strip() for line in _last_user_text(request).splitlines()]
    rounds = [line for line in lines if line.startswith(("call ", "call* "))]
    if not rounds:
        return None
    line = rounds[min(done, len(rounds) - 1)]
    if done >= len(rounds) and not line.startswith("call* "):
        return None
    calls = _parse_calls(line.split(" ", 1)[1])
    return [make_tool_call(f"call_{done}_{i}", name, arguments)
            for i, (name, arguments) in enumerate(calls)]


def _tool_answer(request: Request) -> str:
    """The results of this turn's tool calls (those after the last user message)."""
    results = []
    names = {}
    last_user = max(
        (i for i, m in enumerate(request.messages) if m.get("role") == "user"), default=-1
    )
    for message in request.messages[last_user + 1 :]:
        for call in message.get("tool_calls") or []:
            names[call.get("id")] = call.get("function", {}).get("name", "?")
        if message.get("role") == "tool":
            name = names.get(message.get("tool_call_id"), "?")
            results.append(f"{name}: {message.get('content')}")
    if not results:
        return _last_user_text(request)
    return "Tool results: " + "; ".join(results)


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
        if request.model == "tools":
            return _tool_answer(request)
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
        calls = _tool_round(request) if request.model == "tools" else None
        if calls:
            return Completion(
                text="", response_model="offline-tools", finish_reason="tool_calls",
                tool_calls=calls, usage=Usage(input_tokens=_prompt_tokens(request),
                                              output_tokens=len(calls) * 8),
            )
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
        calls = _tool_round(request) if request.model == "tools" else None
        if calls:
            yield Chunk(response_model="offline-tools")
            for i, call in enumerate(calls):
                await asyncio.sleep(0)
                yield Chunk(tool_calls=[{"index": i, "id": call.id, "name": call.name,
                                         "arguments": call.arguments_json}])
            yield Chunk(finish_reason="tool_calls", usage=Usage(
                input_tokens=_prompt_tokens(request), output_tokens=len(calls) * 8))
            return
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
