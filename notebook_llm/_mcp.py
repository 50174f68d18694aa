"""Connections to MCP servers, whose tools become :class:`~notebook_llm.core.types.Tool`.

Uses the official ``mcp`` SDK (the ``mcp`` extra). Each connection lives in
one task on the library's loop, which enters and leaves the SDK's context
managers (they must be left in the task that entered them) and waits; tool
calls are requests on its session from any task. A server that dies (its
holder task ends) fails the calls in flight with a clear error, and the next
call starts it again. Every connection is closed at interpreter exit, which is
also a kernel's shutdown.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import shlex
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from notebook_llm.core import loop as _loop
from notebook_llm.core.errors import ConnectionError, InvalidRequestError, UnsupportedError
from notebook_llm.core.types import Tool

__all__ = ["MCPServer", "aconnect", "close_all", "connect", "forget", "servers"]

T = TypeVar("T")
_CONNECT_TIMEOUT_S = 30.0
_servers: dict[str, MCPServer] = {}


class MCPToolError(Exception):
    """The server ran the tool and reported an error (the model is told)."""


class MCPConnectionError(ConnectionError):
    """The MCP server could not be started or reached, or stopped mid-call."""

    hint = "Check the command or URL; the next call starts the server again."


def _require_sdk() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise UnsupportedError(
            "MCP needs the official SDK: pip install 'notebook-llm[mcp]' (or pip install mcp)"
        ) from None


def _default_name(target: str) -> str:
    if target.startswith(("http://", "https://")):
        base = re.sub(r"^https?://", "", target).split("/")[0].split(":")[0]
    else:
        words = shlex.split(target)
        # "uvx mcp-server-time", "python -m mcp_server_time": the server's own name.
        runners = {"uvx", "npx", "pipx", "python", "python3", "-m", "run", "-y", "node"}
        names = [w.rsplit("/", 1)[-1] for w in words]
        base = next((w for w in names if w not in runners and not w.startswith("-")
                     and not w.startswith("python")), names[0] if names else "mcp")
        base = base.removesuffix(".py")
    base = re.sub(r"^(mcp[-_]server[-_]|server[-_])", "", base)
    return re.sub(r"[^A-Za-z0-9_]", "_", base).strip("_") or "mcp"


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside the SDK's exception groups."""
    inner = getattr(exc, "exceptions", None)
    while inner:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc


def _field(obj: Any, snake: str, camel: str) -> Any:
    # mcp 2 names fields in snake_case, mcp 1 in camelCase.
    value = getattr(obj, snake, None)
    return getattr(obj, camel, None) if value is None else value


def _result_text(result: Any) -> str:
    parts: list[str] = []
    for block in getattr(result, "content", None) or []:
        text = getattr(block, "text", None)
        if text is not None:
            parts.append(str(text))
        else:
            kind = getattr(block, "type", type(block).__name__)
            parts.append(f"[{kind} content not shown]")
    structured = _field(result, "structured_content", "structuredContent")
    if not parts and structured is not None:
        import json

        parts.append(json.dumps(structured, ensure_ascii=False, default=str))
    return "\n".join(parts)


class MCPServer:
    """A connection to one MCP server and the tools it offers.

    Pass it (or its ``tools``) as ``tools=``; each tool is named
    ``prefix + the server's name for it``. ``close()`` ends the connection;
    a call after the server died or was closed starts it again.
    """

    def __init__(self, target: str, *, name: str, prefix: str,
                 env: dict[str, str] | None = None, timeout: float = _CONNECT_TIMEOUT_S) -> None:
        self.target = target
        self.name = name
        self.prefix = prefix
        self.env = env
        self.timeout = timeout
        self.tools: list[Tool] = []
        """The server's tools, as listed when it was (last) connected."""
        self._session: Any = None
        self._holder: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self.error: BaseException | None = None
        """Why the connection last ended, when it ended by itself."""

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        names = ", ".join(tool.name for tool in self.tools)
        return f"MCPServer({self.name!r}, {state}, tools=[{names}])"

    @property
    def connected(self) -> bool:
        """True while the server process (or HTTP session) is up."""
        return self._holder is not None and not self._holder.done()

    def as_tools(self) -> list[Tool]:
        """The tools, for ``tools=[server]``."""
        return list(self.tools)

    # -- connection (on the library loop) -----------------------------------

    async def _open(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.connected:
                return
            ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._stop = asyncio.Event()
            self._holder = asyncio.ensure_future(self._hold(ready, self._stop))
            try:
                session = await asyncio.wait_for(asyncio.shield(ready), self.timeout)
            except BaseException:
                self._holder.cancel()
                raise
            listed = await session.list_tools()
            self._session = session
            self.tools = [self._tool(spec) for spec in listed.tools]

    async def _hold(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.target.startswith(("http://", "https://")):
                    from mcp.client.streamable_http import streamable_http_client

                    streams = await stack.enter_async_context(streamable_http_client(self.target))
                else:
                    from mcp import StdioServerParameters
                    from mcp.client.stdio import stdio_client

                    words = shlex.split(self.target)
                    params = StdioServerParameters(command=words[0], args=words[1:],
                                                   env=self.env)
                    # The server's log goes to the process's own stderr: a
                    # kernel's sys.stderr (a cell's output) has no file number.
                    errlog = sys.__stderr__ or stack.enter_context(open(os.devnull, "w"))
                    streams = await stack.enter_async_context(stdio_client(params, errlog))
                session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
                await session.initialize()
                ready.set_result(session)
                await stop.wait()
        except BaseException as exc:
            self.error = leaf = _leaf(exc)
            if not ready.done():
                ready.set_exception(MCPConnectionError(
                    f"Could not start MCP server {self.name!r} ({self.target}): "
                    f"{type(leaf).__name__}: {leaf}"))
            if not isinstance(exc, (Exception, asyncio.CancelledError)):
                raise
        finally:
            self._session = None

    async def _call(self, tool_name: str, arguments: dict[str, Any]) -> str:
        if not self.connected:
            await self._open()
        session, holder = self._session, self._holder
        assert holder is not None
        request = asyncio.ensure_future(session.call_tool(tool_name, arguments))
        await asyncio.wait({request, holder}, return_when=asyncio.FIRST_COMPLETED)
        failure = None if not request.done() else request.exception()
        if not request.done() or (failure is not None and (
                holder.done() or "closed" in str(failure).lower())):
            request.cancel()
            await self._close()
            why = f" ({failure})" if failure is not None else ""
            raise MCPConnectionError(
                f"MCP server {self.name!r} stopped while running {tool_name}{why}. "
                "The next call starts it again."
            )
        if failure is not None:
            raise MCPToolError(f"{type(failure).__name__}: {failure}")
        result = request.result()
        text = _result_text(result)
        if _field(result, "is_error", "isError"):
            raise MCPToolError(text or f"{tool_name} failed")
        return text

    async def _close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        holder, self._holder = self._holder, None
        if holder is not None and not holder.done():
            try:
                await asyncio.wait_for(holder, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                holder.cancel()

    def _tool(self, spec: Any) -> Tool:
        remote = spec.name
        server = self

        async def call(**arguments: Any) -> str:
            return await _on_library_loop(server._call(remote, arguments))

        call.__name__ = f"{self.prefix}{remote}"
        schema = dict(_field(spec, "input_schema", "inputSchema")
                      or {"type": "object", "properties": {}})
        return Tool(name=f"{self.prefix}{remote}", description=spec.description or "",
                    parameters=schema, function=call)

    # -- public, sync and async ---------------------------------------------

    async def acall(self, tool_name: str, **arguments: Any) -> str:
        """Call one of the server's tools (by its own name) and return its text."""
        return await _on_library_loop(self._call(tool_name, arguments))

    def call(self, tool_name: str, **arguments: Any) -> str:
        """Sync version of :meth:`acall`."""
        return _loop.run(self._call(tool_name, arguments))

    async def aclose(self) -> None:
        """Close the connection (stops a stdio server)."""
        await _on_library_loop(self._close())

    def close(self) -> None:
        """Sync version of :meth:`aclose`."""
        _loop.run(self._close())


async def _on_library_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the library's loop, where the sessions live."""
    library = _loop.get_loop().loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is library:
        return await coro
    return await asyncio.wrap_future(_loop.get_loop().submit(coro))


def _check_target(target: str) -> str:
    if target.startswith("stdio:"):
        command = target.removeprefix("stdio:").strip()
        if not command:
            raise InvalidRequestError("stdio: needs a command, e.g. 'stdio:uvx mcp-server-time'")
        return command
    if target.startswith(("http://", "https://")):
        return target
    raise InvalidRequestError(
        f"{target!r}: connect to 'stdio:COMMAND ARGS' (a server this kernel starts) or "
        "'http(s)://host/mcp' (a running server)"
    )


async def aconnect(target: str, *, name: str | None = None, prefix: str | None = None,
                   env: dict[str, str] | None = None,
                   timeout: float = _CONNECT_TIMEOUT_S) -> MCPServer:
    """Connect to an MCP server and list its tools.

    Args:
        target: ``"stdio:command args"`` (started now, stopped at exit) or an
            ``http(s)://`` URL of a Streamable HTTP server.
        name: what to call it (default: from the command or host); connecting
            again under a name closes the old connection.
        prefix: put before each tool's name (default: ``name + "_"``; ``""``: none).
        env: environment variables for a stdio server (default: the SDK's safe set).
        timeout: seconds to wait for the server to start.
    """
    _require_sdk()
    command = _check_target(target)
    _register_exit()
    name = name or _default_name(command)
    server = MCPServer(command, name=name, prefix=f"{name}_" if prefix is None else prefix,
                       env=env, timeout=timeout)
    old = _servers.pop(name, None)
    if old is not None:
        await old.aclose()
    await _on_library_loop(server._open())
    _servers[name] = server
    return server


def connect(target: str, *, name: str | None = None, prefix: str | None = None,
            env: dict[str, str] | None = None, timeout: float = _CONNECT_TIMEOUT_S) -> MCPServer:
    """Sync version of :func:`aconnect`."""
    return _loop.run(aconnect(target, name=name, prefix=prefix, env=env, timeout=timeout))


def servers() -> dict[str, MCPServer]:
    """The connections made with :func:`connect`, by name."""
    return dict(_servers)


def forget(name: str) -> None:
    """Drop a connection from :func:`servers` (close it first)."""
    _servers.pop(name, None)


def close_all() -> None:
    """Close every connection (done at interpreter exit, so at kernel shutdown)."""
    background = _loop.get_loop()
    for server in list(_servers.values()):
        if not background.loop.is_running():
            break
        with contextlib.suppress(Exception):
            background.submit(server._close()).result(timeout=6)
    _servers.clear()


def _register_exit() -> None:
    # After the library loop exists: atexit runs in reverse, so this runs
    # while the loop still does.
    global _exit_registered
    if not _exit_registered:
        _exit_registered = True
        _loop.get_loop()
        atexit.register(close_all)


_exit_registered = False
