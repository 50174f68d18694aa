"""Bradley-Terry ratings from pairwise votes, on the Elo scale, with bootstrap intervals.

The Bradley-Terry model says model *i* beats model *j* with probability
``p_i / (p_i + p_j)``. The strengths are fitted by maximum likelihood with
the minorise-maximise iteration of Hunter (2004, "MM algorithms for
generalized Bradley-Terry models", Annals of Statistics 32(1)); a tie counts
as half a win for each side (as Chatbot Arena's published ratings do). They
are shown on the Elo scale: ``rating = 1000 + 400 * log10(p)`` with the
geometric mean of the strengths at 1000, so a 400-point gap means 10:1 odds.

With few votes a model that won (or lost) every game has no finite maximum
likelihood strength, so by default each pair of models gets ``prior``
virtual tied games (a mild pull towards the middle that real votes soon
outweigh); ``prior=0`` fits the plain maximum likelihood.

Intervals are percentile bootstrap intervals: the votes are resampled with
replacement ``resamples`` times (a fixed seed) and refitted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["ELO_BASE", "ELO_SCALE", "bootstrap_ratings", "bradley_terry", "win_matrix"]

ELO_SCALE = 400.0
ELO_BASE = 1000.0

Vote = tuple[str, str, float]
"""``(model_a, model_b, score_a)``: 1 when A won, 0 when B won, 0.5 for a tie."""


def win_matrix(votes: Sequence[Vote], models: Sequence[str], prior: float = 0.0) -> Any:
    """``W[i, j]``: (half-)wins of model ``i`` over model ``j``, plus ``prior / 2``
    virtual wins each way for every pair."""
    import numpy as np

    index = {model: i for i, model in enumerate(models)}
    wins = np.zeros((len(models), len(models)))
    for a, b, score in votes:
        i, j = index[a], index[b]
        wins[i, j] += score
        wins[j, i] += 1.0 - score
    if prior:
        wins += prior / 2
        np.fill_diagonal(wins, 0.0)
    return wins


def bradley_terry(
    votes: Sequence[Vote],
    models: Sequence[str],
    *,
    prior: float = 1.0,
    tol: float = 1e-10,
    max_iter: int = 10_000,
) -> dict[str, float]:
    """Elo-scale Bradley-Terry ratings of ``models`` from ``votes``.

    A model without any game gets :data:`ELO_BASE`. Raises ``ValueError``
    when the plain maximum likelihood (``prior=0``) does not exist (a model
    won or lost every game it played).
    """
    import numpy as np

    if not models:
        return {}
    wins = win_matrix(votes, models, prior)
    games = wins + wins.T
    played = games.sum(axis=1) > 0
    strength = np.ones(len(models))
    total_wins = wins.sum(axis=1)
    if prior == 0 and np.any(played & ((total_wins == 0) | (total_wins == games.sum(axis=1)))):
        raise ValueError(
            "a model won or lost every game, so its maximum likelihood rating is infinite: "
            "use prior > 0 or collect more votes"
        )
    for _ in range(max_iter):
        with np.errstate(divide="ignore", invalid="ignore"):
            denominator = np.where(
                games > 0, games / (strength[:, None] + strength[None, :]), 0.0
            ).sum(axis=1)
            updated = np.where(played, total_wins / denominator, 1.0)
        updated = updated / math.exp(float(np.log(updated[played]).mean())) if played.any() \
            else updated
        done = float(np.max(np.abs(updated - strength))) < tol
        strength = updated
        if done:
            break
    return {
        model: ELO_BASE + ELO_SCALE * math.log10(float(s)) if played[i] else ELO_BASE
        for i, (model, s) in enumerate(zip(models, strength, strict=True))
    }


def bootstrap_ratings(
    votes: Sequence[Vote],
    models: Sequence[str],
    *,
    prior: float = 1.0,
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """A percentile bootstrap interval of each model's rating (``level`` coverage)."""
    import numpy as np

    if not votes:
        return {model: (ELO_BASE, ELO_BASE) for model in models}
    rng = np.random.default_rng(seed)
    samples = np.empty((resamples, len(models)))
    for k in range(resamples):
        picked = rng.integers(0, len(votes), size=len(votes))
        fit = bradley_terry([votes[i] for i in picked], models, prior=prior)
        samples[k] = [fit[model] for model in models]
    tail = (1 - level) / 2 * 100
    low = np.percentile(samples, tail, axis=0)
    high = np.percentile(samples, 100 - tail, axis=0)
    return {model: (float(low[i]), float(high[i])) for i, model in enumerate(models)}
