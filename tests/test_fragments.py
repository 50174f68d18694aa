"""Fragments: from files, URLs, variables and aliases; stored once by hash, linked
to the calls that used them, refused before sending when too large."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

import notebook_llm as nl
from notebook_llm._fragments import Fragment, remove_alias, resolve, set_alias
from notebook_llm._settings import load_settings, save_settings
from notebook_llm.errors import InvalidRequestError
from notebook_llm.store.log import call_log
from tests.support.loopback import LoopbackServer


class _Pages(LoopbackServer):
    hits = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        type(self).hits += 1
        if request.path == "/notes.txt":
            return web.Response(text="NOTES FROM THE WEB")
        return web.Response(status=500, text="broken")


def test_file_fragments_go_before_the_prompt_and_are_linked(llm_home: Path,
                                                            tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("CONTEXT ONE")
    rules = tmp_path / "rules.txt"
    rules.write_text("RULES")
    first = nl.complete("question", model="offline:echo", fragments=[str(notes)],
                        system_fragments=[rules])
    assert first.text == "CONTEXT ONE\nquestion"
    nl.complete("again", model="offline:echo", fragments=[str(notes)])
    calls = call_log().query()
    assert calls[0]["system"] == "RULES"
    table = nl.fragments()
    # Stored once each (by hash), however often used.
    assert sorted(table["source"]) == sorted([str(notes), str(rules)])
    used = dict(zip(table["source"], table["calls"], strict=True))
    assert used == {str(notes): 2, str(rules): 1}
    links = call_log().store.execute(
        "SELECT kind, position FROM call_fragments WHERE call_id = ?", (calls[0]["id"],))
    assert sorted((r["kind"], r["position"]) for r in links) == [("prompt", 0), ("system", 0)]


def test_aliases_urls_and_variables(llm_home: Path) -> None:
    with _Pages().start() as server:
        fragment = set_alias("web", f"{server.url}/notes.txt")
        assert fragment.content == "NOTES FROM THE WEB"
        # Fetched once for a while: calls that share a URL fragment do not each wait.
        nl.complete("a", model="offline:echo", fragments=[f"{server.url}/notes.txt"])
        assert _Pages.hits == 1
        with pytest.raises(InvalidRequestError, match=r"/fail: the server answered HTTP 500"):
            nl.complete("x", model="offline:echo", fragments=[f"{server.url}/fail"])
    # The alias works without the server: its text is in the log.
    done = nl.complete("q", model="offline:echo", fragments=["web"])
    assert done.text == "NOTES FROM THE WEB\nq"
    assert list(nl.fragments()["aliases"]) == ["web"]
    assert resolve("doc", {"doc": "from a variable"}).source == "variable:doc"
    with pytest.raises(InvalidRequestError, match="variable is a int"):
        resolve("n", {"n": 3})
    assert remove_alias("web") and not remove_alias("web")
    with pytest.raises(InvalidRequestError, match="'web' is not a URL, an alias"):
        resolve("web")


def test_too_large_fragments_are_refused_with_their_token_count(llm_home: Path) -> None:
    settings = load_settings()
    settings.fragment_max_tokens = 10
    save_settings(settings)
    big = Fragment("word " * 40, "big.txt")
    before = len(call_log().query())
    with pytest.raises(InvalidRequestError, match="about 50 tokens, over the limit of 10"):
        nl.complete("q", model="offline:echo", fragments=[big])
    assert len(call_log().query()) == before
    # Past a priced model's context window: refused before a key is even looked for.
    settings.fragment_max_tokens = None
    save_settings(settings)
    huge = Fragment("x" * 4_000_000, "huge.txt")
    with pytest.raises(InvalidRequestError, match="1,000,000 tokens, more than "
                                                  "openai:gpt-4o-mini's context window"):
        nl.complete("q", model="openai:gpt-4o-mini", fragments=[huge])


def test_keys_in_a_fragment_never_reach_the_log(llm_home: Path) -> None:
    key = "sk-" + "proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD"
    nl.complete("q", model="offline:echo", log=True,
                fragments=[Fragment(f"OPENAI_API_KEY={key}\nother", ".env")])
    stored = call_log().store.execute("SELECT content FROM fragments")
    assert len(stored) == 1 and key not in str(stored[0]["content"])
    assert "other" in str(stored[0]["content"])
