"""The one exception the magics raise: a short message instead of a traceback."""

from __future__ import annotations

from notebook_llm._render import terminal_text

__all__ = ["CellError", "InterpolationError"]

_RED = "\x1b[0;31m"
_RESET = "\x1b[0m"


class CellError(Exception):
    """Fails the cell with a few short lines (so "Run all" stops there).

    IPython calls ``_render_traceback_()`` instead of formatting a traceback,
    so the user sees what went wrong and what to do, not library internals.
    """

    def __init__(self, message: str, *, title: str = "LLMError", hint: str = "") -> None:
        super().__init__(message)
        self.title = title
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()

    def _render_traceback_(self) -> list[str]:
        # The message often quotes a server's error: its control characters
        # must not reach the terminal (only the title's colour does).
        lines = [f"{_RED}{terminal_text(self.title)}{_RESET}: {terminal_text(self.message)}"]
        if self.hint:
            lines.append(terminal_text(self.hint))
        return lines


class InterpolationError(CellError):
    """A ``{name}`` in a prompt could not be filled in; nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            title="InterpolationError",
            hint="Nothing was sent. Write {{ and }} for literal braces.",
        )
