"""``python -m notebook_llm serve ...``: the command line.

``serve`` runs :func:`notebook_llm.serve` in the foreground until Ctrl-C::

    python -m notebook_llm serve --port 8000 --model local:smollm2 --model offline:echo
    NOTEBOOK_LLM_SERVE_KEY=... python -m notebook_llm serve --host 0.0.0.0

The key for a non-loopback host comes from ``--api-key-env`` (an environment
variable's name, ``NOTEBOOK_LLM_SERVE_KEY`` by default), never from the
command line, where other users of the machine could read it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m notebook_llm")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve the library's models as an OpenAI-compatible API",
        description="Serve local:, offline: and every configured provider's models over "
        "HTTP, OpenAI-style (/v1/chat/completions, /v1/embeddings, /v1/models, "
        "/v1/responses, /health).",
    )
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; others need a key)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    serve.add_argument("--model", action="append", dest="models", metavar="MODEL",
                       help="a model to offer (repeat; default: every reachable model)")
    serve.add_argument("--api-key-env", default="NOTEBOOK_LLM_SERVE_KEY", metavar="VAR",
                       help="environment variable holding the key callers must send as "
                       "'Authorization: Bearer <key>' (default NOTEBOOK_LLM_SERVE_KEY)")
    serve.add_argument("--max-concurrent", type=int, default=128,
                       help="requests in flight before 429 (default 128)")
    serve.add_argument("--no-log", action="store_true", help="do not log calls")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    import notebook_llm as nl

    client = nl.Client(log=not args.no_log)
    try:
        server = nl.serve(
            args.port, args.host, args.models, os.environ.get(args.api_key_env) or None,
            client=client, max_concurrent=args.max_concurrent,
        )
    except (ValueError, OSError, nl.errors.LLMError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"notebook-llm serving on {server.url} (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
