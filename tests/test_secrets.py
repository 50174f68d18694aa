"""The key actually sent never comes back out, whatever its format.

Keys here have no recognisable prefix (Mistral's and Azure's keys are bare
alphanumerics; a company proxy's token can be anything), and the server
echoes them back in its error body, the way some proxies do. They must not
reach error messages, ``e.body``, tracebacks (``%xmode Verbose`` included),
the call log, batch rows and jobs, the cache, or cell output.
"""

from __future__ import annotations

import json
import sqlite3
import traceback

import pytest

from notebook_llm import errors
from notebook_llm._client import Client
from notebook_llm.batches import batch
from notebook_llm.core.client import CoreClient
from notebook_llm.core.retry import RetryPolicy
from notebook_llm.core.secrets import SecretHeaders, remember, scrub
from notebook_llm.store.log import call_log
from tests.support.kernel import KernelSession
from tests.support.replay import RecordedRequest, ReplayServer, Reply

NO_RETRY = RetryPolicy(max_attempts=1)
OPENAI_TRANSPORTS = ["fast", "aiohttp", "sdk"]

# Built from parts so that secret scanners do not flag the test file.
MISTRAL_LIKE = "Qm9" + "vZ3Vz" + "S2V5Rm9yVGVzdGluZzEyMzQ1"
AZURE_LIKE = "0f3a" + "9c2e" * 7
PROXY_TOKEN = "corp" + "-proxy-" + "token:7f7f7f7f!"
CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}  # fmt: skip


def echoing_401(request: RecordedRequest) -> Reply:
    """A 401 whose body repeats every credential the request carried."""
    sent = [
        value.removeprefix("Bearer ")
        for name, value in request.headers.items()
        if name in ("authorization", "x-api-key", "api-key", "ocp-apim-subscription-key")
    ]
    message = "Incorrect API key provided: " + " / ".join(sent)
    return Reply.from_json({"error": {"message": message, "type": "invalid_request_error",
                                      "code": "invalid_api_key", "detail": {"sent": sent}}},
                           status=401)  # fmt: skip


@pytest.fixture(scope="module")
def echo_server():
    with ReplayServer(handler=echoing_401) as srv:
        yield srv


def answer(request: RecordedRequest) -> Reply:
    """A chat completion, streamed when asked."""
    if not request.json().get("stream"):
        return Reply.from_json(CHAT)
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m",
             "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}
    body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
    return Reply(200, {"content-type": "text/event-stream"}, body, sse=True)


@pytest.fixture(scope="module")
def ok_server():
    with ReplayServer(handler=answer) as srv:
        yield srv


def _everything_shown(error: BaseException) -> str:
    """Every text a user or a log could see of ``error``."""
    parts = [str(error), repr(error), json.dumps(getattr(error, "body", None), default=str)]
    parts.append("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    original = getattr(error, "original", None)
    if original is not None:
        parts += [str(original), repr(original.args), repr(getattr(original, "body", None))]
    return "\n".join(parts)


@pytest.mark.parametrize("transport", OPENAI_TRANSPORTS)
@pytest.mark.parametrize("key", [MISTRAL_LIKE, AZURE_LIKE, PROXY_TOKEN])
def test_key_of_any_format_is_redacted_from_errors(echo_server, transport, key):
    client = CoreClient(
        api_keys={"openai-compatible": key},
        api_bases={"openai-compatible": echo_server.url + "/v1"},
        provider_settings={"openai-compatible": {"transport": transport}},
        retry=NO_RETRY,
    )
    with pytest.raises(errors.AuthenticationError) as info:
        client.complete("hi", model="openai-compatible:m")
    assert echo_server.requests[-1].headers["authorization"] == f"Bearer {key}"  # it was sent
    shown = _everything_shown(info.value)
    assert key not in shown
    assert "[REDACTED]" in str(info.value)
    client.close()


def test_anthropic_key_of_any_format_is_redacted(echo_server):
    client = CoreClient(
        api_keys={"anthropic": PROXY_TOKEN}, api_bases={"anthropic": echo_server.url},
        retry=NO_RETRY,
    )
    for call in (lambda: client.complete("hi", model="anthropic:claude-haiku-4-5"),
                 lambda: client.stream("hi", model="anthropic:claude-haiku-4-5").collect()):
        with pytest.raises(errors.AuthenticationError) as info:
            call()
        sent = echo_server.requests[-1].headers
        assert PROXY_TOKEN in (sent.get("x-api-key"), sent.get("authorization", "")[7:])
        assert PROXY_TOKEN not in _everything_shown(info.value)
    client.close()


@pytest.mark.parametrize("transport", OPENAI_TRANSPORTS)
def test_extra_headers_are_sent_and_never_stored(ok_server, tmp_path, transport):
    secret = "apim-" + AZURE_LIKE[::-1]
    db = tmp_path / "log.db"
    client = Client(
        api_keys={"openai-compatible": "unused-key-1234"},
        api_bases={"openai-compatible": ok_server.url + "/v1"},
        provider_settings={"openai-compatible": {"transport": transport}},
        retry=NO_RETRY, db_path=db, cache=True,
    )
    headers = {"Ocp-Apim-Subscription-Key": secret, "X-Trace": "abc"}
    completion = client.complete("hi", model="openai-compatible:m", extra_headers=headers)
    assert completion.text == "ok"
    sent = ok_server.requests[-1]
    assert sent.headers["ocp-apim-subscription-key"] == secret
    assert sent.headers["x-trace"] == "abc"
    assert b"Ocp-Apim" not in sent.body and secret.encode() not in sent.body  # not in the body
    stream = client.stream("hi again", model="openai-compatible:m", extra_headers=headers)
    assert stream.collect().text == "ok"
    assert ok_server.requests[-1].headers["ocp-apim-subscription-key"] == secret
    client.close()
    assert call_log(db).flush()
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert secret not in dump
    assert "Ocp-Apim-Subscription-Key" in dump  # the name is kept, for the record


def test_request_repr_hides_secret_headers():
    headers = SecretHeaders.checked({"Authorization": "Bearer " + MISTRAL_LIKE, "X-Other": "v"})
    assert MISTRAL_LIKE not in repr(headers) and MISTRAL_LIKE not in str(headers)
    assert "X-Other" in repr(headers) and "'v'" in repr(headers)
    # and the value is remembered: any text is scrubbed of it from now on
    assert scrub(f"it was {MISTRAL_LIKE}.") == "it was [REDACTED]."


def test_remembered_secrets_are_scrubbed_longest_first():
    remember("abcdefgh12345678")
    remember("abcdefgh12345678-and-more")
    assert scrub("x abcdefgh12345678-and-more y") == "x [REDACTED] y"
    assert errors.redact("short") == "short"  # ordinary words are left alone


def test_batch_rows_and_job_never_hold_the_key(echo_server, tmp_path):
    db = tmp_path / "jobs.db"
    client = CoreClient(
        api_keys={"openai-compatible": MISTRAL_LIKE},
        api_bases={"openai-compatible": echo_server.url + "/v1"},
        retry=NO_RETRY,
    )
    secret = "sub-" + MISTRAL_LIKE[::-1]
    result = batch(
        ["a", "b"], "openai-compatible:m", client=client, db_path=db, progress=False,
        extra_headers={"api-key": secret},
    )
    frame = result.to_pandas()
    assert frame["status"].tolist() == ["failed", "failed"]
    assert "[REDACTED]" in frame["error"].iloc[0]
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert MISTRAL_LIKE not in dump and secret not in dump
    client.close()


@pytest.mark.slow
def test_verbose_traceback_in_a_kernel_shows_no_key(echo_server):
    kernel = KernelSession(env={"NOTEBOOK_LLM_NO_PROMPT": "1"})
    try:
        done = kernel.execute(
            "%load_ext notebook_llm\n"
            "%xmode Verbose\n"
        )
        assert done.status == "ok", done.text
        # The key is assembled in the kernel: the cell's source, which a traceback
        # quotes, never holds it whole.
        head, tail = PROXY_TOKEN[:4], PROXY_TOKEN[4:]
        done = kernel.execute(
            "import notebook_llm as nl\n"
            f"key = ''.join([{head!r}, {tail!r}])\n"
            f"client = nl.Client(api_bases={{'openai-compatible': {echo_server.url + '/v1'!r}}},"
            " max_retries=0, log=False)\n"
            "nl.set_default_client(client)\n"
            "client.complete('hi', model='openai-compatible:m', api_key=key,"
            " extra_headers={'api-key': key})\n"
        )
        assert done.status == "error"
        shown = json.dumps(done.outputs) + json.dumps(done.reply["content"], default=str)
        assert PROXY_TOKEN not in shown
        assert "AuthenticationError" in shown
        # The magic's error path shows no key either.
        done = kernel.execute("client.set_key('openai-compatible', key)")
        assert done.status == "ok", done.text
        done = kernel.execute("%%llm -m openai-compatible:m\nhello")
        assert done.status == "error"
        shown = json.dumps(done.outputs)
        assert "rejected" in shown and PROXY_TOKEN not in shown
    finally:
        kernel.close()
