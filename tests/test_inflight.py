"""The registry of work in flight and ``nl.stop_all()``.

Real offline models (streams slowed with ``chunk_delay``), the real batch
runner and the loopback provider-batch server; no part of the registry or of
what it stops is replaced.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import notebook_llm as nl
from notebook_llm.batches import BatchResult, abatch, batch
from notebook_llm.core import inflight, loop as library_loop
from notebook_llm.core.client import CoreClient
from notebook_llm.errors import CancelledError
from tests.support.kernel import KernelSession
from tests.support.provider_batch_server import ProviderBatchServer

SLOW = {"chunk_delay": 0.05}  # offline:story streams a word every 50 ms


@pytest.fixture(autouse=True)
def _nothing_left_running() -> Any:
    yield
    leftover = inflight.running()
    inflight.stop_all()
    assert leftover == [], leftover


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_nothing_running_reports_so() -> None:
    report = nl.stop_all()
    assert report.stopped == [] and report.still_running == []
    assert "nothing was running" in repr(report)


def test_stop_all_ends_a_stream_a_compare_a_batch_and_a_complete_together(tmp_path: Path) -> None:
    client = CoreClient()
    results: dict[str, Any] = {}

    def stream() -> None:
        with client.stream("a long tale", "offline:story", max_tokens=400, **SLOW) as s:
            results["stream"] = s.collect()

    def compare() -> None:
        results["compare"] = nl.compare("two tales", ["offline:story", "offline:echo"],
                                        client=client, max_tokens=400, **SLOW)

    def run_batch() -> None:
        results["batch"] = batch([f"row {i}" for i in range(400)], "offline:echo", rpm=60,
                                 client=client, db_path=str(tmp_path / "b.db"), progress=False)

    def complete() -> None:
        # A complete that waits on the rate limiter: stopped while it waits.
        limited = CoreClient(rate_limits={"offline": nl.RateLimit(rpm=1)})
        limited.complete("one", "offline:echo")
        try:
            results["complete"] = limited.complete("two", "offline:echo")
        except CancelledError as exc:
            results["complete"] = exc

    threads = [threading.Thread(target=f) for f in (stream, compare, run_batch, complete)]
    for thread in threads:
        thread.start()
    _wait_for(lambda: {e.kind for e in inflight.running(top_level=True)}
              >= {"stream", "compare", "batch", "complete"})
    assert inflight.count() == 4
    kinds = {e.kind for e in inflight.running()}
    assert "stream" in kinds and "complete" in kinds  # the compare's columns, the batch rows
    time.sleep(0.3)
    started = time.monotonic()
    report = nl.stop_all()
    elapsed = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=5)
    assert not any(thread.is_alive() for thread in threads)
    assert report.still_running == [], report
    assert elapsed <= 1.5
    assert inflight.count() == 0
    assert results["stream"].finish_reason == "cancelled" and results["stream"].text
    assert {c.status for c in results["compare"].cells} <= {"stopped", "done"}
    assert any(c.status == "stopped" for c in results["compare"].cells)
    assert results["batch"].state == "stopped" and results["batch"].done < 400
    assert isinstance(results["complete"], CancelledError)
    assert "Stopped (stop_all)" in str(results["complete"])
    text = repr(report)
    assert text.startswith("stopped ") and "stream" in text and "batch" in text


async def test_a_stream_registers_from_first_read_to_its_end() -> None:
    client = CoreClient()
    stream = client.astream("hello there", "offline:echo", chunk_delay=0.01)
    assert inflight.count() == 0  # nothing is sent before iteration
    seen = []
    async for _ in stream:
        seen.append([e.kind for e in inflight.running()])
    assert seen[0] == ["stream"] and inflight.count() == 0
    assert inflight.running() == []


async def test_a_batch_rows_are_children_of_the_batch(tmp_path: Path) -> None:
    task = asyncio.ensure_future(abatch([f"r{i}" for i in range(500)], "offline:echo", rpm=60,
                                        db_path=str(tmp_path / "c.db"), progress=False))
    while not inflight.running(top_level=True):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    top = inflight.running(top_level=True)
    assert [e.kind for e in top] == ["batch"] and inflight.count() == 1
    children = [e for e in inflight.running() if e.parent is not None]
    assert all(e.parent is top[0] for e in children)
    report = await asyncio.to_thread(inflight.stop_all)
    result = await task
    assert result.state == "stopped" and report.still_running == []


def test_a_provider_batch_is_left_running_and_the_user_told_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "test-stopall-openai-000")
    db = str(tmp_path / "p.db")
    with ProviderBatchServer(polls_to_finish=50) as server:
        client = CoreClient(api_bases={"openai": server.url + "/v1"})
        results: dict[str, Any] = {}

        def run() -> None:
            results["batch"] = batch(["alpha", "beta"], "openai:gpt-4o-mini", mode="provider",
                                     job="left-running", client=client, db_path=db,
                                     poll_interval=0.05, progress=False, max_tokens=20)

        thread = threading.Thread(target=run)
        thread.start()
        _wait_for(lambda: inflight.count() == 1 and server.openai_batches)
        report = nl.stop_all()
        thread.join(timeout=5)
        assert not thread.is_alive()
        assert results["batch"].state == "submitted"
        [note] = report.notes
        assert "still running at the provider" in note
        assert "nl.resume_provider_batch(" in note and "provider's dashboard" in note
        assert note in repr(report)
        cancels = [c for c in server.calls if c[1].endswith("/cancel")]
        assert cancels == []  # not cancelled at the provider
        stored = BatchResult.load("left-running", db_path=db)
        assert stored.state == "submitted"
        library_loop.run(client.aclose())


# -- in a kernel: the status file the JupyterLab extension reads -------------------------

SETUP = "import notebook_llm as nl, threading"


def test_a_kernel_writes_its_running_work_beside_its_connection_file(
    kernel: KernelSession,
) -> None:
    done = kernel.execute(
        "from notebook_llm.core import inflight\n"
        "print(inflight.status_file())"
    )
    assert done.status == "ok", done.text
    path = Path(done.text.strip().splitlines()[-1])
    assert path.name.startswith("notebook-llm-inflight-") and path.suffix == ".json"
    assert path.parent == Path(kernel.km.connection_file).parent
    started = kernel.execute(
        "s = nl.stream('a very long story', 'offline:story', max_tokens=2000, chunk_delay=0.05)\n"
        "t = threading.Thread(target=s.collect); t.start()"
    )
    assert started.status == "ok", started.text
    _wait_for(lambda: path.exists() and json.loads(path.read_text())["running"])
    status = json.loads(path.read_text())
    assert status["pid"] != os.getpid()
    [entry] = status["running"]
    assert entry["kind"] == "stream" and entry["model"] == "offline:story"
    stopped = kernel.execute("r = nl.stop_all(); t.join(5); print(r)")
    assert stopped.status == "ok" and "stopped 1 stream" in stopped.text
    _wait_for(lambda: json.loads(path.read_text())["running"] == [], timeout=2)


def test_a_stop_button_goes_through_the_registry_and_says_who_stopped() -> None:
    client = CoreClient()
    with client.stream("a long tale", "offline:story", max_tokens=400, **SLOW) as stream:
        pieces = iter(stream)
        next(pieces)
        [entry] = inflight.running()
        stream.stop("button")
        for _ in pieces:
            pass
    assert entry.stopped_by == "button"
    assert stream.completion is not None and stream.completion.finish_reason == "cancelled"
    assert inflight.running() == []


def test_compare_and_batch_stop_buttons_go_through_the_registry(tmp_path: Path) -> None:
    # The dashboard's Stop buttons and the batch's Stop button stop through the
    # same entries nl.stop_all() uses, marked as stopped by a button.
    client = CoreClient()
    seen: dict[str, Any] = {}

    def on_update(comparison: Any, cell: Any) -> None:
        if cell.text and "entries" not in seen:
            seen["entries"] = inflight.running()
            comparison.cancel("offline:story", by="button")  # one model's Stop
            comparison.stop("button")  # Stop all

    result = nl.compare("a long tale", models=["offline:story", "offline:echo"], client=client,
                        on_update=on_update, max_tokens=400, **SLOW)
    compare_entry = next(e for e in seen["entries"] if e.kind == "compare")
    assert compare_entry.stopped_by == "button"
    assert {e.stopped_by for e in seen["entries"] if e.kind == "stream"} <= {"button", None}
    assert result.cell("offline:story").status == "stopped"

    class StopAt(nl.Progress):
        def update(self, **kwargs: Any) -> None:  # type: ignore[override]
            super().update(**kwargs)
            if self.done >= 3 and "batch" not in seen:
                seen["batch"] = next(e for e in inflight.running() if e.kind == "batch")
                self.stop()  # the widget's Stop button calls this

    stopped = batch([f"row {i}" for i in range(200)], "offline:echo", client=client, rpm=60,
                    db_path=str(tmp_path / "jobs.db"), progress=StopAt(0, backend="none"))
    assert stopped.state == "stopped" and stopped.stop_reason == "stopped by the user"
    assert seen["batch"].stopped_by == "button"
