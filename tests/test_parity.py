"""Every sync API takes what its async twin takes, and gives the same answer.

In the spirit of simonw/llm's ``test_async_parity.py``: twins share one
options record (:class:`~notebook_llm.core.options.CallOptions`,
:class:`~notebook_llm.batches._plan.BatchOptions`), and these tests fail the
moment a parameter is added to one twin and not the other.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

import notebook_llm as nl
from notebook_llm._client import Client
from notebook_llm.batches._plan import BatchOptions
from notebook_llm.core.client import CoreClient
from notebook_llm.core.options import CallOptions
from notebook_llm.core.types import Completion, ToolCall, Usage

TWINS = [
    ("complete", "acomplete"),
    ("stream", "astream"),
    ("embed", "aembed"),
    ("list_models", "alist_models"),
    ("batch", "abatch"),
    ("compare", "acompare"),
    ("expect", "aexpect"),
]


def _parameters(function: Any) -> list[tuple[str, Any, Any]]:
    signature = inspect.signature(function)
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def _keyword_only(function: Any) -> list[str]:
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


@pytest.mark.parametrize(("sync", "asynchronous"), TWINS)
def test_module_level_twins_take_the_same_arguments(sync: str, asynchronous: str) -> None:
    assert _parameters(getattr(nl, sync)) == _parameters(getattr(nl, asynchronous))
    assert inspect.iscoroutinefunction(getattr(nl, asynchronous)) or asynchronous == "astream"


@pytest.mark.parametrize("cls", [CoreClient, Client])
@pytest.mark.parametrize(("sync", "asynchronous"), TWINS[:4])
def test_client_twins_take_the_same_arguments(cls: type, sync: str, asynchronous: str) -> None:
    assert _parameters(getattr(cls, sync)) == _parameters(getattr(cls, asynchronous))


def test_completion_and_stream_options_are_the_call_options_record() -> None:
    options = list(CallOptions.names())
    assert _keyword_only(CoreClient.astream) == options
    assert _keyword_only(CoreClient.acomplete) == options


def test_expect_options_are_the_expect_options_record() -> None:
    from notebook_llm._expect import ExpectOptions

    assert _keyword_only(nl.expect) == _keyword_only(nl.aexpect) == list(ExpectOptions.names())


def test_batch_options_are_the_batch_options_record() -> None:
    record = [f.name for f in dataclasses.fields(BatchOptions) if f.name != "params"]
    assert _keyword_only(nl.abatch) == [*record, "db"]  # db: the deprecated name of db_path
    assert set(_keyword_only(nl.estimate)) <= set(record)


async def test_sync_and_async_give_the_same_answer() -> None:
    client = CoreClient()
    sync = client.complete("same words back", model="offline:echo")
    asynchronous = await client.acomplete("same words back", model="offline:echo")
    streamed = client.stream("same words back", model="offline:echo").collect()
    astreamed = await client.astream("same words back", model="offline:echo").collect()
    for other in (asynchronous, streamed, astreamed):
        assert (other.text, other.finish_reason, other.usage.output_tokens) == (
            sync.text, sync.finish_reason, sync.usage.output_tokens)
    assert sync.attempts == asynchronous.attempts == 1


def test_completion_json_round_trip() -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str

    original = Completion(
        text="Paris", model="openai:gpt-4o-mini", provider="openai",
        response_model="gpt-4o-mini-2024", reasoning="thought",
        tool_calls=[ToolCall("c1", "look", {"q": "x"}, '{"q": "x"}')], finish_reason="stop",
        usage=Usage(3, 4, cached_input_tokens=1, estimated=True), latency_s=0.5, ttft_s=0.1,
        cost_usd=0.01, cost_status="priced", parsed=City(name="Paris"), id="r1", attempts=2,
    )  # fmt: skip
    again = Completion.from_json(original.to_json(), response_format=City)
    assert again == original  # dataclass equality: every field
    assert Completion.from_json(original.to_json()).parsed == {"name": "Paris"}


def test_with_options_shares_connections_and_changes_only_what_it_is_given() -> None:
    from notebook_llm.core.retry import RetryPolicy

    client = Client(log=False)
    other = client.with_options(retry=RetryPolicy(max_attempts=1))
    assert other.retry.max_attempts == 1 and client.retry.max_attempts != 1
    assert other.middlewares == client.middlewares
    assert other._providers is client._providers  # one set of connections
    seen: list[str] = []

    def limiter(ref: Any) -> Any:
        seen.append(str(ref))
        return client.limiter(ref)

    watched = client.with_options(limiter=limiter)
    watched.complete("hi", model="offline:echo")
    assert isinstance(watched, Client)
    assert watched.limiter(watched.resolve("offline:echo")) is client.limiter(
        client.resolve("offline:echo"))
    assert "offline:echo" in seen


def test_embed_options_are_the_embed_options_record() -> None:
    from notebook_llm.embeddings._pipeline import EmbedOptions

    record = [f.name for f in dataclasses.fields(EmbedOptions) if f.name != "params"]
    assert _keyword_only(nl.aembed) == [*record, "store"]  # store: the old name of db_path


def test_store_is_the_deprecated_name_of_db_path(tmp_path: Any) -> None:
    with pytest.warns(DeprecationWarning, match="db_path"):
        old = nl.embed(["a"], "offline:hash", store=str(tmp_path / "e.db"))
    new = nl.embed(["a"], "offline:hash", db_path=str(tmp_path / "e.db"))
    assert old.cached == 0 and new.cached == 1  # the same database, by either name


def test_conversation_twins_take_the_turn_options_record() -> None:
    from notebook_llm._conversations import Conversation, TurnOptions

    names = [field.name for field in dataclasses.fields(TurnOptions)]
    for sync, asynchronous in (("send", "asend"), ("stream", "astream"),
                               ("prepare", "aprepare")):
        assert _parameters(getattr(Conversation, sync)) == _parameters(
            getattr(Conversation, asynchronous))
    for method in ("send", "stream"):
        assert _keyword_only(getattr(Conversation, method)) == names
    assert inspect.iscoroutinefunction(Conversation.asend)
    assert inspect.iscoroutinefunction(Conversation.aprepare)
