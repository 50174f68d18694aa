"""A judge model's verdict on one answer, on the library's 0-1 score scale.

Every score in the library (compare's ``scorer``/``judge`` column, prompt
tests, recommendations) is a number from 0 (worst) to 1 (best). Judge models
answer more reliably on a 1-10 scale, so the judge asks for that and
:func:`ajudge` maps it onto 0-1: ``(n - 1) / 9``. The judge's own call is
returned with the verdict, so its cost can be reported apart from the models'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from notebook_llm.core.types import Completion

__all__ = ["DEFAULT_RUBRIC", "Verdict", "ajudge", "normalise"]

DEFAULT_RUBRIC = "correct, complete, clear and concise"

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


async def ajudge(
    client: Any, model: str, prompt: str, answer: str, *, rubric: str | None = None
) -> Verdict:
    """Ask ``model`` to grade ``answer`` to ``prompt`` against ``rubric``.

    The judge runs at temperature 0 and is tagged ``judge`` in the call log.
    """
    instruction = (
        "You grade answers. Reply with only a number from 1 (worst) to 10 (best).\n"
        f"Rubric: {rubric or DEFAULT_RUBRIC}\n\n"
        f"Question:\n{prompt}\n\nAnswer:\n{answer}\n\nScore:"
    )
    reply = await client.acomplete(instruction, model, temperature=0, max_tokens=16, tags=["judge"])
    match = _NUMBER.search(reply.text)
    score = normalise(float(match.group())) if match else None
    return Verdict(score, reply.text, reply)
