"""``mode="provider"``: the OpenAI Batch API and Anthropic Message Batches.

Rows go to the provider in one batch per model, through the official SDKs
(``openai.AsyncOpenAI().files`` / ``.batches``, ``anthropic.AsyncAnthropic()
.messages.batches``), at the providers' batch prices (``pricing.price(...,
batch=True)``). Each request's ``custom_id`` is ``row-<position>``.

When the provider batch is created, every row it carries is written to
``batch_rows`` as ``submitted`` and the provider's batch id is stored in the
job record, so a restarted kernel can pick the job up again by name or id
(``batch(..., job="name", mode="provider")`` or :func:`resume_provider_batch`)
and poll instead of submitting twice.

The request and result formats follow the providers' public API references;
they were verified only against ``tests/support/provider_batch_server.py``
(a loopback server written from the same references), not against the live
services. The key comes from ``api_key=`` or the provider's usual variables
(:func:`notebook_llm.core.keys.find_key`); the base URL from ``api_base=``,
the client's ``api_bases`` or the provider's ``*_BASE_URL`` variable.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from notebook_llm._api import default_client
from notebook_llm.batches._jobs import JobRecord, JobStore, RowRecord, db_path_of, now_iso
from notebook_llm.batches._plan import (
    BatchModel,
    Plan,
    done_record,
    failed_record,
    resolve_models,
    row_cost,
)
from notebook_llm.batches._result import BatchResult
from notebook_llm.core import inflight, loop as _loop
from notebook_llm.core.capture_hooks import mark_own
from notebook_llm.core.errors import InvalidRequestError, LLMError, UnsupportedError
from notebook_llm.core.registry import get_spec
from notebook_llm.core.types import Request

if TYPE_CHECKING:
    from notebook_llm.core.client import CoreClient
    from notebook_llm.progress import Progress

__all__ = ["resume_provider_batch", "run_provider"]

DEFAULT_POLL_INTERVAL = 30.0
_OPENAI_DONE = {"completed", "failed", "expired", "cancelled"}
_SDK_ARGS = ("api_key", "api_base")


def _connection(
    client: CoreClient, provider: str, params: dict[str, Any]
) -> tuple[str, str | None]:
    """The key and base URL for the provider's batch API, found through the client
    (its ``api_keys`` and ``api_bases`` first, as for every other call)."""
    info = get_spec(provider).info
    if info.protocol not in ("openai", "anthropic") or provider not in ("openai", "anthropic"):
        raise UnsupportedError(
            f"mode='provider' supports OpenAI and Anthropic models, not {provider!r}; "
            "use mode='direct'",
            provider=provider,
        )
    key, base = client.credentials(
        provider, api_key=params.get("api_key"), api_base=params.get("api_base")
    )
    assert key is not None  # both providers need one: credentials() raised otherwise
    return key, base


def _sdk(provider: str, key: str, base: str | None) -> Any:
    if provider == "openai":
        import openai

        return mark_own(openai.AsyncOpenAI(api_key=key, base_url=base, max_retries=3))
    import anthropic

    return mark_own(anthropic.AsyncAnthropic(api_key=key, base_url=base, max_retries=3))


def _request(plan: Plan, m: BatchModel, payload: Any) -> Request:
    messages = [{"role": "user", "content": payload}] if isinstance(payload, str) else payload
    params = {k: v for k, v in plan.params.items() if k not in _SDK_ARGS}
    return Request(
        model=m.model,
        messages=messages,
        system=plan.system,
        temperature=params.pop("temperature", None),
        max_tokens=params.pop("max_tokens", None),
        response_format=plan.format_dict,
        reasoning_effort=params.pop("reasoning_effort", None),
        extra=params,
    )


def _line(plan: Plan, m: BatchModel, custom_id: str, payload: Any) -> dict[str, Any]:
    request = _request(plan, m, payload)
    if m.provider == "openai":
        from notebook_llm.providers.openai import PRESET_QUIRKS, chat_body

        body = chat_body(request, False, PRESET_QUIRKS.get("openai", {}))
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                "body": body}
    from notebook_llm.providers.anthropic import anthropic_params

    return {"custom_id": custom_id, "params": anthropic_params(request)}


async def _submit(sdk: Any, m: BatchModel, lines: list[dict[str, Any]], job_id: str) -> str:
    if m.provider == "openai":
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        file = await sdk.files.create(file=(f"{job_id}.jsonl", data), purpose="batch")
        created = await sdk.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h",
            metadata={"notebook_llm_job": job_id[:512]},
        )
        return str(created.id)
    created = await sdk.messages.batches.create(requests=lines)
    return str(created.id)


async def _status(sdk: Any, m: BatchModel, batch_id: str) -> tuple[bool, str, Any]:
    """``(finished, status, batch object)``."""
    if m.provider == "openai":
        found = await sdk.batches.retrieve(batch_id)
        return found.status in _OPENAI_DONE, str(found.status), found
    found = await sdk.messages.batches.retrieve(batch_id)
    return found.processing_status == "ended", str(found.processing_status), found


_Answer = tuple[str, "dict[str, Any] | None", "str | None", "str | None"]


async def _results(sdk: Any, m: BatchModel, found: Any) -> list[_Answer]:
    """``(custom_id, completion_json_or_None, error_class, error_message)`` per answered row."""
    out: list[_Answer] = []
    if m.provider == "openai":
        for file_id in (found.output_file_id, found.error_file_id):
            if not file_id:
                continue
            content = await sdk.files.content(file_id)
            for raw in content.text.splitlines():
                if not raw.strip():
                    continue
                item = json.loads(raw)
                response = item.get("response") or {}
                status = int(response.get("status_code") or 0)
                if status == 200 and not item.get("error"):
                    out.append((item["custom_id"], response.get("body"), None, None))
                else:
                    body = response.get("body") or item.get("error") or {}
                    error = body.get("error", body) if isinstance(body, dict) else {}
                    message = error.get("message") if isinstance(error, dict) else str(body)
                    out.append((item["custom_id"], None, f"HTTP {status or 'error'}",
                                str(message or body)))
        return out
    decoder = await sdk.messages.batches.results(found.id)
    async for item in decoder:
        result = item.result
        if result.type == "succeeded":
            out.append((item.custom_id, result.message.model_dump(mode="json"), None, None))
        elif result.type == "errored":
            error = result.error.model_dump(mode="json") if result.error is not None else {}
            inner = error.get("error") or {}
            out.append((item.custom_id, None, str(inner.get("type") or "errored"),
                        str(inner.get("message") or error)))
        else:  # canceled, expired: the row was not run
            out.append((item.custom_id, None, result.type, f"request {result.type}"))
    return out


def _completion_record(
    job: JobRecord, m: BatchModel, key: str, idx: int, body: dict[str, Any], format_model: Any
) -> RowRecord:
    from notebook_llm.core.tools import parse_structured

    if m.provider == "openai":
        from notebook_llm.providers.openai import parse_chat_completion

        completion = parse_chat_completion(body, m.provider)
    else:
        from notebook_llm.providers.anthropic import parse_message

        completion = parse_message(body)
    if job.params.get("response_format") and completion.text:
        try:
            completion.parsed = parse_structured(completion.text, format_model)
        except (ValueError, TypeError):
            pass
    cost = row_cost(m, completion.usage, batch=True)
    return done_record(key, idx, m, completion, 1, None, cost, now_iso())


async def _collect(
    sdk: Any, m: BatchModel, found: Any, job: JobRecord, jobs: JobStore, format_model: Any
) -> None:
    submitted = {
        idx: key for key, idx, model, status, *_ in jobs.rows(job.id)
        if model == m.name and status == "submitted"
    }
    records: list[RowRecord] = []
    for custom_id, body, error_class, error_message in await _results(sdk, m, found):
        try:
            idx = int(custom_id.removeprefix("row-"))
        except ValueError:
            continue
        key = submitted.pop(idx, None)
        if key is None:
            continue
        if body is not None:
            try:
                records.append(_completion_record(job, m, key, idx, body, format_model))
                continue
            except LLMError as exc:
                error_class, error_message = type(exc).__name__, str(exc)
        records.append(failed_record(key, idx, m, error_message or "failed", 1,
                                     error_class=error_class, finished_at=now_iso()))
    status = getattr(found, "status", None) or getattr(found, "processing_status", "")
    # No line came back for these: the batch failed, expired or was cancelled.
    for idx, key in submitted.items():
        records.append(failed_record(
            key, idx, m, f"the provider batch ended as {status!r} without this row", 1,
            error_class="BatchNotRun", finished_at=now_iso(),
        ))  # fmt: skip
    jobs.insert_rows(job.id, [record.encode() for record in records])


async def run_provider(
    plan: Plan,
    client: CoreClient,
    jobs: JobStore,
    *,
    db: Any,
    poll_interval: float | None,
    progress: Progress | None,
    timeout: float | None,
) -> BatchResult:
    """Submit (or find) one provider batch per model, poll them, store the results."""
    job = jobs.get(plan.job_id)
    assert job is not None
    finished = jobs.finished(plan.job_id)
    batches: dict[str, str] = dict(job.meta.get("provider_batches") or {})
    sdks: dict[str, Any] = {}
    for m in plan.models:
        key, base = _connection(client, m.provider, plan.params)
        sdks[m.name] = _sdk(m.provider, key, base)
    for m in plan.models:
        if m.name in batches:
            continue
        lines: list[dict[str, Any]] = []
        rows: list[RowRecord] = []
        for key, idx, payload in plan.inputs.rows():
            if (key, m.name) in finished:
                continue
            lines.append(_line(plan, m, f"row-{idx}", payload))
            rows.append(RowRecord(key, idx, m.name, "submitted"))
        if not lines:
            continue
        batch_id = await _submit(sdks[m.name], m, lines, job.id)
        batches[m.name] = batch_id
        job.meta["provider_batches"] = batches
        job.provider_batch_id = ",".join(batches.values())
        job.state = "submitted"
        jobs.save(job)
        jobs.insert_rows(job.id, [row.encode() for row in rows])
    return await _poll(job, plan.models, sdks, jobs, db=db, poll_interval=poll_interval,
                       progress=progress, format_model=plan.format_model, index=plan.inputs.index,
                       frame=plan.inputs.frame, rows=plan.rows)


async def _poll(
    job: JobRecord,
    models: list[BatchModel],
    sdks: dict[str, Any],
    jobs: JobStore,
    *,
    db: Any,
    poll_interval: float | None,
    progress: Progress | None,
    format_model: Any,
    index: Any,
    rows: int,
    frame: Any = None,
) -> BatchResult:
    started = time.perf_counter()
    interval = DEFAULT_POLL_INTERVAL if poll_interval is None else poll_interval
    batches: dict[str, str] = dict(job.meta.get("provider_batches") or {})
    waiting = {row[2] for row in jobs.rows(job.id) if row[3] == "submitted"}
    pending = {m.name: m for m in models if m.name in batches and m.name in waiting}
    statuses: dict[str, str] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    detached = False

    def detach() -> None:
        # nl.stop_all(): stop waiting here, leave the batch running at the provider.
        nonlocal detached
        detached = True
        stop.set()

    if progress is not None:
        progress.on_stop = lambda: loop.call_soon_threadsafe(stop.set)
        progress.update(total=job.total, force=True)
    entry = inflight.register(
        "batch", ", ".join(m.name for m in models),
        lambda: loop.call_soon_threadsafe(detach), label=job.name or job.id,
        note=_left_running(job, models, batches),
    )
    try:
        while pending:
            for name, m in list(pending.items()):
                ended, status, found = await _status(sdks[name], m, batches[name])
                statuses[name] = status
                if ended:
                    await _collect(sdks[name], m, found, job, jobs, format_model)
                    del pending[name]
            if progress is not None:
                counts = jobs.counts(job.id)
                progress.update(done=counts.get("done", 0) + counts.get("failed", 0),
                                failed=counts.get("failed", 0), cost_usd=jobs.cost(job.id))
            if not pending:
                break
            if stop.is_set() and detached:
                break
            if stop.is_set():
                for name, m in pending.items():
                    await _cancel(sdks[name], m, batches[name])
                jobs.set_state(job.id, "cancelled")
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass
    except asyncio.CancelledError:
        # Interrupted while waiting: the provider batch keeps running; poll again later.
        jobs.set_state(job.id, "submitted")
        if progress is not None:
            progress.close("submitted")
        raise
    finally:
        inflight.unregister(entry)
        for sdk in sdks.values():
            try:
                await sdk.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
    counts = jobs.counts(job.id)
    done = counts.get("done", 0) + counts.get("failed", 0)
    cancelled = stop.is_set() and not detached
    state = "done" if done >= job.total else ("cancelled" if cancelled else "submitted")
    if any(s in ("failed", "expired") for s in statuses.values()):
        state = "failed" if done < job.total else state
    jobs.set_state(job.id, state)
    if progress is not None:
        progress.close(state)
    return BatchResult(
        job.id, name=job.name, state=state, mode="provider", models=[m.name for m in models],
        rows=rows, db=db, index=index, frame=frame, format_model=format_model,
        elapsed_s=time.perf_counter() - started, provider_batches=batches,
    )


def _left_running(job: JobRecord, models: list[BatchModel], batches: dict[str, str]) -> str:
    """What nl.stop_all() says about a provider batch it leaves running."""
    ids = ", ".join(f"{batches[m.name]} ({m.provider})" for m in models if m.name in batches)
    return (
        f"Batch job {job.name or job.id!r} is still running at the provider ({ids}): "
        f"resume waiting with nl.resume_provider_batch({job.id!r}); to cancel it at the "
        "provider, resume it and press its Stop button, or cancel the batch id in the "
        "provider's dashboard."
    )


async def _cancel(sdk: Any, m: BatchModel, batch_id: str) -> None:
    try:
        if m.provider == "openai":
            await sdk.batches.cancel(batch_id)
        else:
            await sdk.messages.batches.cancel(batch_id)
    except Exception:  # noqa: BLE001 - the batch may already have ended
        pass


async def aresume_provider_batch(
    job_id: str,
    *,
    db_path: Any = None,
    client: CoreClient | None = None,
    poll_interval: float | None = None,
    api_key: str | None = None,
    progress: Progress | None = None,
    db: Any = None,
) -> BatchResult:
    """Async version of :func:`resume_provider_batch`."""
    db = db_path_of(db_path, db, "aresume_provider_batch")
    jobs = JobStore(db)
    try:
        job = jobs.find(job_id)
        if job is None:
            raise KeyError(f"No batch job {job_id!r}; batch_jobs() lists them")
        if job.mode != "provider" or not job.meta.get("provider_batches"):
            raise InvalidRequestError(
                f"Job {job_id!r} has no provider batch to resume (mode={job.mode!r}); rerun "
                "the batch(...) call to resume a direct job"
            )
        if client is None:
            client = default_client()
        models = resolve_models(client, job.models)
        params = {"api_key": api_key} if api_key else {}
        sdks = {}
        for m in models:
            key, base = _connection(client, m.provider, params)
            sdks[m.name] = _sdk(m.provider, key, base)
        return await _poll(
            job, models, sdks, jobs, db=db, poll_interval=poll_interval, progress=progress,
            format_model=None, index=None, rows=int(job.meta.get("rows") or 0),
        )
    finally:
        jobs.close()


def resume_provider_batch(
    job_id: str,
    *,
    db_path: Any = None,
    client: CoreClient | None = None,
    poll_interval: float | None = None,
    api_key: str | None = None,
    db: Any = None,
) -> BatchResult:
    """Pick up a ``mode="provider"`` job by id or name (e.g. after a kernel restart):
    poll its provider batches until they end, store the results, return the result.

    Interrupting it leaves the provider batch running; call it again later.
    """
    return _loop.run(
        aresume_provider_batch(
            job_id, db_path=db_path_of(db_path, db, "resume_provider_batch"), client=client,
            poll_interval=poll_interval, api_key=api_key,
        )
    )

