"""The call log by schema: which calls asked for a schema, and their parsed answers.

``nl.logs(schema=...)`` finds the calls through ``call_schemas`` (written by
the call log with each structured call); ``.parsed()`` turns their answers
back into rows: one per object, a ``--schema-multi`` answer's ``items``
flattened.
"""

from __future__ import annotations

import json
from typing import Any

from notebook_llm._schemas import json_schema_of, response_format, schema_id
from notebook_llm.store.db import PathLike
from notebook_llm.store.log import call_log

__all__ = ["parsed_frame", "schema_calls", "schema_key"]


def schema_key(schema: Any) -> str:
    """The id a schema is logged under: an id itself (32 hex digits), DSL text, a
    Pydantic model, a JSON schema or a response-format dict."""
    if isinstance(schema, str) and len(schema) == 32 and all(
            c in "0123456789abcdef" for c in schema):
        return schema
    converted = response_format(schema)
    if isinstance(converted, type):
        from notebook_llm.core.tools import normalise_response_format

        converted, _ = normalise_response_format(converted)
    found = json_schema_of(converted)
    if found is None:
        raise ValueError(f"{schema!r} is not a schema")
    return schema_id(found)


def schema_calls(schema: Any, n: int | None, db_path: PathLike | None) -> tuple[set[str], Any]:
    """The ids of the newest ``n`` calls that used ``schema``, and the time of the
    oldest of them (``None`` when there are none)."""
    log = call_log(db_path)
    log.flush()
    sql = ("SELECT c.id, c.created_at FROM call_schemas s JOIN calls c ON c.id = s.call_id "
           "WHERE s.schema_id = ? ORDER BY c.created_at DESC")
    if n is not None:
        sql += f" LIMIT {int(n)}"
    rows = log.store.tuples(sql, (schema_key(schema),))
    return {str(row[0]) for row in rows}, (rows[-1][1] if rows else None)


def parsed_frame(calls: Any) -> Any:
    """One row per parsed object of ``calls`` (a :func:`notebook_llm.usage` frame):
    ``call_id``, then the object's fields; a multi answer's ``items`` each a row.
    Answers that are not JSON objects are skipped."""
    import pandas as pd

    records: list[dict[str, Any]] = []
    for call_id, text in zip(calls["id"], calls["response"], strict=True):
        try:
            value = json.loads(_unfenced(str(text or "")))
        except ValueError:
            continue
        if isinstance(value, dict) and set(value) == {"items"} and isinstance(
                value["items"], list):
            objects = value["items"]
        else:
            objects = [value]
        records += [{"call_id": call_id, **item} for item in objects if isinstance(item, dict)]
    return pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=["call_id"])


def _unfenced(text: str) -> str:
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    return body
