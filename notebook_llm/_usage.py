"""Reading the call log back: :func:`usage` (one row per call) and :func:`costs` (totals).

Both do their work in SQLite. :func:`costs` groups and sums in SQL, from the
``idx_calls_usage`` index alone (migration ``m005``), and hands pandas only
the totals. :func:`usage` asks SQLite for just the columns it returns, with the
prompt (the last user message) taken out of the stored messages by SQLite's
JSON functions, and builds the frame column by column.

:class:`Logs`, :class:`UsageTable` and the plot functions show them; the
drawing itself is :mod:`notebook_llm._plots`, which only draws.
"""

from __future__ import annotations

import json
import operator
import re
import sqlite3
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any, Literal, cast

from notebook_llm._render import terminal_text
from notebook_llm.core.money import format_usd
from notebook_llm.store.log import call_log, utc_iso
from notebook_llm.store.search import (
    RANK,
    RANK_LIMIT,
    SEARCH_FROM,
    SNIPPET_SQL,
    catch_up_all,
    check_query,
    last_user_text,
    marked_segments,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

    from notebook_llm._log_entry import LogEntry
    from notebook_llm.store.db import PathLike
    from notebook_llm.store.log import CallLog

__all__ = [
    "COST_GROUPS",
    "USAGE_COLUMNS",
    "Logs",
    "costs",
    "last_user_text",
    "logs",
    "parse_time",
    "plot_costs",
    "plot_usage_over_time",
    "usage",
]

COST_GROUPS = ("model", "provider", "day", "notebook", "tag")

TimeLike = datetime | date | timedelta | str | None

# -- times --------------------------------------------------------------------------------

_SHORTHAND = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(s|secs?|m|mins?|h|hrs?|d|days?|w|wks?|weeks?)\s*$", re.IGNORECASE
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _local_tz() -> tzinfo:
    return datetime.now().astimezone().tzinfo or timezone.utc


def parse_time(value: TimeLike) -> datetime | None:
    """A point in time as an aware UTC datetime.

    Accepts a datetime (naive means local time), a date (local midnight), a
    timedelta (that long ago), an ISO string, or ``"now"``, ``"today"``,
    ``"yesterday"``, and ``"30m"``, ``"1h"``, ``"7d"``, ``"2w"`` (ago).
    """
    if value is None:
        return None
    now = datetime.now(timezone.utc)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).astimezone(timezone.utc)
    if isinstance(value, timedelta):
        return now - value
    if not isinstance(value, str):
        raise TypeError(
            f"expected a datetime, date, timedelta or string, not {type(value).__name__}"
        )
    text = value.strip().lower()
    midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).astimezone()
    if text == "now":
        return now
    if text == "today":
        return midnight.astimezone(timezone.utc)
    if text == "yesterday":
        return (midnight - timedelta(days=1)).astimezone(timezone.utc)
    match = _SHORTHAND.match(text)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)[0].lower()]
        return now - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"Cannot read {value!r} as a time: use a datetime, an ISO string, "
            "'today', 'yesterday', or an age such as '30m', '1h', '7d'"
        ) from None
    return parsed.astimezone(timezone.utc)


def _where(
    since: TimeLike, until: TimeLike, model: str | None = None, provider: str | None = None,
    tag: str | None = None, conversation: str | None = None, schema_id: str | None = None,
) -> tuple[str, list[Any]]:
    """The SQL condition (``""`` for every call) and its parameters."""
    where: list[str] = []
    params: list[Any] = []
    start, end = parse_time(since), parse_time(until)
    if start is not None:
        where.append("created_at >= ?")
        params.append(utc_iso(start))
    if end is not None:
        where.append("created_at < ?")
        params.append(utc_iso(end))
    if model is not None:
        # "openai:gpt-4o-mini" or just "gpt-4o-mini" (names may contain ':' themselves).
        where.append("(model = ? OR substr(model, instr(model, ':') + 1) = ?)")
        params += [model, model]
    if provider is not None:
        where.append("provider = ?")
        params.append(provider.rstrip(":"))
    if tag is not None:
        # A malformed tags_json (never written by this library) is no tag, not an error.
        where.append("EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(calls.tags_json)"
                     " THEN calls.tags_json END) WHERE value = ?)")
        params.append(tag)
    if conversation is not None:
        where.append("conversation_id = ?")
        params.append(conversation)
    if schema_id is not None:
        where.append("id IN (SELECT call_id FROM call_schemas WHERE schema_id = ?)")
        params.append(schema_id)
    return " AND ".join(where), params


# -- usage: one row per call ----------------------------------------------------------------

_USAGE_COLUMNS = (
    "id", "time", "provider", "model", "response_model", "input_tokens", "output_tokens",
    "total_tokens", "cached_input_tokens", "reasoning_tokens", "cost_usd", "cost_status",
    "cached", "latency_s", "ttft_s", "finish_reason", "error_class", "error_message", "tags",
    "conversation_id", "batch_id", "notebook_path", "prompt", "response",
)  # fmt: skip
USAGE_COLUMNS = (
    "time", "model", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "latency_s",
    "ttft_s", "finish_reason", "error_class", "error_message", "cached", "cost_status",
    "provider", "response_model", "cached_input_tokens", "reasoning_tokens", "tags",
    "conversation_id", "batch_id", "notebook_path", "prompt", "response", "id",
)  # fmt: skip
"""usage()'s columns as shown: what a person reads first (when, which model, how
many tokens, what it cost) leads, and the call's id comes last."""


class DefaultLimit(int):
    """The default limit: an ``int``, told apart from a limit the caller chose."""


DEFAULT_LIMIT = DefaultLimit(10_000)
"""How many of the most recent calls :func:`usage` returns unless told otherwise."""

_TOKEN_COLUMNS = ("input_tokens", "output_tokens", "total_tokens", "cached_input_tokens",
                  "reasoning_tokens")

# The last user message's text, when it is plain text; NULL when Python must
# decide (content parts or other types, no user message, malformed JSON):
# see last_user_text, which this reproduces.
_LAST_USER_SQL = """(SELECT CASE json_type(m.value, '$.content')
                  WHEN 'text' THEN json_extract(m.value, '$.content') WHEN 'null' THEN '' END
         FROM json_each(messages_json) AS m
         WHERE (CASE WHEN m.type = 'object' THEN json_extract(m.value, '$.role') END) = 'user'
         ORDER BY m.key DESC LIMIT 1)"""
# The same, trying the last message first ('$[#-1]' needs SQLite 3.31).
_PROMPT_SQL = f"""CASE WHEN json_valid(messages_json) AND json_type(messages_json) = 'array' THEN
  CASE WHEN json_extract(messages_json, '$[#-1].role') = 'user'
            AND json_type(messages_json, '$[#-1].content') = 'text'
       THEN json_extract(messages_json, '$[#-1].content')
       ELSE {_LAST_USER_SQL}
  END
END""" if sqlite3.sqlite_version_info >= (3, 31) else f"""CASE
  WHEN json_valid(messages_json) AND json_type(messages_json) = 'array' THEN {_LAST_USER_SQL}
END"""

# What usage() selects, in _USAGE_COLUMNS order (plus rowid first).
_USAGE_SELECT = ", ".join([
    "rowid", "id", "created_at", "provider", "model", "response_model", "input_tokens",
    "output_tokens", "COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0)",
    "cached_input_tokens", "reasoning_tokens", "cost_usd", "cost_status", "cached", "latency_s",
    "ttft_s", "finish_reason", "error_class", "error_message", "tags_json", "conversation_id",
    "batch_id", "notebook_path", _PROMPT_SQL, "response_text",
])  # fmt: skip


_TIME_ORDER = operator.itemgetter(2, 0)  # (created_at, rowid) of a _USAGE_SELECT row


def _tags(tags_json: str | None) -> Any:
    try:
        return json.loads(tags_json or "[]")
    except ValueError:
        return []


def _tag_lists(column: tuple[Any, ...]) -> list[Any]:
    """``tags_json`` texts as Python lists, each its own list (parsed once per distinct text)."""
    # A list of strings is parsed once and copied; anything else (False here)
    # is parsed again for every row, so no two rows share a mutable object.
    parsed: dict[Any, list[str] | Literal[False]] = {}
    out = []
    for text in column:
        tags = parsed.get(text)
        if tags is None:
            value = _tags(text)
            simple = type(value) is list and all(type(t) is str for t in value)
            parsed[text] = tags = value if simple else False
        out.append(list(tags) if tags is not False else _tags(text))
    return out


def usage(
    since: TimeLike = None,
    until: TimeLike = None,
    model: str | None = None,
    provider: str | None = None,
    tag: str | None = None,
    limit: int | None = DEFAULT_LIMIT,
    *,
    db_path: PathLike | None = None,
) -> pd.DataFrame:
    """Logged calls as a DataFrame, oldest first: the most recent ``limit`` of them.

    Args:
        since: only calls at or after this: a datetime, an ISO string, or
            ``"today"``, ``"yesterday"``, ``"30m"``, ``"1h"``, ``"7d"``, ``"2w"``.
        until: only calls before this (same forms).
        model: ``provider:model`` or the bare model name.
        provider: a provider name.
        tag: only calls carrying this tag.
        limit: the most recent calls to return (default :data:`DEFAULT_LIMIT`,
            10,000: a frame of every call with its prompt and answer grows by
            about 2 KB a call, and takes seconds per 100,000). ``None``
            returns every call; a warning says when the default limit left
            calls out.
            :func:`costs` totals every call whatever this says.
        db_path: the database file (default: ``$NOTEBOOK_LLM_DB``, else the user data dir).

    Returns:
        One row per call: ``time`` (local, tz-aware), ``model``, tokens,
        ``cost_usd`` (NaN when unpriced, see ``cost_status``), ``latency_s``,
        ``cached``, ``error_class`` / ``error_message``, ``tags``,
        ``notebook_path``, ``prompt`` (last user message), ``response``. Export
        it as any DataFrame: ``nl.usage("7d").to_csv("calls.csv")`` or
        ``.to_parquet("calls.parquet")``.
    """
    log = call_log(db_path)
    log.flush()
    where, params = _where(since, until, model, provider, tag)
    sql = f"SELECT {_USAGE_SELECT} FROM calls" + (f" WHERE {where}" if where else "")
    if limit is None:
        # Sorted here rather than by SQLite: a scan in table order and a sort of
        # the fetched rows beats reading the table in index order.
        rows = log.store.tuples(sql, tuple(params))
        rows.sort(key=_TIME_ORDER)
    else:
        # The newest `limit` rows, still returned oldest first.
        sql += f" ORDER BY created_at DESC, rowid DESC LIMIT {int(limit)}"
        rows = log.store.tuples(sql, tuple(params))[::-1]
    df = _usage_frame(log, rows)
    if isinstance(limit, DefaultLimit) and len(df) == limit:
        _warn_if_cut(log, where, params, limit)
    return df


def _usage_frame(log: CallLog, rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """Rows of ``_USAGE_SELECT`` (rowid first) as :func:`usage`'s frame, in their order."""
    import pandas as pd

    if rows:
        rowids, *values = zip(*rows, strict=True)
        del rows
        data: dict[str, Any] = dict(zip(_USAGE_COLUMNS, values, strict=True))
        data["tags"] = _tag_lists(data["tags"])
        prompts = data["prompt"]
        missing = [i for i, prompt in enumerate(prompts) if prompt is None]
        if missing:
            prompts = data["prompt"] = list(prompts)
            found = _messages(log, [rowids[i] for i in missing])
            for i, text in zip(missing, found, strict=True):
                prompts[i] = last_user_text(text)
        df = pd.DataFrame(data, columns=list(USAGE_COLUMNS))
    else:
        df = pd.DataFrame.from_records([], columns=list(USAGE_COLUMNS))
    df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601").dt.tz_convert(_local_tz())
    for column in _TOKEN_COLUMNS:
        df[column] = pd.to_numeric(df[column]).fillna(0).astype("int64")
    for column in ("cost_usd", "latency_s", "ttft_s"):
        df[column] = pd.to_numeric(df[column]).astype("float64")
    df["cached"] = df["cached"].fillna(0).astype(bool)
    return df


def _warn_if_cut(log: CallLog, where: str, params: list[Any], limit: int) -> None:
    total = int(cast(int, log.store.tuples(
        "SELECT COUNT(*) FROM calls" + (f" WHERE {where}" if where else ""), tuple(params)
    )[0][0]))
    if total > limit:
        warnings.warn(
            f"usage(): the newest {limit:,} of {total:,} logged calls; pass limit=None for "
            "every call (or since=... for a period). costs() totals every call",
            UserWarning,
            stacklevel=3,
        )


def _messages(log: CallLog, rowids: list[Any]) -> list[str | None]:
    """``messages_json`` of these rows, in their order."""
    found: dict[Any, str | None] = {}
    for start in range(0, len(rowids), 500):
        chunk = rowids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        found.update(cast("list[tuple[int, str | None]]", log.store.tuples(
            f"SELECT rowid, messages_json FROM calls WHERE rowid IN ({marks})", tuple(chunk)
        )))
    return [found.get(rowid) for rowid in rowids]


# -- costs: totals per group ----------------------------------------------------------------

_TOTALS = """COUNT(*),
  SUM(COALESCE(input_tokens, 0)), SUM(COALESCE(output_tokens, 0)),
  SUM(COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0)),
  SUM(cost_usd),
  SUM(CASE WHEN cost_status = 'unpriced' THEN 1 ELSE 0 END),
  SUM(CASE WHEN cached THEN 1 ELSE 0 END),
  SUM(CASE WHEN error_class IS NULL THEN 0 ELSE 1 END)"""
_COST_COLUMNS = ("calls", "input_tokens", "output_tokens", "total_tokens", "cost_usd",
                 "unpriced_calls", "cached_calls", "errors")
_INT_COLUMNS = ("calls", "input_tokens", "output_tokens", "total_tokens", "unpriced_calls",
                "cached_calls", "errors")


def costs(
    by: str = "model",
    since: TimeLike = None,
    until: TimeLike = None,
    *,
    db_path: PathLike | None = None,
) -> pd.DataFrame:
    """Totals per model, provider, day, notebook or tag.

    Args:
        by: ``"model"``, ``"provider"``, ``"day"``, ``"notebook"`` or ``"tag"``
            (a call with several tags counts once under each).
        since: as in :func:`usage`.
        until: as in :func:`usage`.
        db_path: as in :func:`usage`.

    Returns:
        One row per group: ``calls``, ``input_tokens``, ``output_tokens``,
        ``total_tokens``, ``cost_usd`` (sum of the priced calls; NaN when none
        was priced), ``unpriced_calls`` (never counted as free),
        ``cached_calls`` and ``errors``; the most expensive first (by day:
        oldest first).
    """
    if by not in COST_GROUPS:
        raise ValueError(f"by must be one of {', '.join(map(repr, COST_GROUPS))}, not {by!r}")
    import pandas as pd

    log = call_log(db_path)
    log.flush()
    where, params = _where(since, until)
    offset = datetime.now().astimezone().utcoffset() or timedelta(0)
    offset_s = int(offset.total_seconds())
    # (group key, first created_at, totals...): text, text, numbers.
    rows: list[tuple[Any, ...]] = log.store.tuples(_group_sql(by, where, offset_s), tuple(params))
    if by == "day":
        rows.sort(key=lambda row: row[0])
        keys: list[Any] = [date.fromisoformat(row[0]) for row in rows]
    else:
        if by == "tag":
            rows = _per_tag(rows)
        rows = _first_seen(log, rows, by, where, params, offset_s)
        keys = [row[0] for row in rows]
    totals: Sequence[Sequence[Any]]
    if rows:
        totals = list(zip(*rows, strict=True))[2:]
    else:
        totals = [[] for _ in _COST_COLUMNS]
    # The key's dtype inferred from its values, as pandas' groupby did.
    out = pd.DataFrame({by: pd.Series(keys), **dict(zip(_COST_COLUMNS, totals, strict=True))},
                       columns=[by, *_COST_COLUMNS])
    for column in _INT_COLUMNS:
        out[column] = out[column].astype("int64")
    out["cost_usd"] = pd.to_numeric(out["cost_usd"]).astype("float64")
    if by != "day":
        out = out.sort_values(["cost_usd", "calls"], ascending=False, na_position="last",
                              kind="stable").reset_index(drop=True)
    return out


def _group_sql(by: str, where: str, offset_s: int) -> str:
    """One row per group: key, its first call's ``created_at``, then the totals.

    One pass over the ``idx_calls_usage`` index, which holds every column
    read. Rows whose key is NULL count in no group (pandas dropped NaN keys).
    """
    filtered = f" AND {where}" if where else ""
    if by == "tag":
        # One row per distinct tag list (there are few); _per_tag explodes them.
        where_tags = f" WHERE {where}" if where else ""
        return (f"SELECT +tags_json, MIN(created_at), {_TOTALS} FROM calls{where_tags}"
                " GROUP BY +tags_json")
    key = _GROUP_KEYS[by].format(offset_s=offset_s)
    return (
        f"SELECT {key}, MIN(created_at), {_TOTALS} FROM calls"
        f" WHERE {key} IS NOT NULL{filtered} GROUP BY {key}"
    )


def _per_tag(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Totals per distinct ``tags_json`` turned into totals per tag.

    A call counts once under each of its tags (twice if listed twice), and as
    ``"(untagged)"`` when it has none; a ``None`` tag counts nowhere: what
    exploding the lists in pandas gave.
    """
    totals: dict[Any, list[Any]] = {}
    for tags_json, first, *sums in rows:
        for tag in list(_tags(tags_json)) or ["(untagged)"]:
            if tag is None or tag != tag:  # pandas drops None and NaN keys
                continue
            found = totals.get(tag)
            if found is None:
                totals[tag] = [first, *sums]
                continue
            found[0] = min(found[0], first)
            for i, value in enumerate(sums, 1):
                if value is not None:  # SUM() of no priced call is NULL
                    found[i] = value if found[i] is None else found[i] + value
    return [(tag, *values) for tag, values in totals.items()]


# "+model": the same value, but a term no index serves, so that SQLite reads
# the covering idx_calls_usage rather than idx_calls_model and then the table.
_GROUP_KEYS = {
    "model": "+model",
    "provider": "+provider",
    "notebook": "COALESCE(notebook_path, '(unknown)')",
    # The local date at today's UTC offset, as pandas' tz_convert(_local_tz()) gave.
    "day": "date(created_at, '{offset_s:+d} seconds')",
}


def _first_seen(
    log: CallLog, rows: list[tuple[Any, ...]], by: str, where: str, params: list[Any],
    offset_s: int,
) -> list[tuple[Any, ...]]:
    """``rows`` in the order their groups first appear in :func:`usage`'s order.

    That order is (created_at, rowid), and for tags the tag's place in its
    call's list: what pandas' ``groupby(sort=False)`` kept. The first
    ``created_at`` of each group decides, except between groups whose first
    calls share one ``created_at``: those few are settled by reading the
    calls made at that moment.
    """
    rows = sorted(rows, key=lambda row: row[1])
    counts = Counter(row[1] for row in rows)
    tied = sorted(first for first, count in counts.items() if count > 1)
    if not tied:
        return rows
    marks = ", ".join("?" for _ in tied)
    filtered = f" AND {where}" if where else ""
    column = "tags_json" if by == "tag" else _GROUP_KEYS[by].format(offset_s=offset_s)
    found = cast("list[tuple[str | None]]", log.store.tuples(  # one text column
        f"SELECT {column} FROM calls WHERE created_at IN ({marks}){filtered}"
        " ORDER BY created_at, rowid", (*tied, *params)))
    order: dict[Any, int] = {}
    for (value,) in found:
        # For tags, in each call's list order, as _per_tag reads them.
        for key in (list(_tags(value)) or ["(untagged)"]) if by == "tag" else [value]:
            order.setdefault(key, len(order))
    return sorted(rows, key=lambda row: (row[1], order.get(row[0], 0)))


# -- tables and charts -----------------------------------------------------------------


def _excerpt(text: Any, limit: int) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Logs:
    """The last few logged calls, readable in a notebook; ``.df`` for everything.

    ``logs(5)`` in a cell shows model, time, prompt, response excerpt,
    tokens and cost of each; ``logs(100).df.to_csv("calls.csv")`` exports.
    A search (``logs(q=...)``) keeps the order of relevance everywhere: in
    :attr:`df` (with a ``rank`` column) and on screen, with the matches
    highlighted. :meth:`call` opens one row into the whole call.
    """

    def __init__(
        self, df: pd.DataFrame, *, query: str | None = None,
        snippets: list[tuple[str | None, str | None]] | None = None, note: str | None = None,
        db_path: PathLike | None = None,
    ) -> None:
        self.df = df
        """The calls, as :func:`usage` returns them (a search: best match first)."""
        self.query = query
        """The search, when this is one."""
        self._snippets = snippets or []
        self.note = note
        """What to know about these results (a search with more matches than it ranks)."""
        self._db_path = db_path

    def __len__(self) -> int:
        return len(self.df)

    def to_pandas(self) -> pd.DataFrame:
        """Same as :attr:`df`."""
        return self.df

    def parsed(self) -> pd.DataFrame:
        """The structured answers as a DataFrame: one row per object (``call_id``,
        then its fields; a ``--schema-multi`` answer's items each a row)."""
        from notebook_llm._schema_log import parsed_frame

        result: pd.DataFrame = parsed_frame(self.df)
        return result

    def _shown(self) -> pd.DataFrame:
        """The rows in the order they are shown: newest first, or best match first."""
        return self.df if self.query is not None else self.df.iloc[::-1]

    def call(self, which: int | str) -> LogEntry:
        """One call in full: ``which`` is its place as shown (0 is the first) or its id."""
        from notebook_llm._log_entry import log_entry

        if isinstance(which, str):
            return log_entry(which, db_path=self._db_path)
        shown = self._shown()
        if not -len(shown) <= which < len(shown):
            raise IndexError(f"call({which}): there are {len(shown)} calls here")
        return log_entry(str(shown["id"].iloc[which]), db_path=self._db_path)

    def _lines(self) -> list[tuple[str, str, str, str]]:
        out = []
        for row in self._shown().itertuples(index=False):
            cost = format_usd(None if row.cost_usd != row.cost_usd else row.cost_usd,
                               row.cost_status or "unknown")
            head = (f"{row.model} · {row.time:%Y-%m-%d %H:%M:%S} · "
                    f"{row.input_tokens} in / {row.output_tokens} out · {cost}")
            if row.latency_s == row.latency_s and row.latency_s is not None:
                head += f" · {row.latency_s:.2f}s"
            if row.cached:
                head += " · cached"
            error = f"{row.error_class}: {row.error_message}" if row.error_class else ""
            out.append((head, _excerpt(row.prompt, 200), _excerpt(row.response, 300), error))
        return out

    def _repr_html_(self) -> str | None:
        """A search's results with the matches highlighted (escaped); ``None`` otherwise."""
        if self.query is None:
            return None
        from notebook_llm._render import html_escape

        if self.df.empty:
            return f"<p>No logged call matches <code>{html_escape(self.query)}</code>.</p>"
        cards = []
        for i, ((head, _prompt, _response, error), (prompt, response)) in enumerate(
            zip(self._lines(), self._matches(), strict=True)
        ):
            call_id = html_escape(self._shown()["id"].iloc[i])
            card = [f"<div><strong>{html_escape(head)}</strong>"
                    f" <small><code>{call_id}</code></small>"]
            card.append(f"<div><em>Prompt:</em> {_marked_html(prompt)}</div>")
            if response:
                card.append(f"<div><em>Response:</em> {_marked_html(response)}</div>")
            if error:
                card.append(f"<div><em>Error:</em> {html_escape(_excerpt(error, 300))}</div>")
            cards.append("".join(card) + "</div>")
        note = f"<p><small>{html_escape(self.note)}</small></p>" if self.note else ""
        return f'<div class="notebook-llm-logs">{note}' + "<hr>".join(cards) + "</div>"

    def _matches(self) -> list[tuple[str, str]]:
        """Each shown row's prompt and response excerpts, with the search's marks."""
        out = []
        for i, row in enumerate(self._shown().itertuples(index=False)):
            prompt, response = self._snippets[i] if i < len(self._snippets) else (None, None)
            out.append((prompt or _excerpt(row.prompt, 200),
                        response or _excerpt(row.response, 300)))
        return out

    def _repr_markdown_(self) -> str:
        from notebook_llm._render import escape_markdown, markdown_text

        if self.df.empty:
            return "*No calls logged.*"
        lines = self._lines()
        show: Callable[[str], str] = escape_markdown
        texts = [(prompt, response) for _head, prompt, response, _error in lines]
        if self.query is not None:
            show, texts = _marked_markdown, self._matches()
        cards = []
        for (head, _p, _r, error), (prompt, response) in zip(lines, texts, strict=True):
            card = [f"**{markdown_text(head)}**", "", f"*Prompt:* {show(prompt)}"]
            if response:
                card += ["", f"*Response:* {show(response)}"]
            if error:
                card += ["", f"*Error:* {escape_markdown(_excerpt(error, 300))}"]
            cards.append("\n".join(card))
        if self.note:
            cards.insert(0, f"*{markdown_text(self.note)}*")
        return "\n\n---\n\n".join(cards)

    def __repr__(self) -> str:
        if self.df.empty:
            return "No calls logged." if self.query is None else (
                terminal_text(f"No logged call matches {self.query!r}."))
        blocks = []
        cards = self._lines()
        if self.query is not None:
            marked = [(_marked_plain(p), _marked_plain(r)) for p, r in self._matches()]
            cards = [(h, p, r, e) for (h, _p, _r, e), (p, r) in zip(cards, marked, strict=True)]
        if self.note:
            blocks.append(self.note)
        for head, prompt, response, error in cards:
            lines = [head, f"  prompt:   {prompt}"]
            if response:
                lines.append(f"  response: {response}")
            if error:
                lines.append(f"  error:    {_excerpt(error, 300)}")
            blocks.append("\n".join(lines))
        return terminal_text("\n\n".join(blocks))


def _marked_html(text: str) -> str:
    from notebook_llm._render import html_escape

    return "".join(f"<mark>{html_escape(part)}</mark>" if match else html_escape(part)
                   for part, match in marked_segments(" ".join(text.split())))


def _marked_markdown(text: str) -> str:
    from notebook_llm._render import markdown_text

    out = []
    for part, match in marked_segments(" ".join(text.split())):
        escaped = markdown_text(part)
        if match and escaped:
            escaped = f"**{escaped}**"
        lead = " " if part[:1].isspace() else ""
        trail = " " if part[-1:].isspace() else ""
        out.append(f"{lead}{escaped}{trail}")
    return "".join(out)


def _marked_plain(text: str) -> str:
    return "".join(f"«{part}»" if match else part
                   for part, match in marked_segments(" ".join(text.split())))


def logs(
    n: int = 3,
    *,
    q: str | None = None,
    model: str | None = None,
    since: TimeLike = None,
    tag: str | None = None,
    conversation: Any = None,
    schema: Any = None,
    db_path: PathLike | None = None,
) -> Logs:
    """The last ``n`` calls, newest first when shown; with ``q=``, the ``n`` best matches.

    Args:
        n: how many calls.
        q: full-text search over prompts and responses (SQLite FTS5): words
            (all must appear, ``refund*`` for a prefix), ``"a phrase"``,
            ``OR``, ``NOT``, ``prompt:`` or ``response:`` for one side. Rows
            come best match first, with a ``rank`` column, and the matches
            are highlighted when shown. Bad syntax raises a ValueError that
            says what to type.
        model: ``provider:model`` or the bare model name.
        since: only calls since then (``"7d"``, ``"today"``, a datetime...).
        tag: only calls carrying this tag.
        conversation: only this conversation's calls (a conversation or its id).
        schema: only the calls that asked for this schema (DSL text, a Pydantic
            model, a JSON schema or a schema id); ``.parsed()`` gives their objects.
        db_path: the database file (default: ``$NOTEBOOK_LLM_DB``, else the user data dir).

    Example::

        nl.logs(5)                              # readable in a cell
        nl.logs(q="refund policy", since="7d").call(0)    # the best match, in full
        nl.logs(1000).df.to_parquet("calls.parquet")
        nl.logs(50, schema="name, age int").parsed()
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive whole number, not {n!r}")
    conversation_id = (None if conversation is None
                       else str(getattr(conversation, "id", conversation)))
    schema_id = None
    if schema is not None:
        from notebook_llm._schema_log import schema_key

        schema_id = schema_key(schema)
    if q is None:
        condition, params = _where(since, None, model, None, tag, conversation_id, schema_id)
        log = call_log(db_path)
        log.flush()
        sql = f"SELECT {_USAGE_SELECT} FROM calls" + (
            f" WHERE {condition}" if condition else "")
        sql += f" ORDER BY created_at DESC, rowid DESC LIMIT {int(n)}"
        return Logs(_usage_frame(log, log.store.tuples(sql, tuple(params))[::-1]),
                    db_path=db_path)
    where = _where(since, None, model, None, tag, conversation_id, schema_id)
    return _search(q, n, where, db_path)


def _search(q: str, n: int, where: tuple[str, list[Any]], db_path: PathLike | None) -> Logs:
    """The ``n`` best matches of ``q``: ranked rowids first, then their rows and excerpts."""
    log = call_log(db_path)
    log.flush()
    catch_up_all(log.store)  # calls not indexed yet (the writer indexes when idle)
    query = check_query(log.store.conn, q)
    condition, params = where
    # Ranking costs SQLite a few microseconds a match (bm25), and a filter
    # reads each match's row: a word in most of 100,000 calls would take a
    # second. So at most RANK_LIMIT matches are ranked, the newest (FTS5
    # lists matches in rowid order, cheaply), and the result says so.
    if condition:
        newest = log.store.tuples(
            f"SELECT calls_fts.rowid FROM {SEARCH_FROM} WHERE calls_fts MATCH ? AND {condition}"
            f" ORDER BY calls_fts.rowid DESC LIMIT {RANK_LIMIT + 1}", (query, *params))
        capped = len(newest) > RANK_LIMIT
        candidates = {int(cast(int, row[0])) for row in newest[:RANK_LIMIT]}
        # Rank the matches in the candidates' rowid range without reading their
        # rows, then keep the candidates: cheaper than ranking through the join.
        in_range = log.store.tuples(
            f"SELECT rowid, {RANK} FROM calls_fts WHERE calls_fts MATCH ? AND rowid >= ?"
            f" ORDER BY {RANK}", (query, min(candidates, default=0)))
        ranked = [row for row in in_range if row[0] in candidates][: int(n)]
    else:
        newest = log.store.tuples(
            "SELECT rowid FROM calls_fts WHERE calls_fts MATCH ?"
            f" ORDER BY rowid DESC LIMIT 1 OFFSET {RANK_LIMIT}", (query,))
        capped = bool(newest)
        ranked = log.store.tuples(
            f"SELECT rowid, {RANK} FROM calls_fts WHERE calls_fts MATCH ? AND rowid > ?"
            f" ORDER BY {RANK} LIMIT {int(n)}", (query, newest[0][0] if newest else 0))
    note = None
    if capped:
        note = (f"More than {RANK_LIMIT:,} calls match: these are the best of the newest "
                f"{RANK_LIMIT:,}. Add words, or since=, model=, tag= to narrow the search.")
    rowids = [row[0] for row in ranked]
    marks = ", ".join("?" for _ in rowids)
    by_rowid = {row[0]: row for row in log.store.tuples(
        f"SELECT {_USAGE_SELECT} FROM calls WHERE rowid IN ({marks})", tuple(rowids))}
    snippets = {row[0]: (row[1], row[2]) for row in log.store.tuples(
        f"SELECT rowid, {SNIPPET_SQL} FROM calls_fts WHERE calls_fts MATCH ?"
        f" AND rowid IN ({marks})", (query, *rowids))}
    df = _usage_frame(log, [by_rowid[rowid] for rowid in rowids])
    df["rank"] = [float(cast(float, row[1])) for row in ranked]
    return Logs(df, query=query, note=note, db_path=db_path,
                snippets=[cast("tuple[str | None, str | None]", snippets.get(rowid, (None, None)))
                          for rowid in rowids])


def plot_costs(
    by: str = "model",
    since: TimeLike = None,
    *,
    ax: Axes | None = None,
    db_path: PathLike | None = None,
) -> Axes:
    """Bar chart of the cost per model, provider, day, notebook or tag.

    Groups with unpriced calls are hatched and labelled ``+N unpriced``, so an
    unknown cost never looks like a free one.

    Args:
        by: as in :func:`costs`.
        since: only calls since then (``"7d"``, ``"today"``, a datetime...).
        ax: draw into these Axes instead of a new figure.
        db_path: the database file (default: as :func:`usage`).

    Returns:
        The Axes (``ax.figure`` is the Figure).
    """
    from notebook_llm import _plots

    frame = costs(by=by, since=since, db_path=db_path)
    title = f"Cost by {by}" + (f" since {since}" if isinstance(since, str) else "")
    return _plots.plot_costs(frame, by, title=title, ax=ax)


def plot_usage_over_time(
    freq: str = "D",
    since: TimeLike = None,
    *,
    ax: Axes | None = None,
    db_path: PathLike | None = None,
) -> Axes:
    """Cost (bars, left axis) and tokens (line, right axis) per period.

    Args:
        freq: a pandas offset alias for the period: ``"h"``, ``"D"``, ``"W"``, ``"MS"``...
        since: only calls since then (``"7d"``, ``"today"``, a datetime...).
        ax: draw into these Axes instead of a new figure.
        db_path: the database file (default: as :func:`usage`).

    Returns:
        The cost Axes; the tokens are on its twin (``ax.right_ax``).
    """
    from notebook_llm import _plots

    return _plots.plot_usage_over_time(usage(since=since, db_path=db_path), freq, ax=ax)


# ``nl.usage.plot_costs(...)`` reads as "plot the usage's costs" and was documented
# before ``nl.plot_costs``: both stay, as attributes of the function (which mypy
# cannot declare on a function).
usage.plot_costs = plot_costs  # type: ignore[attr-defined]
usage.plot_usage_over_time = plot_usage_over_time  # type: ignore[attr-defined]
