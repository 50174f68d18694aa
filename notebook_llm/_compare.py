"""Compare providers and models side by side: text, latency, tokens, cost.

``nl.compare("prompt", models=[...])`` runs every (prompt, model, run) cell
concurrently through the streaming API, so time to first token is measured;
a model that fails shows its error in its own cell and never stops the others.
The result knows how to become a DataFrame, a summary, a word diff and a plot.
Live display (the dashboard) lives in ``notebook_llm.notebook``; this module
only reports progress through an ``on_update`` callback.
"""

from __future__ import annotations

import asyncio
import difflib
import html
import inspect
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from notebook_llm._api import default_client
from notebook_llm._judge import Verdict, ajudge
from notebook_llm._templates import Template
from notebook_llm.core import inflight, loop as _loop
from notebook_llm.core.errors import LLMError
from notebook_llm.core.money import format_usd
from notebook_llm.core.stream import AsyncStream
from notebook_llm.core.types import Completion

__all__ = ["Cell", "Comparison", "Diff", "acompare", "compare", "prompts_from"]

Status = Literal["pending", "running", "done", "error", "stopped"]


@dataclass
class Cell:
    """One (prompt, model, run) of a comparison."""

    prompt_index: int
    prompt: str
    model: str
    run: int
    status: Status = "pending"
    text: str = ""
    completion: Completion | None = None
    error: BaseException | None = None
    score: float | None = None
    """0 (worst) to 1 (best), from ``scorer=`` or the judge."""
    verdict: Verdict | None = None
    """The judge's verdict (its reply and its own call), when ``judge=`` scored it."""
    stream: AsyncStream | None = field(default=None, repr=False)

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second of generation (after the first token)."""
        c = self.completion
        if c is None or not c.usage.output_tokens or c.latency_s is None:
            return None
        seconds = c.latency_s - (c.ttft_s or 0.0)
        return c.usage.output_tokens / seconds if seconds > 0 else None

    def cancel(self, by: str = "stop_all") -> None:
        """Stop this cell's stream (its partial text is kept), through the registry
        of work in flight, noting who stopped it (``"button"``, ``"stop_all"``)."""
        if self.stream is not None:
            self.stream.stop(by)

    def row(self) -> dict[str, Any]:
        """This cell as a DataFrame row."""
        c = self.completion
        return {
            "prompt": self.prompt,
            "model": self.model,
            "provider": self.model.partition(":")[0],
            "run": self.run,
            "text": c.text if c else self.text,
            "finish_reason": c.finish_reason if c else None,
            "ttft_s": c.ttft_s if c else None,
            "latency_s": c.latency_s if c else None,
            "input_tokens": c.usage.input_tokens if c else None,
            "output_tokens": c.usage.output_tokens if c else None,
            "tokens_per_s": self.tokens_per_s,
            "cost_usd": c.cost_usd if c else None,
            "error": f"{type(self.error).__name__}: {self.error}" if self.error else None,
            "status": self.status,
        }


class Comparison:
    """The cells of a comparison, live while it runs and complete after.

    ``to_pandas()`` gives one row per (prompt, model, run); ``summary()`` the
    mean, p50 and p95 per model; ``diff(a, b)`` a word-level diff;
    ``plot()`` bars of latency, time to first token, tokens/s and cost.
    """

    def __init__(
        self,
        prompts: list[str],
        models: list[str],
        runs: int,
        variables: list[dict[str, Any]] | None = None,
    ) -> None:
        self.prompts = prompts
        self.models = models
        self.runs = runs
        self.variables = variables
        self.template: Template | None = None
        """The saved template the prompts come from (its calls get it and ``params=``)."""
        self.cells = [
            Cell(p, prompt, model, run)
            for p, prompt in enumerate(prompts)
            for model in models
            for run in range(runs)
        ]
        self.scored = False
        self.judge: str | None = None
        """The judge model, when ``judge=`` scored the answers."""
        self.rubric: str | None = None
        """What the judge graded against (``None``: the default rubric)."""
        self._stopping = False
        self._entry: inflight.Entry | None = None

    @property
    def judge_calls(self) -> list[Completion]:
        """The judge's own calls, one per scored answer."""
        return [
            c.verdict.completion
            for c in self.cells
            if c.verdict is not None and c.verdict.completion is not None
        ]

    @property
    def judge_cost_usd(self) -> float | None:
        """Dollars the judge cost (0 without a judge; ``None`` when a judge call is unpriced).

        Kept apart from :attr:`models_cost_usd`: the judge is the price of
        measuring, not of running a model."""
        return _total([c.cost_usd for c in self.judge_calls]) if self.judge_calls else 0.0

    @property
    def models_cost_usd(self) -> float | None:
        """Dollars the compared models cost (``None`` when one call is unpriced)."""
        return _total([c.completion.cost_usd if c.completion else None
                       for c in self.cells if c.completion is not None])

    def frontier(self, *, plot: bool = True, ax: Any = None) -> Any:
        """Quality against dollars per 1,000 rows and against p50 latency, per model.

        Returns a DataFrame (one row per model; ``pareto`` marks the models no
        other model beats on both quality and cost) and, with ``plot=True``,
        draws it (the Pareto front joined by a line). See
        :func:`notebook_llm._decide.frontier`.
        """
        from notebook_llm._decide import frontier

        return frontier(self, plot=plot, ax=ax)

    def recommend(
        self,
        min_quality: float = 0.9,
        max_latency_s: float | None = None,
        *,
        rows: Any = None,
        strict: bool = False,
    ) -> Any:
        """The cheapest model whose score meets ``min_quality`` (and latency bar).

        Returns a :class:`~notebook_llm.Recommendation` (``.model`` is usable
        as ``model=``); raises :class:`~notebook_llm.errors.NoModelQualifiesError`,
        naming the closest model, when none does. See
        :func:`notebook_llm._decide.recommend` for ``rows=`` and ``strict=``.
        """
        from notebook_llm._decide import recommend

        return recommend(
            self, min_quality=min_quality, max_latency_s=max_latency_s, rows=rows, strict=strict
        )

    def __repr__(self) -> str:
        done = sum(c.status == "done" for c in self.cells)
        judge = ""
        if self.judge_calls:
            judge = f", judge {self.judge} cost {format_usd(self.judge_cost_usd)}"
        return (
            f"Comparison({len(self.prompts)} prompts x {self.models}, "
            f"runs={self.runs}, done={done}{judge})"
        )

    @property
    def done(self) -> bool:
        """True when no cell is still running."""
        return all(c.status not in ("pending", "running") for c in self.cells)

    @property
    def stopping(self) -> bool:
        """True once every column was asked to stop (:meth:`stop`)."""
        return self._stopping

    def stop(self, by: str = "stop_all") -> None:
        """Stop every cell, including those whose stream has not begun yet.

        While the comparison runs this goes through the registry of work in
        flight (:mod:`notebook_llm.core.inflight`), as ``nl.stop_all()`` and the
        dashboard's Stop buttons do, noting who stopped it (``by``)."""
        entry = self._entry
        if entry is not None and entry.stopped_by is None:
            entry.stop(by)  # the registry calls back here, marked
            return
        self._stopping = True
        self.cancel(by=entry.stopped_by if entry is not None and entry.stopped_by else by)

    def cancel(self, model: str | None = None, *, by: str = "stop_all") -> None:
        """Stop every running cell, or only ``model``'s (``by``: who stopped them)."""
        for cell in self.cells:
            if model is None or cell.model == model:
                cell.cancel(by)

    def cell(self, model: str, prompt: int = 0, run: int = 0) -> Cell:
        """The cell for ``model`` on prompt number ``prompt``, run ``run``."""
        for cell in self.cells:
            if (cell.model, cell.prompt_index, cell.run) == (model, prompt, run):
                return cell
        raise KeyError(f"no cell for {model!r}, prompt {prompt}, run {run}")

    def to_pandas(self) -> Any:
        """One row per (prompt, model, run); prompt variables as extra columns."""
        import pandas as pd

        rows = []
        for cell in self.cells:
            row = cell.row()
            if self.variables:
                row = {**self.variables[cell.prompt_index], **row}
            if self.scored:
                row["score"] = cell.score
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def df(self) -> Any:
        """Alias of :meth:`to_pandas`."""
        return self.to_pandas()

    def summary(self) -> Any:
        """Per model: calls, errors, mean/p50/p95 latency and TTFT, tokens/s, cost."""
        import pandas as pd

        rows = []
        for model in self.models:
            cells = [c for c in self.cells if c.model == model]
            ok = [c for c in cells if c.completion is not None and c.error is None]
            done = [c.completion for c in ok if c.completion is not None]
            latency = [c.latency_s for c in done if c.latency_s is not None]
            ttft = [c.ttft_s for c in done if c.ttft_s is not None]
            speed = [s for c in ok if (s := c.tokens_per_s) is not None]
            costs = [c.cost_usd for c in done]
            row: dict[str, Any] = {
                "model": model,
                "calls": len(cells),
                "errors": sum(c.error is not None for c in cells),
                "latency_mean_s": _mean(latency),
                "latency_p50_s": _percentile(latency, 50),
                "latency_p95_s": _percentile(latency, 95),
                "ttft_mean_s": _mean(ttft),
                "ttft_p50_s": _percentile(ttft, 50),
                "ttft_p95_s": _percentile(ttft, 95),
                "tokens_per_s": _mean(speed),
                "output_tokens": sum(c.usage.output_tokens for c in done),
                "cost_usd": _total(costs),
            }
            if self.scored:
                row["score_mean"] = _mean([c.score for c in cells if c.score is not None])
            rows.append(row)
        return pd.DataFrame(rows).set_index("model")

    def diff(self, a: str, b: str, prompt: int = 0, run: int = 0) -> Diff:
        """A word-level diff of model ``a``'s and model ``b``'s answers."""
        return Diff(
            a,
            self.cell(a, prompt, run).row()["text"] or "",
            b,
            self.cell(b, prompt, run).row()["text"] or "",
        )

    def different_only(self) -> Any:
        """The prompts of a matrix whose answers differ between models (wide table)."""
        frame = self.to_pandas()
        wide = frame[frame["run"] == 0].pivot(index="prompt", columns="model", values="text")
        return wide[wide.nunique(axis=1) > 1]

    def plot(self) -> Any:
        """Bars of latency, time to first token, tokens/s and cost per model."""
        from notebook_llm._plots import bar_panels

        summary = self.summary()
        return bar_panels(
            summary,
            [
                ("latency_mean_s", "latency (s)"),
                ("ttft_mean_s", "time to first token (s)"),
                ("tokens_per_s", "tokens / s"),
                ("cost_usd", "cost (USD)"),
            ],
            title="Model comparison",
        )

    def _repr_html_(self) -> str:
        from notebook_llm._render import html_escape, render_markdown

        head = "".join(f"<th>{html_escape(m)}</th>" for m in self.models)
        body = []
        for p, prompt in enumerate(self.prompts):
            for run in range(self.runs):
                label = html_escape(prompt[:80] + ("…" if len(prompt) > 80 else ""))
                if self.runs > 1:
                    label += f" (run {run + 1})"
                cells = []
                for model in self.models:
                    cell = self.cell(model, p, run)
                    if cell.error is not None:
                        content = (
                            f"<b>{html_escape(type(cell.error).__name__)}</b>: "
                            f"{html_escape(str(cell.error))}"
                        )
                    else:
                        content = render_markdown(cell.row()["text"] or "")
                    cells.append(
                        f"<td style='vertical-align:top'>{content}"
                        f"<div><small>{html_escape(_footer(cell))}</small></div></td>"
                    )
                body.append(f"<tr><th style='vertical-align:top'>{label}</th>{''.join(cells)}</tr>")
        return (
            f"<table><thead><tr><th>prompt</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
        )

    def _repr_markdown_(self) -> str:
        from notebook_llm._render import markdown_table_cell, markdown_text

        lines = ["| prompt | model | answer | status |", "|---|---|---|---|"]
        for cell in self.cells:
            text = (cell.row()["text"] or "").replace("\n", " ")[:200]
            if cell.error is not None:
                text = f"{type(cell.error).__name__}: {cell.error}"
            lines.append(
                f"| {markdown_text(cell.prompt[:60])} | {markdown_text(cell.model)} | "
                f"{markdown_table_cell(text)} | {markdown_text(_footer(cell))} |"
            )
        return "\n".join(lines)


def _footer(cell: Cell) -> str:
    if cell.error is not None:
        return "error"
    c = cell.completion
    if c is None:
        return cell.status
    speed = f"{cell.tokens_per_s:.0f} tok/s" if cell.tokens_per_s else ""
    parts = [
        f"TTFT {c.ttft_s:.2f}s" if c.ttft_s is not None else "",
        f"{c.latency_s:.2f}s" if c.latency_s is not None else "",
        f"{c.usage.input_tokens}+{c.usage.output_tokens} tok",
        speed,
        format_usd(c.cost_usd, c.cost_status),
        c.finish_note,
    ]
    return " · ".join(p for p in parts if p)


def _total(costs: Sequence[float | None]) -> float | None:
    """The sum, or None when there is none or one is unknown (never a partial sum)."""
    known = [cost for cost in costs if cost is not None]
    return sum(known) if known and len(known) == len(costs) else None


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


_WORDS = re.compile(r"\s+|\w+|[^\w\s]")


class Diff:
    """A word-level diff between two answers; shows as HTML or ``[-old-]{+new+}`` text."""

    def __init__(self, label_a: str, a: str, label_b: str, b: str) -> None:
        self.label_a, self.label_b = label_a, label_b
        self.a_words = _WORDS.findall(a)
        self.b_words = _WORDS.findall(b)
        self.opcodes = difflib.SequenceMatcher(
            None, self.a_words, self.b_words, autojunk=False
        ).get_opcodes()

    def __repr__(self) -> str:
        return f"Diff({self.label_a!r} → {self.label_b!r}, similarity {self.ratio:.0%})"

    @property
    def ratio(self) -> float:
        """Similarity from 0 (nothing shared) to 1 (identical)."""
        return difflib.SequenceMatcher(None, self.a_words, self.b_words, autojunk=False).ratio()

    def __str__(self) -> str:
        out = []
        for tag, i1, i2, j1, j2 in self.opcodes:
            old, new = "".join(self.a_words[i1:i2]), "".join(self.b_words[j1:j2])
            if tag == "equal":
                out.append(old)
            if tag in ("delete", "replace"):
                out.append(f"[-{old}-]")
            if tag in ("insert", "replace"):
                out.append(f"{{+{new}+}}")
        return "".join(out)

    def _repr_html_(self) -> str:
        out = [
            f"<div><small>{html.escape(self.label_a)} → {html.escape(self.label_b)} "
            f"(similarity {self.ratio:.0%})</small></div><div style='white-space:pre-wrap'>"
        ]
        for tag, i1, i2, j1, j2 in self.opcodes:
            old = html.escape("".join(self.a_words[i1:i2]))
            new = html.escape("".join(self.b_words[j1:j2]))
            if tag == "equal":
                out.append(old)
            if tag in ("delete", "replace"):
                out.append(f"<del style='background:#fdd'>{old}</del>")
            if tag in ("insert", "replace"):
                out.append(f"<ins style='background:#dfd'>{new}</ins>")
        out.append("</div>")
        return "".join(out)


def prompts_from(
    prompt: str | None, prompts: Sequence[str] | None, template: str | Template | None,
    data: Any,
) -> tuple[list[str], list[dict[str, Any]] | None]:
    if isinstance(template, Template):
        # A saved template: each row's values fill its $names; the calls get the
        # template itself (system, options, schema, fragments), these texts show.
        rows = [{}] if data is None else (
            data.to_dict("records") if hasattr(data, "to_dict") else list(data))
        return [template.fill(record).prompt for record in rows], rows
    if template is not None:
        if data is None:
            raise ValueError("template= needs data= (a DataFrame or a list of dicts of variables)")
        records = data.to_dict("records") if hasattr(data, "to_dict") else list(data)
        filled = []
        for record in records:
            try:
                filled.append(template.format_map(record))
            except KeyError as exc:
                raise ValueError(
                    f"the template uses {{{exc.args[0]}}}, which the data lacks; "
                    f"columns are {sorted(record)}"
                ) from None
        return filled, records
    if prompts is not None:
        return list(prompts), None
    if prompt is None:
        raise ValueError("pass a prompt, prompts=[...], or template= with data=")
    return [prompt], None


async def acompare(
    prompt: str | None = None,
    models: Sequence[str] = (),
    *,
    prompts: Sequence[str] | None = None,
    template: str | Template | None = None,
    data: Any = None,
    runs: int = 1,
    system: str | None = None,
    scorer: Callable[..., float] | None = None,
    judge: str | None = None,
    rubric: str | None = None,
    client: Any = None,
    on_update: Callable[[Comparison, Cell], None] | None = None,
    comparison: Comparison | None = None,
    **params: Any,
) -> Comparison:
    """Run ``prompt`` (or a prompt matrix) through every model concurrently.

    Args:
        prompt: one prompt; or ``prompts=[...]``; or ``template=`` filled from
            each row of ``data=`` (a DataFrame or list of dicts): a ``str.format``
            string, or a saved :class:`~notebook_llm.Template` (``$names`` from the
            columns; its system, options, schema and fragments apply).
        models: model strings; a model that fails shows its error in its cell.
        runs: repeat each cell this many times (the summary gives mean/p50/p95).
        system: a system prompt for every call.
        scorer: ``f(text)`` or ``f(prompt, text)`` returning a number: a score column.
        judge: a model that scores each answer against ``rubric``, on the
            library's 0-1 scale (it answers 1-10; see :mod:`notebook_llm._judge`).
        client: the client to use (the default client when omitted).
        on_update: called as cells stream and finish (the notebook dashboard).
        **params: passed to every call (temperature, max_tokens, ...).

    Returns:
        A :class:`Comparison`.
    """
    if not models:
        raise ValueError("models= needs at least one model string")
    if client is None:
        client = default_client()
    if comparison is None:
        prompt_list, variables = prompts_from(prompt, prompts, template, data)
        comparison = Comparison(prompt_list, list(models), runs, variables)
        if isinstance(template, Template):
            comparison.template = template

    async def run_cell(cell: Cell) -> None:
        cell.status = "running"
        if on_update:
            on_update(comparison, cell)
        try:
            stream: AsyncStream = client.astream(
                None if comparison.template else cell.prompt, cell.model, system=system,
                tags=["compare"], **_template_arguments(comparison, cell), **params
            )
            cell.stream = stream
            if comparison.stopping:
                stream.cancel()  # stopped before this column began
            async for chunk in stream:
                if chunk.text:
                    cell.text += chunk.text
                    if on_update:
                        on_update(comparison, cell)
            cell.completion = stream.completion
            stopped = cell.completion is not None and cell.completion.finish_reason == "cancelled"
            cell.status = "stopped" if stopped else "done"
        except (LLMError, ValueError, OSError) as exc:
            cell.error, cell.status = exc, "error"
        except asyncio.CancelledError:
            cell.status = "stopped"
            cell.completion = cell.stream.completion if cell.stream else None
            raise
        finally:
            if on_update:
                on_update(comparison, cell)

    try:
        with inflight.tracked("compare", ", ".join(comparison.models), comparison.stop) as entry:
            comparison._entry = entry
            await asyncio.gather(*(run_cell(cell) for cell in comparison.cells))
    finally:
        comparison._entry = None
        for cell in comparison.cells:
            if cell.status in ("pending", "running"):
                cell.status = "stopped"
    if scorer is not None or judge is not None:
        await _score(comparison, scorer, judge, rubric, client)
    return comparison


def _template_arguments(comparison: Comparison, cell: Cell) -> dict[str, Any]:
    """With a saved template, the cell's call gets it and its row's values (the
    client fills them in, with the template's system, options and fragments)."""
    if comparison.template is None:
        return {}
    variables = comparison.variables or [{}]
    return {"template": comparison.template, "params": variables[cell.prompt_index]}


async def _score(
    comparison: Comparison,
    scorer: Callable[..., float] | None,
    judge: str | None,
    rubric: str | None,
    client: Any,
) -> None:
    comparison.scored = True
    comparison.judge, comparison.rubric = (judge, rubric) if scorer is None else (None, None)
    for cell in comparison.cells:
        text = cell.row()["text"]
        if cell.error is not None or not text:
            continue
        if scorer is not None:
            wants_prompt = len(inspect.signature(scorer).parameters) >= 2
            score = float(scorer(cell.prompt, text) if wants_prompt else scorer(text))
            if not 0.0 <= score <= 1.0:
                raise ValueError(
                    f"scorer returned {score!r}; scores are on a 0-1 scale (1 is best). "
                    "Return a fraction, e.g. points / max_points"
                )
            cell.score = score
        else:
            verdict = await ajudge(client, judge or "", cell.prompt, text, rubric=rubric)
            cell.score, cell.verdict = verdict.score, verdict


def compare(
    prompt: str | None = None,
    models: Sequence[str] = (),
    *,
    prompts: Sequence[str] | None = None,
    template: str | Template | None = None,
    data: Any = None,
    runs: int = 1,
    system: str | None = None,
    scorer: Callable[..., float] | None = None,
    judge: str | None = None,
    rubric: str | None = None,
    client: Any = None,
    on_update: Callable[[Comparison, Cell], None] | None = None,
    comparison: Comparison | None = None,
    **params: Any,
) -> Comparison:
    """Sync :func:`acompare` (the same arguments); Ctrl-C stops every cell and
    keeps what arrived."""
    if comparison is None:
        prompt_list, variables = prompts_from(prompt, prompts, template, data)
        comparison = Comparison(prompt_list, list(models), runs, variables)
        if isinstance(template, Template):
            comparison.template = template
    try:
        return _loop.run(
            acompare(
                None, models, system=system, scorer=scorer, judge=judge, rubric=rubric,
                client=client, on_update=on_update, comparison=comparison, **params,
            )
        )
    except KeyboardInterrupt:
        comparison.cancel()
        return comparison
