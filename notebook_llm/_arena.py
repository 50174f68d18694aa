"""A blind arena: two anonymous answers to one prompt, a person votes, ratings follow.

``nl.arena(prompts, models=[...])`` pairs two of the models on each prompt, in a
shuffled order, streams both answers side by side as "A" and "B", and asks
which is better: 👍 A, 👍 B, tie, or both bad. The models' names show only
after the vote. Votes go to the ``arena_votes`` table of the call log's
database as they are cast, so a restarted kernel resumes where it stopped
(the same prompts and models, or the same ``name=``, give the same arena and
the same schedule). ``arena.results()`` fits Bradley-Terry ratings
(:mod:`notebook_llm._ratings`) with intervals, win rates and cost per answer.

Frontends: widgets in a Jupyter kernel (``notebook_llm.notebook._arena_view``,
found through :mod:`notebook_llm._views`), ``input()`` anywhere else. Where
no one can answer (nbval, papermill: no stdin, no clicks) it stops with the
votes it has; a widget view never blocks the cell.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import itertools
import json
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from notebook_llm import _views
from notebook_llm._api import default_client
from notebook_llm.core import loop as _loop
from notebook_llm.core.errors import LLMError, redact
from notebook_llm.core.money import format_usd
from notebook_llm.core.types import Completion
from notebook_llm.store.log import call_log

__all__ = ["CHOICES", "Arena", "ArenaResults", "Matchup", "arena"]

Choice = Literal["a", "b", "tie", "both_bad"]

CHOICES: dict[str, str] = {"a": "👍 A", "b": "👍 B", "tie": "Tie", "both_bad": "Both bad"}
"""The votes, and the label each one's button carries."""

_TEXT_KEYS = {"a": "a", "b": "b", "t": "tie", "tie": "tie", "x": "both_bad", "bad": "both_bad",
              "both bad": "both_bad", "both_bad": "both_bad"}
_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}

@dataclass
class Matchup:
    """One prompt put to two anonymous models."""

    index: int
    prompt: str
    model_a: str
    model_b: str
    text_a: str = ""
    text_b: str = ""
    completion_a: Completion | None = None
    completion_b: Completion | None = None
    error_a: str | None = None
    error_b: str | None = None
    status: Literal["pending", "streaming", "ready"] = "pending"
    vote: Choice | None = None

    def answer(self, side: str) -> str:
        """Side ``"a"`` or ``"b"``'s text, or its error."""
        error = self.error_a if side == "a" else self.error_b
        text = self.text_a if side == "a" else self.text_b
        return f"[{error}]" if error and not text else text

    def reveal(self) -> str:
        """Who was who, and the vote: shown only once it is cast."""
        if self.vote is None:
            return "Vote first: the names show after the vote."
        verdict = {"a": f"You preferred A ({self.model_a})",
                   "b": f"You preferred B ({self.model_b})",
                   "tie": "A tie", "both_bad": "Both bad"}[self.vote]
        return f"{verdict}. A was {self.model_a}, B was {self.model_b}."


class Arena:
    """Blind pairwise votes on ``prompts`` between ``models``; see :func:`arena`."""

    def __init__(
        self,
        prompts: Sequence[str],
        models: Sequence[str],
        *,
        name: str | None = None,
        system: str | None = None,
        client: Any = None,
        db_path: Any = None,
        **params: Any,
    ) -> None:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        models = list(models)
        if not prompts:
            raise ValueError("arena() needs at least one prompt")
        if len(models) < 2 or len(set(models)) != len(models):
            raise ValueError("arena() needs at least two different models, e.g. "
                             "models=['openai:gpt-4o-mini', 'anthropic:claude-haiku-4-5']")
        self.prompts, self.models, self.system, self.params = prompts, models, system, params
        self.client = client
        self.db_path = db_path
        identity = json.dumps([prompts, models, system, sorted(params.items())], default=repr)
        self.id = name or f"arena-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
        """The arena's identity in the database: its name, else a hash of what it asks."""
        self.matchups = _schedule(self.id, prompts, models)
        self.view: Any = None
        """The widget view, when one is shown."""
        self._lock = threading.Lock()
        for row in self._rows():
            index = int(row["matchup"])
            if index < len(self.matchups):
                m = self.matchups[index]
                m.vote, m.status = row["winner"], "ready"
                m.text_a, m.text_b = str(row["answer_a"] or ""), str(row["answer_b"] or "")

    def __repr__(self) -> str:
        return (f"<Arena {self.id!r}: {len(self.models)} models, "
                f"{self.voted} of {len(self.matchups)} voted>")

    @property
    def voted(self) -> int:
        """Matchups voted on so far (this session and earlier ones)."""
        return sum(m.vote is not None for m in self.matchups)

    def next_matchup(self) -> Matchup | None:
        """The first matchup without a vote, or ``None`` when all are voted."""
        return next((m for m in self.matchups if m.vote is None), None)

    # -- answers -----------------------------------------------------------------------

    async def astream(
        self, matchup: Matchup, on_update: Callable[[Matchup], None] | None = None
    ) -> Matchup:
        """Stream both answers at once; ``on_update(matchup)`` after each piece."""
        client = self.client or default_client()
        matchup.status = "streaming"

        async def one(side: str, model: str) -> None:
            try:
                stream = client.astream(matchup.prompt, model, system=self.system,
                                        tags=["arena"], **self.params)
                async for chunk in stream:
                    if chunk.text:
                        setattr(matchup, f"text_{side}", getattr(matchup, f"text_{side}")
                                + chunk.text)
                        if on_update:
                            on_update(matchup)
                setattr(matchup, f"completion_{side}", stream.completion)
            except (LLMError, ValueError, OSError) as exc:
                setattr(matchup, f"error_{side}", f"{type(exc).__name__}: {exc}")

        await asyncio.gather(one("a", matchup.model_a), one("b", matchup.model_b))
        matchup.status = "ready"
        if on_update:
            on_update(matchup)
        return matchup

    def stream(
        self, matchup: Matchup, on_update: Callable[[Matchup], None] | None = None
    ) -> Matchup:
        """Sync :meth:`astream` (runs on the library's loop)."""
        return _loop.run(self.astream(matchup, on_update))

    # -- votes -------------------------------------------------------------------------

    def vote(self, matchup: Matchup, choice: str) -> Matchup:
        """Record ``choice`` (``"a"``, ``"b"``, ``"tie"`` or ``"both_bad"``) for ``matchup``."""
        if choice not in CHOICES:
            raise ValueError(f"a vote is one of {sorted(CHOICES)}, not {choice!r}")
        ca, cb = matchup.completion_a, matchup.completion_b
        with self._lock:
            call_log(self.db_path).store.execute(
                "INSERT OR REPLACE INTO arena_votes (arena, matchup, created_at, prompt, "
                "model_a, model_b, winner, answer_a, answer_b, cost_a, cost_b, latency_a, "
                "latency_b) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.id, matchup.index, datetime.now(timezone.utc).isoformat(),
                 redact(matchup.prompt), matchup.model_a, matchup.model_b, choice,
                 redact(matchup.answer("a")), redact(matchup.answer("b")),
                 ca.cost_usd if ca else None, cb.cost_usd if cb else None,
                 ca.latency_s if ca else None, cb.latency_s if cb else None),
            )
            matchup.vote = choice  # type: ignore[assignment]
        return matchup

    def _rows(self) -> list[dict[str, Any]]:
        return call_log(self.db_path).store.execute(
            "SELECT * FROM arena_votes WHERE arena = ? ORDER BY matchup", (self.id,)
        )

    @property
    def votes(self) -> Any:
        """Every stored vote of this arena as a DataFrame (one row per matchup)."""
        import pandas as pd

        columns = ["matchup", "created_at", "prompt", "model_a", "model_b", "winner",
                   "cost_a", "cost_b", "latency_a", "latency_b"]
        return pd.DataFrame([{c: row[c] for c in columns} for row in self._rows()],
                            columns=columns)

    def results(self, *, prior: float = 1.0, resamples: int = 200) -> ArenaResults:
        """Bradley-Terry ratings (Elo scale) with 95% bootstrap intervals, win rates
        and cost per answer, from every stored vote (see :mod:`notebook_llm._ratings`)."""
        return ArenaResults.from_rows(self._rows(), self.models, prior=prior,
                                      resamples=resamples)

    # -- frontends ---------------------------------------------------------------------

    def run(self, frontend: Literal["auto", "widgets", "text"] = "auto") -> Arena:
        """Show the next matchups: widgets in a Jupyter kernel, ``input()`` elsewhere."""
        if frontend not in ("auto", "widgets", "text"):
            raise ValueError("frontend is 'auto', 'widgets' or 'text'")
        if frontend == "auto":
            frontend = "widgets" if _widgets_available() else "text"
        if frontend == "widgets":
            self.view = _views.load("arena").show(self)
        else:
            self._run_text()
        return self

    def wait(self, timeout: float | None = None) -> None:
        """Block until the widget view's current answers have arrived (for scripts)."""
        future = getattr(self.view, "future", None)
        if future is not None:
            future.result(timeout)

    def _run_text(self) -> None:
        from notebook_llm._render import terminal_text

        while (m := self.next_matchup()) is not None:
            print(f"\n── Matchup {m.index + 1} of {len(self.matchups)} ──")
            print(terminal_text(m.prompt))
            self.stream(m)
            for side in ("a", "b"):
                print(f"\n[{side.upper()}]\n{terminal_text(m.answer(side))}")
            choice = _ask()
            if choice is None:
                print(f"\nNo answer: stopped with {self.voted} of {len(self.matchups)} "
                      "matchups voted. Run it again to resume.")
                return
            self.vote(m, choice)
            print(m.reveal())
        print(f"\nArena done: {self.voted} votes. arena.results() shows the ratings.")

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(repr(self))}</p>"


def _ask() -> str | None:
    """One vote from ``input()``; ``None`` when no one can answer (no stdin, EOF, ``q``)."""
    prompt = "Which is better? [a] A, [b] B, [t] tie, [x] both bad, [q] stop: "
    for _ in range(5):
        try:
            answer = input(prompt).strip().lower()
        except (EOFError, KeyboardInterrupt, NotImplementedError, OSError, RuntimeError):
            # NotImplementedError: IPython's StdinNotImplementedError (nbval, papermill)
            return None
        if answer in ("q", "quit", "stop"):
            return None
        if answer in _TEXT_KEYS:
            return _TEXT_KEYS[answer]
        print("Type a, b, t, x or q.")
    return None


def _widgets_available() -> bool:
    from notebook_llm.core.shell import in_kernel

    if not in_kernel():
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _schedule(arena_id: str, prompts: list[str], models: list[str]) -> list[Matchup]:
    """Each prompt with one pair of models, pairs in turn, A/B order shuffled.

    Seeded by the arena's id, so a resumed arena has the same schedule.
    """
    rng = random.Random(arena_id)
    pairs = list(itertools.combinations(models, 2))
    rng.shuffle(pairs)
    matchups = []
    for i, prompt in enumerate(prompts):
        a, b = pairs[i % len(pairs)]
        if rng.random() < 0.5:
            a, b = b, a
        matchups.append(Matchup(i, prompt, a, b))
    return matchups


@dataclass
class ArenaResults:
    """Ratings, intervals, win rates and cost per answer, one row per model."""

    df: Any
    """The table (a DataFrame indexed by model, best first)."""
    votes: int
    method: str = field(default="Bradley-Terry (Elo scale), 95% bootstrap intervals")

    @classmethod
    def from_rows(
        cls, rows: list[dict[str, Any]], models: Sequence[str], *, prior: float,
        resamples: int,
    ) -> ArenaResults:  # fmt: skip
        import pandas as pd

        from notebook_llm._ratings import bootstrap_ratings, bradley_terry

        names = list(dict.fromkeys([*models, *(r["model_a"] for r in rows),
                                    *(r["model_b"] for r in rows)]))
        votes = [(str(r["model_a"]), str(r["model_b"]), _SCORE[str(r["winner"])]) for r in rows]
        ratings = bradley_terry(votes, names, prior=prior)
        intervals = bootstrap_ratings(votes, names, prior=prior, resamples=resamples)
        table = []
        for model in names:
            mine = [r for r in rows if model in (r["model_a"], r["model_b"])]
            wins = sum(1 for r in mine if (r["winner"], model) in
                       (("a", r["model_a"]), ("b", r["model_b"])))
            ties = sum(1 for r in mine if r["winner"] == "tie")
            bad = sum(1 for r in mine if r["winner"] == "both_bad")
            costs = [r["cost_a"] if r["model_a"] == model else r["cost_b"] for r in mine]
            known = [float(c) for c in costs if c is not None]
            table.append({
                "model": model, "rating": ratings[model],
                "rating_low": intervals[model][0], "rating_high": intervals[model][1],
                "games": len(mine), "wins": wins, "losses": len(mine) - wins - ties - bad,
                "ties": ties, "both_bad": bad,
                "win_rate": wins / len(mine) if mine else float("nan"),
                "cost_per_answer_usd": (sum(known) / len(known)
                                        if known and len(known) == len(costs) else None),
            })
        frame = pd.DataFrame(table).set_index("model").sort_values("rating", ascending=False)
        return cls(frame, len(rows))

    def to_pandas(self) -> Any:
        """The table as a DataFrame."""
        return self.df

    def plot(self, ax: Any = None) -> Any:
        """Horizontal bars of the ratings with their intervals; returns the Axes."""
        from notebook_llm._plots import plot_ratings

        return plot_ratings(self.df, ax=ax)

    def __repr__(self) -> str:
        return f"ArenaResults({self.votes} votes; {self.method})\n{self.df.to_string()}"

    def _repr_html_(self) -> str:
        shown = self.df.copy()
        shown["cost_per_answer_usd"] = [format_usd(c) if c is not None else "unpriced"
                                        for c in shown["cost_per_answer_usd"]]
        table: str = shown.to_html(float_format=lambda v: f"{v:.3g}", escape=True)
        return f"<p>{self.votes} votes · {html.escape(self.method)}</p>{table}"


def arena(
    prompts: str | Sequence[str],
    models: Sequence[str],
    *,
    name: str | None = None,
    system: str | None = None,
    frontend: Literal["auto", "widgets", "text"] = "auto",
    client: Any = None,
    db_path: Any = None,
    **params: Any,
) -> Arena:
    """A blind arena: vote between two anonymous answers per prompt.

    Example::

        a = nl.arena(["Explain TCP to a child", ...],
                     models=["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"])
        # ... vote ...
        a.results()          # ratings with intervals, win rates, cost per answer

    Args:
        prompts: one prompt or a list; each is put to one pair of models.
        models: two or more model strings; pairs take turns, A and B shuffled.
        name: the arena's name in the database (default: a hash of prompts,
            models, system and parameters). The same arena resumes after a
            restart, skipping the matchups already voted.
        system: a system prompt for every answer.
        frontend: ``"widgets"`` (side-by-side streaming columns and buttons,
            which never block the cell), ``"text"`` (``input()``), or
            ``"auto"``: widgets in a Jupyter kernel, text elsewhere.
        client: the client (default: :func:`notebook_llm.default_client`).
        db_path: the database (default: the call log's).
        **params: passed to every call (``temperature``, ``max_tokens``, ...).
    """
    return Arena(prompts, models, name=name, system=system, client=client, db_path=db_path,
                 **params).run(frontend)
