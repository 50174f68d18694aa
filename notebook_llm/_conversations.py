"""Conversations that live in the call log: :func:`chat`, :func:`conversation`,
:func:`conversations` and the :class:`Conversation` they return.

Each turn is an ordinary logged call that carries the conversation's id and
its position (``calls.conversation_id`` / ``conversation_position``); the
``conversations`` table holds the rest: name, model, system prompt, the
fork it came from, and a summary that stands in for early turns. So a
conversation survives a kernel restart: :func:`conversation` rebuilds it
from the log and it carries on.

Before each turn the conversation estimates its size (``core.tokens``)
against the model's context window (``context_window=``, else the
genai-prices data). When it would not fit, the strategy chosen decides:
``"truncate"`` leaves the oldest turns out of what is sent, ``"summarise"``
replaces them with a summary written by ``summary_model``. Either way the
user is told, with the token counts (:class:`ContextNote`, also a
:class:`ContextWarning`), and a message that cannot fit even alone is refused
before anything is sent.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from notebook_llm._api import default_client
from notebook_llm._client import Client
from notebook_llm._middleware import logging_enabled
from notebook_llm._render import (
    escape_markdown,
    html_escape,
    markdown_text,
    plain_html,
    render_markdown,
    terminal_text,
)
from notebook_llm._tracking import carry_trackers
from notebook_llm.core.errors import ContextLengthError, redact
from notebook_llm.core.loop import run
from notebook_llm.core.money import format_usd
from notebook_llm.core.stream import AsyncStream, CompletionBuilder, Stream
from notebook_llm.core.tokens import CHARS_PER_TOKEN, estimate_prompt_tokens
from notebook_llm.core.types import Chunk, Completion, Message, Request
from notebook_llm.pricing import context_window as known_context_window
from notebook_llm.store.log import call_log, new_call_id, utc_iso

if TYPE_CHECKING:
    import pandas as pd

    from notebook_llm.store.db import PathLike

__all__ = [
    "ContextNote",
    "ContextWarning",
    "Conversation",
    "PreparedTurn",
    "Turn",
    "TurnOptions",
    "chat",
    "conversation",
    "conversations",
    "latest_conversation",
    "select_conversation",
]

Strategy = Literal["truncate", "summarise"]
STRATEGIES = ("truncate", "summarise")

FILL = 0.85
"""Manage the context once the estimate passes this share of what the model can take."""
SUMMARY_FILL = 0.5
"""Summarise down to this share, so that the next turns do not summarise again at once."""
SUMMARY_TAG = "conversation-summary"
_SUMMARY_PROMPT = (
    "Summarise the conversation below for the assistant that continues it. Keep every "
    "fact, name, number, decision and open question; drop pleasantries. At most 250 words.\n\n"
)


class ContextWarning(UserWarning):
    """A conversation left out or summarised early turns to fit the model's context."""


@dataclass(frozen=True)
class ContextNote:
    """What the context strategy did before a turn, with the token counts (estimates)."""

    strategy: Strategy
    context_window: int
    """The model's context, in tokens."""
    tokens_before: int
    """The conversation as it would have been sent."""
    tokens_after: int
    """What was sent."""
    turns: int
    """Turns left out (truncate) or summarised (summarise), from the oldest."""
    summary_model: str | None = None

    def __str__(self) -> str:
        turns = f"{self.turns} oldest turn{'' if self.turns == 1 else 's'}"
        what = (f"left out the {turns} (still in the transcript)"
                if self.strategy == "truncate" else
                f"summarised the {turns} with {self.summary_model}")
        return (f"The conversation nears the model's context ({self.context_window:,} tokens): "
                f"about {self.tokens_before:,} tokens, {self.tokens_after:,} after it {what}. "
                "Change with strategy='truncate' or 'summarise'.")


@dataclass(frozen=True, kw_only=True)
class TurnOptions:
    """The options of one turn: one record for ``send``/``asend`` and ``stream``/``astream``."""

    temperature: float | None = None
    """Sampling temperature."""
    max_tokens: int | None = None
    """The most tokens to generate (also reserved in the context)."""
    tools: Sequence[Any] | None = None
    """Python functions or tool dicts the model may call."""
    tags: Sequence[str] | None = None
    """Labels stored with the turn's call in the log."""
    timeout: float | None = None
    """Seconds the turn may take (default: the client's)."""

    def call_options(self) -> dict[str, Any]:
        """These options as keyword arguments of ``complete``/``astream``."""
        out: dict[str, Any] = {
            "temperature": self.temperature, "max_tokens": self.max_tokens,
            "tools": self.tools, "tags": self.tags, "timeout": self.timeout,
        }
        return {name: value for name, value in out.items() if value is not None}


@dataclass
class Turn:
    """One exchange: what the user sent (and any tool round trips), and the answer."""

    position: int
    messages: list[Message]
    """The user's message, then the tool calls and results of this turn, as sent."""
    answer: Message
    """The assistant's final message."""
    model: str | None = None
    call_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float | None = None
    tool_results: Any = None
    """Tool results and timings as the log keeps them, where it does."""

    def to_messages(self) -> list[Message]:
        """The turn as chat messages, ready to send again."""
        return [*self.messages, self.answer]

    @property
    def prompt(self) -> str:
        """The user's text."""
        return _text(self.messages[0].get("content")) if self.messages else ""

    @property
    def text(self) -> str:
        """The answer's text."""
        return _text(self.answer.get("content"))


@dataclass
class PreparedTurn:
    """A turn ready to send: what a front end (``%%chat``) passes to the client."""

    user: Message
    messages: list[Message]
    """History kept by the context strategy, then the user's message."""
    system: str | None
    """The system prompt, with the summary of early turns when there is one."""
    model: str
    position: int
    conversation_id: str
    note: ContextNote | None = None

    def call_options(self) -> dict[str, Any]:
        """``system`` and the log's conversation fields, as call keyword arguments."""
        return {"system": self.system, "metadata": self.metadata}

    @property
    def metadata(self) -> dict[str, Any]:
        """The log's conversation fields of this turn's call."""
        return {"conversation_id": self.conversation_id, "conversation_position": self.position}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _now() -> str:
    return utc_iso(datetime.now(timezone.utc))


class Conversation:
    """A chat with a model, logged turn by turn, that a restart does not lose.

    Make one with :func:`chat` (new) or :func:`conversation` (from the log).
    ``send`` / ``asend`` return the :class:`~notebook_llm.Completion` of a turn,
    ``stream`` / ``astream`` stream it; :meth:`fork` branches it, and
    :meth:`switch_model` changes the model from the next turn. In a notebook it
    shows itself as a transcript (escaped: model text is untrusted).

    Args:
        model: ``provider:model`` or an alias (default: the client's default model).
        system: the system prompt of every turn.
        name: a name to find it by (``nl.conversation("name")``).
        strategy: ``"truncate"`` or ``"summarise"``: what to do when the
            conversation nears the model's context.
        summary_model: the (cheap) model that writes summaries (default: ``model``).
        context_window: the model's context in tokens (default: the genai-prices
            data; unknown means no management).
        client: the client to call through (default: ``nl.default_client()``);
            its ``db_path`` is where the conversation is kept.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        system: str | None = None,
        name: str | None = None,
        strategy: Strategy = "truncate",
        summary_model: str | None = None,
        context_window: int | None = None,
        client: Client | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be 'truncate' or 'summarise', not {strategy!r}")
        if context_window is not None and context_window < 1:
            raise ValueError(
                f"context_window must be a positive number of tokens, not {context_window}")
        self.id = new_call_id()
        """The conversation's id in the log."""
        self.name = name
        self.model = model
        """The model of the next turn (``None``: the client's default)."""
        self.system = system
        self.strategy: Strategy = strategy
        self.summary_model = summary_model
        self.context_window = context_window
        self.turns: list[Turn] = []
        """Every turn, oldest first (forks include the turns they share)."""
        self.summary: str | None = None
        """A summary standing in for the first :attr:`summary_turns` turns when sent."""
        self.summary_turns = 0
        self.parent_id: str | None = None
        self.forked_at: int | None = None
        self.notes: list[ContextNote] = []
        """What the context strategy did, one note per turn it acted on."""
        self.created_at = _now()
        self._client = client
        self._saved = False

    # -- basics ---------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The client the turns go through."""
        return self._client if self._client is not None else default_client()

    @property
    def messages(self) -> list[Message]:
        """Every turn's messages, oldest first (the whole history, nothing left out)."""
        return [message for turn in self.turns for message in turn.to_messages()]

    def __len__(self) -> int:
        return len(self.turns)

    def switch_model(self, model: str) -> Conversation:
        """Use ``model`` from the next turn on (checked now); returns the conversation."""
        self.client.resolve(model)  # an unknown provider fails here, not at the next turn
        self.model = model
        if self._saved:
            self._save()
        return self

    def fork(self, from_turn: int | None = None, *, name: str | None = None,
             model: str | None = None) -> Conversation:
        """A new conversation that shares this one's first ``from_turn`` turns.

        ``fork()`` shares every turn, ``fork(2)`` the first two (it continues
        from the third), ``fork(-1)`` all but the last (to ask it again). The
        fork is logged at once, with a link to this conversation; this one is
        not changed.
        """
        count = len(self.turns) if from_turn is None else from_turn
        if not -len(self.turns) <= count <= len(self.turns):
            raise ValueError(f"fork({from_turn}): this conversation has {len(self.turns)} turns")
        if count < 0:
            count += len(self.turns)
        fork = Conversation(
            model or self.model, system=self.system,
            name=name or (f"{self.name} (fork)" if self.name else None),
            strategy=self.strategy, summary_model=self.summary_model,
            context_window=self.context_window, client=self._client,
        )
        fork.turns = [replace(turn) for turn in self.turns[:count]]
        if self.summary_turns <= count:
            fork.summary, fork.summary_turns = self.summary, self.summary_turns
        fork.parent_id, fork.forked_at = self.id, count
        if self._persisting():
            if not self._saved:  # the fork finds its first turns through this row
                self._save()
            fork._save()
        return fork

    # -- turns --------------------------------------------------------------------------

    def send(self, prompt: str | Message, *, temperature: float | None = None,
             max_tokens: int | None = None, tools: Sequence[Any] | None = None,
             tags: Sequence[str] | None = None, timeout: float | None = None) -> Completion:
        """Send one message and return the answer (the turn is kept and logged).

        Runs :meth:`asend` on the library's loop, with this thread's ``nl.track()``
        blocks.
        """
        return run(carry_trackers(self.asend(
            prompt, temperature=temperature, max_tokens=max_tokens, tools=tools, tags=tags,
            timeout=timeout)))

    async def asend(self, prompt: str | Message, *, temperature: float | None = None,
                    max_tokens: int | None = None, tools: Sequence[Any] | None = None,
                    tags: Sequence[str] | None = None,
                    timeout: float | None = None) -> Completion:
        """Send one message and return the answer (the turn is kept and logged).

        With tools, the model's tool calls are run and answered (up to 8 rounds).
        When the model's context is unknown and the provider says the
        conversation is too long, the context strategy acts on what was sent
        (told as usual) and the turn is sent once more.
        """
        options = TurnOptions(temperature=temperature, max_tokens=max_tokens, tools=tools,
                              tags=tags, timeout=timeout)
        for attempt in (1, 2):
            turn = await self.aprepare(prompt, max_tokens=options.max_tokens)
            try:
                completion = await self.client.acomplete(
                    turn.messages, turn.model, **turn.call_options(), **options.call_options(),
                    max_tool_rounds=8 if tools else 0)
            except ContextLengthError:
                if attempt == 2 or not self._learn_window(turn):
                    raise
                continue
            self.record(turn, completion, save=False)
            await self.asave()
            return completion
        raise AssertionError("unreachable")  # pragma: no cover

    def _learn_window(self, turn: PreparedTurn) -> bool:
        """After the provider refused ``turn`` as too long: take what was sent as the
        context window, if none was known, so the strategy acts on the next try."""
        if self._window(turn.model) is not None or len(turn.messages) < 2:
            return False
        self.context_window = self._tokens(turn)
        return True

    def stream(self, prompt: str | Message, *, temperature: float | None = None,
               max_tokens: int | None = None, tools: Sequence[Any] | None = None,
               tags: Sequence[str] | None = None, timeout: float | None = None) -> Stream:
        """Stream one turn in sync code; the turn is kept once the stream ends."""
        return Stream(self.astream(prompt, temperature=temperature, max_tokens=max_tokens,
                                   tools=tools, tags=tags, timeout=timeout))

    def astream(self, prompt: str | Message, *, temperature: float | None = None,
                max_tokens: int | None = None, tools: Sequence[Any] | None = None,
                tags: Sequence[str] | None = None, timeout: float | None = None) -> AsyncStream:
        """Stream one turn: ``async for chunk in conv.astream(...)``; nothing is sent
        until iteration starts, and the turn is kept once the stream ends (a
        stopped stream keeps its partial answer)."""
        options = TurnOptions(temperature=temperature, max_tokens=max_tokens, tools=tools,
                              tags=tags, timeout=timeout)
        user = _user_message(prompt)  # bad input fails now, not at iteration
        state: dict[str, Any] = {}

        async def opener() -> tuple[AsyncIterator[Chunk], CompletionBuilder]:
            turn = state["turn"] = await self.aprepare(user, max_tokens=options.max_tokens)
            inner = state["inner"] = self.client.astream(
                turn.messages, turn.model, **turn.call_options(), **options.call_options())
            return inner, CompletionBuilder()

        async def finisher(completion: Completion | None,
                           error: BaseException | None) -> Completion | None:
            inner: AsyncStream | None = state.get("inner")
            if inner is not None:
                await inner.aclose()  # stopped from outside: end it too (else a no-op)
            final = inner.completion if inner is not None and inner.completion else completion
            if final is not None and "turn" in state and error is None:
                self.record(state["turn"], final, save=False)
                await self.asave()
            return final

        return AsyncStream(opener, finisher)

    # -- the steps of a turn, for front ends ----------------------------------------------

    def prepare(self, prompt: str | Message, *, max_tokens: int | None = None,
                warn: bool = True) -> PreparedTurn:
        """The next turn, fitted to the model's context (summarising if need be).

        When the context strategy acts, its :class:`ContextNote` is on the
        result and in :attr:`notes`, and a :class:`ContextWarning` says so
        (``warn=False``: a front end that shows the note itself).
        """
        turn, todo, budget = self._plan(_user_message(prompt), max_tokens)
        if todo:
            args, options = self._summary_request(turn, todo, budget)
            text = self.client.complete(*args, **options).text
            turn = self._summarised(turn, todo, text, budget)
        return self._announce(turn, warn)

    async def aprepare(self, prompt: str | Message, *, max_tokens: int | None = None,
                       warn: bool = True) -> PreparedTurn:
        """Async :meth:`prepare`."""
        turn, todo, budget = self._plan(_user_message(prompt), max_tokens)
        if todo:
            args, options = self._summary_request(turn, todo, budget)
            text = (await self.client.acomplete(*args, **options)).text
            turn = self._summarised(turn, todo, text, budget)
        return self._announce(turn, warn)

    def record(self, turn: PreparedTurn, completion: Completion, *, save: bool = True) -> Turn:
        """Keep a turn's answer (what ``send`` does after the call), and log the
        conversation (``save=False``: the caller does, see :meth:`asave`)."""
        exchange = list(completion.messages[len(turn.messages):]) if completion.messages else []
        # After a tool loop, only the answer's text: calls the rounds ran out
        # before answering would make the next request invalid.
        answer: Message = ({"role": "assistant", "content": completion.text}
                           if completion.tool_runs else completion.to_message())
        kept = Turn(
            position=turn.position, messages=[turn.user, *exchange],
            answer=answer, model=completion.model or turn.model,
            input_tokens=completion.usage.input_tokens,
            output_tokens=completion.usage.output_tokens, cost_usd=completion.cost_usd,
            latency_s=completion.latency_s,
        )
        self.turns.append(kept)
        if save and self._persisting():
            self._save()
        return kept

    async def asave(self) -> None:
        """Log the conversation from a worker thread: waiting for the call log's
        writer must not hold up the event loop."""
        if self._persisting():
            await asyncio.to_thread(self._save)

    def _plan(self, user: Message,
              max_tokens: int | None) -> tuple[PreparedTurn, list[Turn], int]:
        """The turn to send, the turns to summarise first (none: send as it is), and
        the tokens it may take."""
        model = self.model or self.client.default_model().model
        if not self._saved and self.model is None:
            self.model = model  # a restart continues with the model this started with
        kept = self.turns[self.summary_turns:] if self.summary else self.turns
        turn = PreparedTurn(user=user, messages=[*_flatten(kept), user],
                            system=self._system_with_summary(self.summary), model=model,
                            position=len(self.turns), conversation_id=self.id)
        window = self._window(model)
        if window is None:
            return turn, [], 0
        reserve = max_tokens or max(256, min(4096, window // 8))
        budget = int((window - reserve) * FILL)
        before = self._tokens(turn)
        if before <= budget:
            return turn, [], 0
        alone = self._tokens(replace(turn, messages=[user], system=self.system))
        if alone > budget:
            raise ContextLengthError(
                f"This message and the system prompt come to about {alone:,} tokens, more "
                f"than {model} can take with room for an answer ({budget:,} of "
                f"{window:,}): nothing was sent. Shorten the message, or set "
                "max_tokens lower.", model=model)
        start = self.summary_turns if self.summary else 0
        drop = 0
        target = budget if self.strategy == "truncate" else int(budget * SUMMARY_FILL / FILL)
        while start + drop < len(self.turns):
            drop += 1
            trial = replace(turn, messages=[*_flatten(self.turns[start + drop:]), user])
            if self._tokens(trial) <= target:
                break
        if self.strategy == "summarise":
            return turn, self.turns[: start + drop], budget
        after = replace(turn, messages=[*_flatten(self.turns[start + drop:]), user])
        note = ContextNote("truncate", window, before, self._tokens(after), start + drop)
        return replace(after, note=note), [], budget

    def _summarised(self, turn: PreparedTurn, todo: list[Turn], summary: str,
                    budget: int) -> PreparedTurn:
        before = self._tokens(turn)
        kept = [*_flatten(self.turns[len(todo):]), turn.user]
        # A summary model that ignores max_tokens must not undo the work.
        room = budget - self._tokens(replace(turn, system=self.system, messages=kept))
        summary = summary.strip()[: max(room, 0) * CHARS_PER_TOKEN]
        self.summary, self.summary_turns = summary, len(todo)
        after = replace(turn, system=self._system_with_summary(summary), messages=kept)
        model = self.summary_model or turn.model
        window = self._window(turn.model) or 0
        return replace(after, note=ContextNote("summarise", window, before, self._tokens(after),
                                               len(todo), str(model)))

    def _summary_request(self, turn: PreparedTurn, todo: list[Turn],
                         budget: int) -> tuple[tuple[str, str], dict[str, Any]]:
        """The summary call's arguments: prompt and model, then its options.

        Logged with the conversation's id and no position: it counts in the
        conversation's cost, and is not a turn.
        """
        lines = [f"Earlier summary: {self.summary}"] if self.summary else []
        for old in todo[self.summary_turns if self.summary else 0:]:
            lines += [f"User: {old.prompt}", f"Assistant: {old.text}"]
        prompt = _SUMMARY_PROMPT + "\n".join(lines)
        return (prompt, self.summary_model or turn.model), {
            "max_tokens": _summary_tokens(budget), "tags": [SUMMARY_TAG],
            "metadata": {"conversation_id": self.id}}

    def _announce(self, turn: PreparedTurn, warn: bool) -> PreparedTurn:
        if turn.note is not None:
            self.notes.append(turn.note)
            if warn:
                warnings.warn(str(turn.note), ContextWarning, stacklevel=4)
        return turn

    def _system_with_summary(self, summary: str | None) -> str | None:
        if not summary:
            return self.system
        head = f"{self.system}\n\n" if self.system else ""
        return f"{head}Summary of the earlier conversation:\n{summary}"

    def _window(self, model: str) -> int | None:
        if self.context_window is not None:
            return self.context_window
        ref = self.client.resolve(model)
        return known_context_window(ref.provider, ref.name)

    @staticmethod
    def _tokens(turn: PreparedTurn) -> int:
        return estimate_prompt_tokens(Request(model="", messages=turn.messages, system=turn.system))

    # -- the log ------------------------------------------------------------------------

    def _persisting(self) -> bool:
        client = self.client
        return bool(getattr(client, "log", True)) and logging_enabled()

    def _db_path(self) -> PathLike | None:
        return getattr(self.client, "db_path", None)

    def _save(self) -> None:
        """Write the conversation's row, and commit its calls now.

        A turn is the log's call: committed at once rather than within the
        writer's interval, so a kernel killed right after a turn keeps it.
        """
        log = call_log(self._db_path())
        log.flush()
        store = log.store
        store.execute(
            "INSERT INTO conversations (id, name, model, system, created_at, last_used_at,"
            " parent_id, forked_at, summary, summary_turns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, model = excluded.model,"
            " system = excluded.system, last_used_at = excluded.last_used_at,"
            " summary = excluded.summary, summary_turns = excluded.summary_turns",
            (self.id, self.name, self.model, redact(self.system) if self.system else None,
             self.created_at, _now(), self.parent_id, self.forked_at,
             redact(self.summary) if self.summary else None, self.summary_turns),
        )
        self._saved = True

    # -- display ------------------------------------------------------------------------

    def _head(self) -> str:
        cost = sum(t.cost_usd or 0.0 for t in self.turns)
        tokens = sum(t.input_tokens + t.output_tokens for t in self.turns)
        name = f"{self.name!r} " if self.name else ""
        return (f"Conversation {name}{self.id} · {self.model or 'default model'} · "
                f"{len(self.turns)} turns · {tokens:,} tokens · {format_usd(cost)}")

    def _tool_lines(self, turn: Turn) -> list[str]:
        lines = []
        for message in turn.to_messages():
            for call in message.get("tool_calls") or []:
                function = call.get("function", {}) if isinstance(call, dict) else {}
                lines.append(f"tool call {function.get('name')}({function.get('arguments')})")
            if message.get("role") == "tool":
                lines.append(f"tool result: {_text(message.get('content'))}")
        if turn.tool_results:
            lines.append(f"tool results: {json.dumps(turn.tool_results, default=str)}")
        return lines

    def _repr_markdown_(self) -> str:
        if not self.turns:
            return f"*{markdown_text(self._head())}: no turns yet.*"
        parts = [f"**{markdown_text(self._head())}**"]
        if self.system:
            parts.append(f"*System:* {escape_markdown(self.system)}")
        for turn in self.turns:
            parts.append(f"**You** ({turn.position})\n\n{escape_markdown(turn.prompt)}")
            for line in self._tool_lines(turn):
                parts.append(f"*{markdown_text(line)}*")
            parts.append(f"**{markdown_text(turn.model or 'assistant')}**\n\n"
                         f"{escape_markdown(turn.text)}")
        return "\n\n---\n\n".join(parts)

    def _repr_html_(self) -> str:
        rows = [f"<div><strong>{html_escape(self._head())}</strong></div>"]
        if self.system:
            rows.append(f"<div><em>System:</em> {html_escape(self.system)}</div>")
        for turn in self.turns:
            rows.append(f"<div><strong>You</strong> <small>({turn.position})</small>"
                        f"{plain_html(turn.prompt)}</div>")
            for line in self._tool_lines(turn):
                rows.append(f"<div><small><code>{html_escape(line)}</code></small></div>")
            rows.append(f"<div><strong>{html_escape(turn.model or 'assistant')}</strong>"
                        f"{render_markdown(turn.text)}</div>")
        return '<div class="notebook-llm-conversation">' + "<hr>".join(rows) + "</div>"

    def __repr__(self) -> str:
        if not self.turns:
            label = self.name or self.id
            return terminal_text(f"No messages in conversation {label!r}.")
        lines = [self._head()]
        for turn in self.turns:
            lines.append(f"user: {turn.prompt}")
            lines += [f"  {line}" for line in self._tool_lines(turn)]
            lines.append(f"assistant ({turn.model}): {turn.text}")
        return terminal_text("\n".join(lines))


def _summary_tokens(budget: int) -> int:
    """The summary's length: a quarter of what the conversation may take, 64 to 600 tokens."""
    return max(64, min(600, budget // 4))


def _user_message(prompt: str | Message) -> Message:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("the message is empty: pass the text to send")
        return {"role": "user", "content": prompt}
    if isinstance(prompt, dict) and prompt.get("role") == "user":
        return dict(prompt)
    raise TypeError("send a string, or one {'role': 'user', 'content': ...} message")


def _flatten(turns: Sequence[Turn]) -> list[Message]:
    return [message for turn in turns for message in turn.to_messages()]


# -- reading conversations back from the log ---------------------------------------------


def chat(
    model: str | None = None,
    *,
    system: str | None = None,
    name: str | None = None,
    strategy: Strategy = "truncate",
    summary_model: str | None = None,
    context_window: int | None = None,
    client: Client | None = None,
) -> Conversation:
    """A new :class:`Conversation` (arguments as there): ``conv.send("hi")``."""
    return Conversation(model, system=system, name=name, strategy=strategy,
                        summary_model=summary_model, context_window=context_window,
                        client=client)


def conversation(
    id_or_name: str, *, client: Client | None = None, db_path: PathLike | None = None,
) -> Conversation:
    """A logged conversation, ready to continue: by id, unique id prefix, or name
    (the most recently used of that name).

    Raises:
        KeyError: no conversation matches (or several ids share the prefix).
    """
    client = _client_for(client, db_path)
    log = call_log(client.db_path)
    log.flush()
    row = _find(log.store, str(id_or_name).strip())
    return _load(log.store, row, client)


def _client_for(client: Client | None, db_path: PathLike | None) -> Client:
    """``client``; else the default client, or a client of its own for another file."""
    if client is not None:
        return client
    if db_path is None:
        return default_client()
    return Client(db_path=db_path)


def latest_conversation(*, client: Client | None = None,
                        db_path: PathLike | None = None) -> Conversation | None:
    """The most recently used conversation in the log (``%%chat --continue``), or ``None``."""
    client = _client_for(client, db_path)
    log = call_log(client.db_path)
    log.flush()
    rows = log.store.execute(
        "SELECT * FROM conversations ORDER BY last_used_at DESC, created_at DESC LIMIT 1")
    return _load(log.store, rows[0], client) if rows else None


def select_conversation(
    open_chats: dict[str, Conversation], name: str, *, new: bool = False,
    resume: bool = False, cid: str | None = None, model: str | None = None,
) -> Conversation:
    """The conversation a ``%%chat`` cell continues, kept in ``open_chats`` under ``name``.

    ``cid``: that logged conversation; ``resume``: the most recently used one
    in the log (after a restart, say); ``new``: a fresh one; otherwise the one
    open under ``name``, or a fresh one. ``model`` switches its model.

    Raises:
        KeyError: ``cid`` names no logged conversation, or ``resume`` finds none.
    """
    if cid:
        found = conversation(cid)
    elif resume:
        latest = latest_conversation()
        if latest is None:
            raise KeyError("there is no conversation in the log to continue: "
                           "start one with %%chat")
        found = latest
    elif new or name not in open_chats:
        found = Conversation(model, name=name)
    else:
        found = open_chats[name]
    if model and found.model != model:
        found.switch_model(model)
    open_chats[name] = found
    return found


def _find(store: Any, key: str) -> dict[str, Any]:
    if not key:
        raise KeyError("name a conversation: its id (or the start of it) or its name")
    rows = store.execute("SELECT * FROM conversations WHERE id = ?", (key,))
    if not rows and len(key) >= 6:
        rows = store.execute("SELECT * FROM conversations WHERE id >= ? AND id < ? LIMIT 2",
                             (key.lower(), key.lower() + "g"))
        if len(rows) > 1:
            raise KeyError(f"several conversations start with {key!r}: give more of the id")
    if not rows:
        rows = store.execute("SELECT * FROM conversations WHERE name = ?"
                             " ORDER BY last_used_at DESC LIMIT 1", (key,))
    if not rows:
        raise KeyError(f"no conversation {key!r} in the log: see nl.conversations()")
    return dict(rows[0])


def _load(store: Any, row: dict[str, Any], client: Client | None,
          depth: int = 0) -> Conversation:
    conv = Conversation(row["model"], system=row["system"], name=row["name"], client=client)
    conv.id, conv.created_at = str(row["id"]), str(row["created_at"])
    conv.parent_id, conv.forked_at = row["parent_id"], row["forked_at"]
    if conv.parent_id and depth < 50:
        parents = store.execute("SELECT * FROM conversations WHERE id = ?", (conv.parent_id,))
        if parents:
            parent = _load(store, dict(parents[0]), client, depth + 1)
            conv.turns = parent.turns[: conv.forked_at or 0]
    conv.turns += _turns(store, conv.id)
    conv.summary, conv.summary_turns = row["summary"], int(row["summary_turns"] or 0)
    conv._saved = True
    return conv


def _turns(store: Any, conversation_id: str) -> list[Turn]:
    """The conversation's own turns: per position, its last call that has an answer."""
    columns = {str(r["name"]) for r in store.execute("PRAGMA table_info(calls)")}
    results = "tool_results" if "tool_results" in columns else "NULL"
    rows = store.execute(
        "SELECT id, conversation_position AS position, model, messages_json, response_text,"
        " tool_calls_json, error_class, input_tokens, output_tokens, cost_usd, latency_s,"
        f" {results} AS tool_results FROM calls WHERE conversation_id = ?"
        " AND conversation_position IS NOT NULL"
        " ORDER BY conversation_position, created_at, rowid", (conversation_id,))
    by_position: dict[int, list[dict[str, Any]]] = {}
    for found in rows:
        by_position.setdefault(int(found["position"]), []).append(found)
    turns = []
    for position, calls in sorted(by_position.items()):
        turn = _turn(position, calls)
        if turn is not None:
            turns.append(turn)
    return turns


def _turn(position: int, calls: list[dict[str, Any]]) -> Turn | None:
    last = calls[-1]
    answered = last["response_text"] or last["tool_calls_json"] not in (None, "", "[]")
    if not answered or last["error_class"] not in (None, "CancelledError"):
        return None
    try:
        sent = json.loads(last["messages_json"] or "[]")
    except ValueError:
        return None
    users = [i for i, m in enumerate(sent) if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        return None  # pruned or malformed: nothing to send again
    answer: Message = {"role": "assistant", "content": last["response_text"] or None}
    try:
        calls_made = json.loads(last["tool_calls_json"] or "[]")
    except ValueError:
        calls_made = []
    if calls_made:
        answer["tool_calls"] = [
            {"id": c.get("id"), "type": "function",
             "function": {"name": c.get("name"), "arguments": json.dumps(c.get("arguments", {}))}}
            for c in calls_made if isinstance(c, dict)]
    results: Any = None
    raw = [c["tool_results"] for c in calls if c.get("tool_results")]
    if raw:
        try:
            results = [json.loads(r) for r in raw]
        except ValueError:
            results = raw
    return Turn(
        position=position, messages=sent[users[-1]:], answer=answer, model=last["model"],
        call_id=last["id"], input_tokens=sum(int(c["input_tokens"] or 0) for c in calls),
        output_tokens=sum(int(c["output_tokens"] or 0) for c in calls),
        cost_usd=sum(float(c["cost_usd"] or 0.0) for c in calls),
        latency_s=sum(float(c["latency_s"] or 0.0) for c in calls), tool_results=results,
    )


_CONVERSATION_COLUMNS = ["id", "name", "model", "turns", "calls", "input_tokens",
                         "output_tokens", "tokens", "cost_usd", "created", "last_used",
                         "parent_id"]


def conversations(*, db_path: PathLike | None = None) -> pd.DataFrame:
    """Logged conversations, most recently used first: id, name, model, turns,
    tokens, cost and when each was started and last used.

    ``turns`` counts answered turns (a fork's shared turns included); ``calls``,
    tokens and ``cost_usd`` count every call the conversation made (summaries,
    tool rounds and failed tries included).
    """
    import pandas as pd

    log = call_log(db_path)
    log.flush()
    rows = log.store.tuples(
        """SELECT c.id, c.name, c.model,
                  COALESCE(c.forked_at, 0) + COALESCE(t.turns, 0), COALESCE(t.calls, 0),
                  COALESCE(t.input_tokens, 0), COALESCE(t.output_tokens, 0),
                  COALESCE(t.input_tokens, 0) + COALESCE(t.output_tokens, 0), t.cost_usd,
                  c.created_at, c.last_used_at, c.parent_id
           FROM conversations AS c LEFT JOIN (
               SELECT conversation_id,
                      COUNT(DISTINCT CASE WHEN error_class IS NULL
                            THEN conversation_position END) AS turns,
                      COUNT(*) AS calls, SUM(input_tokens) AS input_tokens,
                      SUM(output_tokens) AS output_tokens, SUM(cost_usd) AS cost_usd
               FROM calls WHERE conversation_id IS NOT NULL GROUP BY conversation_id
           ) AS t ON t.conversation_id = c.id
           ORDER BY c.last_used_at DESC, c.created_at DESC""")
    df = pd.DataFrame.from_records(rows, columns=_CONVERSATION_COLUMNS)
    for column in ("created", "last_used"):
        df[column] = pd.to_datetime(df[column], utc=True, format="ISO8601")
    for column in ("turns", "calls", "input_tokens", "output_tokens", "tokens"):
        df[column] = df[column].astype("int64")
    df["cost_usd"] = pd.to_numeric(df["cost_usd"]).astype("float64")
    return df

