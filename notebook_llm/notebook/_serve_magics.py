"""``%llm_serve start|stop|status``: ``nl.serve()`` from a notebook cell.

One server per kernel at a time; ``start`` shows its handle (the URL and the
traffic so far), ``status`` shows it again, ``stop`` ends it.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from IPython.core.magic import Magics, magics_class

from notebook_llm.notebook._ipython import argument, line_magic, magic_arguments, parse_argstring

__all__ = ["ServeMagics"]


@magics_class
class ServeMagics(Magics):
    """The server magic."""

    server: Any = None

    @magic_arguments()
    @argument("action", choices=("start", "stop", "status"), help="what to do")
    @argument("--port", type=int, default=0, help="port (default: a free one)")
    @argument("--host", default="127.0.0.1", help="address (others need a key)")
    @argument("--model", action="append", dest="models", default=None,
              help="a model to offer (repeat; default: every reachable model)")
    @argument("--api-key-env", default=None, metavar="VAR",
              help="environment variable holding the key callers must send")
    @line_magic
    def llm_serve(self, line: str) -> Any:
        """Serve this kernel's models over HTTP, OpenAI-style: ``%llm_serve start``."""
        from IPython.core.error import UsageError

        import notebook_llm as nl

        args = parse_argstring(self.llm_serve, " ".join(shlex.split(line)))
        server = ServeMagics.server
        if args.action == "stop":
            if server is None or not server.running:
                print("No server is running.")
                return None
            server.stop()
            return server
        if args.action == "status":
            if server is None:
                print("No server was started; %llm_serve start starts one.")
                return None
            return server
        if server is not None and server.running:
            raise UsageError(f"a server is already running at {server.url}; "
                             "%llm_serve stop stops it")
        key = os.environ.get(args.api_key_env) if args.api_key_env else None
        if args.api_key_env and not key:
            raise UsageError(f"${args.api_key_env} is not set")
        try:
            ServeMagics.server = nl.serve(args.port, args.host, args.models, key)
        except (ValueError, OSError) as exc:
            raise UsageError(str(exc)) from None
        return ServeMagics.server
