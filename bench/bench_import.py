"""Cold ``import notebook_llm``: target under 0.15 s, with no SDK imported.

Each measurement is a fresh interpreter; the baseline is the same interpreter
starting with ``pass``, so the difference is the import itself.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 15
HEAVY = ("openai", "anthropic", "pandas", "IPython", "pydantic", "aiohttp", "httpx", "numpy")


def _time(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def main() -> None:
    """Print the median cold-import time and which heavy modules it pulled in."""
    baseline = statistics.median(_time("pass") for _ in range(RUNS))
    with_import = statistics.median(_time("import notebook_llm") for _ in range(RUNS))
    probe = (
        "import sys, notebook_llm; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules) or 'none')"
    )
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True).stdout.strip()
    cost = with_import - baseline
    print(f"interpreter start {baseline * 1000:.1f} ms; with import notebook_llm "
          f"{with_import * 1000:.1f} ms; import itself {cost * 1000:.1f} ms "
          f"(target < 150 ms: {'PASS' if cost < 0.15 else 'FAIL'}); heavy modules: {heavy}")


if __name__ == "__main__":
    main()
