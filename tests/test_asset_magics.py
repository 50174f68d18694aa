"""Templates, fragments, schemas and options through the magics, in a real kernel."""

from __future__ import annotations

from tests.support.kernel import KernelSession, ok, value

SETUP = """
import os, tempfile
os.environ["NOTEBOOK_LLM_HOME"] = tempfile.mkdtemp()
%load_ext notebook_llm
import notebook_llm as nl
from notebook_llm.store.log import call_log
def last_row():
    return call_log().query(limit=1)[0]
"""


def test_template_flags_and_the_line_magic(kernel: KernelSession) -> None:
    ok(kernel, 'nl.templates.save("about", prompt="About $topic: $input", system="Be $tone", '
               'defaults={"tone": "brief"}, model="offline:echo")')
    ok(kernel, "%%llm --template about -p topic owls -p tone 'very kind'\nnight birds")
    assert value(kernel, "_llm.text") == "About owls: night birds"
    assert value(kernel, "last_row()['system']") == "Be very kind"
    ok(kernel, "x = %llm --template about -p topic cats small ones")
    assert value(kernel, "x.text") == "About cats: small ones"
    missing = kernel.execute("%%llm --template about\ntext")
    assert missing.status == "error" and "needs the parameter 'topic'" in missing.text
    unknown = kernel.execute("%%llm --template nothing\ntext")
    assert unknown.status == "error" and "no template named 'nothing'" in unknown.text
    stray = kernel.execute("%%llm -m offline:echo -p a b\ntext")
    assert stray.status == "error" and "add --template NAME" in stray.text


def test_save_a_template_from_the_cell_above(kernel: KernelSession) -> None:
    ok(kernel, "animal = 'fox'")
    ok(kernel, "%%llm -m offline:echo -s 'Answer briefly' -O chunk_delay 0 "
               "--schema 'name, legs int'\n"
               '{{"name": "{animal}", "legs": 4}}')
    ok(kernel, "%llm_template save creature")
    saved = value(kernel, "nl.templates.get('creature').to_dict()")
    assert saved["prompt"] == '{"name": "${animal}", "legs": 4}'
    assert saved["system"] == "Answer briefly" and saved["model"] == "offline:echo"
    assert saved["options"] == {"chunk_delay": 0}
    assert saved["schema_object"]["properties"]["legs"] == {"type": "integer"}
    ok(kernel, "%llm --template creature -p animal owl")
    assert value(kernel, "_llm.parsed") == {"name": "owl", "legs": 4}  # schema_object: JSON


def test_template_extract_shows_the_code_block_and_puts_it_below(kernel: KernelSession) -> None:
    # llm's extract / extract_last: the answer's first / last fenced code block.
    answer = "Here:\n```python\nprint(1)\n```\nor\n```python\nprint(2)\n```\nDone."
    ok(kernel, f'nl.templates.save("first", prompt="$input", model="offline:echo", extract=True)\n'
               f'nl.templates.save("last", prompt="$input", model="offline:echo", '
               f'extract_last=True)\nANSWER = {answer!r}')
    for name, code in (("first", "print(1)"), ("last", "print(2)")):
        done = ok(kernel, f"%%llm --template {name}\n{{ANSWER}}")
        payload = done.reply["content"]["payload"]  # type: ignore[index]
        assert {"source": "set_next_input", "text": code, "replace": False} in payload
        assert "Here:" not in done.html and "Done." not in done.html
        assert value(kernel, "_llm.text") == answer  # the whole answer is kept
    # -f says otherwise: the whole answer, as Markdown.
    done = ok(kernel, "%%llm --template first -f text\n{ANSWER}")
    assert "Here:" in done.html and not done.reply["content"]["payload"]  # type: ignore[index]


def test_template_cell_magic_list_show_edit_delete(kernel: KernelSession) -> None:
    ok(kernel, "%%llm_template save haiku\nprompt: 'A haiku about $input'\nmodel: offline:echo\n")
    ok(kernel, "%%llm --template haiku\nrain")
    assert value(kernel, "_llm.text") == "A haiku about rain"
    listed = ok(kernel, "%llm_template list")
    assert "haiku" in listed.text
    shown = ok(kernel, "%llm_template show haiku")
    assert "A haiku about $input" in shown.text
    edit = ok(kernel, "%llm_template edit haiku")
    payload = edit.reply["content"]["payload"]  # type: ignore[index]
    assert payload[0]["source"] == "set_next_input" and payload[0]["text"].startswith(
        "%%llm_template save haiku\nprompt: A haiku about $input")
    ok(kernel, "%llm_template delete haiku")
    assert "haiku" not in value(kernel, "nl.templates.names()")
    ok(kernel, "open('shared.yaml', 'w').write('prompt: Shared $input\\nmodel: offline:echo\\n')")
    ok(kernel, "%llm_template load shared.yaml team")
    ok(kernel, "%%llm --template team\nidea")
    assert value(kernel, "_llm.text") == "Shared idea"
    broken = kernel.execute("%%llm_template save bad\nprompt: [unclosed\n")
    assert broken.status == "error" and "line 2" in broken.text and "not valid YAML" in broken.text


def test_fragments_from_variables_files_and_aliases(kernel: KernelSession) -> None:
    ok(kernel, "notes = 'NOTES'\nopen('rules.txt', 'w').write('RULES')")
    ok(kernel, "%%llm -m offline:echo -F notes --sf rules.txt\nquestion")
    assert value(kernel, "_llm.text") == "NOTES\nquestion"
    assert value(kernel, "last_row()['system']") == "RULES"
    ok(kernel, "%llm_fragments alias house rules.txt")
    ok(kernel, "%%llm -m offline:echo -F house\nq")
    assert value(kernel, "_llm.text") == "RULES\nq"
    table = ok(kernel, "%llm_fragments")
    assert "house" in table.text
    bad = kernel.execute("%%llm -m offline:echo -F no_such_thing\nq")
    assert bad.status == "error" and "'no_such_thing' is not a URL, a notebook variable" in bad.text
    ok(kernel, "%llm_fragments --limit 1")
    big = kernel.execute("%%llm -m offline:echo -F notes\nq")
    assert big.status == "error" and "over the limit of 1" in big.text
    ok(kernel, "%llm_fragments --limit none")


def test_schema_forms_and_multi(kernel: KernelSession) -> None:
    ok(kernel, "%%llm -m offline:echo --schema 'name, age int, bio: a short biography'\n"
               '{{"name": "Ada", "age": 36, "bio": "math"}}')
    assert value(kernel, "_llm.parsed.bio") == "math"
    ok(kernel, "%%llm -m offline:echo --schema-multi 'name, age int'\n"
               '{{"items": [{{"name": "A", "age": 1}}, {{"name": "B", "age": 2}}]}}')
    assert value(kernel, "[p.name for p in _llm.parsed.items]") == ["A", "B"]
    assert value(kernel, "list(nl.logs(5, schema=nl.schema_dsl('name, age int', multi=True))"
                         ".parsed()['name'])") == ["A", "B"]
    ok(kernel, "%%llm -m offline:echo --schema '{\"type\": \"object\", \"properties\": "
               "{\"a\": {\"type\": \"integer\"}}}'\n{{\"a\": 1}}")
    assert value(kernel, "_llm.parsed") == {"a": 1}
    ok(kernel, "shape = {'type': 'object', 'properties': {'b': {'type': 'string'}}}")
    ok(kernel, '%%llm -m offline:echo --schema shape\n{{"b": "x"}}')
    assert value(kernel, "_llm.parsed") == {"b": "x"}
    assert len(value(kernel, "list(nl.logs(5, schema=shape).df['id'])")) == 1
    typo = kernel.execute("%%llm -m offline:echo --schema 'name, age integr'\nx")
    assert typo.status == "error" and "unknown type 'integr'" in typo.text


def test_options_are_checked_and_listed(kernel: KernelSession) -> None:
    ok(kernel, "%%llm -m offline:echo -O chunk_delay 0 --option temperature 0.4\nhello")
    assert '"temperature": 0.4' in value(kernel, "last_row()['params_json']")
    bad = kernel.execute("%%llm -m offline:echo -O top_p 0.9\nhello")
    assert bad.status == "error" and "no option 'top_p'" in bad.text and "chunk_delay" in bad.text
    listed = ok(kernel, "%llm_models --options anthropic:claude-3-5-haiku-latest")
    assert "top_k" in listed.text and "thinking" in listed.text


def test_config_save_loads_in_a_new_client(kernel: KernelSession) -> None:
    ok(kernel, "%llm_config alias quick offline:echo")
    ok(kernel, "%llm_config embedding_model offline:hash")
    saved = ok(kernel, "%llm_config --save")
    assert "settings.yaml" in saved.text
    assert value(kernel, "oct(os.stat(os.path.join(os.environ['NOTEBOOK_LLM_HOME'], "
                         "'settings.yaml')).st_mode & 0o777)") == "0o600"
    ok(kernel, "nl.set_default_client(None)")
    assert value(kernel, "nl.default_client().aliases.get('quick')") == "offline:echo"
    assert value(kernel, "nl.default_client().default_embedding_model()") == "offline:hash"
    ok(kernel, "%llm_config --unsave alias quick")
    ok(kernel, "nl.set_default_client(None)")
    assert value(kernel, "nl.default_client().aliases.get('quick')") is None
