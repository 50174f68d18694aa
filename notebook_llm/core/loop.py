"""The library's own event loop, on one background thread.

The sync API submits coroutines here instead of calling ``asyncio.run``, so it
works inside a running loop (a Jupyter cell) and in plain scripts alike, with
or without nest_asyncio. Ctrl-C (KeyboardInterrupt) while waiting cancels the
coroutine and waits briefly for it to unwind, so HTTP responses get closed.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future, wait as wait_futures
from typing import Any, TypeVar

__all__ = ["BackgroundLoop", "get_loop", "iterate", "run", "wait"]

T = TypeVar("T")

_CANCEL_GRACE_S = 5.0


class BackgroundLoop:
    """An asyncio loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="notebook-llm-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop; returns a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block until it finishes.

        A KeyboardInterrupt while blocked cancels the coroutine, waits for it
        to clean up, then re-raises.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("cannot block on the library loop from inside it; use await")
        future = self.submit(coro)
        try:
            return wait(future)
        except KeyboardInterrupt:
            future.cancel()
            try:
                future.result(timeout=_CANCEL_GRACE_S)
            except BaseException:  # noqa: BLE001 - we are re-raising the interrupt
                pass
            raise

    def stop(self) -> None:
        """Stop the loop (used at interpreter exit)."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=2)


def wait(
    future: Future[T], *, interval: float = 0.25, tick: Callable[[], object] | None = None
) -> T:
    """Block until ``future`` is done and return its result (or raise its error).

    Waiting in short slices keeps the thread responsive to Ctrl-C on every
    platform (a plain ``result()`` can swallow the signal on Windows);
    ``tick()`` runs between slices (the notebook layer dispatches widget
    clicks there). The slices wait for the future to be *done*, never on
    ``result(timeout=)``: that poll's timeout is the built-in TimeoutError on
    Python >= 3.11, which the call's own TimeoutError (a subclass) would be
    mistaken for, and the wait would never end.
    """
    while not future.done():
        wait_futures((future,), timeout=interval)
        if tick is not None and not future.done():
            tick()
    return future.result()


_lock = threading.Lock()
_instance: BackgroundLoop | None = None


def get_loop() -> BackgroundLoop:
    """The process-wide background loop, started on first use."""
    global _instance
    if _instance is None:
        with _lock:
            if _instance is None:
                _instance = BackgroundLoop()
                atexit.register(_instance.stop)
    return _instance


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the background loop, from any thread."""
    return get_loop().run(coro)


async def _next(agen: AsyncIterator[T]) -> T:
    # A coroutine around __anext__, which may return any awaitable (a future,
    # an object with __await__): run_coroutine_threadsafe takes coroutines only.
    return await agen.__anext__()


def iterate(
    agen: AsyncIterator[T], on_interrupt: Callable[[], object] | None = None
) -> Iterator[T]:
    """Turn an async iterator into a sync one, driven on the background loop.

    Leaving the loop early, ``close()`` on the generator, or Ctrl-C closes the
    async iterator (``aclose``) on the loop, so its HTTP response is released.
    ``on_interrupt`` is called (from this thread) before closing on Ctrl-C.
    """
    background = get_loop()
    try:
        while True:
            try:
                item = background.run(_next(agen))
            except StopAsyncIteration:
                return
            yield item
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        raise
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            try:
                background.run(aclose())
            except (RuntimeError, KeyboardInterrupt):
                pass
