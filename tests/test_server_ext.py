"""The call log as the JupyterLab panel reads it: read-only, no kernel, no pandas.

A real call log written by real offline calls; the queries open it read-only.
The REST routes themselves are exercised in a running server by
tests/test_lab_extension.py.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

import notebook_llm as nl
from notebook_llm import _server_ext, _server_queries as queries
from notebook_llm.store.log import call_log


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "log.db"
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/work/a.ipynb")
    nl.Client(db_path=db).complete("alpha prompt about lighthouses", "offline:echo")
    monkeypatch.delenv("JPY_SESSION_NAME")
    client = nl.Client(db_path=db)
    client.complete('evil <img src=x onerror="alert(1)">', "offline:story", max_tokens=5)
    client.complete("plain third", "offline:echo")
    call_log(db).flush()
    return db


def test_a_missing_log_is_empty_not_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    assert queries.calls(db_path=missing) == {"calls": [], "search": None}
    assert queries.costs("x.ipynb", db_path=missing)["today"] == []
    assert queries.session_usd(time.time(), db_path=missing) == 0.0
    assert not missing.exists()  # read-only: nothing was created


def test_costs_by_model_today(log: Path) -> None:
    today = queries.costs(db_path=log)["today"]
    by_model = {row["model"]: row for row in today}
    assert by_model["offline:echo"]["calls"] == 2
    assert by_model["offline:story"]["calls"] == 1
    assert all(row["cost_usd"] == 0.0 for row in today)  # offline models are free


def test_last_calls_newest_first_with_previews(log: Path) -> None:
    found = queries.calls(db_path=log)
    prompts = [c["prompt"] for c in found["calls"]]
    assert prompts[0] == "plain third" and len(prompts) == 3
    assert found["search"] is None
    full = queries.call(found["calls"][1]["id"], db_path=log)
    assert full is not None
    assert full["messages"][-1]["content"].startswith("evil <img")
    assert full["response_text"]
    assert queries.call("no-such-id", db_path=log) is None


def test_search_falls_back_to_like_and_escapes_wildcards(log: Path) -> None:
    conn = sqlite3.connect(log)  # a log from before the search index
    conn.execute("DROP TABLE calls_fts")
    conn.commit()
    conn.close()
    found = queries.calls("lighthouses", db_path=log)
    assert found["search"] == "like"
    assert [c["prompt"] for c in found["calls"]] == ["alpha prompt about lighthouses"]
    assert queries.calls("%", db_path=log)["calls"] == []  # a literal percent sign


def test_search_uses_calls_fts_and_finds_calls_not_indexed_yet(log: Path) -> None:
    from notebook_llm.store.search import catch_up_all

    catch_up_all(call_log(log).store)
    found = queries.calls("third", db_path=log)
    assert found["search"] == "fts"
    assert [c["prompt"] for c in found["calls"]] == ["plain third"]
    # What a person types is a phrase, never FTS syntax.
    assert queries.calls('"unbalanced', db_path=log)["calls"] == []
    # A call the index has not caught up with yet (a kernel's writer indexes
    # when idle; this reader never writes) is found all the same.
    nl.Client(db_path=log).complete("fourth about third things", "offline:echo")
    call_log(log).flush()
    found = queries.calls("third", db_path=log)
    assert [c["prompt"] for c in found["calls"]] == ["fourth about third things", "plain third"]


def test_notebook_paths_match_relative_to_the_server_root(log: Path) -> None:
    mine = queries.costs("work/a.ipynb", db_path=log)["notebook"]
    assert [(r["model"], r["calls"]) for r in mine] == [("offline:echo", 1)]
    assert queries.costs("a.ipynb", db_path=log)["notebook"] == mine
    assert queries.costs("ork/a.ipynb", db_path=log)["notebook"] == []


def test_models_most_used_first(log: Path) -> None:
    assert queries.models(db_path=log) == ["offline:echo", "offline:story"]


def test_the_server_extension_names_itself() -> None:
    assert _server_ext._jupyter_server_extension_points() == [
        {"module": "notebook_llm._server_ext"}]
    config = Path(__file__).resolve().parents[1] / "jupyter-config"
    assert "notebook_llm._server_ext" in (
        config / "jupyter_server_config.d" / "notebook_llm.json").read_text()
