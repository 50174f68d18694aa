"""What the registry of work in flight costs a call: the kernel's status file on vs off.

Every call registers in :mod:`notebook_llm.core.inflight`; inside a Jupyter
kernel each top-level start and end also rewrites the small status file the
JupyterLab extension reads. This times sequential ``offline:echo`` completes
(log and cache off, so the registry is most of what differs) in rounds,
alternating "status file off" (a script, Colab without the extension's
server part) and "on" (a kernel), and prints the best round of each and the
ratio on/off. Run by hand:

    PYTHONPATH=. python bench/bench_inflight.py [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

from notebook_llm.core import inflight
from notebook_llm.core.client import CoreClient


async def _calls(client: CoreClient, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await client.acomplete("hello", "offline:echo", log=False, cache=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    client = CoreClient()
    folder = tempfile.mkdtemp(prefix="bench-inflight-")
    path = os.path.join(folder, "notebook-llm-inflight-bench.json")
    best = {"off": float("inf"), "on": float("inf")}

    async def run() -> None:
        await _calls(client, 200)  # warm-up
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                inflight.write_status_to(path if mode == "on" else None)
                best[mode] = min(best[mode], await _calls(client, args.calls))
        inflight.write_status_to(None)

    asyncio.run(run())
    for mode, seconds in best.items():
        print(f"status file {mode:3}: {args.calls / seconds:9.0f} calls/s "
              f"({seconds / args.calls * 1e6:6.1f} us/call)")
    print(f"ratio on/off (calls/s): {best['off'] / best['on']:.2f}x")


if __name__ == "__main__":
    main()
