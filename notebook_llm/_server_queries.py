"""Read-only questions to the call log for the JupyterLab panel (no kernel needed).

The Jupyter server extension (:mod:`notebook_llm._server_ext`) answers the
panel's requests with these functions. They open the SQLite file read-only
(``mode=ro``), never migrate or write it, and need neither pandas nor a
kernel. Everything returned is plain JSON-able data; the frontend shows model
text with ``textContent`` only.

Search uses the ``calls_fts`` full-text table where the log has one, and a
``LIKE`` over prompt and answer otherwise.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from notebook_llm._usage import last_user_text
from notebook_llm.store.db import default_db_path
from notebook_llm.store.log import utc_iso

__all__ = ["call", "calls", "costs", "models", "session_usd"]

_PREVIEW = 160
_SUMMARY = (
    "SELECT COALESCE(model, '?'), COUNT(*), SUM(cost_usd), SUM(input_tokens), "
    "SUM(output_tokens), SUM(cost_usd IS NULL AND error_class IS NULL) FROM calls"
)
_NOTEBOOK = (
    "(notebook_path = :notebook OR (length(notebook_path) > length(:notebook) AND "
    "substr(notebook_path, -length(:notebook) - 1) = '/' || :notebook))"
)
_LIKE = (
    "(messages_json LIKE :like ESCAPE '\\' OR response_text LIKE :like ESCAPE '\\' "
    "OR model LIKE :like ESCAPE '\\')"
)
_LIST = (
    "SELECT id, created_at, model, cost_usd, input_tokens, output_tokens, finish_reason, "
    "error_class, messages_json, response_text, notebook_path FROM calls"
)


@contextmanager
def _reader(db_path: str | Path | None) -> Iterator[sqlite3.Connection | None]:
    path = Path(db_path) if db_path is not None else default_db_path()
    if not path.exists():
        yield None
        return
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    try:
        yield conn
    finally:
        conn.close()


def _has_calls(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='calls'")
    return row.fetchone() is not None


def _today() -> str:
    now = datetime.now(timezone.utc).astimezone()
    return utc_iso(now.replace(hour=0, minute=0, second=0, microsecond=0))


def _by_model(conn: sqlite3.Connection, where: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = conn.execute(f"{_SUMMARY} WHERE {where} GROUP BY 1 ORDER BY 3 DESC, 2 DESC", params)
    return [
        {"model": model, "calls": n, "cost_usd": cost or 0.0, "input_tokens": tin or 0,
         "output_tokens": tout or 0, "unpriced": unpriced or 0}
        for model, n, cost, tin, tout, unpriced in rows
    ]


def costs(notebook: str | None = None, *, db_path: str | Path | None = None) -> dict[str, Any]:
    """Today's cost by model, and (with ``notebook``) that notebook's, all time."""
    out: dict[str, Any] = {"today": [], "notebook": [], "notebook_path": notebook}
    with _reader(db_path) as conn:
        if conn is None or not _has_calls(conn):
            return out
        out["today"] = _by_model(conn, "created_at >= :since", {"since": _today()})
        if notebook:
            out["notebook"] = _by_model(conn, _NOTEBOOK, {"notebook": notebook})
    return out


def session_usd(
    since: float | None, notebook: str | None = None, *, db_path: str | Path | None = None
) -> float:
    """Dollars spent since ``since`` (seconds since the epoch), in ``notebook`` if given."""
    if since is None:
        return 0.0
    start = utc_iso(datetime.fromtimestamp(since, timezone.utc))
    where, params = "created_at >= :since", {"since": start, "notebook": notebook}
    if notebook:
        where += f" AND {_NOTEBOOK}"
    with _reader(db_path) as conn:
        if conn is None or not _has_calls(conn):
            return 0.0
        row = conn.execute(f"SELECT SUM(cost_usd) FROM calls WHERE {where}", params).fetchone()
    return float(row[0] or 0.0)


def _summary_row(row: tuple[Any, ...]) -> dict[str, Any]:
    (call_id, created, model, cost, tin, tout, finish, error, messages, answer, notebook) = row
    return {
        "id": call_id, "created_at": created, "model": model, "cost_usd": cost,
        "input_tokens": tin, "output_tokens": tout, "finish_reason": finish,
        "error_class": error, "prompt": last_user_text(messages)[:_PREVIEW],
        "answer": (answer or "")[:_PREVIEW], "notebook_path": notebook,
    }


def _fts_ids(conn: sqlite3.Connection, query: str, limit: int) -> list[Any] | None:
    """Row ids matching ``query`` in ``calls_fts``; None where there is no usable index."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE name='calls_fts'").fetchone()
    if found is None:
        return None
    # The query as one phrase: what a person types, never FTS syntax.
    phrase = '"' + query.replace('"', '""') + '"'
    try:
        rows = conn.execute(
            "SELECT rowid FROM calls_fts WHERE calls_fts MATCH ? ORDER BY rank LIMIT ?",
            (phrase, limit)).fetchall()
    except sqlite3.Error:
        return None
    return [r[0] for r in rows]


def _indexed_upto(conn: sqlite3.Connection) -> int:
    """The highest call rowid in the search index (every call where unknown)."""
    try:
        row = conn.execute("SELECT indexed_rowid FROM calls_fts_state").fetchone()
    except sqlite3.Error:
        row = None
    if row is not None and isinstance(row[0], int):
        return row[0]
    newest = conn.execute("SELECT MAX(rowid) FROM calls").fetchone()
    return int(newest[0] or 0)


def calls(
    query: str = "", *, limit: int = 50, notebook: str | None = None,
    db_path: str | Path | None = None,
) -> dict[str, Any]:
    """The last calls, newest first; with ``query``, those whose prompt or answer match."""
    limit = max(1, min(int(limit), 500))
    out: dict[str, Any] = {"calls": [], "search": None}
    with _reader(db_path) as conn:
        if conn is None or not _has_calls(conn):
            return out
        where, params = [], {"limit": limit, "notebook": notebook}
        if notebook:
            where.append(_NOTEBOOK)
        if query:
            escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params["like"] = f"%{escaped}%"
            ids = _fts_ids(conn, query, limit * 4)
            if ids is not None:
                out["search"] = "fts"
                marks = ",".join(str(int(i)) for i in ids) or "NULL"
                # The index catches up with new calls when a kernel's log writer
                # is idle (this reader never writes): newer calls are matched
                # with LIKE until then.
                params["indexed"] = _indexed_upto(conn)
                where.append(f"(rowid IN ({marks}) OR (rowid > :indexed AND {_LIKE}))")
            else:
                out["search"] = "like"
                where.append(_LIKE)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = conn.execute(f"{_LIST}{clause} ORDER BY created_at DESC LIMIT :limit", params)
        out["calls"] = [_summary_row(row) for row in rows]
    return out


def call(call_id: str, *, db_path: str | Path | None = None) -> dict[str, Any] | None:
    """One call in full: messages, system prompt, answer, reasoning, error, figures."""
    with _reader(db_path) as conn:
        if conn is None or not _has_calls(conn):
            return None
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
    if row is None:
        return None
    data = dict(row)
    for field in ("messages_json", "params_json", "tool_calls_json", "tags_json"):
        raw = data.pop(field, None)
        try:
            data[field.removesuffix("_json")] = json.loads(raw) if raw else None
        except ValueError:
            data[field.removesuffix("_json")] = raw
    return data


def models(*, db_path: str | Path | None = None, limit: int = 50) -> list[str]:
    """Models in the log, most used first (the model picker's suggestions)."""
    with _reader(db_path) as conn:
        if conn is None or not _has_calls(conn):
            return []
        rows = conn.execute(
            "SELECT model FROM calls WHERE model IS NOT NULL GROUP BY model "
            "ORDER BY COUNT(*) DESC LIMIT ?", (limit,))
        return [r[0] for r in rows]
