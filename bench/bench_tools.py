"""A slow sync tool must not hold up other streams on the same client.

32 concurrent ``offline:echo`` streams (``--words`` words, ``--delay`` s apart:
about 2 s each) on one client, timed three ways in the same process:

- baseline: the 32 streams alone;
- with tool: the same 32 streams while a 33rd conversation on the same client
  runs a sync tool that sleeps 1 s, twice (``offline:tools``, two rounds);
- blocking tool (for reference): the same, but the tool is an ``async def``
  that calls ``time.sleep``, which blocks the loop as a sync tool run on the
  loop would: what the benchmark would show if tools held the loop.

Prints the median (over ``--rounds``) of the 32 streams' mean duration for
each, and the ratios to the baseline (target for "with tool": <= 1.05).

    .venv/bin/python bench/bench_tools.py [--rounds 5] [--streams 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from notebook_llm.core.client import CoreClient


def slow_tool() -> str:
    """Sleeps one second (a sync tool: runs on a worker thread)."""
    time.sleep(1.0)
    return "slept"


async def blocking_tool() -> str:
    """Sleeps one second on the loop (what a sync tool on the loop would do)."""
    time.sleep(1.0)
    return "slept"


async def one_stream(client: CoreClient, prompt: str, delay: float) -> float:
    started = time.perf_counter()
    await client.astream(prompt, "offline:echo", chunk_delay=delay, log=False).collect()
    return time.perf_counter() - started


async def run(client: CoreClient, streams: int, prompt: str, delay: float,
              tool: object | None) -> float:
    work = [one_stream(client, prompt, delay) for _ in range(streams)]
    side = None
    if tool is not None:
        side = asyncio.ensure_future(client.acomplete(
            "call wait {}\ncall wait {}", "offline:tools", log=False,
            tools=[tool], tool_timeout=30))
        await asyncio.sleep(0.05)  # the tool is running when the streams start
    durations = await asyncio.gather(*work)
    if side is not None:
        completion = await side
        assert [r.status for r in completion.tool_runs] == ["ok", "ok"], completion.tool_runs
    return statistics.fmean(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--words", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    prompt = " ".join(f"w{i}" for i in range(args.words))

    def wait() -> str:
        """Wait a second."""
        return slow_tool()

    async def wait_blocking() -> str:
        """Wait a second."""
        return await blocking_tool()

    wait.__name__ = wait_blocking.__name__ = "wait"

    async def measure() -> dict[str, list[float]]:
        client = CoreClient()
        await run(client, 4, prompt, args.delay, wait)  # warm up: imports, threads
        times: dict[str, list[float]] = {"baseline": [], "with tool": [], "blocking tool": []}
        for _ in range(args.rounds):
            times["baseline"].append(await run(client, args.streams, prompt, args.delay, None))
            times["with tool"].append(await run(client, args.streams, prompt, args.delay, wait))
            times["blocking tool"].append(
                await run(client, args.streams, prompt, args.delay, wait_blocking))
        return times

    times = asyncio.run(measure())
    base = statistics.median(times["baseline"])
    print(f"{args.streams} streams x {args.words} chunks, {args.delay * 1000:.0f} ms apart; "
          f"median of {args.rounds} rounds (mean stream duration)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:14s} {median:6.3f} s   ratio {median / base:5.3f}")
    ratio = statistics.median(times["with tool"]) / base
    print(f"slow sync tool: {'OK' if ratio <= 1.05 else 'OVER'} (target <= 1.05)")


if __name__ == "__main__":
    main()
