"""Third-party providers register through the ``notebook_llm.providers`` entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "extensions" / "notebook-llm-reverse"


def test_register_provider_through_entry_point(tmp_path: Path) -> None:
    # Install the example plugin for real (into a private target directory).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(tmp_path),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import notebook_llm as nl\n"
        "print(nl.complete('abc', model='reverse:x').text)\n"
        "print(''.join(c.text for c in nl.stream('xyz', model='reverse:x')))\n"
        "print('reverse' in {p.name for p in nl.list_providers()})\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.stdout.split() == ["cba", "zyx", "True"], out.stderr
