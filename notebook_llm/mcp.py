"""Tools from MCP servers: ``nl.mcp.connect("stdio:uvx mcp-server-time")``.

See :mod:`notebook_llm._mcp` (needs the ``mcp`` extra: ``pip install
'notebook-llm[mcp]'``).
"""

from notebook_llm._mcp import MCPServer, aconnect, close_all, connect, servers

__all__ = ["MCPServer", "aconnect", "close_all", "connect", "servers"]
