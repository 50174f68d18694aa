"""The one loopback HTTP server base the tests' fake servers share.

An aiohttp application on 127.0.0.1 (a free port), run by its own event loop
on a background thread, so sync tests and async tests (on their own loop) can
both talk to it. A subclass answers every method and path in :meth:`handle`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """Start with ``with Server() as srv:`` (or :meth:`start`); ``srv.url`` is its base URL.

    Args:
        client_max_size: the largest request body accepted, in bytes.
        shutdown_timeout: how long :meth:`stop` waits for replies still being
            written (short: a test's deliberately slow reply must not hold it).
    """

    def __init__(self, *, client_max_size: int = 1024**2, shutdown_timeout: float = 0.5) -> None:
        self.url = ""
        self._client_max_size = client_max_size
        self._shutdown_timeout = shutdown_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request (every method and path comes here)."""
        raise NotImplementedError

    def start(self) -> Any:
        """Start serving; returns self once the port is bound."""
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=loop.run_forever, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        self._loop = loop
        asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=10)
        return self

    async def _astart(self) -> None:
        app = web.Application(client_max_size=self._client_max_size)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self._shutdown_timeout
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def _ashutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Handlers whose client already left are not tracked by aiohttp: cancel them.
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Stop serving and join the background thread."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._ashutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=10)
        loop.close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
