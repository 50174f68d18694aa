"""What a batch job is, worked out before anything is sent: its options, models and
plan, the cost estimate, and the records its finished rows become.

Both ways of running a job use this module: direct mode (``_run``) and the
providers' batch APIs (``_provider``); neither imports the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from notebook_llm.batches._inputs import Inputs
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
    "DEFAULT_OUTPUT_TOKENS",
    "BatchModel",
    "BatchOptions",
    "Plan",
    "done_record",
    "dump_parsed",
    "estimate_plan",
    "failed_record",
    "make_plan",
    "resolve_models",
    "row_cost",
]

DEFAULT_OUTPUT_TOKENS = 256
"""Output tokens assumed per request by estimates when ``max_tokens`` is not set."""

# Keys never stored in the job record (a key must not reach the SQLite file).
_SECRET_PARAMS = frozenset({"api_key"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """The options of one batch job, shared by :func:`~notebook_llm.batch`,
    :func:`~notebook_llm.abatch` and :func:`~notebook_llm.estimate` (see
    :func:`~notebook_llm.batch` for what each one means)."""

    template: str | None = None
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
    mode: str = "direct"
    client: CoreClient | None = None
    progress: bool | Progress = True
    db_path: Any = None
    poll_interval: float | None = None
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


def make_plan(
    client: CoreClient, inputs: Any, model: str | Sequence[str] | None, options: BatchOptions
) -> Plan:
    """The job's plan: its rows, models, format and identity (a hash of all of them)."""
    if options.mode not in ("direct", "provider"):
        raise InvalidRequestError(f"mode must be 'direct' or 'provider', not {options.mode!r}")
    rows = Inputs(inputs, options.template)
    models = resolve_models(client, model)
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
            "mode": options.mode,
        },
        sort_keys=True,
        default=repr,
    )
    job_hash = hashlib.sha256(identity.encode()).hexdigest()
    job_id = options.job if options.job else f"batch-{job_hash[:16]}"
    return Plan(
        inputs=rows, models=models, template=options.template, system=options.system,
        response_format=options.response_format, format_dict=format_dict,
        format_model=format_model, params=params, mode=options.mode, job_id=job_id,
        name=options.job, digest=job_hash, prompt_chars=chars,
    )


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
