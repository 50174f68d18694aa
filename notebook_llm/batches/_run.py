"""Running a batch job: planning, the worker pool, checkpoints, stop and resume."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sqlite3
import time
import warnings
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from notebook_llm._api import default_client
from notebook_llm._templates import Template
from notebook_llm._tracking import Tracker
from notebook_llm.batches._inputs import Payload
from notebook_llm.batches._jobs import (
    CheckpointWriter,
    JobRecord,
    JobStore,
    NullWriter,
    db_path_of,
)
from notebook_llm.batches._plan import (
    DEFAULT_OUTPUT_TOKENS,
    BatchModel,
    BatchOptions,
    Plan,
    done_record,
    estimate_plan,
    failed_record,
    make_plan,
    provider_batch_capable,
    row_cost,
)
from notebook_llm.batches._provider import run_provider
from notebook_llm.batches._result import BatchEstimate, BatchResult
from notebook_llm.core import inflight, loop as _loop
from notebook_llm.core.client import CoreClient
from notebook_llm.core.errors import (
    BudgetExceededError,
    InvalidRequestError,
    LLMError,
    StorageError,
)
from notebook_llm.core.money import format_usd
from notebook_llm.core.ratelimit import RateLimit, RateLimiter, RateLimitInfo
from notebook_llm.progress import Progress, run as _run_with_ui

__all__ = ["DEFAULT_OUTPUT_TOKENS", "abatch", "batch", "batch_jobs", "estimate"]

DEFAULT_CONCURRENCY = 16
LOCAL_CONCURRENCY = 64

# Off only in benchmarks, to measure what checkpointing costs.
_checkpoints_enabled = True

logger = logging.getLogger("notebook_llm.batches")


# -- the client for one job ------------------------------------------------------


class _JobLimiter(RateLimiter):
    """The job's own rpm/tpm buckets in front of the client's shared limiter.

    A pause (a 429 with Retry-After) goes to the shared limiter, so every
    request to the model waits, this job's and any other; so do the rate
    limits the answers announce (the core calls :meth:`adapt` with them).
    Every attempt, retries included, passes through :meth:`acquire`, which is
    also where the job counts the requests it sends.
    """

    def __init__(self, shared: RateLimiter, limit: RateLimit | None, stats: _Stats) -> None:
        super().__init__(limit)
        self.shared = shared
        self.stats = stats

    @property
    def active(self) -> bool:
        return True

    def pause(self, seconds: float) -> None:
        self.shared.pause(seconds)

    def adapt(self, info: RateLimitInfo) -> None:
        self.shared.adapt(info)
        if self.limit.rpm or self.limit.tpm:
            # Only then does acquire() consult this job's own buckets.
            super().adapt(info)

    async def acquire(self, tokens: int = 0) -> None:
        if self.shared.active:
            await self.shared.acquire(tokens)
        if self.limit.rpm or self.limit.tpm:
            await super().acquire(tokens)
        self.stats.requests += 1


def _job_client(
    client: CoreClient,
    plan: Plan,
    stats: _Stats,
    *,
    rpm: float | None,
    tpm: float | None,
    max_retries: int | None,
    watch: bool,
) -> tuple[CoreClient, bool]:
    """The client for this job (:meth:`CoreClient.with_options`): the same keys,
    connections and shared limiters, with the job's own retry policy and its
    rate limits in front of the shared limiters. Also says whether those
    limiters count the requests as they go.

    The job's limiters are installed only when there are limits or ``watch``
    (a progress display counting live requests and retries): without them
    the core skips limiter calls entirely on its hot path.
    """
    limit = RateLimit(rpm, tpm) if rpm or tpm else None
    limiters = {
        m.name: _JobLimiter(client.limiter(client.resolve(m.name)), limit, stats)
        for m in plan.models
    } if (limit is not None or watch) else {}  # fmt: skip
    retry = (
        None if max_retries is None
        else dataclasses.replace(client.retry, max_attempts=max(0, max_retries) + 1)
    )  # fmt: skip

    def limiter(ref: Any) -> RateLimiter:
        return limiters.get(str(ref)) or client.limiter(ref)

    job_client = client.with_options(retry=retry, limiter=limiter if limiters else None)
    return job_client, bool(limiters)


# -- running ---------------------------------------------------------------------


@dataclasses.dataclass
class _Stats:
    done: int = 0
    failed: int = 0
    cached: int = 0
    started: int = 0
    requests: int = 0
    retries_finished: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    stop: bool = False
    stop_reason: str | None = None


def _set_state(jobs: JobStore, job_id: str, state: str) -> None:
    """Record the job's state; a store that refuses writes must not hide the rows."""
    try:
        jobs.set_state(job_id, state)
    except (sqlite3.Error, OSError) as exc:
        logger.warning("could not record the state of batch job %s: %s", job_id, exc)


def _storage_error(
    plan: Plan, jobs: JobStore, unsaved: int, cause: BaseException, result: BatchResult
) -> StorageError:
    where = "memory" if jobs.store.is_memory else jobs.store.path
    return StorageError(
        f"Batch job {plan.job_id!r} stopped: its checkpoints could not be written to "
        f"{where} ({cause}). {unsaved} finished rows are kept in memory in this kernel, "
        "nothing is lost: error.result.to_pandas() shows every answer received. Free some "
        "space and rerun the same batch(...): it saves them and sends only the rows never "
        "answered",
        result=result,
        original=cause,
    )


def _work(
    plan: Plan, finished: set[tuple[str, str]]
) -> Iterator[tuple[str, int, Payload, BatchModel]]:
    models = plan.models
    for key, idx, payload in plan.inputs.rows():
        for m in models:
            if finished and (key, m.name) in finished:
                continue
            yield key, idx, payload, m


def _prepare_job(plan: Plan, jobs: JobStore, resume: bool) -> JobRecord:
    """Create the job record, or check the stored one matches and reuse it."""
    existing = jobs.get(plan.job_id)
    if existing is not None:
        if existing.meta.get("hash") != plan.digest:
            if resume:
                raise InvalidRequestError(
                    f"A batch job named {plan.job_id!r} already exists for other inputs, "
                    "models or parameters: pass resume=False to replace it, or another job= name"
                )
            existing = None
        elif not resume:
            existing = None
        if existing is None:
            jobs.delete_rows(plan.job_id)
    if existing is not None:
        return existing
    job = JobRecord(
        id=plan.job_id,
        name=plan.name,
        models=[m.name for m in plan.models],
        params=plan.stored_params(),
        total=plan.total,
        mode=plan.mode,
        meta={"hash": plan.digest, "rows": plan.rows},
    )
    jobs.save(job)
    return job


async def _run_direct(
    plan: Plan,
    client: CoreClient,
    jobs: JobStore,
    *,
    concurrency: int | None,
    rpm: float | None,
    tpm: float | None,
    max_retries: int | None,
    timeout: float | None,
    progress: Progress | None,
    rerun: Any,
) -> BatchResult:
    started = time.perf_counter()
    finished = jobs.finished(plan.job_id)
    stats = _Stats(cached=len(finished))
    counts = jobs.counts(plan.job_id)
    stats.done = counts.get("done", 0)
    stats.failed = counts.get("failed", 0)
    job_client, counting = _job_client(
        client, plan, stats, rpm=rpm, tpm=tpm, max_retries=max_retries,
        watch=progress is not None,
    )
    if concurrency is None:
        local = all(m.local for m in plan.models)
        concurrency = LOCAL_CONCURRENCY if local else DEFAULT_CONCURRENCY
    concurrency = max(1, int(concurrency))
    writer: CheckpointWriter | NullWriter = (
        CheckpointWriter(jobs, plan.job_id) if _checkpoints_enabled else NullWriter()
    )
    _set_state(jobs, plan.job_id, "running")
    work = _work(plan, finished)
    job_id = plan.job_id
    system = plan.system
    response_format = plan.response_format
    params = plan.params
    tags = ["batch"]
    loop = asyncio.get_running_loop()
    workers: list[asyncio.Task[None]] = []

    async def worker() -> None:
        while not stats.stop:
            try:
                key, idx, payload, m = next(work)
            except StopIteration:
                return
            stats.started += 1
            begun = time.perf_counter()
            try:
                completion = await job_client.acomplete(
                    payload, m.name, system=system, response_format=response_format,
                    timeout=timeout, metadata={"batch_id": job_id, "batch_row": key},
                    tags=tags, **params,
                )
            except BudgetExceededError as exc:
                stats.started -= 1
                if not stats.stop:
                    stats.stop = True
                    stats.stop_reason = f"budget exceeded: {exc}"
                return
            except (LLMError, ValueError, TypeError) as exc:
                tries = getattr(exc, "attempts", 1)
                if not counting:
                    stats.requests += tries
                stats.retries_finished += max(tries - 1, 0)
                stats.failed += 1
                writer.put(failed_record(key, idx, m, exc, tries))
                continue
            tries = completion.attempts
            if not counting:
                stats.requests += tries
            stats.retries_finished += max(tries - 1, 0)
            cost = completion.cost_usd if completion.cost_usd is not None else row_cost(
                m, completion.usage
            )
            if cost is None:
                stats.unpriced += 1
            else:
                stats.cost_usd += cost
            stats.tokens += completion.usage.input_tokens + completion.usage.output_tokens
            stats.done += 1
            writer.put(done_record(key, idx, m, completion, tries,
                                    time.perf_counter() - begun, cost))

    def stop_now(reason: str) -> None:
        if not stats.stop:
            stats.stop = True
            stats.stop_reason = reason
        for task in workers:
            task.cancel()

    def stop_sending(error: BaseException) -> None:
        # The store refuses writes (a full disk): send nothing more, but let the
        # requests in flight finish, since they are paid for; their rows are
        # kept in memory with the others.
        if not stats.stop:
            stats.stop = True
            stats.stop_reason = f"could not save checkpoints: {error}"

    writer.on_failure = lambda error: loop.call_soon_threadsafe(stop_sending, error)

    if progress is not None:
        progress.update(total=plan.total, done=stats.done + stats.failed, cached=stats.cached,
                        failed=stats.failed)

    def show(force: bool = False) -> None:
        if progress is None:
            return
        in_flight = stats.started - (stats.done + stats.failed - len(finished))
        retrying = max(stats.requests - stats.started - stats.retries_finished, 0)
        progress.update(
            done=stats.done + stats.failed, cached=stats.cached, failed=stats.failed,
            retrying=min(retrying, max(in_flight, 0)), requests=stats.requests,
            tokens=stats.tokens, cost_usd=stats.cost_usd, force=force,
        )

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.1)
            show()

    interrupted = False
    def stopped_by() -> str:
        return "stopped by the user" if entry.stopped_by == "button" else (
            "stopped by nl.stop_all()")

    # The Stop button and nl.stop_all() both stop the job through its entry in
    # the registry of work in flight.
    entry = inflight.register(
        "batch", ", ".join(m.name for m in plan.models),
        lambda: loop.call_soon_threadsafe(stop_now, stopped_by()),
        label=plan.name or job_id,
    )
    if progress is not None:
        progress.on_stop = lambda: entry.stop("button")
    token = inflight.enter(entry)  # the rows' calls are its children
    try:
        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        tick = asyncio.ensure_future(ticker()) if progress is not None else None
    finally:
        inflight.leave(token)
    try:
        await asyncio.wait(workers)
    except asyncio.CancelledError:
        # Ctrl-C on a sync batch(), or the caller cancelled abatch(): stop cleanly.
        interrupted = True
        stop_now("interrupted")
        await asyncio.wait(workers)
    finally:
        inflight.unregister(entry)
        if tick is not None:
            tick.cancel()
        writer.close()
    state = "stopped" if stats.stop else "done"
    for task in workers:
        error = None if task.cancelled() else task.exception()
        if error is not None and not interrupted:
            state = "failed"
            _set_state(jobs, job_id, state)
            if progress is not None:
                progress.close(state)
            raise error
    counts = jobs.counts(job_id) if _checkpoints_enabled else {}
    if _checkpoints_enabled and counts.get("done", 0) + counts.get("failed", 0) < plan.total:
        state = "stopped"
    _set_state(jobs, job_id, state)
    if progress is not None:
        show()
        progress.close(state)
    result = BatchResult(
        job_id, name=plan.name, state=state, mode="direct", models=[m.name for m in plan.models],
        rows=plan.rows, db=jobs.store.path if not jobs.store.is_memory else jobs.store,
        index=plan.inputs.index, frame=plan.inputs.frame, format_model=plan.format_model,
        cached=stats.cached,
        elapsed_s=time.perf_counter() - started, stop_reason=stats.stop_reason, rerun=rerun,
    )
    if writer.failure is not None and writer.unsaved:
        raise _storage_error(plan, jobs, writer.unsaved, writer.failure, result)
    if interrupted:
        raise asyncio.CancelledError
    return result


# -- public API --------------------------------------------------------------------


def _make_progress(progress: bool | Progress, plan: Plan) -> Progress | None:
    if isinstance(progress, Progress):
        return progress
    if not progress:
        return None
    return Progress(plan.total, title=plan.name or plan.job_id).start()


async def _execute(
    plan: Plan, client: CoreClient, options: BatchOptions, progress: Progress | None
) -> BatchResult:
    result = await _execute_job(plan, client, options, progress)
    result.mode_reason, result.budget_usd = plan.mode_reason, options.budget_usd
    return result


async def _execute_job(
    plan: Plan, client: CoreClient, options: BatchOptions, progress: Progress | None
) -> BatchResult:
    jobs = JobStore(options.db_path)
    try:
        try:
            _prepare_job(plan, jobs, options.resume)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(
                f"Batch job {plan.job_id!r} could not be recorded in {jobs.store.path} ({exc}); "
                "nothing was sent. Free some disk space (or pass db_path= another file) and "
                "run it again",
                original=exc,
            ) from exc
        still = jobs.flush_unsaved(plan.job_id)
        if still:
            # Rows answered earlier in this kernel still cannot be saved: sending
            # more would only pile up answers that cannot be kept either.
            raise StorageError(
                f"Batch job {plan.job_id!r}: {still} finished rows kept in memory still cannot "
                f"be written to {jobs.store.path}; nothing was sent. Free some space and "
                "run it again",
            )

        async def rerun() -> BatchResult:
            again = dataclasses.replace(options, resume=True, progress=False)
            return await _execute(plan, client, again, None)

        if plan.mode == "provider":
            return await run_provider(
                plan, client, jobs, db=options.db_path, poll_interval=options.poll_interval,
                progress=progress, timeout=options.timeout,
            )
        # budget_usd= also holds while the rows run: the projection is an estimate.
        budget = (contextlib.nullcontext() if options.budget_usd is None
                  else Tracker(budget_usd=options.budget_usd, name="batch budget_usd"))
        with budget:
            return await _run_direct(
                plan, client, jobs, concurrency=options.concurrency, rpm=options.rpm,
                tpm=options.tpm, max_retries=options.max_retries, timeout=options.timeout,
                progress=progress, rerun=rerun,
            )
    finally:
        jobs.close()


def _finished_rows(plan: Plan, db: Any) -> int:
    """Rows of this very job already finished (an earlier run), 0 for a new job."""
    jobs = JobStore(db)
    try:
        finished = len(jobs.finished(plan.job_id))
        job = jobs.get(plan.job_id)
        if job is not None and job.meta.get("hash") != plan.digest:
            finished = 0
    finally:
        jobs.close()
    return finished


def _dry_run(plan: Plan, options: BatchOptions) -> BatchResult:
    finished = _finished_rows(plan, options.db_path)
    result = BatchResult(
        plan.job_id, name=plan.name, state="dry_run", mode=plan.mode,
        models=[m.name for m in plan.models], rows=plan.rows, db=options.db_path,
        index=plan.inputs.index, format_model=plan.format_model, cached=finished,
        estimate=estimate_plan(plan, finished),
    )
    result.mode_reason, result.budget_usd = plan.mode_reason, options.budget_usd
    return result


def _start(
    inputs: Any, model: str | Sequence[str] | None, options: BatchOptions
) -> tuple[Plan, CoreClient]:
    client = options.client or default_client()
    plan = make_plan(client, inputs, model, options)
    if not options.dry_run:
        _check_budget(plan, options)
    return plan, client


def _check_budget(plan: Plan, options: BatchOptions) -> BatchEstimate | None:
    """Project the job's cost first; refuse it, nothing sent, when over ``budget_usd``.

    Prints which mode was picked and why, and the projection, when the mode
    was chosen (``deadline=``) or a budget was given.
    """
    if options.budget_usd is None and options.deadline is None:
        return None
    finished = _finished_rows(plan, options.db_path)
    projected = estimate_plan(plan, finished)
    budget = options.budget_usd
    line = f"{plan.mode_reason} Projected cost {format_usd(projected.cost_usd)} for " \
           f"{projected.requests:,} requests"
    if budget is not None:
        line += f" (budget {format_usd(budget)})"
    print(line + ".")
    if budget is None:
        return projected
    if projected.cost_usd is None:
        warnings.warn(
            "No price is known for " + ", ".join(
                str(item["model"]) for item in projected.by_model if not item["priced"]
            ) + ", so budget_usd= cannot count it; the job runs.",
            RuntimeWarning, stacklevel=4,
        )
        return projected
    if projected.cost_usd > budget:
        cheaper = ""
        if plan.mode == "direct" and all(provider_batch_capable(m) for m in plan.models):
            half = estimate_plan(dataclasses.replace(plan, mode="provider"), finished).cost_usd
            cheaper = (f" The providers' batch API would cost about {format_usd(half)}, with "
                       "results within 24 hours: pass deadline='24h' or more.")
        raise BudgetExceededError(
            f"Not sent: the job's projected cost is {format_usd(projected.cost_usd)} for "
            f"{projected.requests:,} requests ({projected.input_tokens:,} input tokens, up to "
            f"{projected.output_tokens:,} output tokens), over budget_usd="
            f"{format_usd(budget)}.{cheaper} Raise budget_usd, set a lower max_tokens, use "
            "a cheaper model, or run fewer rows",
            spent_usd=0.0, budget_usd=budget, estimate_usd=projected.cost_usd,
        )
    return projected


async def abatch(
    inputs: Any,
    model: str | Sequence[str] | None = None,
    *,
    template: str | Template | None = None,
    system: str | None = None,
    response_format: Any = None,
    concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    max_retries: int | None = None,
    timeout: float | None = None,
    job: str | None = None,
    resume: bool = True,
    dry_run: bool = False,
    mode: str | None = None,
    client: CoreClient | None = None,
    progress: bool | Progress = True,
    db_path: Any = None,
    poll_interval: float | None = None,
    budget_usd: float | None = None,
    deadline: str | float | timedelta | None = None,
    db: Any = None,
    **params: Any,
) -> BatchResult:
    """Run one prompt per row through one or more models; resumable, checkpointed.

    The async twin of :func:`batch` (same arguments); it runs on the caller's
    event loop. Cancelling it stops the job cleanly (state ``stopped``,
    finished rows kept) and re-raises the cancellation.
    """
    options = BatchOptions.build(
        template=template, system=system, response_format=response_format,
        concurrency=concurrency, rpm=rpm, tpm=tpm, max_retries=max_retries, timeout=timeout,
        job=job, resume=resume, dry_run=dry_run, mode=mode, client=client, progress=progress,
        db_path=db_path, poll_interval=poll_interval, budget_usd=budget_usd,
        deadline=deadline, db=db, params=params,
    )  # fmt: skip
    plan, client = _start(inputs, model, options)
    if options.dry_run:
        return _dry_run(plan, options)
    return await _execute(plan, client, options, _make_progress(options.progress, plan))


def batch(
    inputs: Any,
    model: str | Sequence[str] | None = None,
    *,
    template: str | Template | None = None,
    system: str | None = None,
    response_format: Any = None,
    concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    max_retries: int | None = None,
    timeout: float | None = None,
    job: str | None = None,
    resume: bool = True,
    dry_run: bool = False,
    mode: str | None = None,
    client: CoreClient | None = None,
    progress: bool | Progress = True,
    db_path: Any = None,
    poll_interval: float | None = None,
    budget_usd: float | None = None,
    deadline: str | float | timedelta | None = None,
    db: Any = None,
    **params: Any,
) -> BatchResult:
    """Run one prompt per row through one or more models; resumable, checkpointed.

    Args:
        inputs: a list of prompts, a list of message lists, a list of dicts (with
            ``template``), or a pandas DataFrame (with ``template``, or a
            ``prompt`` / ``messages`` column). Row keys are the DataFrame index
            (as strings) or the list positions.
        model: ``provider:model`` (or an alias), or a list of them: each row goes
            to every model and the result is long (one row per input row and model).
        template: a ``str.format`` template filled from each row's columns
            (``"Classify this review: {review}"``), or a saved
            :class:`~notebook_llm.Template` (the columns fill its ``$names``; its
            system, model, options, schema and fragments apply; the job's hash
            covers each row's resolved text). A column the DataFrame lacks
            fails before any request is sent.
        system: a system prompt for every row.
        response_format: a Pydantic model (its fields become columns), ``"json"`` or a dict.
        concurrency: requests in flight (default 16; 64 when every model is local).
        rpm, tpm: this job's requests and tokens per minute; waits also honour
            the client's shared limiter for the model, and a 429 with
            Retry-After pauses every request to the model, not just one.
        max_retries: retries per row (the client's :class:`RetryPolicy` otherwise).
        timeout: seconds per request (each bounds its whole call).
        job: a name for the job. Without one, the job is identified by a hash of
            the inputs, models, template, system prompt and parameters.
        resume: reuse finished rows of the same job (``False``: start over).
        dry_run: only estimate tokens and cost (``result.estimate``); nothing is sent.
        mode: ``"direct"`` (requests now) or ``"provider"`` (the OpenAI or Anthropic
            batch API: half price, results within 24 hours). Left out, it is
            chosen from ``deadline``: the batch API when the deadline is 24
            hours or more and every model's provider has one, else direct;
            ``result.mode_reason`` says why (and a line is printed).
        client: the client to use (default: :func:`notebook_llm.default_client`); in
            ``mode="provider"`` its keys and base URLs are used too.
        progress: show a progress display (widgets in a kernel, text otherwise),
            or pass your own :class:`notebook_llm.Progress`.
        db_path: the SQLite database for checkpoints (a path or a ``Store``;
            default: the library's database).
        poll_interval: seconds between status checks in ``mode="provider"`` (default 30).
        budget_usd: project the job's cost first (:func:`estimate`) and refuse it
            with :class:`~notebook_llm.errors.BudgetExceededError`, nothing sent,
            when the projection is over this; in direct mode the rows' real
            costs are held to it too (the job stops when the next call could go
            over). Never sent to the provider.
        deadline: when the results are needed (``"6h"``, ``"2d"``, seconds or a
            ``timedelta``): picks ``mode`` when it is left out. Never sent to the
            provider.
        db: the old name of ``db_path`` (deprecated).
        **params: passed to each call (``temperature``, ``max_tokens``, provider options).

    Returns:
        A :class:`BatchResult`; ``.to_pandas()`` gives the rows aligned to the input.

    Resuming: every finished row (done, or failed after its retries) is
    committed to ``batch_rows`` within milliseconds, and running the same call
    again sends only the rows without a stored result. After Ctrl-C, the Stop
    button or a ``kill -9`` of the kernel, a rerun pays for no finished row
    twice. Rows that were in flight at the kill may be sent once more: those
    still awaiting an answer (at most ``concurrency``) and those whose answer
    had arrived but was not yet committed: on a job finishing hundreds of rows
    a second or more, those of the last 20 ms or so, and on a slower job none
    but the one being written. Failed rows are not re-sent by a rerun: use
    :meth:`BatchResult.retry_failed`.

    A full disk: rows that cannot be written are kept in memory, the job sends
    nothing more and raises :class:`~notebook_llm.errors.StorageError`, whose
    ``result`` holds every answer received; a rerun in the same kernel, once
    there is space, saves them and sends only the rows never answered.

    Stopping: Ctrl-C (the kernel's interrupt) stops the job cleanly, marks it
    ``stopped``, keeps what is done and re-raises ``KeyboardInterrupt``. The
    widget's Stop button does the same without raising: while ``batch()``
    blocks, the cell keeps dispatching widget clicks (the kernel would
    otherwise handle them only after the cell), so Stop works during a
    blocking call too, as it does for ``await abatch(...)`` run as a
    background task. A ``BudgetExceededError`` from the client's budget
    stops the job the same way (state ``stopped``, remaining rows pending).
    """
    options = BatchOptions.build(
        template=template, system=system, response_format=response_format,
        concurrency=concurrency, rpm=rpm, tpm=tpm, max_retries=max_retries, timeout=timeout,
        job=job, resume=resume, dry_run=dry_run, mode=mode, client=client, progress=progress,
        db_path=db_path, poll_interval=poll_interval, budget_usd=budget_usd,
        deadline=deadline, db=db, params=params,
    )  # fmt: skip
    plan, client = _start(inputs, model, options)
    if options.dry_run:
        return _dry_run(plan, options)
    shown = _make_progress(options.progress, plan)
    # With a display, wait so that its Stop button's clicks get through (in a kernel).
    wait = _loop.run if shown is None else _run_with_ui
    return wait(_execute(plan, client, options, shown))


def estimate(
    inputs: Any,
    model: str | Sequence[str] | None = None,
    *,
    template: str | Template | None = None,
    system: str | None = None,
    response_format: Any = None,
    mode: str = "direct",
    client: CoreClient | None = None,
    **params: Any,
) -> BatchEstimate:
    """Tokens and cost of a batch before sending anything (prompt ≈ characters / 4,
    output = ``max_tokens`` or :data:`DEFAULT_OUTPUT_TOKENS` per request).

    Takes :func:`batch`'s arguments that shape the requests."""
    options = BatchOptions.build(
        template=template, system=system, response_format=response_format, mode=mode,
        client=client, params=params,
    )
    plan, _client = _start(inputs, model, options)
    return estimate_plan(plan)


def batch_jobs(db_path: Any = None, *, db: Any = None) -> Any:
    """Every batch job as a DataFrame: state, counts, cost and dates, newest first.

    ``db_path``: the database (default: the library's); ``db`` is its old name."""
    import pandas as pd

    jobs = JobStore(db_path_of(db_path, db, "batch_jobs"))
    try:
        rows = jobs.jobs()
    finally:
        jobs.close()
    records = []
    for row in rows:
        total = int(row["total"] or 0)
        done, failed = int(row["done"]), int(row["failed"])
        records.append(
            {
                "job_id": row["id"],
                "name": row["name"],
                "state": row["state"],
                "mode": row["mode"],
                "models": ", ".join(json.loads(row["model_json"] or "[]")),
                "total": total,
                "done": done,
                "failed": failed,
                "pending": max(total - done - failed, 0),
                "cost_usd": float(row["cost_usd"] or 0.0),
                "provider_batch_id": row["provider_batch_id"],
                "created_at": row["created_at"],
                "updated_at": row["updated_at"],
            }
        )
    columns = ["job_id", "name", "state", "mode", "models", "total", "done", "failed",
               "pending", "cost_usd", "provider_batch_id", "created_at", "updated_at"]
    return pd.DataFrame(records, columns=columns)
