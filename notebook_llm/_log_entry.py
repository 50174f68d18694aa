"""One logged call in full: :func:`log_entry` and the :class:`LogEntry` it returns.

``nl.logs()`` shows excerpts; a row opens into everything the log holds about
its call: the prompt, every message sent, the options, the response and
reasoning, usage, cost, timings, tool calls (and their results, where the log
has them), and any column a later version added (fragments, a schema),
shown as it is stored. Every value is the model's or the user's text: it is
escaped wherever it is shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from notebook_llm._render import html_escape, plain_table_html, terminal_text
from notebook_llm.core.money import format_usd
from notebook_llm.store.log import call_log
from notebook_llm.store.search import last_user_text

if TYPE_CHECKING:
    from notebook_llm.store.db import PathLike

__all__ = ["LogEntry", "log_entry"]

# Shown in this order in the summary table; every other column comes after
# the sections, under its own name.
_SUMMARY = (
    "id", "created_at", "model", "provider", "response_model", "finish_reason",
    "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "cost",
    "latency_s", "ttft_s", "cached", "conversation_id", "conversation_position", "batch_id",
    "notebook_path", "tags_json",
)  # fmt: skip
_SECTIONS = ("system", "messages_json", "params_json", "response_text", "reasoning",
             "tool_calls_json", "tool_results", "error")
_HIDDEN = frozenset({*_SUMMARY, *_SECTIONS, "cost_usd", "cost_status", "error_class",
                     "error_message", "cache_write_tokens"})
_TITLES = {"system": "System prompt", "messages_json": "Messages", "params_json": "Options",
           "response_text": "Response", "reasoning": "Reasoning",
           "tool_calls_json": "Tool calls", "tool_results": "Tool results", "error": "Error"}


def _pretty(value: Any) -> str:
    """JSON text indented for reading; other text as it is."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, (dict, list)):
            return json.dumps(parsed, indent=2, ensure_ascii=False)
        return value
    return "" if value is None else str(value)


@dataclass
class LogEntry:
    """Every column of one logged call (``row``), shown as a readable card.

    ``entry.messages``, ``entry.params`` and ``entry.tool_calls`` decode the
    JSON columns; ``entry.row`` is the raw row.
    """

    row: dict[str, Any]
    """The ``calls`` row, column by column, as stored."""

    @property
    def id(self) -> str:
        """The call's id."""
        return str(self.row["id"])

    @property
    def prompt(self) -> str:
        """The last user message's text."""
        return last_user_text(self.row.get("messages_json"))

    @property
    def response(self) -> str:
        """The answer's text (``""`` when none was logged)."""
        return str(self.row.get("response_text") or "")

    @property
    def messages(self) -> list[Any]:
        """Every message sent, decoded."""
        return list(self._json("messages_json") or [])

    @property
    def params(self) -> dict[str, Any]:
        """The options sent (temperature, max_tokens, tool names...), decoded."""
        return dict(self._json("params_json") or {})

    @property
    def tool_calls(self) -> list[Any]:
        """The tool calls the model made, decoded."""
        return list(self._json("tool_calls_json") or [])

    def _json(self, column: str) -> Any:
        try:
            return json.loads(self.row.get(column) or "null")
        except ValueError:
            return None

    def _summary(self) -> list[tuple[str, str]]:
        out = []
        for name in _SUMMARY:
            if name == "cost":
                cost = self.row.get("cost_usd")
                value: Any = format_usd(cost, self.row.get("cost_status") or "unknown")
            else:
                value = self.row.get(name)
            if value is None or value == "" or value == "[]":
                continue
            if name in ("latency_s", "ttft_s") and isinstance(value, float):
                value = f"{value:.3f}"
            out.append((name, str(value)))
        return out

    def _sections(self) -> list[tuple[str, str]]:
        out = []
        for name in _SECTIONS:
            if name == "error":
                if not self.row.get("error_class"):
                    continue
                value = f"{self.row['error_class']}: {self.row.get('error_message') or ''}"
            else:
                value = _pretty(self.row.get(name))
            if value and value not in ("{}", "[]"):
                out.append((_TITLES[name], value))
        for name, raw in self.row.items():  # columns added by later migrations
            if name not in _HIDDEN and raw not in (None, "", "[]", "{}"):
                out.append((name, _pretty(raw)))
        return out

    def _repr_html_(self) -> str:
        table = plain_table_html(["field", "value"], [list(pair) for pair in self._summary()])
        parts = [f"<div><strong>Call {html_escape(self.id)}</strong>{table}"]
        for title, text in self._sections():
            parts.append(
                f"<details open><summary>{html_escape(title)}</summary>"
                f'<pre style="white-space: pre-wrap">{html_escape(text)}</pre></details>'
            )
        return "".join(parts) + "</div>"

    def __repr__(self) -> str:
        lines = [f"Call {self.id}"]
        lines += [f"  {name}: {value}" for name, value in self._summary()]
        for title, text in self._sections():
            lines += ["", f"{title}:", *("  " + line for line in text.splitlines())]
        return terminal_text("\n".join(lines))


def log_entry(call_id: str, *, db_path: PathLike | None = None) -> LogEntry:
    """The logged call with this id (or a unique prefix of it, 8 characters or more).

    Raises:
        KeyError: no call, or several, have that id.
    """
    text = str(call_id).strip().lower()
    log = call_log(db_path)
    log.flush()
    rows = log.store.execute("SELECT * FROM calls WHERE id = ?", (text,))
    if not rows and len(text) >= 8 and all(c in "0123456789abcdef-" for c in text):
        rows = log.store.execute(
            "SELECT * FROM calls WHERE id >= ? AND id < ? LIMIT 2", (text, text + "g")
        )
    if len(rows) != 1:
        found = "no logged call" if not rows else "several logged calls"
        raise KeyError(f"{found} with id {call_id!r}: copy the id from nl.logs() or "
                       "nl.usage() (8 characters or more)")
    return LogEntry(rows[0])
