"""What a batch returns: :class:`BatchResult` and :class:`BatchEstimate`.

A result does not hold the rows in memory: :meth:`BatchResult.to_pandas`
reads them back from the job's checkpoints, so a resumed job, a stopped job
and a job loaded by id after a kernel restart all look the same.
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from notebook_llm.batches._jobs import JobStore, db_path_of
from notebook_llm.core import loop as _loop
from notebook_llm.core.money import format_usd

__all__ = ["BatchEstimate", "BatchResult"]

# The columns every result has, in order; parsed fields go after "output".
BASE_COLUMNS = (
    "output", "input_tokens", "output_tokens", "cost_usd", "latency_s", "attempts", "error",
    "model", "status",
)  # fmt: skip


@dataclass
class BatchEstimate:
    """Tokens and cost a batch would use, worked out before anything is sent.

    Prompt tokens are estimated as characters / 4; output tokens as
    ``max_tokens`` when given, else :data:`DEFAULT_OUTPUT_TOKENS` per request.
    """

    rows: int
    """Input rows."""
    requests: int
    """Requests the job would send (rows x models, less finished ones)."""
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    """Upper-bound dollars, or ``None`` when a model is unpriced."""
    by_model: list[dict[str, Any]] = field(default_factory=list)
    """One dict per model: model, requests, input_tokens, output_tokens, cost_usd, priced."""
    batch_discount: bool = False
    """True for ``mode="provider"`` (priced at the providers' batch rates)."""

    def to_pandas(self) -> Any:
        """One row per model."""
        import pandas as pd

        return pd.DataFrame(self.by_model)

    @property
    def df(self) -> Any:
        """Alias of :meth:`to_pandas`."""
        return self.to_pandas()

    def __repr__(self) -> str:
        return (
            f"BatchEstimate(requests={self.requests}, input_tokens≈{self.input_tokens}, "
            f"output_tokens≤{self.output_tokens}, cost≤{format_usd(self.cost_usd)})"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(item['model'])}</td><td>{item['requests']:,}</td>"
            f"<td>{item['input_tokens']:,}</td><td>{item['output_tokens']:,}</td>"
            f"<td>{format_usd(item['cost_usd'])}</td></tr>"
            for item in self.by_model
        )
        note = " (batch rates)" if self.batch_discount else ""
        return (
            f"<div><b>Estimate</b>{note}: {self.requests:,} requests, "
            f"≈{self.input_tokens:,} input tokens, ≤{self.output_tokens:,} output tokens, "
            f"≤{format_usd(self.cost_usd)}<table><tr><th>model</th><th>requests</th>"
            f"<th>input tokens</th><th>output tokens</th><th>cost</th></tr>{rows}</table></div>"
        )


class BatchResult:
    """The outcome of :func:`batch`: counts, state, and the rows as a DataFrame.

    Attributes:
        job_id: the job's id (pass it to :meth:`load`, or rerun the same call, to resume).
        name: the ``job=`` name, if one was given.
        state: ``done``, ``stopped``, ``running``, ``submitted`` (provider batch
            still processing), ``failed``, ``cancelled`` or ``dry_run``.
        models: the model strings, in order.
        total: rows x models.
        done, failed, pending: row counts (``failed`` rows gave up after retries).
        cached: rows reused from an earlier run of the same job.
        cost_usd: dollars spent on finished rows (unpriced rows count as 0).
        elapsed_s: seconds this run took.
        stop_reason: why the job stopped early, when it did.
        estimate: the :class:`BatchEstimate` (always set for ``dry_run=True``).
    """

    def __init__(
        self,
        job_id: str,
        *,
        name: str | None,
        state: str,
        mode: str,
        models: list[str],
        rows: int,
        db: Any = None,
        index: Any = None,
        frame: Any = None,
        format_model: Any = None,
        cached: int = 0,
        elapsed_s: float = 0.0,
        stop_reason: str | None = None,
        estimate: BatchEstimate | None = None,
        provider_batches: dict[str, str] | None = None,
        rerun: Callable[[], Awaitable[BatchResult]] | None = None,
    ) -> None:
        self.job_id = job_id
        self.name = name
        self.state = state
        self.mode = mode
        self.models = models
        self.rows = rows
        self.total = rows * len(models)
        self.cached = cached
        self.elapsed_s = elapsed_s
        self.stop_reason = stop_reason
        self.estimate = estimate
        self.provider_batches = dict(provider_batches or {})
        """Provider batch ids by model (``mode="provider"``)."""
        self.done = self.failed = 0
        self.cost_usd = 0.0
        self._db = db
        self._frame = frame
        self._index = index
        self._format_model = format_model
        self._rerun = rerun
        if state != "dry_run":
            self.refresh()

    @classmethod
    def load(cls, job_id: str, *, db_path: Any = None, db: Any = None) -> BatchResult:
        """The result of a stored job, by id or name (e.g. after a kernel restart).

        ``db_path``: the database (default: the library's); ``db`` is its old name."""
        db = db_path_of(db_path, db, "BatchResult.load")
        jobs = JobStore(db)
        try:
            job = jobs.find(job_id)
        finally:
            jobs.close()
        if job is None:
            raise KeyError(f"No batch job {job_id!r}; batch_jobs() lists them")
        return cls(
            job.id, name=job.name, state=job.state, mode=job.mode, models=job.models,
            rows=int(job.meta.get("rows") or (job.total // max(len(job.models), 1))), db=db,
            provider_batches=job.meta.get("provider_batches"),
        )

    def refresh(self) -> BatchResult:
        """Re-read the counts (and state) from the store."""
        jobs = JobStore(self._db)
        try:
            counts = jobs.counts(self.job_id)
            self.cost_usd = jobs.cost(self.job_id)
            job = jobs.get(self.job_id)
        finally:
            jobs.close()
        self.done = counts.get("done", 0)
        self.failed = counts.get("failed", 0)
        if job is not None:
            self.state = job.state
        return self

    @property
    def pending(self) -> int:
        """Rows not finished yet (never sent, in flight when stopped, or submitted)."""
        return max(self.total - self.done - self.failed, 0)

    # -- rows ------------------------------------------------------------------

    def to_pandas(self) -> Any:
        """The rows as a DataFrame aligned to the input's index.

        Columns: the input DataFrame's own columns first (when the input was a
        DataFrame; one that shares a name with a result column is renamed
        ``input_<name>``), then ``text`` (the answer, named as on
        ``Completion`` and ``Comparison``), the parsed fields when
        ``response_format`` was a Pydantic model (or parsed JSON objects),
        ``input_tokens``, ``output_tokens``, ``cost_usd``, ``latency_s``,
        ``attempts``, ``error``, ``model`` and ``status`` (``done``,
        ``failed``, ``pending`` or ``submitted``). With several models the
        frame is long: one row per (input row, model), the input index repeated.
        A result loaded by job id has no input frame: ``df.join(result.to_pandas())``.
        """
        import pandas as pd

        jobs = JobStore(self._db)
        try:
            stored = jobs.rows(self.job_id)
        finally:
            jobs.close()
        models = self.models or sorted({row[2] for row in stored})
        width = max(len(models), 1)
        slot = {model: i for i, model in enumerate(models)}
        size = self.rows * width
        output: list[Any] = [None] * size
        parsed: list[Any] = [None] * size
        tokens_in: list[Any] = [None] * size
        tokens_out: list[Any] = [None] * size
        cost: list[Any] = [None] * size
        latency: list[Any] = [None] * size
        attempts: list[Any] = [None] * size
        error: list[Any] = [None] * size
        status: list[str] = ["pending"] * size
        model_col: list[str | None] = (
            [models[i % width] for i in range(size)] if models else [None] * size
        )
        keys: list[Any] = [None] * self.rows
        for key, idx, model, row_status, result_json, error_class, error_message, tries, \
                row_cost, row_in, row_out in stored:
            if idx is None or idx >= self.rows or model not in slot:
                continue
            keys[idx] = key
            pos = idx * width + slot[model]
            status[pos] = row_status
            attempts[pos] = tries
            if row_status == "done":
                result = json.loads(result_json or "{}")
                output[pos] = result.get("text")
                parsed[pos] = result.get("parsed")
                latency[pos] = result.get("latency_s")
                tokens_in[pos] = row_in
                tokens_out[pos] = row_out
                cost[pos] = row_cost
            elif row_status == "failed":
                error[pos] = f"{error_class}: {error_message}" if error_class else error_message
        if self._index is not None:
            index = self._index if width == 1 else self._index.repeat(width)
        else:
            labels = [key if key is not None else str(i) for i, key in enumerate(keys)]
            if all(label.isdigit() for label in labels) and labels == [
                str(i) for i in range(len(labels))
            ]:
                base: Any = pd.RangeIndex(len(labels))
            else:
                base = pd.Index(labels)
            index = base if width == 1 else base.repeat(width)
        frame = pd.DataFrame(
            {
                "text": output,
                "input_tokens": pd.array(tokens_in, dtype="Int64"),
                "output_tokens": pd.array(tokens_out, dtype="Int64"),
                "cost_usd": pd.array(cost, dtype="Float64"),
                "latency_s": pd.array(latency, dtype="Float64"),
                "attempts": pd.array(attempts, dtype="Int64"),
                "error": error,
                "model": model_col,
                "status": status,
            },
            index=index,
        )
        fields = self._parsed_fields(parsed)
        for position, name in enumerate(fields):
            column = name if name not in frame.columns else f"parsed_{name}"
            frame.insert(
                1 + position,
                column,
                [value.get(name) if isinstance(value, dict) else None for value in parsed],
            )
        if not fields and any(value is not None for value in parsed):
            frame.insert(1, "parsed", parsed)
        return self._with_inputs(frame, width)

    def _with_inputs(self, frame: Any, width: int) -> Any:
        """``frame`` with the input DataFrame's columns in front (repeated per model)."""
        inputs = self._frame
        if inputs is None or len(inputs) != self.rows or not len(inputs.columns):
            return frame
        inputs = inputs.loc[inputs.index.repeat(width)] if width > 1 else inputs
        taken = {str(column) for column in frame.columns}
        inputs = inputs.rename(
            columns={c: f"input_{c}" for c in inputs.columns if str(c) in taken}
        )
        if inputs.columns.has_duplicates:
            return frame
        import pandas as pd

        # Side by side by position: the index may repeat (several models).
        joined = pd.concat(
            [inputs.reset_index(drop=True), frame.reset_index(drop=True)], axis=1
        )
        return joined.set_axis(frame.index, axis=0)

    def _parsed_fields(self, parsed: list[Any]) -> list[str]:
        model = self._format_model
        if model is not None and hasattr(model, "model_fields"):
            return list(model.model_fields)
        names: dict[str, None] = {}
        for value in parsed:
            if isinstance(value, dict):
                names.update(dict.fromkeys(value))
            elif value is not None:
                return []
        return list(names)

    @property
    def df(self) -> Any:
        """Alias of :meth:`to_pandas`."""
        return self.to_pandas()

    @property
    def errors(self) -> Any:
        """The failed rows (a DataFrame with the ``error`` column)."""
        frame = self.to_pandas()
        return frame[frame["status"] == "failed"]

    # -- follow-ups --------------------------------------------------------------

    async def aretry_failed(self) -> BatchResult:
        """Send the failed rows again (only those); returns the job's new result."""
        if self._rerun is None:
            raise RuntimeError(
                "This result was loaded without its inputs: call batch(...) again with the "
                "same arguments to retry failed rows"
            )
        jobs = JobStore(self._db)
        try:
            jobs.delete_rows(self.job_id, "failed")
        finally:
            jobs.close()
        return await self._rerun()

    def retry_failed(self) -> BatchResult:
        """Sync version of :meth:`aretry_failed` (runs on the library's loop)."""
        return _loop.run(self.aretry_failed())

    # -- display -------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The figures shown in reprs, as a dict."""
        return {
            "job_id": self.job_id,
            "name": self.name,
            "state": self.state,
            "mode": self.mode,
            "models": list(self.models),
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "pending": self.pending,
            "cached": self.cached,
            "cost_usd": self.cost_usd,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def __repr__(self) -> str:
        if self.state == "dry_run":
            return f"BatchResult(job_id={self.job_id!r}, dry_run, {self.estimate!r})"
        return (
            f"BatchResult(job_id={self.job_id!r}, state={self.state!r}, done={self.done}/"
            f"{self.total}, failed={self.failed}, pending={self.pending}, "
            f"cost={format_usd(self.cost_usd)})"
        )

    def _repr_html_(self) -> str:
        if self.state == "dry_run" and self.estimate is not None:
            return (
                f"<div><b>Batch {html.escape(self.job_id)}</b>: dry run, nothing sent."
                f"{self.estimate._repr_html_()}</div>"
            )
        models = ", ".join(html.escape(model) for model in self.models)
        stop = f" ({html.escape(self.stop_reason)})" if self.stop_reason else ""
        hint = (
            "<br><small>Run the same call again to resume; <code>.retry_failed()</code> "
            "re-sends failed rows.</small>"
            if self.pending or self.failed
            else ""
        )
        return (
            f"<div><b>Batch {html.escape(self.job_id)}</b> · {html.escape(self.state)}{stop}"
            f" · {models}<br>done <b>{self.done:,}</b>/{self.total:,} · failed "
            f"<b>{self.failed:,}</b> · pending {self.pending:,} · cached {self.cached:,} · "
            f"cost {format_usd(self.cost_usd)} · {self.elapsed_s:.1f}s{hint}</div>"
        )
