"""A batch whose disk fills up: it stops with a clear error and loses no paid answer.

The job's database lives on a real, tiny filesystem (a tmpfs mounted for the
test), so SQLite meets a real full disk, not a simulated error. Answers that
arrive once the checkpoints can no longer be written are kept in memory, the
job stops sending, and a rerun after space is freed saves them and sends only
the rows never answered: every row is paid for exactly once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from notebook_llm import errors
from notebook_llm.batches import batch
from notebook_llm.batches._jobs import JobStore
from notebook_llm.core.client import CoreClient
from notebook_llm.core.retry import RetryPolicy
from tests.support.replay import RecordedRequest, ReplayServer, Reply

ROWS = 400
ANSWER = "x" * 3000  # large rows, so a small disk fills within the job


def _answer(request: RecordedRequest) -> Reply:
    prompt = request.json()["messages"][-1]["content"]
    return Reply.from_json({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"{prompt}:{ANSWER}"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 700, "total_tokens": 705},
    })  # fmt: skip


def _mount(point: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                   check=True, capture_output=True)  # fmt: skip


@pytest.fixture
def small_disk(tmp_path: Path):
    point = tmp_path / "disk"
    point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("needs mount(8) to make a small filesystem")
    try:
        _mount(point, "1m")  # the empty, migrated log takes ~200 KB of it
    except (subprocess.CalledProcessError, PermissionError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {exc}")
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def test_full_disk_stops_the_batch_and_keeps_every_paid_answer(small_disk: Path):
    db = small_disk / "jobs.db"
    prompts = [f"row-{i}" for i in range(ROWS)]
    with ReplayServer(handler=_answer) as server:
        client = CoreClient(
            api_keys={"openai-compatible": "test-key-0001"},
            api_bases={"openai-compatible": server.url + "/v1"},
            retry=RetryPolicy(max_attempts=1),
        )
        with pytest.raises(errors.StorageError) as info:
            batch(prompts, "openai-compatible:m", client=client, db_path=db, progress=False,
                  concurrency=4, job="full-disk")
        message = str(info.value)
        assert "full" in message and "kept in memory" in message and "rerun" in message
        paid = len(server.requests)
        assert 0 < paid < ROWS  # it stopped sending
        frame = info.value.result.to_pandas()
        answered = frame[frame["status"] == "done"]
        assert len(answered) == paid  # no paid answer lost
        assert all(text.endswith(ANSWER) for text in answered["text"])
        jobs = JobStore(db)
        try:
            assert jobs.unsaved("full-disk")  # some of them only in memory
        finally:
            jobs.close()

        # Space comes back; the same call saves what was kept and sends the rest.
        subprocess.run(["mount", "-o", "remount,size=32m", str(small_disk)], check=True)
        result = batch(prompts, "openai-compatible:m", client=client, db_path=db, progress=False,
                       concurrency=4, job="full-disk")
        assert len(server.requests) == ROWS  # every row paid for exactly once
        sent = sorted(json.loads(r.body)["messages"][-1]["content"] for r in server.requests)
        assert sent == sorted(prompts)
        frame = result.to_pandas()
        assert frame["status"].tolist() == ["done"] * ROWS
        assert frame["text"].tolist() == [f"{p}:{ANSWER}" for p in prompts]
        jobs = JobStore(db)
        try:
            assert jobs.unsaved("full-disk") == []
            assert len(jobs.rows("full-disk")) == ROWS
        finally:
            jobs.close()
        client.close()


def test_rerun_on_a_still_full_disk_sends_nothing(small_disk: Path):
    db = small_disk / "jobs.db"
    prompts = [f"row-{i}" for i in range(ROWS)]
    with ReplayServer(handler=_answer) as server:
        client = CoreClient(
            api_keys={"openai-compatible": "test-key-0001"},
            api_bases={"openai-compatible": server.url + "/v1"},
            retry=RetryPolicy(max_attempts=1),
        )
        with pytest.raises(errors.StorageError):
            batch(prompts, "openai-compatible:m", client=client, db_path=db, progress=False,
                  concurrency=4, job="still-full")
        paid = len(server.requests)
        with pytest.raises(errors.StorageError) as info:
            batch(prompts, "openai-compatible:m", client=client, db_path=db, progress=False,
                  concurrency=4, job="still-full")
        assert "nothing was sent" in str(info.value)
        assert len(server.requests) == paid
        client.close()
