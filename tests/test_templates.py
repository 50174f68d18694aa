"""Templates: llm's YAML format, saved in the config directory, used by complete,
batch and compare; round trips through simonw/llm's own ``Template`` class."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from aiohttp import web
from llm.templates import Template as LlmTemplate

import notebook_llm as nl
from notebook_llm.errors import InvalidRequestError
from notebook_llm.store.log import call_log
from tests.support.loopback import LoopbackServer


class _Files(LoopbackServer):
    """Serves /ok.yaml and answers 404 elsewhere."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/ok.yaml":
            return web.Response(text="prompt: 'Hello $input'\nmodel: offline:echo\n")
        return web.Response(status=404, text="missing")


def test_save_get_list_edit_delete(llm_home: Path) -> None:
    t = nl.templates.save("summary", prompt="Summarise $topic:\n$input", system="Be $tone",
                          defaults={"tone": "brief"}, model="offline:echo")
    assert t.path == llm_home / "templates" / "summary.yaml"
    assert t.params() == ["topic", "input", "tone"] and t.required() == ["topic"]
    assert nl.templates.get("summary") == t
    listing = nl.templates.list()
    assert list(listing["name"]) == ["summary"] and listing["params"][0] == "topic, input, tone"
    edited = nl.templates.edit("summary", system=None, options={"temperature": 0.1})
    assert edited.system is None and nl.templates.get("summary").options == {"temperature": 0.1}
    assert "Summarise $topic" in nl.templates.show("summary")._repr_markdown_()
    nl.templates.delete("summary")
    assert nl.templates.names() == []
    with pytest.raises(InvalidRequestError, match="no template named 'summary'"):
        nl.templates.get("summary")
    with pytest.raises(InvalidRequestError, match="not a template name"):
        nl.templates.save("../escape", prompt="x")


def test_complete_with_a_template_fills_params_system_and_options(llm_home: Path) -> None:
    t = nl.templates.save("greet", prompt="Hello $name, about $input", system="Be $tone",
                          defaults={"tone": "kind"}, model="offline:echo",
                          options={"temperature": 0.3})
    done = nl.complete("cats", template=t, params={"name": "Ada"})
    assert done.text == "Hello Ada, about cats" and done.model == "offline:echo"
    by_name = nl.complete(template="greet", params={"name": "Bo", "input": "dogs"})
    assert by_name.text == "Hello Bo, about dogs"
    row = call_log().query(limit=1)[0]
    assert row["system"] == "Be kind" and '"temperature": 0.3' in row["params_json"]


def test_a_missing_parameter_is_named_before_sending(llm_home: Path) -> None:
    t = nl.templates.save("needs", prompt="About $topic", model="offline:echo")
    before = len(call_log().query())
    with pytest.raises(InvalidRequestError, match="needs the parameter 'topic'"):
        nl.complete(template=t)
    with pytest.raises(InvalidRequestError, match="params= fills a template"):
        nl.complete("x", model="offline:echo", params={"a": 1})
    assert len(call_log().query()) == before


def test_template_options_are_checked_against_the_provider(llm_home: Path) -> None:
    t = nl.templates.save("bad", prompt="x", model="offline:echo", options={"top_q": 1})
    with pytest.raises(InvalidRequestError, match=r"no option 'top_q'.*chunk_delay"):
        nl.complete(template=t)


def test_malformed_yaml_names_the_file_and_line(llm_home: Path) -> None:
    folder = llm_home / "templates"
    folder.mkdir(parents=True)
    (folder / "broken.yaml").write_text("prompt: ok\nsystem: [unclosed\n")
    with pytest.raises(InvalidRequestError, match=r"broken\.yaml, line 3"):
        nl.templates.get("broken")
    (folder / "odd.yaml").write_text("prompt: ok\ncolour: red\n")
    with pytest.raises(InvalidRequestError, match=r"odd\.yaml: unknown key 'colour'"):
        nl.templates.get("odd")


def test_load_from_a_path_and_a_url(llm_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "review.yaml"
    path.write_text("system: You review code\nprompt: 'Review: $input'\n")
    loaded = nl.templates.load(path)
    assert loaded.name == "review" and loaded.fill(input="x = 1").prompt == "Review: x = 1"
    with _Files().start() as server:
        from_url = nl.templates.load(f"{server.url}/ok.yaml")
        assert from_url.name == "ok" and from_url.model == "offline:echo"
        with pytest.raises(InvalidRequestError, match=r"missing\.yaml: the server answered "
                                                      "HTTP 404"):
            nl.templates.load(f"{server.url}/missing.yaml")
    with pytest.raises(InvalidRequestError, match="cannot read template"):
        nl.templates.load(tmp_path / "absent.yaml")


def test_round_trip_with_llm(llm_home: Path) -> None:
    ours = nl.templates.save(
        "full", prompt="Tell me about $input in $style", system="You are terse",
        model="gpt-4o-mini", defaults={"style": "prose"}, options={"temperature": 0.5},
        schema_object=nl.schema_dsl("name, age int"), fragments=["notes.txt"],
        system_fragments=["rules.txt"], extract=True,
    )
    assert ours.path is not None
    theirs = LlmTemplate(name="full", **yaml.safe_load(ours.path.read_text()))
    assert theirs.evaluate("owls", {}) == ("Tell me about owls in prose", "You are terse")
    assert theirs.schema_object == ours.schema_object and theirs.options == ours.options
    # ...and llm's own template (its YAML) loads here and means the same.
    dumped = theirs.model_dump(exclude_none=True)
    dumped.pop("name")
    back = nl.Template.from_yaml(yaml.safe_dump(dumped), "full")
    assert back.to_dict() == ours.to_dict()
    assert back.fill(input="owls").prompt == "Tell me about owls in prose"


def test_batch_with_a_template_fills_from_columns(llm_home: Path) -> None:
    t = nl.templates.save("classify", prompt="Classify: $review", system="Answer in $lang",
                          defaults={"lang": "English"}, model="offline:echo")
    df = pd.DataFrame({"review": ["good", "bad"], "lang": ["English", "French"]})
    result = nl.batch(df, template=t, progress=False)
    assert list(result.df["text"]) == ["Classify: good", "Classify: bad"]
    systems = [row["system"] for row in call_log().query("batch_id IS NOT NULL")]
    assert sorted(systems) == ["Answer in English", "Answer in French"]
    # The job's hash covers the resolved text: another template text is another job.
    other = nl.templates.save("classify", prompt="Label: $review", system="Answer in $lang",
                              model="offline:echo")
    again = nl.batch(df, template=other, progress=False, dry_run=True)
    assert again.job_id != result.job_id
    # A plain str keeps its str.format meaning.
    plain = nl.batch(df, "offline:echo", template="Say {review}", progress=False)
    assert list(plain.df["text"]) == ["Say good", "Say bad"]
    with pytest.raises(InvalidRequestError, match="no column 'review'"):
        nl.batch(pd.DataFrame({"text": ["x"]}), template=t, progress=False)


def test_compare_with_a_template(llm_home: Path) -> None:
    t = nl.templates.save("ask", prompt="Question: $q", system="Short answers")
    result = nl.compare(template=t, data=[{"q": "one"}, {"q": "two"}],
                        models=["offline:echo", "offline:story"])
    assert list(result.df["prompt"].unique()) == ["Question: one", "Question: two"]
    echo = result.df[result.df["model"] == "offline:echo"]
    assert list(echo["text"]) == ["Question: one", "Question: two"]
    assert {row["system"] for row in call_log().query("tags_json LIKE '%compare%'")} == {
        "Short answers"}
    plain = nl.compare(template="Say {w}", data=[{"w": "hi"}], models=["offline:echo"])
    assert list(plain.df["text"]) == ["Say hi"]
    with pytest.raises(InvalidRequestError, match="needs the parameter 'q'"):
        nl.compare(template=t, data=[{"x": 1}], models=["offline:echo"])


def test_files_are_written_atomically(llm_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nl.templates.save("keep", prompt="old text")

    def crash(descriptor: int) -> Any:
        raise OSError("disk gone")

    with monkeypatch.context() as patch:  # a crash mid-write: the old file stays whole
        patch.setattr(os, "fsync", crash)
        with pytest.raises(OSError, match="disk gone"):
            nl.templates.save("keep", prompt="new text")
    assert nl.templates.get("keep").prompt == "old text"
    assert sorted(p.name for p in (llm_home / "templates").iterdir()) == ["keep.yaml"]


def test_a_hostile_template_cannot_escape_its_code_block() -> None:
    t = nl.Template(name="x<b>", prompt="```` <img src=x onerror=alert(1)> ```\n~~~")
    markdown = t._repr_markdown_()
    assert markdown.startswith("**Template x&lt;b&gt;**\n\n`````yaml\n")
    assert markdown.rstrip().endswith("`````") and markdown.count("`````") == 2
    assert "\x1b" not in repr(nl.Template(name="t", prompt="\x1b[31mred"))


def test_llm_only_keys_load_but_are_refused_on_use(llm_home: Path) -> None:
    t = nl.Template.from_yaml("prompt: hi\nfunctions: |\n  def f(): pass\n", "code")
    assert t.functions is not None  # kept, so the file round-trips
    with pytest.raises(InvalidRequestError, match=r"uses llm's 'functions'.*never runs"):
        nl.complete(template=t, model="offline:echo")
