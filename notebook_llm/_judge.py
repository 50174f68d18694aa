"""A judge model's verdict on one answer, on the library's 0-1 score scale.

Every score in the library (compare's ``scorer``/``judge`` column, prompt
tests, recommendations) is a number from 0 (worst) to 1 (best). Judge models
answer more reliably on a 1-10 scale, so the judge asks for that and
:func:`ajudge` maps it onto 0-1: ``(n - 1) / 9``. The judge's own call is
returned with the verdict, so its cost can be reported apart from the models'.

The judge runs at temperature 0 and, where the provider accepts one
(OpenAI-protocol and local models), with a fixed ``seed`` (:data:`JUDGE_SEED`),
so scoring the same answer twice gives the same verdict as far as the provider
allows. Anthropic's API takes no seed; it is not sent there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from notebook_llm.core.types import Completion

__all__ = ["DEFAULT_RUBRIC", "JUDGE_SEED", "Verdict", "accepts_seed", "ajudge", "normalise"]

DEFAULT_RUBRIC = "correct, complete, clear and concise"

JUDGE_SEED = 1234
"""The seed every judge call sends where the provider accepts one."""

_SEEDED_PROTOCOLS = frozenset({"openai", "local"})

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's score for one answer."""

    score: float | None
    """0 (worst) to 1 (best); ``None`` when the judge's reply held no number."""
    reply: str
    """The judge's reply, as written."""
    completion: Completion | None = None
    """The judge's own call: its usage and cost, reported apart from the models'."""

    @property
    def cost_usd(self) -> float | None:
        return self.completion.cost_usd if self.completion is not None else None


def normalise(raw: float, low: float = 1.0, high: float = 10.0) -> float:
    """Map a score on ``low..high`` onto 0-1, clamped."""
    if high <= low:
        raise ValueError("high must be greater than low")
    return min(1.0, max(0.0, (raw - low) / (high - low)))


def accepts_seed(client: Any, model: str) -> bool:
    """Whether ``model``'s provider takes a ``seed`` parameter (OpenAI protocol, local)."""
    from notebook_llm.core.errors import LLMError
    from notebook_llm.core.registry import get_spec

    try:
        provider = client.resolve(model).provider
        return get_spec(provider).info.protocol in _SEEDED_PROTOCOLS
    except (LLMError, ValueError, AttributeError):
        return False


async def ajudge(
    client: Any,
    model: str,
    prompt: str,
    answer: str,
    *,
    rubric: str | None = None,
    seed: int | None = JUDGE_SEED,
) -> Verdict:
    """Ask ``model`` to grade ``answer`` to ``prompt`` against ``rubric``.

    The judge runs at temperature 0, with ``seed`` where the provider accepts
    one (``None``: never), and is tagged ``judge`` in the call log.
    """
    instruction = (
        "You grade answers. Reply with only a number from 1 (worst) to 10 (best).\n"
        f"Rubric: {rubric or DEFAULT_RUBRIC}\n\n"
        f"Question:\n{prompt}\n\nAnswer:\n{answer}\n\nScore:"
    )
    extra: dict[str, Any] = {}
    if seed is not None and accepts_seed(client, model):
        extra["seed"] = seed
    reply = await client.acomplete(
        instruction, model, temperature=0, max_tokens=16, tags=["judge"], **extra
    )
    match = _NUMBER.search(reply.text)
    score = normalise(float(match.group())) if match else None
    return Verdict(score, reply.text, reply)
