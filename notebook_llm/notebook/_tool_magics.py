"""Tools in the magics: ``%%llm --tool NAME`` / ``%%chat --tool NAME`` and
``%llm_mcp add NAME COMMAND`` / ``%llm_mcp list`` / ``%llm_mcp remove NAME``.

``--tool NAME`` names a function, a :class:`~notebook_llm.core.types.Tool`, a
toolbox object (its public methods are tools) or a list of them in the user's
namespace, or an MCP server added with ``%llm_mcp``. A chat remembers its
tools from turn to turn until ``--tool`` names others (or ``--no-tools``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, magics_class

from notebook_llm import _render
from notebook_llm.core._toolloop import asking
from notebook_llm.core.errors import LLMError
from notebook_llm.notebook._errors import CellError
from notebook_llm.notebook._ipython import line_magic
from notebook_llm.notebook._tool_view import Approvals, QuestionServer

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["ToolMagics", "ToolSession", "chat_tool_options", "tool_options"]


def _lookup(name: str, namespace: dict[str, Any]) -> Any:
    from notebook_llm._mcp import servers

    if name in namespace:
        return namespace[name]
    server = servers().get(name)
    if server is not None:
        return server
    raise CellError(
        f"--tool {name}: no such variable or MCP server",
        title="UsageError",
        hint="Define the function first, or add a server with %llm_mcp add NAME COMMAND.",
    )


def tool_options(args: Any, namespace: dict[str, Any]) -> dict[str, Any]:
    """The call options the tool flags ask for (``{}`` without them)."""
    options: dict[str, Any] = {}
    tools: list[Any] = []
    for name in getattr(args, "tool", None) or []:
        value = _lookup(name.strip(), namespace)
        tools.extend(value if isinstance(value, (list, tuple)) else [value])
    if tools:
        options["tools"] = tools
    rounds = getattr(args, "max_tool_rounds", None)
    if rounds is not None:
        if rounds < 0:
            raise CellError("--max-tool-rounds must be 0 or more", title="UsageError")
        options["max_tool_rounds"] = rounds
    if getattr(args, "approve", None):
        options["approve"] = args.approve
    return options


def chat_tool_options(remembered: dict[str, dict[str, Any]], chat: str, args: Any,
                      namespace: dict[str, Any]) -> dict[str, Any]:
    """The tool options of one ``%%chat`` turn: the flags given now (remembered
    for the next turns), else the ones remembered for this conversation."""
    given = tool_options(args, namespace)
    if getattr(args, "new", False):
        remembered.pop(chat, None)
    if given:
        remembered[chat] = {**remembered.get(chat, {}), **given}
    return dict(remembered.get(chat, {}))


class ToolSession:
    """What one streamed cell needs for tools: the asker for ``approve="ask"``
    (entered around the call that makes the stream) and the question server."""

    def __init__(self, kernel: Any) -> None:
        self.approvals = Approvals()
        self.kernel = kernel
        self.server: QuestionServer | None = None

    @contextlib.contextmanager
    def asking(self) -> Iterator[None]:
        """Questions from the stream made in this block come to this cell."""
        with asking(self.approvals.ask):
            yield

    def serve(self, view: Any, widgets: bool) -> QuestionServer:
        """The question server for ``view``: buttons with widgets, else a prompt
        where a person has one, else refusals that say so."""
        # ipykernel keeps the execute_request's allow_stdin: False under
        # nbclient, nbval and papermill, True in a person's frontend.
        stdin = True if self.kernel is None else bool(getattr(self.kernel, "_allow_stdin", False))
        slot = getattr(view, "slot", None)
        self.server = QuestionServer(self.approvals, slot, widgets=widgets, stdin=stdin)
        return self.server

    def close(self) -> None:
        """Settle questions still on screen."""
        if self.server is not None:
            self.server.tick()
            self.server.close()


class _ServersTable:
    def __init__(self, rows: list[list[Any]]) -> None:
        self.rows = rows

    def _repr_html_(self) -> str:
        return _render.plain_table_html(["name", "target", "state", "tools"], self.rows)

    def __repr__(self) -> str:
        if not self.rows:
            return "No MCP servers; add one with %llm_mcp add NAME COMMAND"
        return _render.terminal_text("\n".join("  ".join(row) for row in self.rows))


@magics_class
class ToolMagics(Magics):
    """``%llm_mcp``: MCP servers whose tools ``--tool NAME`` can use."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)

    @line_magic
    def llm_mcp(self, line: str) -> Any:
        """``%llm_mcp add NAME COMMAND ARGS`` (or ``add NAME http://...``) starts or
        reaches a server; ``%llm_mcp list`` shows them and their tools;
        ``%llm_mcp remove NAME`` closes one. Then ``%%llm --tool NAME``."""
        from notebook_llm import _mcp

        action, _, rest = line.strip().partition(" ")
        if action == "add":
            name, _, target = rest.strip().partition(" ")
            target = target.strip()
            if not name.isidentifier() or not target:
                raise CellError("usage: %llm_mcp add NAME COMMAND [ARGS]  (or NAME http://...)",
                                title="UsageError")
            if not target.startswith(("http://", "https://", "stdio:")):
                target = f"stdio:{target}"
            try:
                server = _mcp.connect(target, name=name)
            except LLMError as exc:
                raise CellError(str(exc), title=type(exc).__name__) from None
            return server
        if action == "remove":
            found = _mcp.servers().get(rest.strip())
            if found is None:
                raise CellError(f"no MCP server named {rest.strip()!r}", title="UsageError")
            found.close()
            _mcp.forget(found.name)
            return None
        if action in ("list", ""):
            rows: list[list[Any]] = [[s.name, s.target, "connected" if s.connected else "closed",
                     ", ".join(tool.name for tool in s.tools)]
                    for s in _mcp.servers().values()]
            return _ServersTable(rows)
        raise CellError(f"%llm_mcp {action}: use add, list or remove", title="UsageError")
