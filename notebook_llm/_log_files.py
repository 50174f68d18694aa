"""Looking after the log file: :func:`log_backup` (a consistent copy) and
:func:`log_prune` (forget old text, keep the costs).

Both work while other kernels write: the backup reads one snapshot, and
pruning changes a few thousand rows per transaction so that no writer waits
long for the lock.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from notebook_llm._usage import TimeLike, parse_time
from notebook_llm.store.log import call_log, utc_iso

if TYPE_CHECKING:
    from notebook_llm.store.db import PathLike

__all__ = ["log_backup", "log_prune"]

# What a call asked and answered; the rest of the row (model, tokens, cost,
# time, tags, ids) is what the usage tables read.
_TEXT_COLUMNS = ("messages_json", "system", "response_text", "reasoning", "tool_calls_json")
# Text columns that later migrations may add: pruned when present.
_LATER_TEXT_COLUMNS = ("tool_results",)
_BATCH = 2000


def log_backup(path: PathLike, *, db_path: PathLike | None = None) -> Path:
    """Copy the whole log to ``path`` with SQLite's ``VACUUM INTO``; returns the path.

    The copy is one consistent snapshot (calls committed by other kernels
    during the copy are either all in or all out), compacted, readable by this
    user only (0600). Safe while other kernels write to the log.

    Raises:
        FileExistsError: ``path`` exists (a backup never overwrites).
        FileNotFoundError: its folder does not exist.
    """
    target = Path(path).expanduser().resolve()
    if target.exists():
        raise FileExistsError(f"{target} exists: a backup never overwrites; choose a new name")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target.parent} does not exist: create it first")
    log = call_log(db_path)
    log.flush()
    # VACUUM INTO accepts an empty file: made first, so it is private from the start.
    os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        log.store.execute("VACUUM INTO ?", (str(target),))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def log_prune(
    before: TimeLike,
    *,
    keep_costs: bool = True,
    vacuum: bool = False,
    db_path: PathLike | None = None,
) -> int:
    """Forget what calls made before ``before`` asked and answered.

    Args:
        before: a datetime, an ISO string, ``"today"`` or an age (``"90d"``).
        keep_costs: keep each call's row (model, tokens, cost, time, tags), so
            ``nl.costs()`` and ``nl.usage()`` still count it, and clear only
            its text: messages, system prompt, response, reasoning, tool calls
            and results. ``False`` deletes the rows.
        vacuum: compact the file afterwards (``VACUUM``: rewrites the file,
            blocking other writers meanwhile) so that it shrinks on disk.
        db_path: the database file (default: ``$NOTEBOOK_LLM_DB``, else the user data dir).

    Returns:
        How many calls were pruned (or deleted).
    """
    moment = parse_time(before)
    if moment is None:
        raise ValueError("before= is required: e.g. log_prune(before='90d')")
    cutoff = utc_iso(moment)
    log = call_log(db_path)
    log.flush()
    store = log.store
    present = {str(row["name"]) for row in store.execute("PRAGMA table_info(calls)")}
    columns = [c for c in (*_TEXT_COLUMNS, *_LATER_TEXT_COLUMNS) if c in present]
    if keep_costs:
        has_text = " OR ".join(f"{c} IS NOT NULL" for c in columns)
        cleared = ", ".join(f"{c} = NULL" for c in columns)
        change = (f"UPDATE calls SET {cleared} WHERE rowid IN (SELECT rowid FROM calls"
                  f" WHERE created_at < ? AND ({has_text}) LIMIT {_BATCH})")
        tidy = ("UPDATE conversations SET system = NULL, summary = NULL, summary_turns = 0"
                " WHERE last_used_at < ?")
    else:
        change = (f"DELETE FROM calls WHERE rowid IN"
                  f" (SELECT rowid FROM calls WHERE created_at < ? LIMIT {_BATCH})")
        tidy = ("DELETE FROM conversations WHERE last_used_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM calls WHERE calls.conversation_id = conversations.id)")
    total = 0
    while True:
        with store.transaction() as conn:
            changed = conn.execute(change, (cutoff,)).rowcount
            # New calls take rowids above the highest left: the search index's
            # mark must not stay above them, or they would never be indexed.
            conn.execute("UPDATE calls_fts_state SET indexed_rowid = MIN(indexed_rowid,"
                         " COALESCE((SELECT MAX(rowid) FROM calls), 0))")
        total += changed
        if changed < _BATCH:
            break
    with store.transaction() as conn:
        conn.execute(tidy, (cutoff,))
    if vacuum:
        store.execute("VACUUM")
    return total
