"""Full-text search over the call log: the FTS5 index ``calls_fts`` (migration ``m010``).

The index holds each call's prompt (its last user message) and its response.
New calls are indexed by :func:`catch_up` (the call log's writer runs it when
idle, a search runs it first), not as they are written. :func:`check_query`
turns an FTS5 syntax error into a message that says what to type instead;
:data:`SEARCH_FROM` joins the index to ``calls`` and :data:`RANK` orders by
relevance (bm25). Matches come back between
:data:`MARK_OPEN` and :data:`MARK_CLOSE`, characters from Unicode's private
use area: :func:`marked_segments` splits such text so that a display can
escape the text and draw the marks itself.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notebook_llm.store.db import Store

__all__ = [
    "CATCH_UP",
    "MARK_CLOSE",
    "MARK_OPEN",
    "RANK",
    "RANK_LIMIT",
    "SEARCH_FROM",
    "SNIPPET_SQL",
    "catch_up",
    "catch_up_all",
    "check_query",
    "last_user_text",
    "marked_segments",
]

MARK_OPEN = "\ue000"
"""Put before each match by :data:`SNIPPET_SQL`."""
MARK_CLOSE = "\ue001"
"""Put after each match by :data:`SNIPPET_SQL`."""

SEARCH_FROM = "calls_fts JOIN calls ON calls.rowid = calls_fts.rowid"
"""The ``FROM`` clause of a search; the condition is ``calls_fts MATCH ?``."""

RANK_LIMIT = 1000
"""The most matches one search ranks: past that, the newest this many."""

RANK = "bm25(calls_fts)"
"""Relevance: lower is better (SQLite's bm25 is negative, best first when ascending)."""

# Up to 32 tokens around the best matches of the prompt (column 0) and the
# response (column 1).
SNIPPET_SQL = (
    f"snippet(calls_fts, 0, '{MARK_OPEN}', '{MARK_CLOSE}', '…', 32),"
    f" snippet(calls_fts, 1, '{MARK_OPEN}', '{MARK_CLOSE}', '…', 32)"
)
"""Two columns: the prompt's and the response's excerpt around the matches."""

CATCH_UP = 500
"""Calls indexed per catch-up transaction."""


def catch_up(store: Store, limit: int = CATCH_UP) -> int:
    """Index up to ``limit`` calls logged since the index last caught up; returns how many.

    One write transaction: it reads the highest rowid indexed
    (``calls_fts_state``), indexes the next calls and moves the mark, so
    kernels that catch up at once never index a call twice. Nothing to do
    costs one read and takes no lock. Call it until it returns less than
    ``limit`` to catch up completely.
    """
    indexed, newest = store.tuples("SELECT (SELECT indexed_rowid FROM calls_fts_state),"
                                   " (SELECT MAX(rowid) FROM calls)")[0]
    if not isinstance(indexed, int) or not isinstance(newest, int) or indexed >= newest:
        return 0
    with store.transaction() as conn:
        last = conn.execute("SELECT indexed_rowid FROM calls_fts_state").fetchone()[0]
        rows = conn.execute("SELECT rowid FROM calls WHERE rowid > ? ORDER BY rowid LIMIT ?",
                            (last, limit)).fetchall()
        if not rows:
            return 0
        upto = rows[-1][0]
        conn.execute("INSERT INTO calls_fts (rowid, prompt, response) SELECT call_rowid,"
                     " prompt, response FROM calls_fts_source WHERE call_rowid > ?"
                     " AND call_rowid <= ?", (last, upto))
        conn.execute("UPDATE calls_fts_state SET indexed_rowid = ?", (upto,))
    return len(rows)


def catch_up_all(store: Store) -> int:
    """:func:`catch_up` until every logged call is indexed; returns how many were."""
    total = 0
    while True:
        done = catch_up(store)
        total += done
        if done < CATCH_UP:
            return total


def check_query(conn: sqlite3.Connection, query: str) -> str:
    """``query`` when FTS5 accepts it; else a :class:`ValueError` saying what to type.

    FTS5's syntax: words (all must appear; ``refund*`` matches a prefix),
    ``"a phrase"``, ``OR``, ``NOT``, ``NEAR(a b, 5)``, parentheses, and
    ``prompt:`` / ``response:`` for one column. Anything else (``gpt-4o``,
    ``what?``) must be quoted.
    """
    text = query.strip() if isinstance(query, str) else ""
    if not text:
        raise ValueError("q= is empty: pass the words to search for, e.g. q='refund policy'")
    try:
        conn.execute("SELECT 1 FROM calls_fts WHERE calls_fts MATCH ? LIMIT 1", (text,)).fetchall()
    except sqlite3.OperationalError as exc:
        quoted = " ".join('"' + word.replace('"', '""') + '"' for word in text.split())
        raise ValueError(
            f"Cannot search for {text!r}: {exc}. Search takes words, \"quoted phrases\", "
            "OR, NOT, NEAR(...) and prefix* ; put anything else in double quotes, "
            f"e.g. q={quoted!r}"
        ) from None
    return text


def marked_segments(text: str | None) -> list[tuple[str, bool]]:
    """``text`` from :data:`SNIPPET_SQL` as ``(segment, is_match)`` pairs, in order.

    Marks that do not pair up (text that held the marker characters itself)
    are dropped rather than trusted.
    """
    segments: list[tuple[str, bool]] = []
    inside = False
    current: list[str] = []
    for char in text or "":
        if char == MARK_OPEN and not inside:
            if current:
                segments.append(("".join(current), False))
            current, inside = [], True
        elif char == MARK_CLOSE and inside:
            if current:
                segments.append(("".join(current), True))
            current, inside = [], False
        elif char not in (MARK_OPEN, MARK_CLOSE):
            current.append(char)
    if current:
        segments.append(("".join(current), inside))
    return segments


def last_user_text(messages_json: str | None) -> str:
    """The text of the last user message in a logged ``messages_json`` (``""`` when none)."""
    try:
        messages = json.loads(messages_json or "[]")
    except ValueError:
        return ""
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""
