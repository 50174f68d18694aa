"""The one registry of work in flight in this process, and ``stop_all``.

Streams, completes, tool loops, compares, batches and approvals waiting for a
person each register an :class:`Entry` (kind, model, start time and the
callable that stops it) while they run and unregister when they end. The same
callable serves every way of stopping: a Stop button, the kernel's interrupt
and :func:`stop_all`, so they cannot disagree about what "stopped" means.

Entries nest: an entry registered while another is current (in the same
thread or asyncio task, through a context variable) is its child, as a
compare's streams or a batch's rows are. :func:`count` counts the top level
("2 running" is two cells' worth of work, not every row of a batch), and
:func:`stop_all` stops the top level first, then whatever is still running.

Inside a Jupyter kernel the top level is also written to a small JSON file
beside the kernel's connection file (``notebook-llm-inflight-<kernel id>.json``),
which the JupyterLab extension's server part reads to show "N running" without
asking the busy kernel. Outside a kernel nothing is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Entry",
    "Kind",
    "StopReport",
    "add_status_source",
    "count",
    "current",
    "enter",
    "leave",
    "refresh_status",
    "register",
    "running",
    "status_file",
    "stop_all",
    "stop_request_file",
    "stopped_at_top",
    "task_canceller",
    "tracked",
    "unregister",
    "write_status_to",
]

Kind = Literal["stream", "complete", "tool_loop", "compare", "batch", "approval"]

logger = logging.getLogger("notebook_llm.inflight")

_GRACE_S = 0.2
"""How long stop_all lets the top level wind its children down before stopping them too."""

_ids = itertools.count(1)


@dataclass(eq=False)
class Entry:
    """One piece of work in flight."""

    kind: Kind
    """What it is: ``stream``, ``complete``, ``tool_loop``, ``compare``, ``batch``, ``approval``."""
    model: str
    """The model (or models, comma-separated) it talks to; ``""`` when none."""
    cancel: Callable[[], object] = field(repr=False)
    """Stops it; callable from any thread, more than once."""
    label: str = ""
    """A few words for people (a batch's name, a prompt's start)."""
    note: str = ""
    """What stopping it leaves behind, said to the user (a provider batch keeps running)."""
    parent: Entry | None = field(default=None, repr=False)
    started: float = field(default_factory=time.time)
    """When it started (seconds since the epoch)."""
    id: int = field(default_factory=lambda: next(_ids))
    stopped_by: str | None = None
    """Who stopped it (``"stop_all"``, ``"button"``, ``"interrupt"``); None while it runs."""

    def stop(self, by: str = "stop_all") -> None:
        """Stop it (once); errors from a cancel callable are logged, never raised."""
        if self.stopped_by is not None:
            return
        self.stopped_by = by
        try:
            self.cancel()
        except Exception:
            logger.warning("notebook-llm: stopping %s %s failed", self.kind, self.model,
                           exc_info=True)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able fields (for the status file and the panel)."""
        return {"id": self.id, "kind": self.kind, "model": self.model, "label": self.label,
                "started": self.started, "stopping": self.stopped_by is not None}


@dataclass
class StopReport:
    """What :func:`stop_all` stopped, what is still winding down, and what was left behind."""

    stopped: list[Entry]
    still_running: list[Entry]
    notes: list[str]

    def __repr__(self) -> str:
        return self.text()

    def text(self) -> str:
        """One line, then the notes (how to resume or cancel a provider batch)."""
        top = [e for e in self.stopped if e.parent is None]
        if not top:
            line = "nothing was running"
        else:
            kinds: dict[str, int] = {}
            for entry in top:
                kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
            parts = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in kinds.items())
            line = f"stopped {parts}"
        if self.still_running:
            line += f"; {len(self.still_running)} still winding down"
        return "\n".join([line, *self.notes])

    def _repr_html_(self) -> str:
        import html

        lines = self.text().split("\n")
        return "<br>".join(html.escape(line) for line in lines)


_lock = threading.RLock()
_entries: dict[int, Entry] = {}
_current: ContextVar[Entry | None] = ContextVar("notebook_llm_inflight", default=None)


def current() -> Entry | None:
    """The entry whose work is running here (this thread or task), if any."""
    return _current.get()


def register(
    kind: Kind,
    model: str,
    cancel: Callable[[], object],
    *,
    label: str = "",
    note: str = "",
    parent: Entry | None = None,
) -> Entry:
    """Add an entry; its parent is the current entry unless given."""
    entry = Entry(kind, model, cancel, label=label, note=note,
                  parent=parent if parent is not None else _current.get())
    with _lock:
        _entries[entry.id] = entry
    if entry.parent is None:
        _changed()
    return entry


def unregister(entry: Entry) -> None:
    """Remove an entry (again is fine)."""
    with _lock:
        gone = _entries.pop(entry.id, None)
    if gone is not None and gone.parent is None:
        _changed()


def enter(entry: Entry) -> Token[Entry | None]:
    """Make ``entry`` the current one (the parent of what registers next, here and in
    the tasks started here); :func:`leave` with the token undoes it."""
    return _current.set(entry)


def leave(token: Token[Entry | None]) -> None:
    """Undo :func:`enter`."""
    _current.reset(token)


@contextlib.contextmanager
def tracked(
    kind: Kind, model: str, cancel: Callable[[], object], *, label: str = "", note: str = ""
) -> Iterator[Entry]:
    """Register for the duration of the block, as the current entry (the parent of
    whatever the block registers)."""
    entry = register(kind, model, cancel, label=label, note=note)
    token = enter(entry)
    try:
        yield entry
    finally:
        leave(token)
        unregister(entry)


def task_canceller() -> Callable[[], None]:
    """A cancel callable for the running asyncio task, safe to call from any thread
    (what stopping a complete or a tool loop does)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def cancel() -> None:
        if task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    return cancel


def stopped_at_top(entry: Entry) -> bool:
    """True when ``entry`` itself was stopped and has no parent; then the running
    task's cancellation is withdrawn, so it can end with the library's own error
    instead of asyncio's (a child propagates the cancellation to its parent)."""
    if entry.stopped_by is None or entry.parent is not None:
        return False
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):
        task.uncancel()
    return True


def running(*, top_level: bool = False) -> list[Entry]:
    """The entries in flight, oldest first."""
    with _lock:
        entries = list(_entries.values())
    if top_level:
        entries = [e for e in entries if e.parent is None]
    return sorted(entries, key=lambda e: e.id)


def count() -> int:
    """How many top-level pieces of work are in flight."""
    with _lock:
        return sum(e.parent is None for e in _entries.values())


def stop_all(*, timeout: float = 1.0) -> StopReport:
    """Stop everything in flight in this process; wait up to ``timeout`` s for it to end.

    The top level is stopped first (a compare stops its columns, a batch its
    workers), then anything still registered after a short grace. A provider
    batch is left running at the provider; its entry's note says how to
    resume or cancel it, and it is in the report's ``notes``.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    stopped: list[Entry] = []
    for entry in running(top_level=True):
        entry.stop()
        stopped.append(entry)
    grace = min(deadline, time.monotonic() + _GRACE_S)
    while time.monotonic() < deadline:
        left = running()
        if not left:
            break
        if time.monotonic() >= grace:
            for entry in left:
                if entry.stopped_by is None:
                    entry.stop()
                    stopped.append(entry)
        time.sleep(0.02)
    with _lock:
        still = [e for e in stopped if e.id in _entries]
    notes = [e.note for e in stopped if e.note]
    return StopReport(stopped, still, notes)


# -- the status file, for the JupyterLab extension ------------------------------------

_status_path: str | Literal[False] | None = None
_since = time.time()
"""When the library was loaded in this process: the start of the session's spend."""
_status_sources: dict[str, Callable[[], Any]] = {}


def add_status_source(name: str, source: Callable[[], Any]) -> None:
    """Add ``name: source()`` to the status file (budgets, the default model)."""
    _status_sources[name] = source


def write_status_to(path: str | None) -> None:
    """Write the status file to ``path`` from now on (None: write none). A kernel
    finds its own path by itself; this is for tests and benchmarks."""
    global _status_path
    _status_path = path if path is not None else False


def status_file() -> str | None:
    """The status file of this kernel, or None outside a Jupyter kernel."""
    global _status_path
    if _status_path is None:
        _status_path = _find_status_path() or False
        if _status_path:
            import atexit

            atexit.register(_remove_status_file)
    return _status_path or None


def _find_status_path() -> str | None:
    app = sys.modules.get("ipykernel.kernelapp")
    kernel_app = getattr(getattr(app, "IPKernelApp", None), "initialized", None)
    if app is None or kernel_app is None or not kernel_app():
        return None
    connection = getattr(app.IPKernelApp.instance(), "abs_connection_file", "") or ""
    name = os.path.basename(connection)
    if not name.endswith(".json"):
        return None
    # Jupyter Server names the file kernel-<kernel id>.json; others name it as they like.
    kernel_id = name[: -len(".json")].removeprefix("kernel-")
    return os.path.join(os.path.dirname(connection), f"notebook-llm-inflight-{kernel_id}.json")


def _changed() -> None:
    # Only a flag and, at most once per burst, a thread start: the file is written
    # by the watcher thread, at most every _WATCH_INTERVAL_S.
    path = status_file()
    if path:
        _dirty.set()
        _watch(path)


def refresh_status() -> None:
    """Rewrite the status file now (after a setting it shows has changed)."""
    path = status_file()
    if path:
        write_status(path)


def stop_request_file(status_path: str) -> str:
    """Where a stop request for the kernel of ``status_path`` is dropped."""
    folder, name = os.path.split(status_path)
    return os.path.join(folder, name.replace("notebook-llm-inflight-", "notebook-llm-stop-", 1))


_dirty = threading.Event()
_watcher: threading.Thread | None = None
_WATCH_INTERVAL_S = 0.1
_WATCH_LINGER_S = 2.0


def _watch(status_path: str) -> None:
    """Start the watcher thread if it is not running (one at most).

    While work is in flight (and a little after) it writes the status file
    when something changed, and takes stop requests: the JupyterLab "Stop all
    LLM work" button cannot run code in a kernel whose main thread is busy
    with the cell that streams, so the server drops a request file instead,
    which this thread turns into :func:`stop_all`.
    """
    global _watcher
    with _lock:
        if _watcher is not None:
            return
        _watcher = threading.Thread(target=_watch_loop, args=(status_path,),
                                    name="notebook-llm-inflight", daemon=True)
        _watcher.start()


def _watch_loop(status_path: str) -> None:
    global _watcher
    request_path = stop_request_file(status_path)
    began = time.time()
    idle_since: float | None = None
    while True:
        if _dirty.is_set():
            _dirty.clear()
            write_status(status_path)
        requested = _take_request(request_path)
        if requested is not None and requested >= began - 1.0:  # older ones are stale
            stop_all()
        if count():
            idle_since = None
        else:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > _WATCH_LINGER_S:
                with _lock:
                    if not _dirty.is_set() and not _entries:
                        _watcher = None
                        return
        time.sleep(_WATCH_INTERVAL_S)


def _take_request(path: str) -> float | None:
    """The time of a pending stop request (the file is removed), or None."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        os.remove(path)
    except (OSError, ValueError):
        return None
    value = data.get("requested") if isinstance(data, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def write_status(path: str) -> None:
    """Write the top level and the status sources to ``path`` (atomically)."""
    payload: dict[str, Any] = {
        "pid": os.getpid(),
        "since": _since,
        "updated": time.time(),
        "running": [e.to_dict() for e in running(top_level=True)],
    }
    for name, source in list(_status_sources.items()):
        try:
            payload[name] = source()
        except Exception:
            logger.debug("notebook-llm: status source %s failed", name, exc_info=True)
    try:
        folder = os.path.dirname(path)
        fd, tmp = tempfile.mkstemp(prefix=".notebook-llm-", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(payload, out, default=str)
        os.replace(tmp, path)
    except OSError:
        logger.debug("notebook-llm: could not write %s", path, exc_info=True)


def _remove_status_file() -> None:
    path = _status_path
    if path:
        with contextlib.suppress(OSError):
            os.remove(path)
