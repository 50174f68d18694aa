"""The README's main job, ``python -m notebook_llm.demo``, end to end in a fresh
process (here on the offline chat model, so it takes seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_runs_end_to_end_and_writes_its_report(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    env = {**os.environ, "NOTEBOOK_LLM_DB": str(tmp_path / "log.db"),
           "NOTEBOOK_LLM_NO_PROMPT": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "notebook_llm.demo", "--model", "offline:echo",
         "--report", str(report)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    page = report.read_text(encoding="utf-8")
    for section in ("Batch", "Semantic search"):
        assert section in page, section
    assert "rows:" in done.stdout and "0 failed" in done.stdout
