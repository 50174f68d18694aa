"""Batch jobs: inputs, alignment, faults, resume after SIGKILL, stop, provider batch APIs."""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel

from notebook_llm import errors
from notebook_llm._client import Client
from notebook_llm.batches import (
    BatchResult,
    abatch,
    batch,
    batch_jobs,
    estimate,
    resume_provider_batch,
)
from notebook_llm.core import loop as library_loop
from notebook_llm.core.client import CallContext, CoreClient, Middleware
from notebook_llm.core.retry import RetryPolicy
from notebook_llm.progress import Progress
from tests.support.loopback import LoopbackServer
from tests.support.provider_batch_server import ProviderBatchServer
from tests.support.replay import SHARED, Fault, RecordedRequest, ReplayServer, Reply

ROOT = Path(__file__).resolve().parents[1]
FAST_RETRY = RetryPolicy(max_attempts=6, initial_delay=0.01, max_delay=1.0)
MODEL = "openai-compatible:gpt-4o-mini"


def completion_json(text: str, prompt: str = "") -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(prompt.split()) + 5, "completion_tokens": 3,
                  "total_tokens": len(prompt.split()) + 8},
    }


def row_text(rec: RecordedRequest) -> str:
    return rec.json()["messages"][-1]["content"]


_OPEN: list[CoreClient] = []


def server_client(url: str, **kwargs) -> CoreClient:
    client = CoreClient(
        api_keys={"openai-compatible": "test-key"},
        api_bases={"openai-compatible": url + "/v1"},
        retry=kwargs.pop("retry", FAST_RETRY),
        **kwargs,
    )
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _OPEN:
        # batch() runs on the library's loop, so its connections live there.
        library_loop.run(_OPEN.pop().aclose())


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "batch.db")


# -- offline models ---------------------------------------------------------------


def test_batch_list_of_prompts(db: str) -> None:
    result = batch(["hello", "world", "third one"], "offline:echo", db_path=db, progress=False)
    assert result.state == "done" and result.done == 3 and result.failed == 0
    frame = result.to_pandas()
    assert list(frame.index) == [0, 1, 2]
    assert list(frame["text"]) == ["hello", "world", "third one"]
    assert list(frame.columns[:1]) == ["text"]
    for column in ("input_tokens", "output_tokens", "cost_usd", "latency_s", "attempts", "error",
                   "model"):
        assert column in frame.columns
    assert (frame["attempts"] == 1).all() and (frame["cost_usd"] == 0).all()
    assert frame["model"].unique().tolist() == ["offline:echo"]
    assert "done" in result._repr_html_() and result.df.equals(frame)


def test_batch_runs_with_checkpoints_off(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Benchmarks turn checkpointing off (a writer that keeps nothing): the job
    # must still run to the end and report its rows as sent.
    from notebook_llm.batches import _run

    monkeypatch.setattr(_run, "_checkpoints_enabled", False)
    result = batch(["hello", "world"], "offline:echo", db_path=db, progress=False)
    assert result.state == "done"


def test_checkpointed_text_round_trips_exactly(db: str) -> None:
    # Rows reach SQLite as JSON unpacked by SQLite itself: quotes, backslashes,
    # newlines, non-ASCII and escape-like text must come back unchanged,
    # and a row key that looks like a number must stay text.
    prompts = ['say "hi"\\n\tnow', "naïve café — 日本語 🙂", "\\u00e9 literally", "{}[],:"]
    frame = batch(prompts, "offline:echo", db_path=db, progress=False).to_pandas()
    assert list(frame["text"]) == prompts
    again = batch(prompts, "offline:echo", db_path=db, progress=False)
    assert again.cached == len(prompts) and list(again.to_pandas()["text"]) == prompts
    with sqlite3.connect(db) as conn:
        kinds = {row[0] for row in conn.execute("SELECT typeof(row_key) FROM batch_rows")}
    assert kinds == {"text"}


def test_batch_message_lists(db: str) -> None:
    conversations = [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"}],
        [{"role": "user", "content": "second"}],
    ]
    frame = batch(conversations, "offline:echo", db_path=db, progress=False).to_pandas()
    assert list(frame["text"]) == ["first", "second"]


def test_batch_dataframe_template_aligns_to_index(db: str) -> None:
    df = pd.DataFrame({"review": ["great", "awful", "fine"], "stars": [5, 1, 3]},
                      index=pd.Index(["r9", "r2", "r5"], name="rid"))
    result = batch(df, "offline:echo", template="Review ({stars}*): {review}", db_path=db,
                   progress=False)
    frame = result.to_pandas()
    assert frame.index.equals(df.index)
    assert frame.loc["r2", "text"] == "Review (1*): awful"
    # The input columns come along, in front of the answer.
    assert list(frame.columns[:3]) == ["review", "stars", "text"]
    assert frame.loc["r5", "stars"] == 3 and frame.loc["r5", "text"] == "Review (3*): fine"


def test_batch_input_column_named_like_a_result_column_is_renamed(db: str) -> None:
    df = pd.DataFrame({"text": ["a", "b"], "model": ["x", "y"]})
    frame = batch(df, "offline:echo", template="{text}", db_path=db, progress=False).to_pandas()
    assert list(frame.columns[:3]) == ["input_text", "input_model", "text"]
    assert frame["input_text"].tolist() == frame["text"].tolist() == ["a", "b"]
    assert frame["model"].tolist() == ["offline:echo"] * 2


def test_batch_several_models_long_format(db: str) -> None:
    df = pd.DataFrame({"q": ["a", "b"]}, index=[10, 20])
    frame = batch(df, ["offline:echo", "offline:story"], template="{q}", max_tokens=4, db_path=db,
                  progress=False).to_pandas()
    assert list(frame.index) == [10, 10, 20, 20]
    assert list(frame["q"]) == ["a", "a", "b", "b"]
    assert list(frame["model"]) == ["offline:echo", "offline:story"] * 2
    assert frame.loc[frame["model"] == "offline:echo", "text"].tolist() == ["a", "b"]
    assert frame["text"].notna().all()


class Sentiment(BaseModel):
    label: str
    score: int


def test_batch_pydantic_fields_become_columns(db: str) -> None:
    prompts = [json.dumps({"label": "pos", "score": 3}), json.dumps({"label": "neg", "score": 1})]
    frame = batch(prompts, "offline:echo", response_format=Sentiment, db_path=db,
                  progress=False).to_pandas()
    assert list(frame.columns[:3]) == ["text", "label", "score"]
    assert frame["label"].tolist() == ["pos", "neg"] and frame["score"].tolist() == [3, 1]


def test_batch_rerun_resumes_without_sending(db: str) -> None:
    seen: list[str] = []

    class Spy(Middleware):
        async def before(self, ctx: CallContext):
            seen.append(ctx.request.messages[-1]["content"])

    client = CoreClient(middlewares=[Spy()])
    prompts = [f"p{i}" for i in range(30)]
    first = batch(prompts, "offline:echo", client=client, db_path=db, progress=False)
    assert len(seen) == 30
    again = batch(prompts, "offline:echo", client=client, db_path=db, progress=False)
    assert len(seen) == 30 and again.job_id == first.job_id and again.cached == 30
    assert again.to_pandas()["text"].tolist() == prompts
    batch(prompts, "offline:echo", client=client, db_path=db, progress=False, resume=False)
    assert len(seen) == 60
    jobs = batch_jobs(db)
    assert jobs.loc[jobs["job_id"] == first.job_id, "done"].item() == 30


# -- nothing sent before it should be ------------------------------------------------


def test_batch_dry_run_and_missing_column_send_nothing(db: str) -> None:
    with ReplayServer(handler=lambda rec: Reply.from_json(completion_json("x"))) as server:
        client = server_client(server.url)
        df = pd.DataFrame({"review": ["x" * 400, "y" * 40]})
        result = batch(df, MODEL, template="Classify: {review}", max_tokens=50, dry_run=True,
                       client=client, db_path=db)
        assert result.state == "dry_run" and result.estimate is not None
        assert result.estimate.requests == 2
        assert result.estimate.input_tokens == (400 + 40 + 2 * len("Classify: ")) // 4
        assert result.estimate.output_tokens == 100
        priced = estimate(df, "openai:gpt-4o-mini", template="Classify: {review}", max_tokens=50)
        assert priced.cost_usd is not None and priced.cost_usd > 0
        with pytest.raises(errors.InvalidRequestError, match="'text'"):
            batch(df, MODEL, template="Classify: {text}", client=client, db_path=db, progress=False)
        assert server.requests == []


# -- faults ----------------------------------------------------------------------------


def test_batch_survives_faults_with_exactly_one_success_per_row(db: str) -> None:
    attempts: collections.Counter[str] = collections.Counter()
    successes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def handler(rec: RecordedRequest) -> Reply:
        text = row_text(rec)
        row = int(text.split()[-1])
        with lock:
            attempts[text] += 1
            tries = attempts[text]
            # 20% of rows fail their first attempt, one fault kind each.
            if row % 5 == 0 and tries == 1:
                kind = (row // 5) % 4
                if kind == 0:
                    return Fault.status(429, retry_after=0.05)
                if kind == 1:
                    return Fault.status(500)
                if kind == 2:
                    return Fault.status(529, provider="anthropic")
                return Fault.reset(0, Reply.from_json(completion_json("lost")))
            successes[text] += 1
        return Reply.from_json(completion_json(f"answer to {text}", text))

    rows = [f"row {i}" for i in range(1000)]
    with ReplayServer(handler=handler) as server:
        client = server_client(server.url)
        started = time.perf_counter()
        result = batch(rows, MODEL, client=client, concurrency=64, db_path=db, progress=False)
        wall = time.perf_counter() - started
    frame = result.to_pandas()
    assert result.done == 1000 and result.failed == 0 and result.pending == 0
    assert frame["text"].tolist() == [f"answer to {r}" for r in rows]
    assert set(successes.values()) == {1} and len(successes) == 1000
    assert frame.loc[[i for i in range(1000) if i % 5 == 0], "attempts"].eq(2).all()
    assert frame.loc[[i for i in range(1000) if i % 5], "attempts"].eq(1).all()
    assert client.limiter(client.resolve(MODEL)).waited_s > 0  # the 429s paused the model
    assert wall < 30


@pytest.mark.parametrize("rpm", [None, 6000], ids=["shared-limiter", "job-rpm"])
def test_batch_follows_announced_rate_limits(db: str, rpm: float | None) -> None:
    """Answers announce 600 requests a minute and a remaining count that runs out
    (OpenAI's headers): the model's shared limiter takes both on, the requests
    after the count ran out wait, and every row finishes without a 429."""
    lock = threading.Lock()
    sent = 0

    def handler(rec: RecordedRequest) -> Reply:
        nonlocal sent
        with lock:
            sent += 1
            remaining = max(0, 20 - sent)
        headers = {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": "100ms" if remaining == 0 else "0s",
            "x-ratelimit-limit-tokens": "1000000",
            "x-ratelimit-remaining-tokens": "999000",
        }
        text = row_text(rec)
        return Reply.from_json(completion_json(f"answer to {text}", text), headers=headers)

    rows = [f"row {i}" for i in range(30)]
    with ReplayServer(handler=handler) as server:
        client = server_client(server.url)
        shared = client.limiter(client.resolve(MODEL))
        assert not shared.active
        result = batch(rows, MODEL, client=client, rpm=rpm, concurrency=8, db_path=db,
                       progress=False)
    assert result.done == 30 and result.failed == 0
    assert result.to_pandas()["text"].tolist() == [f"answer to {r}" for r in rows]
    assert shared.rpm == 600 and shared.tpm == 1_000_000
    assert shared.waited_s > 0  # the announced count ran out, so requests waited for it


def test_batch_retry_failed_resends_only_failed_rows(db: str) -> None:
    calls: collections.Counter[str] = collections.Counter()

    def handler(rec: RecordedRequest) -> Reply:
        text = row_text(rec)
        calls[text] += 1
        if "bad" in text and calls[text] == 1:
            return Fault.status(400, message="no")  # not retryable: fails at once
        return Reply.from_json(completion_json("ok " + text))

    with ReplayServer(handler=handler) as server:
        client = server_client(server.url)
        rows = ["good 1", "bad 2", "good 3", "bad 4"]
        first = batch(rows, MODEL, client=client, db_path=db, progress=False)
        assert first.failed == 2 and first.done == 2
        assert first.errors.index.tolist() == [1, 3]
        assert first.errors["error"].str.contains("InvalidRequestError").all()
        second = first.retry_failed()
        assert second.done == 4 and second.failed == 0
        assert calls == {"good 1": 1, "bad 2": 2, "good 3": 1, "bad 4": 2}


def test_batch_budget_exceeded_stops_cleanly(db: str) -> None:
    class Budget(Middleware):
        def __init__(self) -> None:
            self.calls = 0

        async def before(self, ctx: CallContext):
            self.calls += 1
            if self.calls > 10:
                raise errors.BudgetExceededError("over budget", spent_usd=1.0, budget_usd=1.0)

    client = CoreClient(middlewares=[Budget()])
    result = batch([f"b{i}" for i in range(40)], "offline:echo", client=client, concurrency=1,
                   db_path=db, progress=False)
    assert result.state == "stopped" and result.done == 10 and result.pending == 30
    assert "budget" in (result.stop_reason or "")


# -- stop and resume ----------------------------------------------------------------------


class StopAfter(Progress):
    """Presses Stop once ``n`` rows are done."""

    def __init__(self, n: int) -> None:
        super().__init__(0, backend="none")
        self.n = n

    def update(self, **kwargs) -> None:  # type: ignore[override]
        super().update(**kwargs)
        if self.done >= self.n:
            self.stop()


def test_batch_stop_keeps_finished_rows_and_rerun_finishes(db: str) -> None:
    rows = [f"s{i}" for i in range(300)]
    stopper = StopAfter(40)
    result = batch(rows, "offline:echo", chunk_delay=0, concurrency=4, db_path=db, progress=stopper,
                   client=CoreClient(middlewares=[Slow(0.01)]))
    assert result.state == "stopped" and 40 <= result.done < 300
    assert batch_jobs(db).set_index("job_id").loc[result.job_id, "state"] == "stopped"
    first_done = result.done
    again = batch(rows, "offline:echo", chunk_delay=0, concurrency=4, db_path=db, progress=False)
    assert again.state == "done" and again.done == 300 and again.cached == first_done


def test_stopped_batch_logs_only_the_rows_it_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rpm=5 holds the queued rows in the job's rate limiter; Stop cancels
    # them there, before they are sent: they are pending rows, not failed calls.
    import notebook_llm as nl
    from notebook_llm.store.log import call_log

    log_db = tmp_path / "calls.db"
    monkeypatch.setenv("NOTEBOOK_LLM_DB", str(log_db))
    previous = nl.set_logging(True)
    client = nl.Client(cache=False)
    try:
        result = batch([f"q{i}" for i in range(20)], "offline:echo", client=client, rpm=5,
                       concurrency=8, db_path=str(tmp_path / "jobs.db"), progress=StopAfter(3))
        assert client.tracker.errors == 0
    finally:
        nl.set_logging(previous)
        client.close()
    logged = call_log(log_db).query()
    call_log(log_db).close()
    assert result.state == "stopped" and result.pending > 0
    assert [row for row in logged if row["error_class"]] == []
    assert len(logged) == result.done


class Slow(Middleware):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def before(self, ctx: CallContext):
        await asyncio.sleep(self.delay)


async def test_abatch_cancel_marks_stopped(db: str) -> None:
    client = CoreClient(middlewares=[Slow(0.01)])
    task = asyncio.ensure_future(
        abatch([f"c{i}" for i in range(500)], "offline:echo", client=client, concurrency=2,
               db_path=db, progress=False, job="cancel-me")
    )
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    loaded = BatchResult.load("cancel-me", db_path=db)
    assert loaded.state == "stopped" and 0 < loaded.done < 500


# -- SIGKILL mid-job ------------------------------------------------------------------------


class CountingServer(LoopbackServer):
    """Answers chat completions after ``delay`` s; counts answers per row as it sends them."""

    def __init__(self, delay: float) -> None:
        super().__init__(shutdown_timeout=0.2)
        self.delay = delay
        self.answered: collections.Counter[str] = collections.Counter()
        self.start()

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        text = (await request.json())["messages"][-1]["content"]
        await asyncio.sleep(self.delay)
        self.answered[text] += 1
        return web.json_response(completion_json("done " + text, text))


CHILD = textwrap.dedent(
    """
    import sys
    from notebook_llm.batches import batch
    from notebook_llm.core.client import CoreClient
    url, db, n, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    client = CoreClient(api_keys={"openai-compatible": "k"},
                        api_bases={"openai-compatible": url + "/v1"})
    result = batch([f"k{i}" for i in range(n)], "openai-compatible:m", client=client,
                   concurrency=concurrency, db_path=db, progress=False, job="killed")
    print("FINISHED", result.done)
    """
)


def test_batch_resume_after_sigkill_pays_no_finished_row_twice(db: str, tmp_path: Path) -> None:
    n, concurrency = 400, 4
    server = CountingServer(delay=0.02)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        child = subprocess.Popen([sys.executable, str(script), server.url, db, str(n),
                                  str(concurrency)], env=env, cwd=ROOT)
        deadline = time.monotonic() + 30
        while sum(server.answered.values()) < 120 and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        answered_at_kill = sum(server.answered.values())
        assert 120 <= answered_at_kill < n
        killed = BatchResult.load("killed", db_path=db)
        assert killed.state == "running" and 0 < killed.done < n
        rerun = subprocess.run([sys.executable, str(script), server.url, db, str(n),
                                str(concurrency)], env=env, cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
        assert "FINISHED 400" in rerun.stdout, rerun.stderr
        twice = [row for row, count in server.answered.items() if count > 1]
        # Sent again at most: the rows being awaited at the kill (one per worker)
        # and those whose answer had arrived but whose checkpoint was still on its
        # way to SQLite (about a millisecond; again at most one per worker).
        assert len(twice) <= 2 * concurrency
        assert max(server.answered.values()) <= 2 and len(server.answered) == n
        assert BatchResult.load("killed", db_path=db).to_pandas()["status"].eq("done").all()
    finally:
        server.stop()


# -- a real server: llama.cpp ------------------------------------------------------------------

MODEL_FILE = SHARED / "models" / "stories260K.gguf"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.llama
@pytest.mark.skipif(not MODEL_FILE.exists(), reason=f"{MODEL_FILE} is absent")
def test_batch_against_llama_cpp_server(db: str) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(MODEL_FILE), "--model_alias",
         "stories260k", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512",
         "--n_threads", "1", "--n_threads_batch", "1", "--interrupt_requests", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        client = CoreClient(api_bases={"llamacpp": f"http://127.0.0.1:{port}/v1"}, retry=FAST_RETRY)
        _OPEN.append(client)
        result = batch([f"Once upon a time {i}" for i in range(10)], "llamacpp:stories260k",
                       client=client, max_tokens=8, concurrency=4, db_path=db, progress=False)
        frame = result.to_pandas()
        assert result.done == 10 and result.failed == 0
        assert frame["text"].str.len().gt(0).all() and frame["output_tokens"].le(8).all()
    finally:
        proc.terminate()
        proc.wait(10)


# -- provider batch APIs -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_provider_mode_maps_results_and_survives_restart(
    provider: str, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "test-batch-openai-000")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-batch-000")
    model = "openai:gpt-4o-mini" if provider == "openai" else "anthropic:claude-3-5-haiku-latest"
    df = pd.DataFrame({"text": ["alpha", "FAIL here", "gamma"]}, index=["a", "b", "c"])
    with ProviderBatchServer(polls_to_finish=3) as server:
        base = server.url + ("/v1" if provider == "openai" else "")
        client = CoreClient(api_bases={provider: base})

        async def submit_then_interrupt() -> str:
            task = asyncio.ensure_future(
                abatch(df, model, template="{text}", mode="provider", job=f"pb-{provider}",
                       client=client, db_path=db, poll_interval=5, progress=False, max_tokens=20)
            )
            while not (server.openai_batches or server.anthropic_batches):
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            task.cancel()  # the "kernel restart": the provider batch keeps running
            with pytest.raises(asyncio.CancelledError):
                await task
            return "cancelled"

        asyncio.run(submit_then_interrupt())
        stored = BatchResult.load(f"pb-{provider}", db_path=db)
        assert stored.state == "submitted" and stored.pending == 3
        assert list(stored.provider_batches) == [model]
        result = resume_provider_batch(f"pb-{provider}", db_path=db, client=client,
                                       poll_interval=0.01)
        assert result.state == "done" and result.done == 2 and result.failed == 1
        created = [c for c in server.calls if c[0] == "POST" and c[1].endswith("batches")]
        assert len(created) == 1  # resumed by id, not submitted again
        assert set(server.auth) == {os.environ[f"{provider.upper()}_API_KEY"]}
        again = batch(df, model, template="{text}", mode="provider", job=f"pb-{provider}",
                      client=client, db_path=db, poll_interval=0.01, progress=False, max_tokens=20)
        frame = again.to_pandas()
        assert frame.index.tolist() == ["a", "b", "c"]
        assert frame.loc["a", "text"] == "echo: alpha"
        assert frame.loc["c", "text"] == "echo: gamma"
        assert frame.loc["b", "status"] == "failed"
        assert "Injected failure" in frame.loc["b", "error"]
        assert frame.loc["a", "input_tokens"] == 9 and frame.loc["a", "cost_usd"] > 0
        assert len([c for c in server.calls if c[1].endswith("batches")]) == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_provider_mode_uses_the_clients_keys_and_base_urls(
    provider: str, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    key = f"client-only-{provider}-key-0001"
    model = "openai:gpt-4o-mini" if provider == "openai" else "anthropic:claude-3-5-haiku-latest"
    with ProviderBatchServer(polls_to_finish=1) as server:
        base = server.url + ("/v1" if provider == "openai" else "")
        client = Client(api_keys={provider: key}, api_bases={provider: base}, db_path=db)
        result = batch(["alpha", "gamma"], model, mode="provider", client=client, db_path=db,
                       poll_interval=0.01, progress=False, max_tokens=20)
        assert result.state == "done" and result.done == 2
        assert set(server.auth) == {key}


def test_db_is_the_deprecated_name_of_db_path(db: str) -> None:
    with pytest.warns(DeprecationWarning, match="db_path"):
        result = batch(["a", "b"], "offline:echo", db=db, progress=False, job="old-name")
    assert result.done == 2
    with pytest.warns(DeprecationWarning, match="db_path"):
        assert BatchResult.load("old-name", db=db).done == 2
    with pytest.warns(DeprecationWarning, match="db_path"):
        assert "old-name" in batch_jobs(db=db)["job_id"].tolist()


def test_provider_mode_rejects_other_providers(db: str) -> None:
    with pytest.raises(errors.UnsupportedError, match="direct"):
        batch(["x"], "offline:echo", mode="provider", db_path=db, progress=False)


# -- progress ------------------------------------------------------------------------------------


def test_progress_text_is_throttled_and_plain(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    out = io.StringIO()
    progress = Progress(1000, title="t", backend="text", stream=out, line_interval_s=0).start()
    for i in range(1, 1001):
        progress.update(done=i, requests=i, tokens=10 * i, cost_usd=i * 1e-4)
    progress.close("done")
    assert progress.renders < 50
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("t ") and "1000/1000" in lines[-1] and lines[-1].endswith("done")
    figures = progress.figures()
    assert figures["projected_cost_usd"] == pytest.approx(0.1)
