"""``%llm_fix [N]`` and ``%llm_explain [N]``: ask a model about the last error.

Every failing cell is recorded (its exception and its code) by a
``post_run_cell`` hook. ``%llm_explain`` sends the failing cell's code, its
traceback (IPython's own frames left out, every secret redacted with
:func:`notebook_llm.core.errors.redact`, the values of secret-looking
environment variables included) and cards of the variables the cell uses
(:func:`notebook_llm._context.card_text`), and streams the explanation through
``%%llm`` (so the Stop button, the bill and ``_llm`` work as there).
``%llm_fix`` also asks for the corrected cell and puts it below with
``set_next_input``; Colab, which cannot insert a cell, shows it as a code
block to copy. ``N`` picks the error of cell ``N`` (as ``{Err[N]}`` does).
"""

from __future__ import annotations

import ast
import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from IPython.core.magic import Magics, magics_class

from notebook_llm._context import card_text, is_figure
from notebook_llm.core.errors import redact
from notebook_llm.notebook._cell_context import remember_figures
from notebook_llm.notebook._errors import CellError
from notebook_llm.notebook._ipython import argument, line_magic, magic_arguments, parse_argstring

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["Failure", "FixMagics", "fix_prompt"]

F = TypeVar("F", bound=Callable[..., Any])

MAX_FRAMES = 12
VARIABLE_TOKENS = 300
MAX_VARIABLES = 6
_SECRET_NAME = re.compile(r"(key|token|secret|passw|credential|auth)", re.I)
_SKIP = frozenset({"In", "Out", "exit", "quit", "get_ipython", "display"})


@dataclass
class Failure:
    """A cell that raised: its execution count, the exception and the code."""

    count: int | None
    error: BaseException
    code: str


def _secret_values() -> list[str]:
    """Values of environment variables whose names say they are secret."""
    return [value for name, value in os.environ.items()
            if _SECRET_NAME.search(name) and len(value) >= 8]


def format_traceback(error: BaseException) -> str:
    """The traceback without IPython's frames, the last :data:`MAX_FRAMES` of it."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if "/IPython/" not in frame.filename.replace("\\", "/")][-MAX_FRAMES:]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)] \
        if frames else []
    lines.extend(traceback.format_exception_only(type(error), error))
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if cause is not None:
        head = "".join(traceback.format_exception_only(type(cause), cause)).strip()
        lines.append(f"(raised while handling: {head})\n")
    return "".join(lines).rstrip()


def _used_names(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return list(dict.fromkeys(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", code)))
    names = [node.id for node in ast.walk(tree) if isinstance(node, ast.Name)]
    return list(dict.fromkeys(names))


def _relevant(namespace: dict[str, Any], code: str) -> dict[str, Any]:
    """The user's variables the cell uses: data, not modules, functions or secrets."""
    chosen: dict[str, Any] = {}
    for name in _used_names(code):
        if name.startswith("_") or name in _SKIP or name not in namespace:
            continue
        value = namespace[name]
        if callable(value) or type(value).__name__ == "module" or is_figure(value):
            continue
        chosen[name] = value
        if len(chosen) >= MAX_VARIABLES:
            break
    return chosen


def fix_prompt(failure: Failure, namespace: dict[str, Any], *, fix: bool) -> str:
    """What ``%llm_fix`` / ``%llm_explain`` sends, every secret redacted."""
    secrets = _secret_values()
    ask = ("Explain briefly why this notebook cell failed, then give the corrected cell "
           "as one complete ```python code block." if fix else
           "Explain briefly why this notebook cell failed and how to fix it.")
    where = f"cell [{failure.count}]" if failure.count is not None else "the cell"
    parts = [ask, f"The code of {where}:\n```python\n{failure.code.rstrip()}\n```",
             f"The error:\n```text\n{format_traceback(failure.error)}\n```"]
    cards = []
    for name, value in _relevant(namespace, failure.code).items():
        if _SECRET_NAME.search(name):
            cards.append(f"{name}: {type(value).__name__} (a secret: not sent)")
        else:
            cards.append(card_text(value, name, VARIABLE_TOKENS))
    if cards:
        parts.append("The variables it uses:\n" + "\n\n".join(cards))
    return redact("\n\n".join(parts), *secrets)


def _arguments(magic: F) -> F:
    """The options both magics take."""
    for decorate in (
        argument("--yes", action="store_true", help="send without showing the bill first"),
        argument("--max-tokens", type=int, help="the most tokens to generate"),
        argument("-m", "--model", help="provider:model or an alias"),
        argument("number", nargs="?", type=int, help="the cell whose error (default: the last)"),
        magic_arguments(),
    ):
        magic = decorate(magic)
    return magic


@magics_class
class FixMagics(Magics):
    """``%llm_fix`` and ``%llm_explain``."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self._shell = shell
        self.failures: dict[int, Failure] = {}
        self._last: Failure | None = None
        shell.events.register("post_run_cell", self._record)
        remember_figures(shell)

    def _record(self, result: Any) -> None:
        error = result.error_in_exec or result.error_before_exec
        if error is None or isinstance(error, CellError):
            return
        count = result.execution_count
        info = getattr(result, "info", None)
        code = getattr(info, "raw_cell", None)
        if code is None and count is not None:
            history = self._shell.user_ns.get("In") or []
            code = history[count] if count < len(history) else ""
        failure = Failure(count, error, code or "")
        self._last = failure
        if count is not None:
            self.failures[count] = failure

    def unregister(self) -> None:
        """Stop recording failures (``%unload_ext``)."""
        try:
            self._shell.events.unregister("post_run_cell", self._record)
        except ValueError:
            pass

    def _failure(self, number: int | None) -> Failure:
        if number is not None:
            if number in self.failures:
                return self.failures[number]
            known = ", ".join(str(n) for n in sorted(self.failures)) or "none yet"
            raise CellError(f"cell {number} has no error recorded", title="UsageError",
                            hint=f"Cells with errors: {known}.")
        if self._last is not None:
            return self._last
        error = getattr(sys, "last_value", None)
        if isinstance(error, BaseException):
            return Failure(None, error, "")
        raise CellError("there is no error to look at yet", title="UsageError",
                        hint="Run the failing cell first, then %llm_fix.")

    def _ask(self, line: str, *, fix: bool) -> None:
        args = parse_argstring(self.llm_fix if fix else self.llm_explain, line)
        failure = self._failure(args.number)
        prompt = fix_prompt(failure, self._shell.user_ns, fix=fix)
        options = [f"-m {args.model}" if args.model else "",
                   f"--max-tokens {args.max_tokens}" if args.max_tokens else "",
                   "--yes" if args.yes else ""]
        escaped = prompt.replace("{", "{{").replace("}", "}}")
        before = self._shell.user_ns.get("_llm")
        run: Callable[[str, str, str], Any] = self._shell.run_cell_magic
        run("llm", " ".join(o for o in options if o), escaped)
        completion = self._shell.user_ns.get("_llm")
        if not fix or completion is None or completion is before:
            return
        self._offer_fix(completion.text)

    def _offer_fix(self, text: str) -> None:
        from notebook_llm.notebook._display import first_code_block

        if "```" not in text:
            return  # no code block: nothing to put below
        code = first_code_block(text)
        if not code.strip():
            return
        if "google.colab" in sys.modules:  # no set_next_input there: a block to copy
            from notebook_llm.core.types import Completion
            from notebook_llm.notebook._display import final_bundle
            from notebook_llm.notebook._ipython import display

            display({"text/plain": "Corrected cell (copy it into a new cell):"}, raw=True)
            display(final_bundle(Completion(text=code), "code"), raw=True)
            return
        self._shell.set_next_input(code, replace=False)

    @_arguments
    @line_magic
    def llm_fix(self, line: str) -> None:
        """``%llm_fix [N] [-m MODEL]``: explain the last error (or cell N's) and put a
        corrected cell below; the code, traceback and variables are sent, secrets
        redacted."""
        self._ask(line, fix=True)

    @_arguments
    @line_magic
    def llm_explain(self, line: str) -> None:
        """``%llm_explain [N] [-m MODEL]``: explain the last error (or cell N's)."""
        self._ask(line, fix=False)
