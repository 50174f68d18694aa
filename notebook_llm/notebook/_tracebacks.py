"""Tracebacks shown in IPython never show a key, and lead with the library's message.

Error messages are redacted where they are made, but a traceback shows more
than messages: ``%xmode Verbose`` prints every frame's local variables, and a
frame deep in an HTTP library may hold a header with the key in it. Every
traceback the shell renders goes through :func:`notebook_llm.errors.redact`,
which removes every key the library has sent, whatever its format.

An :class:`~notebook_llm.errors.LLMError` from the Python API (``nl.complete``
with a mistyped model, a missing key) is the user's to fix, not a bug in the
library: its traceback starts with the one-line message and stops at the
user's own code, instead of running through the library's frames and the
event loop's. ``%xmode Verbose`` still shows every frame.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from notebook_llm.core.errors import LLMError, redact

__all__ = ["install"]

_MARK = "_notebook_llm_redacts"


def install(shell: Any) -> None:
    """Redact the tracebacks ``shell`` (an IPython shell) renders; idempotent."""
    formatter = getattr(shell, "InteractiveTB", None)
    if formatter is None or getattr(formatter, _MARK, False):
        return
    render = formatter.structured_traceback

    def structured_traceback(*args: Any, **kwargs: Any) -> Any:
        headline = None
        value = args[1] if len(args) > 1 else kwargs.get("evalue", kwargs.get("value"))
        if isinstance(value, LLMError) and getattr(formatter, "mode", "") != "Verbose":
            args, kwargs, headline = _user_frames_only(value, args, kwargs)
        lines = render(*args, **kwargs)
        if isinstance(lines, str):
            return redact(lines if headline is None else f"{headline}\n{lines}")
        lines = [redact(line) if isinstance(line, str) else line for line in lines]
        return lines if headline is None else [redact(headline), *lines]

    formatter.structured_traceback = structured_traceback
    setattr(formatter, _MARK, True)


_PACKAGE = str(Path(__file__).resolve().parents[1])


def _user_frames_only(
    error: LLMError, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], str]:
    """The formatter's arguments with the traceback cut at the first library
    frame, and the one line to show first."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    headline = f"{type(error).__name__}: {message}"
    if len(args) > 2:
        tb = args[2]
    else:
        tb = kwargs.get("etb", kwargs.get("tb"))
    kept: list[types.TracebackType] = []
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
            break
        kept.append(tb)
        tb = tb.tb_next
    if tb is None:  # no library frame: nothing to hide
        return args, kwargs, headline
    short: types.TracebackType | None = None
    for frame in reversed(kept):
        short = types.TracebackType(short, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    headline += "  (the library's own frames are hidden; %xmode Verbose shows them)"
    if len(args) > 2:
        return (*args[:2], short, *args[3:]), kwargs, headline
    key = "etb" if "etb" in kwargs else "tb"
    return args, {**kwargs, key: short}, headline

