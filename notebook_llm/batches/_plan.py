"""What a batch job is, worked out before anything is sent: its options, models and
plan, the cost estimate, and the records its finished rows become.

Both ways of running a job use this module: direct mode (``_run``) and the
providers' batch APIs (``_provider``); neither imports the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from notebook_llm._fragments import resolve
from notebook_llm._options import split_options
from notebook_llm._schemas import response_format
from notebook_llm._templates import Template, TemplateError
from notebook_llm.batches._inputs import Inputs, Payload
from notebook_llm.batches._jobs import RowRecord, db_path_of
from notebook_llm.batches._result import BatchEstimate
from notebook_llm.core.errors import InvalidRequestError, redact
from notebook_llm.core.registry import get_spec
from notebook_llm.core.tokens import CHARS_PER_TOKEN
from notebook_llm.core.tools import as_tools, normalise_response_format
from notebook_llm.core.types import Completion, Usage
from notebook_llm.pricing import price

if TYPE_CHECKING:
    from notebook_llm.core.client import CoreClient
    from notebook_llm.progress import Progress

__all__ = [
    "BATCH_PROVIDERS",
    "DEFAULT_OUTPUT_TOKENS",
    "PROVIDER_BATCH_WINDOW_S",
    "BatchModel",
    "BatchOptions",
    "Plan",
    "done_record",
    "dump_parsed",
    "estimate_plan",
    "failed_record",
    "make_plan",
    "parse_deadline",
    "provider_batch_capable",
    "resolve_models",
    "row_cost",
]

DEFAULT_OUTPUT_TOKENS = 256
"""Output tokens assumed per request by estimates when ``max_tokens`` is not set."""

PROVIDER_BATCH_WINDOW_S = 24 * 3600.0
"""How long the providers' batch APIs may take: both promise results within 24 hours."""

BATCH_PROVIDERS = ("openai", "anthropic")
"""Providers whose batch API ``mode="provider"`` uses (about half price)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|hours?|d|days?)\s*$", re.I)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# Keys never stored in the job record (a key must not reach the SQLite file).
_SECRET_PARAMS = frozenset({"api_key"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """The options of one batch job, shared by :func:`~notebook_llm.batch`,
    :func:`~notebook_llm.abatch` and :func:`~notebook_llm.estimate` (see
    :func:`~notebook_llm.batch` for what each one means)."""

    template: str | Template | None = None
    system: str | None = None
    response_format: Any = None
    concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int | None = None
    timeout: float | None = None
    job: str | None = None
    resume: bool = True
    dry_run: bool = False
    mode: str | None = None
    """``"direct"``, ``"provider"``, or ``None``: chosen from ``deadline`` (:func:`make_plan`)."""
    client: CoreClient | None = None
    progress: bool | Progress = True
    db_path: Any = None
    poll_interval: float | None = None
    budget_usd: float | None = None
    """Refuse the job, before sending, when its projected cost is over this."""
    deadline: str | float | timedelta | None = None
    """When the results are needed (``"6h"``, seconds, a timedelta): picks the mode."""
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Passed to each call: ``temperature``, ``max_tokens``, provider options."""

    @classmethod
    def build(cls, *, db: Any = None, params: dict[str, Any], **options: Any) -> BatchOptions:
        """The record from a public function's arguments; ``db=`` is the old name
        of ``db_path=`` (it still works, with a DeprecationWarning)."""
        options["db_path"] = db_path_of(options.get("db_path"), db, "batch", stacklevel=4)
        return cls(params=dict(params), **options)


@dataclasses.dataclass(frozen=True)
class BatchModel:
    """One of the job's models, resolved once."""

    name: str
    """``provider:model``."""
    provider: str
    model: str
    free: bool
    local: bool
    pricing_id: str | None = None
    """The provider name the price data knows this provider by, when it differs."""


@dataclasses.dataclass
class Plan:
    """Everything that identifies a job, worked out before anything is sent."""

    inputs: Inputs
    models: list[BatchModel]
    template: str | None
    system: str | None
    response_format: Any
    format_dict: dict[str, Any] | None
    format_model: Any
    params: dict[str, Any]
    mode: str
    job_id: str
    name: str | None
    digest: str
    prompt_chars: int
    mode_reason: str = ""
    """Why the job runs in :attr:`mode`: one sentence, shown when the mode was chosen."""

    @property
    def rows(self) -> int:
        """Input rows."""
        return len(self.inputs)

    @property
    def total(self) -> int:
        """Requests: rows times models."""
        return len(self.inputs) * len(self.models)

    def stored_params(self) -> dict[str, Any]:
        """What the job record keeps of the options (never a key or a header value)."""
        return {
            "template": self.template,
            "system": self.system,
            "response_format": self.format_dict,
            "params": {
                key: _stored_value(key, value)
                for key, value in self.params.items()
                if key not in _SECRET_PARAMS
            },
        }


def _stored_value(key: str, value: Any) -> Any:
    """A parameter as the job's row keeps it: header values never (they may be keys)."""
    if key == "extra_headers" and isinstance(value, dict):
        return sorted(value)
    return value


def resolve_models(client: CoreClient, model: str | Sequence[str] | None) -> list[BatchModel]:
    """The job's models, aliases and the default resolved; one model twice is an error."""
    names: list[str]
    if model is None:
        names = [client.default_model().model]
    elif isinstance(model, str):
        names = [model]
    else:
        names = list(model)
    if not names:
        raise InvalidRequestError("model=[] names no model")
    resolved: list[BatchModel] = []
    for name in names:
        ref = client.resolve(name)
        info = get_spec(ref.provider).info
        local = info.free or info.protocol in ("offline", "local")
        resolved.append(
            BatchModel(str(ref), ref.provider, ref.name, info.free, local, info.pricing_id)
        )
    if len({m.name for m in resolved}) != len(resolved):
        raise InvalidRequestError("model=[...] lists the same model twice")
    return resolved


def parse_deadline(deadline: str | float | timedelta | None) -> float | None:
    """``deadline=`` in seconds: ``"6h"``, ``"30m"``, ``"2d"``, ``"90s"``, a number, a timedelta."""
    if deadline is None:
        return None
    if isinstance(deadline, timedelta):
        seconds = deadline.total_seconds()
    elif isinstance(deadline, (int, float)) and not isinstance(deadline, bool):
        seconds = float(deadline)
    elif isinstance(deadline, str) and (match := _DURATION.match(deadline)):
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)[0].lower()]
    else:
        raise InvalidRequestError(
            f"deadline={deadline!r} is not a duration: pass e.g. '6h', '30m', '2d', "
            "a number of seconds or a timedelta"
        )
    if seconds <= 0:
        raise InvalidRequestError("deadline= must be a positive duration")
    return seconds


def provider_batch_capable(model: BatchModel) -> bool:
    """Whether ``model``'s provider has a batch API that ``mode="provider"`` can use."""
    return model.provider in BATCH_PROVIDERS and get_spec(model.provider).info.protocol in (
        "openai", "anthropic"
    )


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds / 60:g}min"


def _choose_mode(models: list[BatchModel], deadline_s: float | None) -> tuple[str, str]:
    """The mode for ``mode=None`` and why, from the deadline and the providers."""
    if deadline_s is None:
        return "direct", "Direct mode: no deadline= was given, so the rows are sent now."
    incapable = [m.name for m in models if not provider_batch_capable(m)]
    if incapable:
        return "direct", (
            f"Direct mode: {', '.join(incapable)} has no batch API "
            f"(only {' and '.join(BATCH_PROVIDERS)} do)."
        )
    if deadline_s < PROVIDER_BATCH_WINDOW_S:
        return "direct", (
            f"Direct mode: the deadline ({_hours(deadline_s)}) is shorter than the batch "
            "API's 24-hour window, so the rows are sent now at full price."
        )
    return "provider", (
        f"Provider batch mode: the deadline ({_hours(deadline_s)}) allows the batch API's "
        "24-hour window, at about half the direct price."
    )


def make_plan(
    client: CoreClient, inputs: Any, model: str | Sequence[str] | None, options: BatchOptions
) -> Plan:
    """The job's plan: its rows, models, format and identity (a hash of all of them).

    ``options.mode=None`` chooses: the providers' batch API (about half price,
    results within 24 hours) when ``deadline=`` is at least 24 hours and every
    model's provider has one; direct mode otherwise. ``plan.mode_reason`` says why.
    """
    if options.mode not in (None, "direct", "provider"):
        raise InvalidRequestError(f"mode must be 'direct' or 'provider', not {options.mode!r}")
    if options.budget_usd is not None and options.budget_usd < 0:
        raise InvalidRequestError("budget_usd= must be 0 or more dollars")
    deadline_s = parse_deadline(options.deadline)
    row_template: Any = options.template
    if isinstance(options.template, Template):
        model = model or options.template.model
        row_template, options = _saved_template(options.template, inputs, model, client, options)
    rows = Inputs(inputs, row_template)
    models = resolve_models(client, model)
    # DSL text and bare JSON schemas too, as everywhere.
    options = dataclasses.replace(options,
                                  response_format=response_format(options.response_format))
    if options.mode is None:
        mode, reason = _choose_mode(models, deadline_s)
    else:
        mode, reason = options.mode, f"{options.mode.capitalize()} mode: as mode= asked."
    format_dict, format_model = normalise_response_format(options.response_format)
    digest, chars = rows.digest()
    params = options.params
    hashed_params = {
        key: (hashlib.sha256(str(value).encode()).hexdigest() if key in _SECRET_PARAMS else value)
        for key, value in params.items()
    }
    if params.get("tools"):
        # Functions by what the model sees, not by their address: the same job
        # resumes in a new kernel.
        hashed_params["tools"] = [[t.name, t.description, t.parameters]
                                  for t in as_tools(params["tools"]) or []]
    identity = json.dumps(
        {
            "inputs": digest,
            "models": [m.name for m in models],
            "template": options.template,
            "system": options.system,
            "format": format_dict,
            "params": hashed_params,
            "mode": mode,
        },
        sort_keys=True,
        default=repr,
    )
    job_hash = hashlib.sha256(identity.encode()).hexdigest()
    job_id = options.job if options.job else f"batch-{job_hash[:16]}"
    stored = options.template if isinstance(options.template, str) else None
    return Plan(
        inputs=rows, models=models, template=stored, system=options.system,
        response_format=options.response_format, format_dict=format_dict,
        format_model=format_model, params=params, mode=mode, job_id=job_id,
        name=options.job, digest=job_hash, prompt_chars=chars, mode_reason=reason,
    )


class _TemplateRows:
    """A saved template as a batch's row template: the columns fill its ``$names``;
    each row is its prompt (the fragments' text first), or a system and a user
    message when the template has a system prompt."""

    def __init__(self, template: Template, fields: list[str], prefix: list[str],
                 system_prefix: list[str], system: str | None) -> None:
        self.template = template
        self._fields = fields
        self.prefix = prefix
        self.system_prefix = system_prefix
        self.system = system

    @property
    def fields(self) -> list[str]:
        return self._fields

    def render(self, values: Any) -> Payload:
        filled = self.template.fill(dict(values))
        prompt = "\n".join([*self.prefix, filled.prompt])
        system = self.system if self.system is not None else filled.system
        if self.system_prefix:
            system = "\n".join([*self.system_prefix, *([system] if system else [])])
        if not system:
            return prompt
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


def _saved_template(
    template: Template, inputs: Any, model: str | Sequence[str] | None, client: CoreClient,
    options: BatchOptions,
) -> tuple[_TemplateRows, BatchOptions]:
    """The row template and the job's options with the template's model options and
    schema (the call's own arguments win); its fragments are read once, here."""
    columns = [str(c) for c in inputs.columns] if hasattr(inputs, "columns") else []
    names = template.params()
    defaults = template.defaults or {}
    fields = [n for n in names if n not in defaults or n in columns]
    if hasattr(inputs, "columns"):
        missing = [n for n in fields if n not in columns]
        if missing:
            raise TemplateError(
                f"template {template.name!r} needs ${missing[0]}: the DataFrame has no column "
                f"{missing[0]!r} (columns: {', '.join(columns) or 'none'})")
    db_path = options.db_path
    prefix = [resolve(ref, db_path=db_path).content for ref in template.fragments or ()]
    system_prefix = [resolve(ref, db_path=db_path).content
                     for ref in template.system_fragments or ()]
    params = dict(options.params)
    names_of = [model] if isinstance(model, str) or model is None else list(model)
    for name in names_of:
        call, extra = split_options(str(client.resolve(name)), template.options or {})
        for key, value in {**call, **extra}.items():
            params.setdefault(key, value)
    changes: dict[str, Any] = {"params": params, "template": template.to_yaml()}
    if options.response_format is None and template.schema_object:
        changes["response_format"] = response_format(template.schema_object)
    rows = _TemplateRows(template, fields, prefix, system_prefix, options.system)
    return rows, dataclasses.replace(options, **changes)


def estimate_plan(plan: Plan, skip: int = 0) -> BatchEstimate:
    """Tokens and dollars for the plan's requests, less ``skip`` already finished."""
    max_tokens = plan.params.get("max_tokens") or plan.params.get("max_completion_tokens")
    per_request_out = int(max_tokens) if max_tokens else DEFAULT_OUTPUT_TOKENS
    system_chars = len(plan.system or "") * plan.rows
    input_tokens = (plan.prompt_chars + system_chars) // CHARS_PER_TOKEN
    batch = plan.mode == "provider"
    by_model: list[dict[str, Any]] = []
    total_cost: float | None = 0.0
    remaining = max(plan.total - skip, 0)
    for m in plan.models:
        share = remaining / plan.total if plan.total else 0.0
        model_in = int(input_tokens * share)
        requests = round(plan.rows * share)
        model_out = per_request_out * requests
        cost = row_cost(m, Usage(input_tokens=model_in, output_tokens=model_out), batch=batch)
        by_model.append(
            {"model": m.name, "requests": requests, "input_tokens": model_in,
             "output_tokens": model_out, "cost_usd": cost, "priced": cost is not None}
        )  # fmt: skip
        total_cost = None if cost is None or total_cost is None else total_cost + cost
    return BatchEstimate(
        rows=plan.rows,
        requests=sum(item["requests"] for item in by_model),
        input_tokens=sum(item["input_tokens"] for item in by_model),
        output_tokens=sum(item["output_tokens"] for item in by_model),
        cost_usd=total_cost,
        by_model=by_model,
        batch_discount=batch,
    )


def row_cost(model: BatchModel, usage: Usage, *, batch: bool = False) -> float | None:
    """Dollars for one row's usage (``None``: the model is not priced)."""
    cost, _status = price(
        model.pricing_id or model.provider, model.model, usage, free=model.free, batch=batch
    )
    return cost


def dump_parsed(parsed: Any) -> Any:
    """A parsed answer as JSON-ready data (Pydantic models dumped)."""
    if parsed is None:
        return None
    dump = getattr(parsed, "model_dump", None)
    return dump(mode="json") if dump is not None else parsed


def done_record(
    key: str, idx: int, model: BatchModel, completion: Completion, attempts: int,
    latency: float | None, cost: float | None, finished_at: str | None = None,
) -> RowRecord:  # fmt: skip
    """The record of a row that was answered."""
    result: dict[str, Any] = {
        "text": completion.text,
        "latency_s": None if latency is None else round(latency, 4),
        "finish_reason": completion.finish_reason,
    }
    if completion.parsed is not None:
        result["parsed"] = dump_parsed(completion.parsed)
    if completion.cached:
        result["cached"] = True
    usage = completion.usage
    return RowRecord(
        key, idx, model.name, "done", result=result, attempts=attempts, cost_usd=cost,
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        finished_at=finished_at,
    )


def failed_record(
    key: str, idx: int, model: BatchModel, error: BaseException | str, attempts: int,
    error_class: str | None = None, finished_at: str | None = None,
) -> RowRecord:  # fmt: skip
    """The record of a row that failed (its message redacted: it may quote a key)."""
    return RowRecord(
        key, idx, model.name, "failed",
        error_class=error_class or type(error).__name__,
        error_message=redact(str(error))[:2000], attempts=attempts, finished_at=finished_at,
    )  # fmt: skip
