"""The tool loop: run the calls a model asked for, under approval, limits and timeouts.

One :class:`ToolLoop` per message serves ``complete`` and ``stream`` alike.
Each call is checked before anything runs (a known tool, arguments that pass
its JSON schema, the per-message cap, approval), then run: a sync function on
a worker thread of its own, in the caller's context variables (so ``print``
lands in the caller's cell and the library's loop never waits for it), an async
one on the loop; both under the tool's timeout. Whatever happens, the model is
told in a ``tool`` message and the loop goes on; only Stop (cancellation) ends
it. The call's own ``timeout=`` bounds the model requests, not this.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import re
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from copy import copy
from dataclasses import dataclass, field
from typing import Any

from notebook_llm.core import inflight
from notebook_llm.core.errors import CancelToolCall, InvalidRequestError
from notebook_llm.core.options import CallOptions
from notebook_llm.core.stream import AsyncStream, aclose_quietly, call_on_loop
from notebook_llm.core.types import Chunk, Completion, Message, Tool, ToolCall, ToolRun

__all__ = [
    "DEFAULT_MAX_TOOL_CALLS",
    "DEFAULT_MAX_TOOL_ROUNDS",
    "DEFAULT_TOOL_TIMEOUT",
    "Asker",
    "ToolLoop",
    "ToolLoopStream",
    "asking",
    "completion_runs",
    "validation_error",
]

DEFAULT_MAX_TOOL_ROUNDS = 5
DEFAULT_MAX_TOOL_CALLS = 25
DEFAULT_TOOL_TIMEOUT = 60.0
_APPROVALS = ("always", "never", "ask")

Asker = Callable[[Tool, ToolRun], Awaitable[bool]]
"""Asks a person about one call (on the library's loop); True allows it. It may
set ``run.output`` to say why it refused (no one could answer, say)."""

_ASKER: contextvars.ContextVar[Asker | None] = contextvars.ContextVar(
    "notebook_llm_tool_asker", default=None
)

# Tool threads of their own: a tool that hangs past its timeout keeps its
# thread, and must not starve the loop's default executor (DNS, file reads).
_executor: ThreadPoolExecutor | None = None


def _tool_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="notebook-llm-tool")
    return _executor


@contextlib.contextmanager
def asking(asker: Asker | None) -> Iterator[None]:
    """Within the block, ``approve="ask"`` asks through ``asker`` (the notebook's
    buttons, say) instead of the terminal prompt."""
    token = _ASKER.set(asker)
    try:
        yield
    finally:
        _ASKER.reset(token)


def validation_error(tool: Tool, arguments: dict[str, Any]) -> str | None:
    """Why ``arguments`` fail ``tool``'s JSON schema, or ``None`` when they pass."""
    if "_raw" in arguments and "_raw" not in tool.parameters.get("properties", {}):
        return f"the arguments are not valid JSON: {str(arguments['_raw'])[:200]!r}"
    schema = tool.parameters or {}
    if tool.function is not None:
        try:
            inspect.signature(tool.function).bind(**arguments)
        except TypeError as exc:  # an unknown or missing argument
            return str(exc)
        except ValueError:  # a builtin without a signature: the schema decides
            pass
    if not schema:
        return None
    validate = _validator(schema)
    if validate is None:
        return None
    try:
        validate(arguments)
    except Exception as exc:  # noqa: BLE001 - JsonSchemaValueException, or a schema it cannot run
        message = str(getattr(exc, "message", exc))
        message = re.sub(r"^data\.(\S+)", r"argument \1", message)
        return re.sub(r"^data\b", "the arguments", message)
    return None


@functools.lru_cache(maxsize=256)
def _compiled(schema_json: str) -> Callable[[Any], Any] | None:
    import fastjsonschema  # small and quick to import: validation code made once per schema

    try:
        validate: Callable[[Any], Any] = fastjsonschema.compile(json.loads(schema_json))
    except Exception:  # noqa: BLE001 - a schema it cannot compile is not checked here
        return None
    return validate


def _validator(schema: dict[str, Any]) -> Callable[[Any], Any] | None:
    try:
        key = json.dumps(schema, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return None
    return _compiled(key)


def _approval(tool: Tool, approve: Any) -> Any:
    if approve is None:
        return "ask" if tool.dangerous else "always"
    return approve


async def _terminal_ask(tool: Tool, run: ToolRun) -> bool:
    """``approve="ask"`` without a notebook view: ``input()`` when a person has a
    terminal, else a refusal that says so (nbval, papermill, a service)."""
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        run.output = (
            f"Denied: {tool.name} needs approval and no one can answer here "
            "(no terminal or frontend); pass approve=... to decide in code"
        )
        return False
    arguments = json.dumps(run.call.arguments, ensure_ascii=False)[:500]
    question = f"Run tool {tool.name}({arguments})? [y/N] "
    answer = await asyncio.get_running_loop().run_in_executor(
        _tool_executor(), contextvars.copy_context().run, input, question
    )
    return answer.strip().lower() in ("y", "yes")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


@dataclass
class ToolLoop:
    """The tool loop of one message: its tools, its rules, and what it has run."""

    tools: list[Tool]
    max_rounds: int = DEFAULT_MAX_TOOL_ROUNDS
    max_calls: int = DEFAULT_MAX_TOOL_CALLS
    timeout: float = DEFAULT_TOOL_TIMEOUT
    approve: Any = None
    asker: Asker | None = None
    runs: list[ToolRun] = field(default_factory=list)
    """Every call handled so far, in order."""
    rounds: int = 0
    """Rounds of tool calls run so far."""
    calls_run: int = 0
    """Calls that passed the checks (and so count against ``max_calls``)."""
    _ask_lock: asyncio.Lock | None = None

    @classmethod
    def for_call(cls, tools: list[Tool] | None, options: CallOptions) -> ToolLoop | None:
        """The loop for a call's options, or ``None`` when no tool can run here
        (no tools, only schema dicts, or ``max_tool_rounds=0``).

        Raises:
            InvalidRequestError: an option out of range, before anything is sent.
        """
        approve = options.approve
        if approve is not None and approve not in _APPROVALS and not callable(approve):
            raise InvalidRequestError(
                f"approve={approve!r}: use 'always', 'never', 'ask' or a function "
                "before_call(tool, arguments) -> bool"
            )
        for name in ("max_tool_rounds", "max_tool_calls"):
            value = getattr(options, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidRequestError(f"{name}={value!r}: use a whole number >= 0")
        if options.tool_timeout is not None and not options.tool_timeout > 0:
            raise InvalidRequestError(
                f"tool_timeout={options.tool_timeout!r}: use a number of seconds > 0"
            )
        if not tools or not any(tool.function is not None for tool in tools):
            return None
        rounds = options.max_tool_rounds
        if rounds == 0:
            return None
        return cls(
            tools=tools,
            max_rounds=DEFAULT_MAX_TOOL_ROUNDS if rounds is None else rounds,
            max_calls=(DEFAULT_MAX_TOOL_CALLS if options.max_tool_calls is None
                       else options.max_tool_calls),
            timeout=options.tool_timeout or DEFAULT_TOOL_TIMEOUT,
            approve=approve,
            asker=_ASKER.get(),
        )

    def wants(self, calls: list[ToolCall]) -> bool:
        """True when ``calls`` should be run and answered (rounds are left)."""
        return bool(calls) and self.rounds < self.max_rounds

    async def run(
        self, calls: list[ToolCall], emit: Callable[[ToolRun], None] | None = None
    ) -> list[Message]:
        """Handle one round of calls (concurrently; approvals one at a time) and
        return the ``tool`` messages, in the order of the calls.

        ``emit(run)`` hears each call when it starts and when it ends.
        """
        self.rounds += 1
        runs = [ToolRun(call, round=self.rounds) for call in calls]
        self.runs.extend(runs)
        await asyncio.gather(*(self._handle(run, emit) for run in runs))
        return [
            {"role": "tool", "tool_call_id": run.call.id, "content": run.output}
            for run in runs
        ]

    def _tool(self, name: str) -> Tool | None:
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None

    async def _handle(self, run: ToolRun, emit: Callable[[ToolRun], None] | None) -> None:
        def tell() -> None:
            if emit is not None:
                emit(run)

        try:
            tool = self._check(run)
            if tool is not None:
                allowed = await self._allowed(tool, run, tell)
                if allowed:
                    run.status = "running"
                    tell()
                    await self._execute(tool, run)
        except asyncio.CancelledError:
            run.status, run.output = "cancelled", "Cancelled: the person stopped the exchange"
            tell()
            raise
        tell()

    def _check(self, run: ToolRun) -> Tool | None:
        call = run.call
        tool = self._tool(call.name)
        if tool is None or tool.function is None:
            known = ", ".join(t.name for t in self.tools if t.function is not None)
            run.status = "unknown"
            run.output = (f"Error: there is no tool named {call.name!r}; "
                          f"the tools are: {known or 'none'}")
            return None
        # Checks run one after another (each before its first await), so the
        # count is the order the model asked in.
        if self.calls_run >= self.max_calls:
            run.status = "limit"
            run.output = (f"Not run: the limit of {self.max_calls} tool calls for this "
                          "message is reached; answer with what you have")
            return None
        problem = validation_error(tool, call.arguments)
        if problem is not None:
            run.status = "invalid"
            run.output = (f"Error: invalid arguments for {call.name}: {problem}. "
                          "Nothing was run; call it again with arguments that match its "
                          "schema")
            return None
        self.calls_run += 1
        return tool

    async def _allowed(self, tool: Tool, run: ToolRun, tell: Callable[[], None]) -> bool:
        approve = _approval(tool, self.approve)
        if approve == "always":
            return True
        allowed = False
        try:
            if approve == "never":
                run.output = f"Denied: running {tool.name} is not allowed here"
            elif approve == "ask":
                if self._ask_lock is None:
                    self._ask_lock = asyncio.Lock()
                async with self._ask_lock:  # one question on screen at a time
                    run.status = "asking"
                    tell()
                    allowed = await (self.asker or _terminal_ask)(tool, run)
            else:
                allowed = bool(await self._call_user(approve, tool, dict(run.call.arguments)))
        except CancelToolCall as exc:
            run.output = f"Denied: {exc}" if str(exc) else ""
        if not allowed:
            run.status = "denied"
            run.output = run.output or (f"Denied: the person did not allow {tool.name} "
                                        "to run; do not call it again for this")
        return allowed

    async def _call_user(self, function: Any, *args: Any) -> Any:
        """A user's function: a coroutine function on the loop, a sync one on a
        tool thread in the caller's context."""
        if inspect.iscoroutinefunction(function):
            return await function(*args)
        context = contextvars.copy_context()
        value = await asyncio.get_running_loop().run_in_executor(
            _tool_executor(), functools.partial(context.run, function, *args)
        )
        if inspect.isawaitable(value):
            value = await value
        return value

    async def _execute(self, tool: Tool, run: ToolRun) -> None:
        limit = tool.timeout or self.timeout
        started = time.perf_counter()
        function = tool.function
        try:
            if inspect.iscoroutinefunction(function):
                value = await asyncio.wait_for(function(**run.call.arguments), limit)
            else:
                context = contextvars.copy_context()
                future = asyncio.get_running_loop().run_in_executor(
                    _tool_executor(),
                    functools.partial(context.run, function, **run.call.arguments),
                )
                value = await asyncio.wait_for(future, limit)
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(value, limit)
        except asyncio.TimeoutError:
            run.status = "timeout"
            run.output = (f"Error: {tool.name} took longer than {limit:g} s and was "
                          "abandoned; no result")
        except CancelToolCall as exc:
            run.status = "denied"
            run.output = f"Cancelled by the tool: {exc}" if str(exc) else "Cancelled by the tool"
        except Exception as exc:  # noqa: BLE001 - the model is told; the person sees the traceback
            run.status = "error"
            run.output = f"Error: {type(exc).__name__}: {exc}"
            run.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        else:
            run.status = "ok"
            run.output = _as_text(value)
        finally:
            run.duration_s = time.perf_counter() - started


class ToolLoopStream(AsyncStream):
    """A stream that runs the tool loop: the rounds' text chunks, and between
    rounds a chunk per tool event (``chunk.tool_run``).

    Each round is an :class:`AsyncStream` of its own (its own deadline, its own
    entry in the call log); ``completion`` is the last round's, with every
    round's ``tool_runs``. ``cancel()`` stops whichever is under way: the
    model's answer, a tool, or a question waiting for a person.
    """

    def __init__(
        self,
        first: AsyncStream,
        tools: ToolLoop,
        next_round: Callable[[list[Message], list[ToolRun]], AsyncStream],
    ) -> None:
        self._round = first
        self.model = first.model
        self._entry: inflight.Entry | None = None
        self._tools = tools
        self._next_round = next_round
        self._chunks = self._rounds()
        self._earlier_text: list[str] = []
        self._in_tools = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        self._done = False
        self.completion: Completion | None = None
        self.error: BaseException | None = None

    @property
    def text(self) -> str:
        """The text received so far, every round."""
        return "".join([*self._earlier_text, self._round.text])

    @property
    def tool_runs(self) -> list[ToolRun]:
        """The tool calls handled so far."""
        return list(self._tools.runs)

    def cancel(self) -> None:
        """Stop now, from any thread; the text so far is kept."""
        self._cancel_requested = True
        loop = self._loop
        if loop is None or loop.is_closed():
            self._round.cancel()
            return
        call_on_loop(loop, self._cancel_now)

    def _cancel_now(self) -> None:
        if self._in_tools and self._waiter is not None:
            self._waiter.cancel()
        else:
            self._round.cancel()

    async def __anext__(self) -> Chunk:
        if self._done:
            raise StopAsyncIteration
        if self._entry is None:  # the whole loop, tools and questions included, is stoppable
            self._register("tool_loop")
        self._loop = asyncio.get_running_loop()
        self._waiter = asyncio.current_task()
        if self._cancel_requested and not self._in_tools:
            self._round.cancel()
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self._done = True
            self._unregister()
            raise
        except asyncio.CancelledError:
            self._done = True
            self._unregister()
            self._conclude(self._round.completion, cancelled=True)
            if not self._cancel_requested:
                raise
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            raise StopAsyncIteration from None
        except BaseException as exc:
            self._done = True
            self._unregister()
            self.error = exc
            self._conclude(self._round.completion)
            raise
        finally:
            self._waiter = None

    def _unregister(self) -> None:
        if self._entry is not None:
            inflight.unregister(self._entry)

    async def aclose(self) -> None:
        """Stop early (as when leaving an ``async for`` with ``break``)."""
        if not self._done:
            self._cancel_requested = True
            self._done = True
            self._unregister()
            await self._round.aclose()
            await aclose_quietly(self._chunks)
            self._conclude(self._round.completion, cancelled=True)

    def _conclude(self, completion: Completion | None, *, cancelled: bool = False) -> None:
        if completion is None:
            return
        completion.tool_runs = list(self._tools.runs)
        if cancelled:
            completion.finish_reason = "cancelled"
        self.completion = completion

    async def _rounds(self) -> AsyncIterator[Chunk]:
        while True:
            async for chunk in self._round:
                yield chunk
            completion = self._round.completion
            if completion is None:
                return
            if (self._cancel_requested or completion.finish_reason == "cancelled"
                    or not self._tools.wants(completion.tool_calls)):
                self._conclude(completion, cancelled=self._cancel_requested)
                return
            self._earlier_text.append(completion.text)
            self._in_tools = True
            task, events = self._start_tools(completion.tool_calls)
            try:
                while (event := await events.get()) is not None:
                    yield Chunk(tool_run=event)
            finally:
                self._in_tools = False
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            results = task.result()
            if self._cancel_requested:
                self._conclude(completion, cancelled=True)
                return
            messages = [*completion.messages, completion.to_message(), *results]
            self._round = self._next_round(messages, completion_runs(self._tools))


    def _start_tools(
        self, calls: list[ToolCall]
    ) -> tuple[asyncio.Future[list[Message]], asyncio.Queue[ToolRun | None]]:
        """Run a round of calls as a task; its events (copies, as they were at
        the moment) arrive on the queue, then ``None``."""
        events: asyncio.Queue[ToolRun | None] = asyncio.Queue()
        task = asyncio.ensure_future(
            self._tools.run(calls, lambda run: events.put_nowait(copy(run)))
        )
        task.add_done_callback(lambda _: events.put_nowait(None))
        return task, events


def completion_runs(tools: ToolLoop) -> list[ToolRun]:
    """The runs of the last round: what the next request carries back."""
    return [run for run in tools.runs if run.round == tools.rounds]
