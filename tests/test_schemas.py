"""The schema DSL (llm's form and the typed form), schemas everywhere, and the
call log by schema with ``.parsed()``."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm.utils import schema_dsl as llm_schema_dsl
from pydantic import BaseModel

import notebook_llm as nl
from notebook_llm._schemas import schema_model
from notebook_llm.errors import InvalidRequestError

LLM_FORMS = [
    "name, age int, bio: the person's biography",
    "name",
    "price float: in euros, in_stock bool",
    "name str: full name\nage int: in years\nok bool",
]


@pytest.mark.parametrize("text", LLM_FORMS)
@pytest.mark.parametrize("multi", [False, True])
def test_llm_form_gives_llms_json_schema(text: str, multi: bool) -> None:
    assert nl.schema_dsl(text, multi=multi) == llm_schema_dsl(text, multi=multi)


def test_typed_form_keeps_its_meaning() -> None:
    model = schema_model("name: str, age: int, tags: list[str], note: str | None, "
                         "scores: dict[str, float]")
    parsed = model.model_validate({"name": "A", "age": 3, "tags": ["x"], "note": None,
                                   "scores": {"a": 1.5}})
    assert parsed.age == 3 and parsed.scores == {"a": 1.5}  # type: ignore[attr-defined]
    described = nl.schema_dsl("bio: the person's biography, age: int")
    assert described["properties"]["bio"] == {"type": "string",
                                              "description": "the person's biography"}
    assert described["properties"]["age"] == {"type": "integer"}


def test_model_names_and_typos() -> None:
    class City(BaseModel):
        name: str

    assert schema_model("City", {"City": City}) is City
    nested = schema_model("home: City, visited: list[City]", {"City": City})
    assert nested.model_validate({"home": {"name": "Oslo"}, "visited": []})
    with pytest.raises(InvalidRequestError, match=r"field 2 \('age integer'\): unknown type "
                                                  "'integer'"):
        nl.schema_dsl("name, age integer")
    with pytest.raises(InvalidRequestError, match="unknown type 'strr' \\(did you mean str\\?\\)"):
        nl.schema_dsl("name: strr")
    with pytest.raises(InvalidRequestError, match="field 'a' appears twice"):
        nl.schema_dsl("a, a int")
    with pytest.raises(InvalidRequestError, match="no Pydantic model named 'Town'"):
        schema_model("Town", {})


def test_schemas_are_accepted_everywhere_and_logged(llm_home: Path) -> None:
    one = nl.complete('{"name": "Ada", "age": 36}', model="offline:echo",
                      response_format="name, age int")
    assert (one.parsed.name, one.parsed.age) == ("Ada", 36)  # type: ignore[union-attr]
    two = nl.complete('{"name": "Bo", "age": 4}', model="offline:echo",
                      response_format=nl.schema_dsl("name, age int"))
    assert two.parsed == {"name": "Bo", "age": 4}
    multi = nl.schema_dsl("name, age int", multi=True)
    nl.complete('{"items": [{"name": "C", "age": 1}, {"name": "D", "age": 2}]}',
                model="offline:echo", response_format=multi)
    nl.complete("no schema here", model="offline:echo")

    class Person(BaseModel):
        name: str
        age: int

    nl.complete('{"name": "E", "age": 5}', model="offline:echo", response_format=Person)
    # The same fields are one schema, whichever way they were given.
    single = nl.logs(10, schema="name, age int")
    assert len(single) == 3 and list(single.parsed()["name"]) == ["Ada", "Bo", "E"]
    assert list(nl.logs(2, schema=Person).parsed()["age"]) == [4, 5]
    flattened = nl.logs(10, schema=multi).parsed()
    assert list(flattened["name"]) == ["C", "D"] and flattened["call_id"].nunique() == 1
    assert len(nl.logs(10, schema="other, fields int")) == 0


def test_one_id_for_the_same_fields_however_given() -> None:
    from notebook_llm._schema_log import schema_key

    class Answer(BaseModel):
        name: str
        age: int

    dsl = schema_key("name, age int")
    assert dsl == schema_key(nl.schema_dsl("name, age int")) == schema_key(Answer)
    assert schema_key("name, age int") != schema_key(nl.schema_dsl("name, age int", multi=True))
    assert schema_key(schema_model("name, age int", multi=True)) == schema_key(
        nl.schema_dsl("name, age int", multi=True))
