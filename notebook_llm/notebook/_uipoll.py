"""Let widget clicks reach a cell that is still running.

A click on a widget is a ``comm_msg`` on the shell channel. The kernel handles
shell messages one at a time, so while a cell runs (consuming a stream) the
click waits in a socket until the cell ends: far too late for a Stop button.

:class:`UIEvents` reads that socket from inside the running cell, on the main
thread: comm messages are dispatched at once to the comm manager (the widget's
``on_click`` runs); every other message (``execute_request`` of the cells
queued by "Run all", completion requests...) is kept and handed back to the
kernel, in order, when the stream ends, so cells still run one after another.
This is the idea of the ``jupyter-ui-poll`` package, done against ipykernel 7,
where shell messages reach the main thread through an inproc socket that the
shell-channel thread feeds (``jupyter-ui-poll`` 1.1 calls
``Kernel.do_one_iteration``, which ipykernel 7 removed). ipykernel 6 (6.17 in
Colab's runtime) reads the shell socket on the main thread itself, through
``Kernel.shell_stream``; the same code reads that one, and the parent header
lives in ``Kernel._parent_ident`` there instead of a context variable.

Anything unexpected (another kernel, a changed private layout) makes
:meth:`UIEvents.for_kernel` return None: the Stop button then has no effect,
and interrupting the kernel still stops the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["UIEvents", "deferred_sigint"]

_COMM_TYPES = frozenset({"comm_open", "comm_msg", "comm_close"})


@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold SIGINT back for a few lines (applied when the block ends).

    A KeyboardInterrupt between receiving a shell message and keeping it would
    lose the message; between two frames of a display update, garble it.
    """
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = mask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, previous)


def _main_shell_stream(kernel: Any) -> Any:
    """The ZMQStream whose socket delivers the main shell's messages."""
    thread = getattr(kernel, "shell_channel_thread", None)
    if thread is not None:  # ipykernel 7: fed by the shell-channel thread
        pair = getattr(thread.manager, "_shell_channel_to_main", None)
        return getattr(pair, "to_stream", None)
    return getattr(kernel, "shell_stream", None)  # ipykernel 6, or 7 without subshells


class UIEvents:
    """Dispatch pending widget messages while the current cell keeps running.

    Call :meth:`poll` every few tens of milliseconds from the cell's (main)
    thread, and :meth:`close` once, when the blocking work is over.
    """

    def __init__(self, kernel: Any, stream: Any) -> None:
        self._kernel = kernel
        self._stream = stream
        self._socket = stream.socket
        self._held: list[list[Any]] = []
        self._tasks: set[Any] = set()  # async comm handlers, kept alive until done
        self._closed = False

    @classmethod
    def for_kernel(cls, kernel: Any) -> UIEvents | None:
        """A poller for ``kernel`` (an ipykernel Kernel), or None if unsupported."""
        if kernel is None or threading.current_thread() is not threading.main_thread():
            return None
        try:
            stream = _main_shell_stream(kernel)
            if stream is None or stream.socket is None:
                return None
            if not callable(getattr(stream, "_recv_callback", None)):
                return None
            if not all(hasattr(kernel, name) for name in ("session", "shell_handlers")):
                return None
        except Exception:  # noqa: BLE001 - unknown kernel layout: no polling
            return None
        return cls(kernel, stream)

    def poll(self) -> int:
        """Read every pending shell message; dispatch comms, hold the rest.

        Returns:
            How many comm messages were dispatched.
        """
        import zmq

        if self._closed:
            return 0
        dispatched = 0
        while True:
            with deferred_sigint():
                try:
                    frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return dispatched
                if self._msg_type(frames) in _COMM_TYPES:
                    dispatched += 1
                    self._dispatch_comm(frames)
                else:
                    self._held.append(frames)

    def _msg_type(self, frames: list[Any]) -> str | None:
        session = self._kernel.session
        try:
            _, rest = session.feed_identities(frames, copy=False)
            # content=False peeks: the signature is not recorded, so the kernel
            # can still verify the message when it handles it for real.
            header = session.deserialize(rest, content=False, copy=False)["header"]
        except Exception:  # noqa: BLE001 - let the kernel deal with (and log) it
            return None
        msg_type: str | None = header.get("msg_type")
        return msg_type

    def _dispatch_comm(self, frames: list[Any]) -> None:
        kernel = self._kernel
        idents, rest = kernel.session.feed_identities(frames, copy=False)
        msg = kernel.session.deserialize(rest, content=True, copy=False)
        handler = kernel.shell_handlers.get(msg["header"]["msg_type"])
        if handler is None:
            return
        # Outputs of the handler belong to the comm message; the cell's own
        # display updates must keep their parent, so restore it afterwards.
        parent = kernel.get_parent("shell")
        ident = _parent_ident(kernel)
        kernel.set_parent(idents, msg, "shell")
        try:
            result = handler(self._reply_socket(), idents, msg)
            if inspect.isawaitable(result):
                self._tasks.add(asyncio.ensure_future(result))
        except Exception:  # as the kernel does: log, keep going
            kernel.log.error("Exception in comm handler", exc_info=True)
        finally:
            kernel.set_parent(ident, parent, "shell")

    def _reply_socket(self) -> Any:
        thread = getattr(self._kernel, "shell_channel_thread", None)
        if thread is not None:
            return thread.manager.get_subshell_to_shell_channel_socket(None)
        return self._stream

    def close(self) -> None:
        """Hand the held messages back to the kernel, in the order they came."""
        if self._closed:
            return
        self.poll()
        self._closed = True
        held, self._held = self._held, []
        stream = self._stream
        for frames in held:
            # Exactly what the stream does on receipt: the kernel's handler
            # becomes a task that waits for the running cell to finish.
            stream._run_callback(stream._recv_callback, frames)
        # Our reads may have eaten the socket's edge-triggered wake-up: make the
        # stream look again for anything that arrived since.
        with contextlib.suppress(Exception):
            stream.io_loop.add_callback(stream._rebuild_io_state)

    @property
    def held(self) -> int:
        """How many non-comm messages are waiting to be handed back."""
        return len(self._held)


def _parent_ident(kernel: Any) -> Any:
    var = getattr(kernel, "_shell_parent_ident", None)
    if var is not None and hasattr(kernel, "_get_shell_context_var"):
        return kernel._get_shell_context_var(var)  # ipykernel 7
    idents = getattr(kernel, "_parent_ident", None)
    if isinstance(idents, dict):
        return idents.get("shell")  # ipykernel 6
    return idents
