#!/usr/bin/env bash
# The Colab runtime job: install notebook-llm[notebook] in a Python 3.13 venv
# under Colab's pins (../shared/colab-constraints.txt: IPython 7.34, ipywidgets
# 7.7, ipykernel 6.17, jupyter_client 7.4, ...) and run the notebook tests there
# (real kernels started from that venv). Fails if a pin would be upgraded.
# llama-cpp-python is not installed: the notebook tests run on offline: models
# and the one that needs a llama.cpp server skips, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

CONSTRAINTS=../shared/colab-constraints.txt
VENV=.venv-colab
TESTS=(tests/test_notebook.py tests/test_notebook_surface.py tests/test_dashboard.py tests/test_progress.py tests/test_arena.py tests/test_tool_approval.py tests/test_fix_magics.py)
[ -f "$CONSTRAINTS" ] || { echo "error: $CONSTRAINTS is missing" >&2; exit 1; }

# python3.13 on PATH, or a pyenv-installed 3.13 that the active pyenv version hides.
find_python313() {
    local root candidate
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    for candidate in python3.13 "$root"/versions/3.13*/bin/python3.13 \
            /usr/local/bin/python3.13 /usr/bin/python3.13; do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' \
                >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}
PYTHON=$(find_python313) || {
    echo "error: the Colab job needs Python 3.13 (Colab's runtime); no working python3.13" \
         "was found on PATH or under pyenv. Install it (e.g. pyenv install 3.13) and rerun." >&2
    exit 1
}

started=$SECONDS
echo "== Colab runtime: $("$PYTHON" --version) ($PYTHON), pins from $CONSTRAINTS"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
# One resolution for the package and the test tools, every pin held.
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" -e '.[notebook]' scikit-learn \
        'pytest>=8' 'pytest-asyncio>=0.23' 'nbclient>=0.10' 'nbformat>=5.9' ipykernel \
    || { echo "error: notebook-llm[notebook] does not install under $CONSTRAINTS" >&2; exit 1; }

# Every pin either installed at exactly its version or not installed at all.
"$VENV/bin/python" - "$CONSTRAINTS" <<'PY'
import re
import sys
from importlib.metadata import PackageNotFoundError, version

wrong = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, pinned = re.split(r"\s*==\s*", line, maxsplit=1)
    try:
        found = version(name)
    except PackageNotFoundError:
        found = "-"
    mark = "" if found in (pinned, "-") else "  <- NOT THE PIN"
    if mark:
        wrong.append(name)
    print(f"   {name:24} pinned {pinned:12} installed {found}{mark}")
for name in ("pytest", "pytest-asyncio", "nbclient", "jupyter_core", "notebook-llm"):
    print(f"   {name:24} {'':19} installed {version(name)}")
if wrong:
    sys.exit(f"error: installing changed the pinned versions of {', '.join(wrong)}")
PY

# The kernels the tests start are `python -m ipykernel_launcher` from this venv.
# jupyter_client 7.4 (Colab's pin) leaves a zmq context for the garbage collector
# at exit; that warning is the pin's, not a failure of the tests.
PYDEVD_DISABLE_FILE_VALIDATION=1 "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rs \
    -W "ignore:Unclosed context:ResourceWarning" \
    "${TESTS[@]}"
echo "== Colab runtime job: $((SECONDS - started))s"
