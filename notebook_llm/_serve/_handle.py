"""``nl.serve()`` and the :class:`Server` handle it returns.

The server runs on the library's background event loop (``core.loop``), the
loop every sync call of the library already runs on: it never blocks a
notebook cell, and its calls share the client's providers and connections.
Starting and stopping are coroutines submitted to that loop.
"""

from __future__ import annotations

import html
import ipaddress
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from notebook_llm.core import loop as _loop
from notebook_llm.core.money import format_usd
from notebook_llm.core.secrets import remember

if TYPE_CHECKING:
    from aiohttp import web

    from notebook_llm._client import Client
    from notebook_llm._serve._app import Handler, Settings, Traffic

__all__ = ["Server", "serve"]

_SHUTDOWN_GRACE_S = 2.0


def is_loopback(host: str) -> bool:
    """True for ``127.0.0.1``, ``::1``, ``localhost`` and the rest of 127.0.0.0/8."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Server:
    """A running ``nl.serve()`` server: its URL, its traffic, and ``stop()``.

    ``url`` is the base URL for OpenAI clients (it ends in ``/v1``). In a
    notebook the handle shows the URL and the traffic so far.
    """

    def __init__(self, settings: Settings, runner: web.BaseRunner, host: str, port: int) -> None:
        self._settings = settings
        self._runner: web.BaseRunner | None = runner
        self.host = host
        """The address listened on."""
        self.port = port
        """The port listened on (the one chosen when ``port=0``)."""
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/v1"
        """The base URL for OpenAI clients, e.g. ``http://127.0.0.1:54321/v1``."""
        self.started_at = time.time()

    @property
    def running(self) -> bool:
        """True until :meth:`stop`."""
        return self._runner is not None

    @property
    def traffic(self) -> Traffic:
        """Requests, errors, tokens and cost so far."""
        return self._settings.traffic

    @property
    def models(self) -> list[str] | None:
        """The models offered (``None``: every model the client can reach)."""
        return None if self._settings.models is None else list(self._settings.models)

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` answers: models in memory, memory, traffic."""
        from notebook_llm._serve._app import health

        return health(self._settings)

    def stop(self) -> None:
        """Stop listening; calls in flight are cancelled after a short grace period."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        from notebook_llm.providers.discovery import unignore_port

        try:
            _loop.run(runner.cleanup())
        finally:
            unignore_port(self.port)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        t = self.traffic
        return (f"Server(url={self.url!r}, {state}, requests={t.requests}, errors={t.errors}, "
                f"tokens={t.input_tokens}+{t.output_tokens})")

    def _repr_html_(self) -> str:
        t = self.traffic
        e = html.escape
        state = "running" if self.running else "stopped"
        models = "every model the client can reach" if self.models is None else ", ".join(
            self.models)
        peers = ", ".join(f"{peer} ({count})" for peer, count in sorted(t.by_peer.items()))
        rows = [
            ("URL", f"<code>{e(self.url)}</code>"),
            ("state", e(state)),
            ("models", e(models)),
            ("key", "required (Bearer)" if self._settings.api_key else "none (loopback only)"),
            ("requests", f"{t.requests} ({t.errors} errors, {t.in_flight} in flight, "
                         f"{t.streams} streamed)"),
            ("tokens", f"{t.input_tokens} in / {t.output_tokens} out"),
            ("cost", e(format_usd(t.cost_usd, "priced"))),
            ("callers", e(peers or "none yet")),
        ]
        body = "".join(f"<tr><th style='text-align:left'>{name}</th><td style='text-align:"
                       f"left'>{value}</td></tr>" for name, value in rows)
        return f"<table><caption>notebook-llm server</caption>{body}</table>"


def serve(
    port: int = 0,
    host: str = "127.0.0.1",
    models: Sequence[str] | None = None,
    api_key: str | None = None,
    *,
    client: Client | None = None,
    max_concurrent: int = 128,
    max_body_bytes: int = 16 * 1024 * 1024,
) -> Server:
    """Serve the library's models over HTTP as an OpenAI-compatible API.

    Any OpenAI client (the official SDKs, simonw/llm, an editor extension,
    another notebook) can then use ``local:``, ``offline:`` and every
    configured provider's models, through this process's client: each call is
    logged (tagged ``serve`` and ``serve:<caller's address>``), priced,
    cached and budgeted like the notebook's own, and the provider keys never
    leave the process. It runs on the library's background loop, so the
    notebook stays free.

    Endpoints: ``POST /v1/chat/completions`` (streaming too),
    ``POST /v1/embeddings``, ``GET /v1/models``, ``POST /v1/responses`` (text),
    ``GET /health``.

    Args:
        port: the port; 0 picks a free one (see ``.url``).
        host: the address to listen on. Anything but loopback needs ``api_key``.
        models: the model strings or aliases to offer (``None``: every model the
            client can reach).
        api_key: a key callers must send as ``Authorization: Bearer <key>``.
        client: the client whose calls answer (default: ``nl.default_client()``).
        max_concurrent: requests in flight at once; more get 429 with ``Retry-After``.
        max_body_bytes: the largest request body; a larger one gets 413.

    Returns:
        The running :class:`Server`: ``.url``, ``.stop()``, ``.traffic``.

    Raises:
        ValueError: a non-loopback ``host`` without ``api_key``, or a bad limit.
        notebook_llm.errors.LLMError: a model in ``models`` names no provider.
        OSError: the port is taken.
    """
    if not is_loopback(host) and not api_key:
        raise ValueError(
            f"Serving on {host!r} would let anyone who can reach it use your models and "
            "keys: pass api_key='<a long random string>' (callers then send "
            "'Authorization: Bearer <key>'), or keep host='127.0.0.1'"
        )
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be 0 (any free port) to 65535, not {port!r}")
    if max_concurrent < 1 or max_body_bytes < 1024:
        raise ValueError("max_concurrent must be at least 1 and max_body_bytes at least 1024")
    if isinstance(models, str):
        models = [models]
    from notebook_llm._api import default_client
    from notebook_llm._serve._app import Settings, build_handler

    chosen = client or default_client()
    offered = None if models is None else list(models)
    for name in offered or ():
        chosen.resolve(name)  # an unknown provider fails here, not at the first call
    remember(api_key)
    settings = Settings(client=chosen, models=offered, api_key=api_key,
                        max_concurrent=max_concurrent, max_body_bytes=max_body_bytes)
    runner, bound = _loop.run(_start(build_handler(settings), host, port))
    settings.own_addresses.add((host.lower().strip("[]"), bound))
    from notebook_llm.providers.discovery import ignore_port

    ignore_port(bound)
    return Server(settings, runner, host, bound)


async def _start(handler: Handler, host: str, port: int) -> tuple[web.BaseRunner, int]:
    from aiohttp import web

    # aiohttp's low-level server: a handler, no application (see _app.build_handler).
    # handler_cancellation: a client that goes away cancels its request's handler.
    server = web.Server(handler, handler_cancellation=True, access_log=None)
    runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_GRACE_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1])
    return runner, bound
