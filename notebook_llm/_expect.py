"""Prompt tests: one prompt, several models, assertions on each answer (``nl.expect``).

Assertions are lines of a small language (the body of ``%%llm_expect``, or
the ``checks`` of :func:`expect`), one per line::

    contains "Paris"          the answer contains the text
    not contains "London"     ``not`` turns contains, regex and equals around
    regex ^\\d{4}$             a Python regular expression matches (re.search)
    equals Paris              the whole answer, spaces around it ignored
    json                      the answer (a ```json fence allowed) is JSON
    schema Person             it validates against a Pydantic model (or, in a
                              notebook, the --schema DSL: name: str, age: int)
    max_tokens 50             at most 50 output tokens
    max_cost 0.01             the call cost at most $0.01 (a replayed answer
                              is held to what it cost when it was recorded)
    judge "is it polite?" >= 0.8
                              a judge model's 0-1 score (default threshold 0.7)

``#`` starts a comment. The result is a pass/fail matrix (rows: assertions,
columns: models); a failure raises :class:`ExpectationFailed`, an
``AssertionError``, so pytest and "Run all" stop there. Every call goes
through the client, so under ``nl.replay`` the whole test runs offline.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from notebook_llm._judge import ajudge
from notebook_llm.core.errors import LLMError
from notebook_llm.core.types import Completion

__all__ = [
    "Check",
    "CheckResult",
    "ExpectOptions",
    "ExpectResult",
    "ExpectationFailed",
    "aexpect",
    "expect",
    "model_list",
    "parse_checks",
    "run_checks",
]

KINDS = ("contains", "regex", "equals", "json", "schema", "max_tokens", "max_cost", "judge")
_NEGATABLE = ("contains", "regex", "equals")
DEFAULT_THRESHOLD = 0.7
_JUDGE = re.compile(r"^(?P<question>.+?)(?:\s*>=\s*(?P<threshold>[0-9.]+))?$")
_FENCE = re.compile(r"^```[\w-]*\s*\n(?P<body>.*?)\n```\s*$", re.DOTALL)

SchemaResolver = Callable[[str], Any]
"""Turns a ``schema`` assertion's text into a Pydantic model class."""


class ExpectationFailed(AssertionError):
    """One or more assertions failed; ``result`` holds the whole matrix."""

    def __init__(self, result: ExpectResult) -> None:
        super().__init__(result.summary() + "\n" + result.text())
        self.result = result


@dataclass(frozen=True, slots=True)
class Check:
    """One assertion, parsed."""

    kind: str
    """One of :data:`KINDS`."""
    source: str
    """The line as written (the matrix's row label)."""
    value: Any = None
    """The text, pattern, number or schema class the assertion needs."""
    negate: bool = False
    threshold: float = DEFAULT_THRESHOLD
    """The lowest passing judge score (0-1)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One cell of the matrix."""

    check: Check
    model: str
    passed: bool
    detail: str = ""


def _text_argument(rest: str, line: str) -> str:
    """The argument of ``contains``/``regex``/``equals``/``judge``: a quoted string
    (quotes removed, backslash escapes read), or the rest of the line as written."""
    rest = rest.strip()
    if not rest:
        raise ValueError(f"{line!r}: say what to look for, e.g. contains \"Paris\"")
    if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "'\"":
        try:
            parts = shlex.split(rest)
        except ValueError:
            parts = []
        if len(parts) == 1:
            return parts[0]
    return rest


def parse_checks(text: str, *, schema: SchemaResolver | None = None) -> list[Check]:
    """Assertions, one per line (see the module's help); blank lines and ``#`` comments skipped.

    Args:
        text: the lines.
        schema: turns a ``schema`` line's argument into a Pydantic model class.

    Raises:
        ValueError: a line that is not an assertion, naming it and what to write.
    """
    checks: list[Check] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        negate = word == "not"
        if negate:
            word, _, rest = rest.strip().partition(" ")
            if word not in _NEGATABLE:
                raise ValueError(f"{line!r}: 'not' goes before {', '.join(_NEGATABLE)}")
        kind = word.lower()
        rest = rest.strip()
        value: Any = None
        threshold = DEFAULT_THRESHOLD
        if kind in ("contains", "equals"):
            value = _text_argument(rest, line)
        elif kind == "regex":
            pattern = _text_argument(rest, line)
            try:
                value = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{line!r}: not a regular expression ({exc})") from None
        elif kind == "json":
            if rest:
                raise ValueError(f"{line!r}: json takes nothing (use schema to check fields)")
        elif kind == "schema":
            if not rest:
                raise ValueError(f"{line!r}: name a Pydantic model, e.g. schema Person")
            if schema is None:
                raise ValueError(f"{line!r}: no schema resolver; pass schemas={{...}}")
            value = schema(rest)
        elif kind in ("max_tokens", "max_cost"):
            try:
                value = int(rest) if kind == "max_tokens" else float(rest)
            except ValueError:
                raise ValueError(f"{line!r}: {kind} needs a number, e.g. {kind} "
                                 f"{'200' if kind == 'max_tokens' else '0.01'}") from None
            if value < 0:
                raise ValueError(f"{line!r}: {kind} cannot be negative")
        elif kind == "judge":
            match = _JUDGE.match(rest)
            if not rest or match is None:
                raise ValueError(f"{line!r}: write judge \"question\" >= 0.8")
            value = _text_argument(match.group("question"), line)
            if match.group("threshold"):
                threshold = float(match.group("threshold"))
                if not 0 <= threshold <= 1:
                    raise ValueError(f"{line!r}: judge scores are 0-1; a threshold of "
                                     f"{threshold} cannot be met")
        else:
            raise ValueError(f"{line!r}: unknown assertion {word!r}; use one of "
                             f"{', '.join(KINDS)} (and 'not' before {', '.join(_NEGATABLE)})")
        checks.append(Check(kind, line, value, negate, threshold))
    if not checks:
        raise ValueError("no assertions: write one per line, e.g. contains \"Paris\"")
    return checks


# -- checking one answer -----------------------------------------------------------------


def _unfenced(text: str) -> str:
    match = _FENCE.match(text.strip())
    return match.group("body") if match else text.strip()


def _short(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _check_text(check: Check, completion: Completion) -> tuple[bool, str]:
    text = completion.text
    if check.kind == "contains":
        found = check.value in text
        return found != check.negate, "found" if found else "not found"
    if check.kind == "regex":
        match = check.value.search(text)
        return (match is not None) != check.negate, (
            f"matched {_short(match.group())!r}" if match else "no match")
    if check.kind == "equals":
        same = text.strip() == str(check.value).strip()
        return same != check.negate, "equal" if same else f"was {_short(text)!r}"
    if check.kind == "json":
        try:
            json.loads(_unfenced(text))
        except ValueError as exc:
            return False, f"not JSON: {exc}"
        return True, "valid JSON"
    if check.kind == "schema":
        try:
            check.value.model_validate_json(_unfenced(text))
        except ValueError as exc:
            errors = getattr(exc, "errors", None)
            count = len(errors()) if callable(errors) else 1
            return False, f"{count} validation error(s): {_short(str(exc), 80)}"
        return True, f"fits {getattr(check.value, '__name__', 'the schema')}"
    if check.kind == "max_tokens":
        tokens = completion.usage.output_tokens
        return tokens <= check.value, f"{tokens} output tokens"
    if check.kind == "max_cost":
        replay = completion.replay
        cost = replay.cost_usd if replay is not None and replay.replayed else completion.cost_usd
        if cost is None:
            return False, "the price of this model is unknown"
        return cost <= check.value, f"${cost:.6f}"
    raise AssertionError(f"unhandled assertion {check.kind}")  # parse_checks allows no other


# -- the result --------------------------------------------------------------------------


class ExpectResult:
    """The pass/fail matrix: rows are assertions, columns are models."""

    def __init__(self, prompt: str, models: list[str], checks: list[Check],
                 answers: dict[str, Completion | BaseException],
                 results: list[CheckResult]) -> None:
        self.prompt = prompt
        self.models = models
        self.checks = checks
        self.answers = answers
        """Each model's completion, or the error its call raised."""
        self.results = results

    @property
    def passed(self) -> bool:
        """True when every assertion passed for every model."""
        return all(result.passed for result in self.results)

    def failures(self) -> list[CheckResult]:
        """The failed cells."""
        return [result for result in self.results if not result.passed]

    def cell(self, check: Check, model: str) -> CheckResult:
        """The result of one assertion for one model."""
        for result in self.results:
            if result.check is check and result.model == model:
                return result
        raise KeyError((check.source, model))

    def summary(self) -> str:
        """``"2 of 6 checks failed"`` or ``"all 6 checks passed"``."""
        failed = len(self.failures())
        total = len(self.results)
        return f"{failed} of {total} checks failed" if failed else f"all {total} checks passed"

    def rows(self) -> list[list[str]]:
        """The matrix as text: the assertion, then ``pass``/``FAIL (detail)`` per model."""
        return [
            [check.source, *[
                ("pass" if r.passed else "FAIL") + (f" ({r.detail})" if r.detail else "")
                for r in (self.cell(check, model) for model in self.models)
            ]]
            for check in self.checks
        ]

    def text(self) -> str:
        """The matrix as aligned plain text."""
        header = ["assertion", *self.models]
        table = [header, *self.rows()]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
                 for row in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __repr__(self) -> str:
        from notebook_llm._render import terminal_text

        return terminal_text(f"{self.summary()}\n{self.text()}")

    def _repr_html_(self) -> str:
        from notebook_llm._render import html_escape

        head = "".join(f"<th>{html_escape(h)}</th>" for h in ["assertion", *self.models])
        body = []
        for check in self.checks:
            cells = [f"<td><code>{html_escape(check.source)}</code></td>"]
            for model in self.models:
                r = self.cell(check, model)
                mark, colour = ("✓", "#1a7f37") if r.passed else ("✗", "#cf222e")
                cells.append(f'<td style="color:{colour}" title="{html_escape(r.detail)}">'
                             f"{mark} <small>{html_escape(r.detail)}</small></td>")
            body.append(f"<tr>{''.join(cells)}</tr>")
        colour = "#1a7f37" if self.passed else "#cf222e"
        return (f'<strong style="color:{colour}">{html_escape(self.summary())}</strong>'
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


# -- running -----------------------------------------------------------------------------


async def _judge(client: Any, judge_model: str | None, check: Check, prompt: str,
                 answer: Completion) -> tuple[bool, str]:
    try:
        verdict = await ajudge(client, judge_model or client.default_model().model, prompt,
                               answer.text, rubric=check.value)
    except LLMError as exc:
        return False, f"the judge failed: {exc}"
    if verdict.score is None:
        return False, f"the judge gave no score ({_short(verdict.reply)!r})"
    return verdict.score >= check.threshold, f"score {verdict.score:.2f}"


async def _results_for(client: Any, model: str, answer: Completion | BaseException,
                       checks: list[Check], prompt: str, judge_model: str | None,
                       ) -> list[CheckResult]:
    if isinstance(answer, BaseException):
        detail = f"the call failed: {type(answer).__name__}: {_short(str(answer), 80)}"
        return [CheckResult(check, model, False, detail) for check in checks]
    results: list[CheckResult] = []
    for check in checks:
        if check.kind == "judge":
            passed, detail = await _judge(client, judge_model, check, prompt, answer)
        else:
            passed, detail = _check_text(check, answer)
        results.append(CheckResult(check, model, passed, detail))
    return results


@dataclass(frozen=True, kw_only=True, slots=True)
class ExpectOptions:
    """The keyword options of :func:`expect` and :func:`aexpect` (one record for both)."""

    system: str | None = None
    """A system prompt sent with every call."""
    temperature: float | None = None
    """Sampling temperature."""
    max_tokens: int | None = None
    """The most tokens each model may generate."""
    judge_model: str | None = None
    """The model that scores ``judge`` lines (default: the client's default model)."""
    schemas: dict[str, Any] | None = None
    """Names a ``schema`` line may use, mapped to Pydantic model classes."""
    client: Any = None
    """The client (default: ``nl.default_client()``)."""
    check: bool = True
    """Raise :class:`ExpectationFailed` when an assertion fails."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in fields(cls))


async def aexpect(
    prompt: str,
    models: str | Sequence[str] | None = None,
    checks: str | Sequence[str] = (),
    *,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    judge_model: str | None = None,
    schemas: dict[str, Any] | None = None,
    client: Any = None,
    check: bool = True,
) -> ExpectResult:
    """Async version of :func:`expect` (the same arguments)."""
    options = ExpectOptions(
        system=system, temperature=temperature, max_tokens=max_tokens,
        judge_model=judge_model, schemas=schemas, client=client, check=check,
    )  # fmt: skip
    return await run_checks(prompt, models, checks, options)


def expect(
    prompt: str,
    models: str | Sequence[str] | None = None,
    checks: str | Sequence[str] = (),
    *,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    judge_model: str | None = None,
    schemas: dict[str, Any] | None = None,
    client: Any = None,
    check: bool = True,
) -> ExpectResult:
    """Send ``prompt`` to each model and check every answer against ``checks``.

    Args:
        prompt: the prompt.
        models: a model string, a comma-separated list or a list (``None``: the default).
        checks: assertion lines (a string with one per line, or a list of lines):
            ``contains``, ``not contains``, ``regex``, ``equals``, ``json``,
            ``schema NAME``, ``max_tokens N``, ``max_cost USD``,
            ``judge "question" >= 0.8``.
        system, temperature, max_tokens: sent with every call.
        judge_model: the model that scores ``judge`` assertions (default: the
            client's default model); its answer is on the library's 0-1 scale.
        schemas: names a ``schema`` line may use, mapped to Pydantic model classes.
        client: the client (default: ``nl.default_client()``).
        check: raise :class:`ExpectationFailed` when an assertion fails.

    Returns:
        The :class:`ExpectResult` matrix (shown as a table in a notebook).

    Raises:
        ValueError: a line that is not an assertion (nothing is sent).
        ExpectationFailed: an assertion failed, and ``check`` is true.
    """
    from notebook_llm.core import loop as _loop

    options = ExpectOptions(
        system=system, temperature=temperature, max_tokens=max_tokens,
        judge_model=judge_model, schemas=schemas, client=client, check=check,
    )  # fmt: skip
    return _loop.run(run_checks(prompt, models, checks, options))


def model_list(models: str | Sequence[str] | None) -> list[str | None]:
    """``"a,b"`` or ``["a", "b"]`` as a list; ``[None]`` (the default model) when empty."""
    if models is None:
        return [None]
    items = models.split(",") if isinstance(models, str) else list(models)
    names = [item.strip() for item in items if item and item.strip()]
    return list(dict.fromkeys(names)) or [None]


def _schema_lookup(schemas: dict[str, Any] | None) -> SchemaResolver:
    def resolve(name: str) -> Any:
        value = (schemas or {}).get(name.strip())
        if value is None or not hasattr(value, "model_validate_json"):
            raise ValueError(f"schema {name}: pass schemas={{{name.strip()!r}: Model}} with a "
                             "Pydantic model class")
        return value

    return resolve


async def run_checks(prompt: str, models: str | Sequence[str] | None,
                     checks: str | Sequence[str] | list[Check],
                     options: ExpectOptions) -> ExpectResult:
    """Parse the checks, call every model at once, check every answer.

    ``checks`` may also be parsed :class:`Check` objects (``%%llm_expect``
    parses them itself, with the notebook's schema DSL).
    """
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty: nothing to test")
    if isinstance(checks, list) and checks and isinstance(checks[0], Check):
        parsed: list[Check] = checks
    else:
        lines = checks if isinstance(checks, str) else "\n".join(str(c) for c in checks)
        parsed = parse_checks(lines, schema=_schema_lookup(options.schemas))
    client = options.client
    if client is None:
        from notebook_llm._api import default_client

        client = default_client()
    wanted = model_list(models)

    async def ask(model: str | None) -> Completion | BaseException:
        try:
            completion: Completion = await client.acomplete(
                prompt, model, system=options.system, temperature=options.temperature,
                max_tokens=options.max_tokens, tags=["expect"],
            )
            return completion
        except LLMError as exc:
            return exc

    answers = await asyncio.gather(*(ask(model) for model in wanted))
    names = [model or client.default_model().model for model in wanted]
    judged = await asyncio.gather(*(
        _results_for(client, name, answer, parsed, prompt, options.judge_model)
        for name, answer in zip(names, answers, strict=True)
    ))
    result = ExpectResult(prompt, names, parsed, dict(zip(names, answers, strict=True)),
                          [cell for cells in judged for cell in cells])
    if options.check and not result.passed:
        raise ExpectationFailed(result)
    return result
