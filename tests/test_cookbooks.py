"""Every cookbook runs headless and still produces its stored outputs (nbval).

Each notebook runs in its own ``python -m pytest --nbval`` subprocess, as CI
would run it by hand: a fresh kernel on this interpreter, a fresh call log,
no provider keys (so nothing is paid for and the default model is the
no-key one), no key prompts. Cells tagged ``nbval-ignore-output`` (SmolLM2
text, timings, widgets, plots) must run without error; every other cell's
output must match what is stored in the notebook. Regenerate the stored
outputs with ``python cookbooks/_build.py --execute``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COOKBOOKS = sorted((ROOT / "cookbooks").glob("[0-9][0-9]_*.ipynb"))
KEY_VARIABLES = (
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY",
    "DEEPSEEK_API_KEY", "OPENROUTER_API_KEY", "TOGETHER_API_KEY", "OPENAI_COMPATIBLE_API_KEY",
    "NOTEBOOK_LLM_MODEL",
)
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.slow


def test_there_are_ten_cookbooks() -> None:
    names = [path.name for path in COOKBOOKS]
    assert len(names) >= 10, names
    for prefix in ("01_", "02_", "03_", "04_", "05_", "06_", "07_", "08_", "09_", "10_"):
        assert any(name.startswith(prefix) for name in names), prefix


@pytest.mark.parametrize("path", COOKBOOKS, ids=[p.stem for p in COOKBOOKS])
def test_cookbook_is_clean(path: Path) -> None:
    """Badges, the Colab install cell, stored outputs, no widget state, no errors."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    first = "".join(nb["cells"][0]["source"])
    colab = "colab.research.google.com/github/notebook-llm/notebook-llm/blob/main/cookbooks/"
    assert colab + path.name in first
    assert f"urlpath=lab/tree/cookbooks/{path.name}" in first
    install = "".join(nb["cells"][1]["source"])
    assert '"google.colab" in sys.modules' in install and "%pip install" in install
    assert "widgets" not in nb["metadata"]
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert all(cell.get("execution_count") for cell in code), "run _build.py --execute"
    assert sum(bool(cell["outputs"]) for cell in code) >= len(code) // 2
    for cell in code:
        for output in cell["outputs"]:
            assert output["output_type"] != "error", cell["source"]
            assert WIDGET_MIME not in output.get("data", {})
    text = path.read_text(encoding="utf-8")
    for name in KEY_VARIABLES:
        value = os.environ.get(name)
        assert not (value and len(value) > 8 and value in text), f"{name}'s value is stored"


@pytest.mark.skipif(importlib.util.find_spec("nbval") is None, reason="nbval is not installed")
@pytest.mark.parametrize("path", COOKBOOKS, ids=[p.stem for p in COOKBOOKS])
def test_cookbook_runs_and_matches_its_outputs(path: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    env["NOTEBOOK_LLM_DB"] = str(tmp_path / "notebook_llm.db")
    env["NOTEBOOK_LLM_NO_PROMPT"] = "1"
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    command = [
        sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env",
        "--nbval-cell-timeout", "300", "-p", "no:cacheprovider", "-q",
        "-o", "addopts=", "--rootdir", str(path.parent), str(path),
    ]
    started = time.monotonic()
    result = subprocess.run(command, cwd=path.parent, env=env, capture_output=True, text=True,
                            timeout=900)
    seconds = time.monotonic() - started
    assert result.returncode == 0, (
        f"{path.name} failed under nbval ({seconds:.0f}s):\n{result.stdout[-12000:]}\n"
        f"{result.stderr[-3000:]}"
    )
