"""What ``nl.capture()`` costs an ``openai`` SDK call: captured against uncaptured, same run.

    /work/main/.venv/bin/python bench/bench_capture.py [--calls 200] [--rounds 5]

Starts ``fastserver.py`` (a fake OpenAI-compatible server, precomputed answers)
in a child process, then times ``--calls`` sequential ``chat.completions.create``
calls of one official ``openai.OpenAI`` client, whole and streamed (50 chunks,
``include_usage``), alternating rounds without and with capture (a fresh call
log in a temporary directory). Prints, per mode, the best round's mean time
per call and the ratio captured / uncaptured: the figure that matters on a
shared, noisy machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fastserver import start_server_process  # noqa: E402


def one_round(client, calls: int, stream: bool) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        if stream:
            for _chunk in client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
                stream_options={"include_usage": True},
            ):
                pass
        else:
            client.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": "hi"}])
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import openai

    import notebook_llm as nl
    from notebook_llm.store.log import call_log

    proc, base = start_server_process(chunks=50)
    try:
        client = openai.OpenAI(api_key="sk-bench-not-a-key-000", base_url=base + "/v1",
                               max_retries=0)
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "log.db"
            for mode in ("whole", "stream"):
                stream = mode == "stream"
                one_round(client, 20, stream)  # warm up connections and imports
                plain, captured = [], []
                for _ in range(args.rounds):
                    plain.append(one_round(client, args.calls, stream))
                    with nl.capture(db_path=db):
                        one_round(client, 20, stream)  # wrap the transport once
                        captured.append(one_round(client, args.calls, stream))
                call_log(db).flush()
                base_s, cap_s = min(plain), min(captured)
                print(f"{mode:6s} uncaptured {base_s * 1e3:7.3f} ms/call   captured "
                      f"{cap_s * 1e3:7.3f} ms/call   ratio {cap_s / base_s:5.2f}x")
            logged = len(nl.usage(db_path=db, limit=None))
            print(f"calls in the log: {logged}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
