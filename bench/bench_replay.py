"""Replay benchmark: 1,000 stored answers replayed vs the same calls to a local model.

    .venv/bin/python bench/bench_replay.py [--answers 1000] [--max-tokens 64] [--out F]

One process, one client (the default middlewares, the call log on, as a user
has it), the same prompts:

1. live: ``client.complete(prompt, "local:tiny")`` with replay off, for every
   prompt (stories260K from ../shared/models, in-process through llama.cpp,
   ``temperature=0``);
2. record: the same calls again in ``record`` mode, building the replay file
   (not timed);
3. replay: the same calls in ``replay`` mode: every answer from the file;
4. offline: the same calls to ``offline:echo`` (an in-process model that does
   nothing), interleaved with the replay rounds: what any call costs in this
   process (sync hop to the library's loop, every middleware, the call log);
5. lookup: the replay module's own work per answer (fingerprint, file lookup,
   the checked entry turned back into a Completion), timed by calling the
   lookup middleware directly on prepared calls.

Printed: seconds per answer for each, the live/replay ratio (target >= 20x)
and the library overhead per replayed answer (target < 1 ms): end to end
through ``complete`` (background loop, every middleware, the call log) and
the lookup alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import notebook_llm as nl  # noqa: E402
from notebook_llm._replay import ReplayLookup  # noqa: E402

MODEL_FILE = ROOT.parent / "shared" / "models" / "stories260K.gguf"


def timed(client: nl.Client, prompts: list[str], max_tokens: int,
          model: str = "local:tiny") -> tuple[float, list[str]]:
    texts = []
    started = time.perf_counter()
    for prompt in prompts:
        texts.append(client.complete(prompt, model, temperature=0, max_tokens=max_tokens).text)
    return time.perf_counter() - started, texts


def lookup_seconds(client: nl.Client, prompts: list[str], max_tokens: int,
                   rounds: int) -> float:
    """Median seconds per answer of the lookup middleware alone."""
    from notebook_llm.core.options import CallOptions

    lookup = ReplayLookup()
    options = CallOptions(temperature=0, max_tokens=max_tokens)
    contexts = [client._prepare("complete", p, "local:tiny", options, {})[1] for p in prompts]

    async def run() -> float:
        started = time.perf_counter()
        for ctx in contexts:
            hit = await lookup.before(ctx)
            assert hit is not None and hit.replay is not None
        return (time.perf_counter() - started) / len(contexts)

    return statistics.median(asyncio.run(run()) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="replay rounds (median)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    if not MODEL_FILE.exists():
        raise SystemExit(f"{MODEL_FILE} is missing: the benchmark needs the tiny GGUF model")
    nl.local.register("tiny", MODEL_FILE)
    prompts = [f"Once upon a time there was a creature number {i}" for i in range(args.answers)]
    client = nl.Client()
    client.complete(prompts[0], "local:tiny", max_tokens=1)  # load the model first

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.llm.json"
        with nl.replay("off"):
            live_s, live_texts = timed(client, prompts, args.max_tokens)
        with nl.replay("record", path=path):
            timed(client, prompts, args.max_tokens)
        size = path.stat().st_size
        replays, floors = [], []
        with nl.replay("replay", path=path):
            for _ in range(args.rounds):
                seconds, texts = timed(client, prompts, args.max_tokens)
                assert texts == live_texts, "a replayed answer differs from the live one"
                replays.append(seconds)
                with nl.replay("off"):  # interleaved: the same client, any call's fixed cost
                    floors.append(timed(client, prompts, args.max_tokens, "offline:echo")[0])
            lookup = lookup_seconds(client, prompts, args.max_tokens, args.rounds)
        replay_s = statistics.median(replays)
        floor_s = statistics.median(floors)

    n = args.answers
    figures = {
        "answers": n,
        "file_bytes": size,
        "live_ms_per_answer": 1000 * live_s / n,
        "replay_ms_per_answer": 1000 * replay_s / n,
        "lookup_ms_per_answer": 1000 * lookup,
        "offline_echo_ms_per_call": 1000 * floor_s / n,
        "ratio_live_over_replay": live_s / replay_s,
    }
    print(f"{n} answers, replay file {size / 1e6:.2f} MB")
    print(f"live (local:tiny, {args.max_tokens} tokens): {figures['live_ms_per_answer']:8.3f} ms"
          " per answer")
    print(f"replay through complete():            {figures['replay_ms_per_answer']:8.3f} ms"
          f" per answer  (median of {args.rounds})")
    print(f"replay lookup alone:                  {figures['lookup_ms_per_answer']:8.3f} ms"
          " per answer")
    print(f"any call's fixed cost (offline:echo): {figures['offline_echo_ms_per_call']:8.3f} ms"
          " per call (the same client, interleaved)")
    print(f"replay is {figures['ratio_live_over_replay']:.0f}x faster than the local model"
          " (target >= 20x)")
    added = figures["replay_ms_per_answer"] - figures["offline_echo_ms_per_call"]
    figures["replay_added_ms_per_answer"] = added
    versus = (f"{added:.3f} ms more than any call" if added >= 0 else
              f"{-added:.3f} ms less than any call (a replay writes no call-log row)")
    print(f"library overhead per replayed answer: {figures['replay_ms_per_answer']:.3f} ms end to"
          f" end ({versus}), {figures['lookup_ms_per_answer']:.3f} ms in the lookup"
          " (target < 1 ms)")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
