"""``%llm_replay`` (replay files) and ``%%llm_expect`` (prompt tests as cells).

Both are thin shells over the public API: :func:`notebook_llm.replay`,
:func:`notebook_llm.replay_diff` and :func:`notebook_llm.expect`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, magics_class, no_var_expand

from notebook_llm._expect import (
    Check,
    ExpectationFailed,
    ExpectOptions,
    ExpectResult,
    parse_checks,
    run_checks,
)
from notebook_llm._replay import MODES, ReplayFileError, replay, replay_diff
from notebook_llm.core import loop as _loop
from notebook_llm.notebook._errors import CellError
from notebook_llm.notebook._interpolate import interpolate
from notebook_llm.notebook._ipython import (
    argument,
    cell_magic,
    display,
    line_magic,
    magic_arguments,
    parse_argstring,
)
from notebook_llm.notebook._schema import resolve_schema

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["ReplayMagics", "live_options", "previous_cell_prompt"]

LIVE = "record"
"""``metadata={"replay": LIVE}``: this call goes to the model and refreshes the file."""


def live_options(options: dict[str, Any]) -> dict[str, Any]:
    """``%%llm --live``: the call options with the replay file bypassed and refreshed."""
    return {**options, "metadata": {**(options.get("metadata") or {}), "replay": LIVE}}


def _unquote(value: str | None) -> str | None:
    # IPython's argument splitter keeps quotes: --prompt "a b" arrives quoted.
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def previous_cell_prompt(history: list[str]) -> str:
    """The prompt of the cell run before the running one (``In[-2]``; ``In[-1]`` is the
    running cell): its text, or a ``%%llm``-style cell's body (the magic line dropped).

    Raises:
        CellError: there is no earlier cell.
    """
    source = history[-2] if len(history) >= 3 else ""  # In[0] is always ''

    if not source.strip():
        raise CellError("--from-cell: there is no cell above this one to take the prompt from",
                        title="UsageError")
    first, _, body = source.partition("\n")
    # IPython stores a cell magic as run_cell_magic('llm', '-m x', 'body'): take the body.
    if first.startswith("get_ipython().run_cell_magic("):
        import ast

        call = ast.parse(source.strip()).body[0]
        if isinstance(call, ast.Expr) and isinstance(call.value, ast.Call):
            arg = call.value.args[2]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return arg.value.strip()
    if first.startswith("%%"):
        return body.strip()
    return source.strip()


@magics_class
class ReplayMagics(Magics):
    """``%llm_replay`` and ``%%llm_expect``."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self._shell = shell

    @line_magic
    def llm_replay(self, line: str) -> Any:
        """``%llm_replay record|replay|auto|off [PATH]``: where answers are stored and replayed.

        ``record`` calls the model and stores every answer, ``replay`` answers
        only from the file ($0, no key, no network; a changed prompt fails),
        ``auto`` replays what is stored and calls the model for anything new.
        PATH is the notebook or its ``.llm.json`` file, needed where the kernel
        cannot learn the notebook's path (nbval, papermill, VS Code).
        ``%llm_replay`` alone shows the setting; ``%llm_replay diff`` shows
        how answers re-recorded in this session differ from the stored ones.
        """
        words = [_unquote(word) or "" for word in line.split()]
        if words and words[0] == "diff":
            return replay_diff()
        mode = words[0] if words else None
        if mode is not None and mode not in MODES:
            raise CellError(f"%llm_replay {mode}: use one of {', '.join(MODES)} or diff",
                            title="UsageError")
        if len(words) > 2:
            raise CellError("%llm_replay takes a mode and at most one path", title="UsageError")
        try:
            return replay(mode, words[1] if len(words) > 1 else None)  # type: ignore[arg-type]
        except (ValueError, ReplayFileError) as exc:
            raise CellError(str(exc), title=type(exc).__name__) from None

    @magic_arguments()
    @argument("-m", "--model", action="append", default=[],
              help="the models to test (repeat -m, or separate them with commas)")
    @argument("--prompt", help="the prompt ({var} fills in from the notebook)")
    @argument("--from-cell", action="store_true",
              help="test the prompt of the cell run before this one")
    @argument("--judge", help="the model that scores judge lines (default: the default model)")
    @argument("-s", "--system", help="a system prompt (quote it)")
    @argument("-t", "--temperature", type=float, help="sampling temperature")
    @argument("--max-tokens", type=int, help="the most tokens to generate")
    @argument("-o", "--output", help="also store the result in this variable")
    @cell_magic
    @no_var_expand  # {var} in --prompt is filled in by interpolate(), as in %%llm
    def llm_expect(self, line: str, cell: str) -> None:
        """``%%llm_expect -m a,b --prompt "..."`` + one assertion per line: a pass/fail
        matrix (rows: assertions, columns: models). A failure fails the cell.

        Assertions: ``contains "x"``, ``not contains "x"``, ``regex PATTERN``,
        ``equals TEXT``, ``json``, ``schema NAME_OR_DSL``, ``max_tokens N``,
        ``max_cost 0.01``, ``judge "is it polite?" >= 0.8``.
        """
        args = parse_argstring(self.llm_expect, line)
        namespace: dict[str, Any] = self._shell.user_ns
        prompt = self._prompt(args, namespace)
        try:
            checks = parse_checks(cell, schema=lambda spec: resolve_schema(spec, namespace))
        except ValueError as exc:
            raise CellError(str(exc), title="UsageError",
                            hint="Nothing was sent. One assertion per line.") from None
        models = ",".join(_unquote(m) or "" for m in args.model) or None
        options = ExpectOptions(
            system=_unquote(args.system), temperature=args.temperature,
            max_tokens=args.max_tokens, judge_model=_unquote(args.judge), check=False,
        )
        result = self._run(prompt, models, checks, options)
        namespace["_llm_expect"] = result
        if args.output:
            namespace[args.output] = result
        display(result)
        if not result.passed:
            failed = ExpectationFailed(result)
            raise CellError(result.summary(), title="ExpectationFailed",
                            hint="The matrix above shows which; the result is in _llm_expect."
                            ) from failed

    def _prompt(self, args: Any, namespace: dict[str, Any]) -> str:
        if bool(args.prompt) == bool(args.from_cell):
            raise CellError("give the prompt with --prompt \"...\" or take it from the cell "
                            "above with --from-cell (one of the two)", title="UsageError")
        if args.from_cell:
            history = namespace.get("In")
            template = previous_cell_prompt(history if isinstance(history, list) else [])
        else:
            template = _unquote(args.prompt) or ""
        prompt = interpolate(template, namespace).strip()
        if not prompt:
            raise CellError("the prompt is empty", title="UsageError")
        return prompt

    def _run(self, prompt: str, models: str | None, checks: list[Check],
             options: ExpectOptions) -> ExpectResult:
        try:
            return _loop.run(run_checks(prompt, models, checks, options))
        except ValueError as exc:
            raise CellError(str(exc), title="UsageError") from None
