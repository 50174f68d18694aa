"""``within``: one deadline per call, with asyncio.timeout's cancellation rules."""

from __future__ import annotations

import asyncio
import sys

import pytest

from notebook_llm import errors
from notebook_llm.core import deadline as deadline_module
from notebook_llm.core.deadline import Deadline, within

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 uses wait_for")


async def test_returns_the_result_and_leaves_no_cancellation() -> None:
    async def work() -> int:
        await asyncio.sleep(0.01)
        return 42

    assert await within(Deadline(5), work()) == 42
    assert asyncio.current_task().cancelling() == 0


async def test_deadline_passing_raises_the_library_timeout() -> None:
    with pytest.raises(errors.TimeoutError, match=r"timeout=0\.05s"):
        await within(Deadline(0.05, provider="p", model="m"), asyncio.sleep(10))
    assert asyncio.current_task().cancelling() == 0


async def test_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    started = asyncio.Event()

    async def call() -> None:
        started.set()
        await within(Deadline(10), asyncio.sleep(10))

    task = asyncio.create_task(call())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_answer_that_wins_the_race_is_kept() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "finished anyway"
        return "never"

    assert await within(Deadline(0.02), stubborn()) == "finished anyway"
    assert asyncio.current_task().cancelling() == 0


async def test_a_builtin_timeout_inside_becomes_the_library_timeout() -> None:
    async def raises() -> None:
        raise TimeoutError("read timed out")

    with pytest.raises(errors.TimeoutError):
        await within(Deadline(5), raises())


async def test_llm_errors_pass_through() -> None:
    async def raises() -> None:
        raise errors.RateLimitError("slow down", provider="p")

    with pytest.raises(errors.RateLimitError):
        await within(Deadline(5), raises())


async def test_nested_deadlines_each_fire_at_their_time() -> None:
    async def inner() -> str:
        with pytest.raises(errors.TimeoutError):
            await within(Deadline(0.02), asyncio.sleep(10))
        return "outer goes on"

    assert await within(Deadline(5), inner()) == "outer goes on"
    with pytest.raises(errors.TimeoutError):
        await within(Deadline(0.05), within(Deadline(10), asyncio.sleep(10)))


async def test_many_calls_in_flight_fire_in_order_and_finished_ones_are_dropped() -> None:
    loop = asyncio.get_running_loop()
    fired: list[int] = []

    async def call(i: int, seconds: float) -> None:
        try:
            await within(Deadline(seconds), asyncio.sleep(10))
        except errors.TimeoutError:
            fired.append(i)

    async def quick() -> None:
        await within(Deadline(30), asyncio.sleep(0))

    await asyncio.gather(*(quick() for _ in range(2000)),
                         *(call(i, 0.02 + 0.01 * i) for i in range(5)))
    assert fired == [0, 1, 2, 3, 4]
    pending = deadline_module._deadlines(loop)
    assert pending is not None and len(pending.heap) < 200  # ended calls do not pile up
    assert asyncio.current_task().cancelling() == 0


async def test_no_deadline_means_no_timer() -> None:
    assert await within(Deadline(None), asyncio.sleep(0, "ok")) == "ok"


async def test_the_plain_timeout_path_returns_and_raises_the_library_timeout() -> None:
    # The path for a loop without a task or weak references (a timeout_at
    # block from 3.11, wait_for on 3.10): the same result and the same error.
    loop = asyncio.get_running_loop()
    assert await deadline_module._within_timeout(Deadline(5), asyncio.sleep(0, 7), loop) == 7
    with pytest.raises(errors.TimeoutError, match=r"timeout=0\.05s"):
        await deadline_module._within_timeout(Deadline(0.05), asyncio.sleep(10), loop)
