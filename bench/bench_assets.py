"""What templates and fragments add to a call: ``complete`` on ``offline:echo`` with
a saved template (and a fragment alias) against the same call with a plain prompt,
in one process, log off and on.

    PYTHONPATH=. python bench/bench_assets.py [--calls 2000]

Prints each variant's microseconds per call and its ratio to the plain call.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    home = tempfile.mkdtemp()
    os.environ["NOTEBOOK_LLM_HOME"] = home
    os.environ["NOTEBOOK_LLM_DB"] = os.path.join(home, "log.db")
    import notebook_llm as nl
    from notebook_llm._fragments import set_alias

    t = nl.templates.save("bench", prompt="Summarise $topic: $input", system="Be $tone",
                          defaults={"tone": "brief"}, model="offline:echo")
    notes = os.path.join(home, "notes.txt")
    with open(notes, "w") as handle:
        handle.write("context " * 200)
    set_alias("notes", notes)
    client = nl.Client("offline:echo")
    variants = {
        "plain": lambda log: client.complete("Summarise cats: text", system="Be brief", log=log),
        "template": lambda log: client.complete("text", template=t, params={"topic": "cats"},
                                                log=log),
        "template+fragment": lambda log: client.complete(
            "text", template=t, params={"topic": "cats"}, fragments=["notes"], log=log),
    }
    for log in (False, True):
        results: dict[str, float] = {}
        for _round in range(3):
            for name, call in variants.items():
                call(log)
                started = time.perf_counter()
                for _ in range(args.calls):
                    call(log)
                took = (time.perf_counter() - started) / args.calls * 1e6
                results[name] = min(results.get(name, took), took)
        base = results["plain"]
        for name, micros in results.items():
            print(f"log={'on ' if log else 'off'} {name:18s} {micros:8.1f} us/call  "
                  f"{micros / base:5.2f}x plain")


if __name__ == "__main__":
    main()
