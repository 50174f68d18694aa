"""Replay files: answers stored next to a notebook, so "Run all" costs $0 and needs no key.

A replay file (``<notebook>.llm.json``) maps a request's *fingerprint* to the
answer it got. The fingerprint is a hash of what decides the answer as the
caller wrote it: the model string before defaults and aliases resolve (so a
kernel whose default model differs still finds it), the messages, the system
prompt, the options and the schema. Keys, base URLs, headers, timeouts, tags
and log settings are never part of it, and never stored.

Modes (:func:`replay`, ``%llm_replay``, or ``$NOTEBOOK_LLM_REPLAY``, which wins):

- ``record``: every call goes to the model; the answer is stored (replacing
  the stored one; a changed answer is a *drift*, see :func:`replay_diff`).
- ``replay``: every call is answered from the file; one that is not there
  fails with :class:`ReplayMissingError` (nothing is sent).
- ``auto``: answered from the file when stored, else sent and stored. The
  default inside a notebook whose replay file exists.
- ``off``: the file is not read or written.

Two middlewares of :class:`notebook_llm.Client` do the work:
:class:`ReplayLookup` runs first (a stored answer wins over the response
cache and needs no key) and :class:`ReplayRecorder` runs after pricing (so the
stored answer keeps its cost). The file itself is :class:`ReplayFile`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from notebook_llm.core.client import CallContext, Middleware
from notebook_llm.core.errors import LLMError, redact
from notebook_llm.core.shell import ipython_shell
from notebook_llm.core.types import Completion, ReplayInfo

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "FORMAT",
    "VERSION",
    "Drift",
    "Mode",
    "ReplayFile",
    "ReplayFileError",
    "ReplayLookup",
    "ReplayMissingError",
    "ReplayRecorder",
    "ReplaySession",
    "fingerprint",
    "replay",
    "replay_diff",
    "sidecar_for",
]

Mode = Literal["record", "replay", "auto", "off"]
MODES: tuple[str, ...] = get_args(Mode)
FORMAT = "notebook-llm.replay"
VERSION = 1
"""The replay file format this version writes and the newest it reads."""
ENV_MODE = "NOTEBOOK_LLM_REPLAY"
ENV_PATH = "NOTEBOOK_LLM_REPLAY_FILE"
_SECRET_KEYS = ("key", "secret", "token", "password", "authorization", "header", "cookie")


class ReplayFileError(LLMError):
    """A replay file that cannot be trusted: not JSON, hand-edited, or from a newer version."""

    hint = "Fix or delete the entry (or the file), or re-record it with nl.replay('record')."


class ReplayMissingError(LLMError):
    """Replay mode, and no stored answer for this request: nothing was sent."""

    hint = ("The prompt, model or options changed since the file was recorded: run the cell "
            "with nl.replay('auto') or %llm_replay auto to call the model and store the answer.")


# -- fingerprints -----------------------------------------------------------------------


def request_record(ctx: CallContext) -> dict[str, Any]:
    """What decides the answer, as the caller wrote it: the fingerprint's input.

    The model is the string given to the call (``None``: the client's default,
    whatever that resolves to on this machine). Provider keyword arguments
    whose names look like credentials are left out.
    """
    request = ctx.request
    extra = {
        name: value for name, value in request.extra.items()
        if not any(word in name.lower() for word in _SECRET_KEYS)
    }
    options = {
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "tools": [
            {"name": t.name, "description": t.description, "parameters": t.parameters}
            for t in request.tools or []
        ] or None,
        "tool_choice": request.tool_choice,
        "reasoning_effort": request.reasoning_effort,
        "extra": extra or None,
    }
    return {
        "model": ctx.model_as_written,
        "messages": request.messages,
        "system": request.system,
        "options": {name: value for name, value in options.items() if value is not None},
        "schema": request.response_format,
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=repr)


def fingerprint(record: dict[str, Any]) -> str:
    """The hex fingerprint (128 bits of sha256) of a :func:`request_record`."""
    return hashlib.sha256(_canonical(record).encode("utf-8")).hexdigest()[:32]


def _check(key: str, request: Any, answer: Any) -> str:
    """The checksum that catches hand edits of an entry."""
    return hashlib.sha256(_canonical([key, request, answer]).encode("utf-8")).hexdigest()[:16]


# -- the file ---------------------------------------------------------------------------


def sidecar_for(path: str | os.PathLike[str]) -> Path:
    """The replay file of ``path``: ``x.ipynb`` -> ``x.llm.json``; a ``.json`` path as is."""
    given = Path(path).expanduser()
    if given.suffix == ".json":
        return given
    if given.suffix == ".ipynb":
        return given.with_suffix(".llm.json")
    raise ValueError(
        f"replay path {str(given)!r}: name the notebook (.ipynb) or its replay file (.json)"
    )


@dataclass(slots=True)
class Entry:
    """One stored answer."""

    key: str
    request: dict[str, Any]
    answer: dict[str, Any]
    recorded_at: str
    answer_json: str = ""
    """``answer`` as JSON text, made once when the entry is first checked."""


class ReplayFile:
    """One ``.llm.json`` file: read on change, written atomically under a lock.

    Writes read the file again under the lock and merge, so two kernels (or
    processes) recording into the same file lose nothing; the new text goes to
    a temporary file that replaces the old one (``os.replace``), so a reader
    never sees half a file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._raw: dict[str, Any] = {}
        self._checked: dict[str, Entry] = {}
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ReplayFile({str(self.path)!r})"

    # reading

    def _read_disk(self) -> dict[str, Any]:
        """The file's entries, checked at the top level (entries are checked on use)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ReplayFileError(f"cannot read the replay file {self.path}: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReplayFileError(
                f"the replay file {self.path} is not valid JSON (line {exc.lineno}, column "
                f"{exc.colno}: {exc.msg})"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ReplayFileError(f"{self.path} is not a notebook-llm replay file "
                                  f'(no "format": "{FORMAT}")')
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ReplayFileError(f'the replay file {self.path} has no integer "version"')
        if version > VERSION:
            raise ReplayFileError(
                f"the replay file {self.path} was written by a newer notebook-llm (replay "
                f"format {version}; this version reads format {VERSION} and older): upgrade "
                "notebook-llm (pip install -U notebook-llm) to replay it"
            )
        entries = data.get("entries")
        if not isinstance(entries, dict):
            raise ReplayFileError(f'the replay file {self.path} has no "entries" object')
        return entries

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._raw = self._read_disk() if stamp is not None else {}
            self._checked = {}
            self._stamp = stamp

    def get(self, key: str) -> Entry | None:
        """The entry stored for ``key``, checked; ``None`` when there is none.

        Raises:
            ReplayFileError: the file or the entry is damaged or was edited by hand.
        """
        with self._lock:
            self._refresh()
            entry = self._checked.get(key)
            if entry is None:
                raw = self._raw.get(key)
                if raw is None:
                    return None
                entry = self._checked[key] = self._entry(key, raw)
            return entry

    def keys(self) -> list[str]:
        """The fingerprints stored in the file."""
        with self._lock:
            self._refresh()
            return sorted(self._raw)

    def _entry(self, key: str, raw: Any) -> Entry:
        where = f"entry {key!r} of the replay file {self.path}"
        if not isinstance(raw, dict):
            raise ReplayFileError(f"{where} is not an object")
        request, answer = raw.get("request"), raw.get("answer")
        if not isinstance(request, dict) or not isinstance(answer, dict):
            raise ReplayFileError(f'{where} needs "request" and "answer" objects')
        if raw.get("check") != _check(key, request, answer):
            raise ReplayFileError(
                f"{where} was changed after it was recorded (its check does not match): "
                "a replayed answer must be what the model said"
            )
        if not isinstance(answer.get("text"), str) or not isinstance(answer.get("usage"), dict):
            raise ReplayFileError(f'{where} has no "text" or "usage"')
        return Entry(key, request, answer, str(raw.get("recorded_at") or ""), _canonical(answer))

    # writing

    def _lock_path(self) -> str:
        """The lock every writer of this file takes: in the temporary directory, so no
        ``.lock`` file is left beside the notebook (and committed with it)."""
        import tempfile

        digest = hashlib.sha256(str(self.path.resolve()).encode("utf-8")).hexdigest()[:24]
        return os.path.join(tempfile.gettempdir(), f"notebook-llm-replay-{digest}.lock")

    def put(self, entries: list[Entry]) -> None:
        """Store ``entries`` (replacing those with the same key), merged with the file."""
        import tempfile

        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, FileLock(self._lock_path(), timeout=30):
            current = dict(self._read_disk())
            for entry in entries:
                current[entry.key] = {
                    "request": entry.request,
                    "answer": entry.answer,
                    "recorded_at": entry.recorded_at,
                    "check": _check(entry.key, entry.request, entry.answer),
                }
            document = {"format": FORMAT, "version": VERSION, "entries": current}
            text = json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
            handle, temporary = tempfile.mkstemp(
                prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent
            )
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    out.write(text)
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            self._stamp = None  # read back (with the other writers' entries) on next use


# -- answers in and out ------------------------------------------------------------------


def _answer_of(completion: Completion) -> dict[str, Any]:
    """A completion as stored: what renders it again; key-looking text redacted."""
    data = json.loads(redact(completion.to_json()))
    for name in ("cached", "attempts", "id", "provider"):
        data.pop(name, None)
    data["usage"].pop("total_tokens", None)
    return cast(dict[str, Any], data)


def _completion_of(entry: Entry, source: Path, ctx: CallContext) -> Completion:
    """The stored answer as a completion marked replayed, at $0 now."""
    try:
        completion = Completion.from_json(entry.answer_json or _canonical(entry.answer))
    except (TypeError, ValueError) as exc:
        raise ReplayFileError(
            f"entry {entry.key!r} of the replay file {source} cannot be read back: {exc}"
        ) from None
    if completion.parsed is not None and ctx.format_model is not None:
        try:
            completion.parsed = ctx.format_model.model_validate(completion.parsed)
        except ValueError as exc:
            raise ReplayFileError(
                f"entry {entry.key!r} of the replay file {source}: the stored object no longer "
                f"fits {getattr(ctx.format_model, '__name__', 'the schema')}: {exc}"
            ) from None
    completion.replay = ReplayInfo(
        replayed=True, path=str(source), key=entry.key, cost_usd=completion.cost_usd,
        cost_status=completion.cost_status, recorded_at=entry.recorded_at,
    )
    completion.provider = ctx.ref.provider
    completion.messages = ctx.request.messages
    completion.cost_usd, completion.cost_status = 0.0, "cached"
    completion.cached, completion.attempts = True, 0
    return completion


# -- modes and the session state ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Drift:
    """A recorded answer that differs from the one stored before it."""

    key: str
    path: str
    model: str
    prompt: str
    before: str
    after: str

    def diff(self) -> str:
        """A unified diff of the stored and the new text."""
        import difflib

        return "".join(difflib.unified_diff(
            self.before.splitlines(keepends=True), self.after.splitlines(keepends=True),
            fromfile="stored", tofile="new",
        ))


@dataclass
class _State:
    mode: Mode | None = None
    """Chosen by :func:`replay`; ``None``: auto when the notebook has a file, else off."""
    path: Path | None = None
    files: dict[Path, ReplayFile] = field(default_factory=dict)
    drifts: list[Drift] = field(default_factory=list)
    implicit: tuple[Path | None] | None = None
    """The running notebook's replay file, once looked up (``(None,)``: not known)."""


_state = _State()
_state_lock = threading.Lock()


def _file(path: Path) -> ReplayFile:
    with _state_lock:
        file = _state.files.get(path)
        if file is None:
            file = _state.files[path] = ReplayFile(path)
        return file


def _notebook_file() -> Path | None:
    """The running notebook's replay file when the kernel knows the notebook's path."""
    namespace = getattr(ipython_shell(), "user_ns", None)
    notebook: str | None = None
    if isinstance(namespace, dict):
        for name in ("__vsc_ipynb_file__", "__session__"):
            value = namespace.get(name)
            if isinstance(value, str) and value.endswith(".ipynb"):
                notebook = value
                break
    notebook = notebook or os.environ.get("JPY_SESSION_NAME") or None
    if not notebook or not notebook.endswith(".ipynb"):
        return None
    return sidecar_for(notebook).resolve()


def active() -> tuple[Mode, Path | None]:
    """The mode in force and its file (``$NOTEBOOK_LLM_REPLAY`` wins over :func:`replay`)."""
    forced = os.environ.get(ENV_MODE, "").strip().lower()
    mode: Mode | None = cast(Mode, forced) if forced in MODES else _state.mode
    path = _state.path
    if path is None and os.environ.get(ENV_PATH):
        path = sidecar_for(os.environ[ENV_PATH]).resolve()
    if mode is None or (path is None and mode != "off"):
        if path is None:
            if _state.implicit is None:
                _state.implicit = (_notebook_file(),)
            path = _state.implicit[0]
        if mode is None:
            mode = "auto" if path is not None and path.exists() else "off"
    return mode, path


def _mode_and_file(ctx: CallContext) -> tuple[Mode, ReplayFile | None]:
    mode, path = active()
    if mode != "off" and ctx.metadata.get("replay") == "record":
        mode = "record"  # %%llm --live: call the model, refresh the stored answer
    if mode == "off":
        return mode, None
    if path is None:
        raise ReplayFileError(
            f"replay mode {mode!r} needs a replay file, and this kernel does not know the "
            "notebook's path (nbval, papermill, VS Code): pass one, nl.replay(mode, "
            "path='notebook.ipynb') or %llm_replay MODE notebook.llm.json",
            provider=ctx.ref.provider, model=ctx.ref.name,
        )
    return mode, _file(path)


def _where() -> str:
    """``In [n]: `` when a kernel runs the call (to name the cell), else ''."""
    count = getattr(ipython_shell(), "execution_count", None)
    return f"In [{count}]: " if isinstance(count, int) else ""


def _first_prompt(request: dict[str, Any]) -> str:
    for message in reversed(request.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            line = " ".join(content.split())
            return line if len(line) <= 60 else line[:57] + "..."
    return ""


# -- middlewares -------------------------------------------------------------------------

_KEY = "_replay_key"
_RECORD = "_replay_record"


class ReplayLookup(Middleware):
    """First middleware of a call: answers from the replay file in replay and auto mode.

    A replayed answer comes back as it was (text, parsed object, usage,
    model, recorded latency) with ``replay.replayed`` set and $0 spent now;
    nothing is sent and no key is looked up.
    """

    async def before(self, ctx: CallContext) -> Completion | None:
        mode, file = _mode_and_file(ctx)
        if file is None:
            return None
        record = request_record(ctx)
        key = fingerprint(record)
        ctx.metadata[_KEY] = (key, record, file, mode)
        if mode == "record":
            return None
        entry = file.get(key)
        if entry is not None:
            # Nothing is sent: trackers count the answer at $0, the call log (a record
            # of calls made) does not get a row.
            ctx.log = False
            return _completion_of(entry, file.path, ctx)
        if mode == "replay":
            model = ctx.model_as_written or "the default model"
            raise ReplayMissingError(
                f"{_where()}no stored answer in {file.path} for this request ({model}: "
                f"{_first_prompt(record)!r}); in replay mode nothing is sent",
                provider=ctx.ref.provider, model=ctx.ref.name,
            )
        return None


class ReplayRecorder(Middleware):
    """After pricing: stores a live answer in record and auto mode (noting drift)."""

    async def after(
        self, ctx: CallContext, completion: Completion | None, error: BaseException | None
    ) -> None:
        noted = ctx.metadata.pop(_KEY, None)
        if (noted is None or completion is None or error is not None
                or completion.replay is not None
                or completion.finish_reason in ("cancelled", "error")):
            return
        key, record, file, mode = noted
        try:
            before = file.get(key) if mode == "record" else None
        except ReplayFileError:
            before = None  # a damaged entry is replaced by the new answer
        entry = Entry(key, json.loads(redact(_canonical(record))), _answer_of(completion),
                      datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        drift = before is not None and before.answer.get("text") != completion.text
        try:
            await _write(file, entry)
        except (OSError, ReplayFileError) as exc:
            # The answer arrived and was paid for: it is returned, only not stored.
            warnings.warn(f"the answer was not stored in the replay file: {exc}",
                          RuntimeWarning, stacklevel=2)
            return
        completion.replay = ReplayInfo(
            replayed=False, path=str(file.path), key=key, cost_usd=completion.cost_usd,
            cost_status=completion.cost_status, recorded_at=entry.recorded_at, drift=drift,
        )
        if drift and before is not None:
            _state.drifts.append(Drift(
                key, str(file.path), completion.model, _first_prompt(record),
                str(before.answer.get("text") or ""), completion.text,
            ))


async def _write(file: ReplayFile, entry: Entry) -> None:
    import asyncio

    await asyncio.to_thread(file.put, [entry])


# -- the public functions ----------------------------------------------------------------


class ReplaySession:
    """What :func:`replay` set; ``with nl.replay(...):`` puts the previous setting back."""

    def __init__(self, previous: tuple[Mode | None, Path | None]) -> None:
        self._previous = previous

    @property
    def mode(self) -> Mode:
        """The mode in force now."""
        return active()[0]

    @property
    def path(self) -> Path | None:
        """The replay file in force now."""
        return active()[1]

    @property
    def entries(self) -> int:
        """How many answers the file holds."""
        path = self.path
        return len(_file(path).keys()) if path is not None else 0

    def __enter__(self) -> ReplaySession:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        _state.mode, _state.path = self._previous

    def __repr__(self) -> str:
        mode, path = active()
        where = str(path) if path is not None else "no file"
        forced = f" (set by ${ENV_MODE})" if os.environ.get(ENV_MODE) else ""
        return f"<replay {mode}{forced}: {where}, {self.entries} answers>"


def replay(mode: Mode | None = None, path: str | os.PathLike[str] | None = None
           ) -> ReplaySession:
    """Record answers into a replay file, or answer from it at $0 with no key.

    Args:
        mode: ``"record"`` (call the model, store every answer), ``"replay"``
            (answer only from the file; a request not in it fails before
            anything is sent), ``"auto"`` (stored answers replay, new requests
            are sent and stored) or ``"off"``. ``None`` shows the current
            setting. ``$NOTEBOOK_LLM_REPLAY`` wins over this (CI sets it).
        path: the notebook (``x.ipynb`` means ``x.llm.json``) or the replay
            file. Needed where the kernel cannot learn the notebook's path
            (plain scripts, pytest, nbval, papermill, VS Code).

    Returns:
        A :class:`ReplaySession`; as a context manager it restores the previous setting.

    Raises:
        ValueError: an unknown mode, or a path that names neither a notebook nor a JSON file.
    """
    previous = (_state.mode, _state.path)
    if mode is not None and mode not in MODES:
        raise ValueError(f"replay mode {mode!r}: use one of {', '.join(MODES)}")
    if path is not None:
        _state.path = sidecar_for(path).resolve()
    if mode is not None:
        _state.mode = mode
        if mode != "off" and _state.path is None and active()[1] is None:
            _state.mode = previous[0]
            raise ValueError(
                "this kernel does not know the notebook's path (nbval, papermill, VS Code, a "
                f"script): pass path='notebook.ipynb' or a .llm.json file to replay({mode!r})"
            )
    if _state.path is not None:
        _file(_state.path).get("")  # a damaged or newer file is reported now
    return ReplaySession(previous)


def drifts() -> list[Drift]:
    """The answers recorded in this session that differ from the stored ones."""
    return list(_state.drifts)


class ReplayDiff:
    """What :func:`replay_diff` returns: shows as text (and HTML in a notebook)."""

    def __init__(self, items: list[Drift]) -> None:
        self.drifts = items

    def __len__(self) -> int:
        return len(self.drifts)

    def __iter__(self) -> Iterator[Drift]:
        return iter(self.drifts)

    def __str__(self) -> str:
        if not self.drifts:
            return "no drift: every answer recorded in this session matched the stored one"
        parts = [f"{d.model}: {d.prompt!r} ({d.key})\n{d.diff()}" for d in self.drifts]
        return "\n".join(parts)

    def __repr__(self) -> str:
        from notebook_llm._render import terminal_text

        return terminal_text(str(self))

    def _repr_html_(self) -> str:
        from notebook_llm._render import html_escape

        return f"<pre>{html_escape(str(self))}</pre>"


def replay_diff() -> ReplayDiff:
    """How the answers re-recorded in this session differ from the stored ones.

    Each drift is shown as a unified diff of the stored and the new text.
    """
    return ReplayDiff(drifts())
