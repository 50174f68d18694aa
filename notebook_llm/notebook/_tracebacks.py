"""Tracebacks shown in IPython never show a key.

Error messages are redacted where they are made, but a traceback shows more
than messages: ``%xmode Verbose`` prints every frame's local variables, and a
frame deep in an HTTP library may hold a header with the key in it. Every
traceback the shell renders goes through :func:`notebook_llm.errors.redact`,
which removes every key the library has sent, whatever its format.
"""

from __future__ import annotations

from typing import Any

from notebook_llm.core.errors import redact

__all__ = ["install"]

_MARK = "_notebook_llm_redacts"


def install(shell: Any) -> None:
    """Redact the tracebacks ``shell`` (an IPython shell) renders; idempotent."""
    formatter = getattr(shell, "InteractiveTB", None)
    if formatter is None or getattr(formatter, _MARK, False):
        return
    render = formatter.structured_traceback

    def structured_traceback(*args: Any, **kwargs: Any) -> Any:
        lines = render(*args, **kwargs)
        if isinstance(lines, str):
            return redact(lines)
        return [redact(line) if isinstance(line, str) else line for line in lines]

    formatter.structured_traceback = structured_traceback
    setattr(formatter, _MARK, True)
