"""Streaming into a display handle: cost of rendering, and the update rate.

Streams 10,000 tokens from ``offline:echo`` (a 10,000-word prompt, no delay)
twice per round (and again paced, with a small ``chunk_delay``, so that the
stream lasts seconds and the update rate means something): once consumed
bare (``for chunk in stream``), once through
the notebook layer (``consume`` + a ``CellView`` on a display handle, the
final render included) in an in-process IPython shell whose display
publisher only records what it is given. Prints the median wall times, their
ratio (target ≤ 1.10) and the display updates a second (target ≤ ~15).

    .venv/bin/python bench/bench_display.py [--rounds 7] [--tokens 10000]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from typing import Any

from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell


class RecordingPublisher(DisplayPublisher):
    """Keeps (time, update?) for every display call; renders nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, bool]] = []

    def publish(self, data: Any, metadata: Any = None, source: Any = None, *,
                transient: Any = None, update: bool = False, **kwargs: Any) -> None:
        self.calls.append((time.perf_counter(), update))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--paced-delay", type=float, default=0.0003,
                        help="chunk_delay of the paced run (a stream lasting seconds)")
    parser.add_argument("--paced-rounds", type=int, default=2)
    options = parser.parse_args()
    os.environ.setdefault("NOTEBOOK_LLM_DB", os.path.join(tempfile.mkdtemp(), "bench.db"))

    import notebook_llm as nl
    from notebook_llm.notebook._display import CellView, consume, final_bundle, footer_bundle

    shell = InteractiveShell.instance()
    publisher = RecordingPublisher()
    shell.display_pub = publisher
    client = nl.Client(log=False)
    prompt = " ".join(f"word{i}" for i in range(options.tokens))

    def bare(delay: float = 0.0) -> float:
        started = time.perf_counter()
        stream = client.stream(prompt, "offline:echo", chunk_delay=delay)
        for _ in stream:
            pass
        assert stream.completion is not None
        assert stream.completion.usage.output_tokens >= options.tokens
        return time.perf_counter() - started

    def rendered(delay: float = 0.0) -> tuple[float, int, int, float]:
        publisher.calls.clear()
        started = time.perf_counter()
        # The %%llm path: an async stream read on the library loop, rendered here.
        stream = client.astream(prompt, "offline:echo", chunk_delay=delay)
        view = CellView("markdown", widgets=False)
        view.start(None)
        result = consume(stream, view.update)
        assert result.completion is not None
        view.finish(final_bundle(result.completion, "markdown"), footer_bundle(result.completion))
        elapsed = time.perf_counter() - started
        updates = [t for t, update in publisher.calls if update]
        # The final render (content and footer) is not throttled: leave it out.
        streaming = updates[:-2]
        busiest = max((sum(1 for u in streaming if s <= u < s + 1.0) for s in streaming),
                      default=0)
        gap = min((b - a for a, b in itertools.pairwise(streaming)), default=float("nan"))
        return elapsed, view.updates, busiest, gap

    bare()  # warm up: imports, the loop thread, the markdown parser
    rendered()
    for label, delay, rounds in (("fast", 0.0, options.rounds),
                                 ("paced", options.paced_delay, options.paced_rounds)):
        bare_times: list[float] = []
        rendered_times: list[float] = []
        counts: list[int] = []
        busiest_seen, min_gap = 0, float("inf")
        for _ in range(rounds):
            bare_times.append(bare(delay))
            elapsed, updates, busiest, gap = rendered(delay)
            rendered_times.append(elapsed)
            counts.append(updates)
            busiest_seen = max(busiest_seen, busiest)
            min_gap = min(min_gap, gap) if gap == gap else min_gap
        bare_s = statistics.median(bare_times)
        rendered_s = statistics.median(rendered_times)
        print(f"[{label}] {options.tokens} tokens, chunk_delay={delay}, {rounds} rounds")
        print(f"  bare stream:      {bare_s * 1000:9.1f} ms (median)")
        print(f"  rendered stream:  {rendered_s * 1000:9.1f} ms (median)")
        print(f"  ratio:            {rendered_s / bare_s:9.3f}  (target <= 1.10)")
        print(f"  updates/stream:   {statistics.median(counts):9.0f}  "
              f"= {statistics.median(counts) / rendered_s:.1f}/s over the stream")
        print(f"  busiest second:   {busiest_seen:9d}  updates in any 1 s (target <= 15)")
        print(f"  min gap:          {min_gap * 1000:9.1f} ms between streaming updates "
              f"(1/15 s = 66.7 ms)")

if __name__ == "__main__":
    main()
