"""Settings that persist: the config directory, atomic 0600 files, saved aliases,
default models and per-model option defaults."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import notebook_llm as nl
from notebook_llm._settings import config_dir, load_settings, save_settings, settings_path
from notebook_llm.errors import InvalidRequestError
from notebook_llm.store.log import call_log


def test_home_overrides_the_config_directory(llm_home: Path) -> None:
    assert config_dir() == llm_home and settings_path() == llm_home / "settings.yaml"


def test_saved_settings_load_in_a_new_default_client(llm_home: Path) -> None:
    saved = load_settings()
    saved.aliases["fast"] = "offline:echo"
    saved.default_model = "offline:story"
    saved.default_embedding_model = "offline:hash"
    save_settings(saved)
    mode = stat.S_IMODE(settings_path().stat().st_mode)
    assert mode == 0o600
    nl.set_default_client(None)
    client = nl.default_client()
    assert client.aliases["fast"] == "offline:echo" and client.default == "offline:story"
    assert client.embedding_model == "offline:hash"
    assert nl.complete("hi", model="fast").text == "hi"


def test_option_defaults_apply_unless_the_call_sets_them(llm_home: Path) -> None:
    nl.options.set("offline:echo", "temperature", "0.25")
    nl.options.set("offline:echo", "chunk_delay", 0)
    assert nl.options.get("offline:echo") == {"temperature": 0.25, "chunk_delay": 0.0}
    nl.complete("a", model="offline:echo")
    nl.complete("b", model="offline:echo", temperature=0.9)
    first, second = call_log().query()[-2:]
    assert '"temperature": 0.25' in first["params_json"] and '"chunk_delay"' in first["params_json"]
    assert '"temperature": 0.9' in second["params_json"]
    with pytest.raises(InvalidRequestError, match=r"no option 'top_pp'\. Did you mean top_p"):
        nl.options.set("openai:gpt-4o-mini", "top_pp", 0.9)
    with pytest.raises(InvalidRequestError, match="expected a number, got 'high'"):
        nl.options.set("openai:gpt-4o-mini", "top_p", "high")
    valid = nl.options.valid("anthropic:claude-3-5-haiku-latest")
    assert {"top_k", "thinking", "temperature"} <= set(valid["option"])
    nl.options.unset("offline:echo", "chunk_delay")
    assert list(nl.options.list()["option"]) == ["temperature"]


def test_credentials_are_never_saved(llm_home: Path) -> None:
    saved = load_settings()
    saved.options["openai:gpt-4o"] = {"api_key": "sk-x"}
    with pytest.raises(InvalidRequestError, match="looks like a credential"):
        save_settings(saved)
    assert not settings_path().exists()


def test_a_broken_settings_file_is_named_with_its_line(llm_home: Path) -> None:
    llm_home.mkdir(parents=True)
    settings_path().write_text("aliases:\n  fast: offline:echo\n bad indent: [\n")
    with pytest.raises(InvalidRequestError, match=r"settings\.yaml, line \d+: not valid YAML"):
        load_settings(reload=True)
    # Calls still work: a broken file counts as nothing saved.
    assert nl.complete("ok", model="offline:echo").text == "ok"


def test_options_reach_the_openai_wire_body(llm_home: Path) -> None:
    from tests.support.replay import ReplayServer, Reply, load_fixture

    fixture = load_fixture("openai__chat_completions__05ca9ac589d2")
    with ReplayServer() as server:
        server.enqueue(Reply.from_fixture(fixture), Reply.from_fixture(fixture))
        client = nl.Client(api_keys={"openai": "sk-test"},
                           api_bases={"openai": server.url + "/v1"}, log=False)
        nl.options.set("openai:gpt-4o-mini", "seed", 7)
        t = nl.templates.save("wire", prompt="Say $word", model="openai:gpt-4o-mini",
                              options={"top_p": 0.5, "temperature": 0.1})
        client.complete(template=t, params={"word": "hi"})
        client.complete("plain", model="openai:gpt-4o-mini", seed=8)
        first, second = (request.json() for request in server.requests)
    assert first["messages"] == [{"role": "user", "content": "Say hi"}]
    assert (first["top_p"], first["temperature"], first["seed"]) == (0.5, 0.1, 7)
    assert second["seed"] == 8 and "top_p" not in second  # the call's own value wins
