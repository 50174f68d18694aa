"""``{name}`` interpolation of prompts from the user namespace.

``string.Formatter`` with a namespace lookup: ``{x}``, ``{x:.2f}``,
``{x!r}``, ``{d[key]}``, ``{obj.attr}``, ``{In[3]}``, ``{Out[3]}``,
``{Err[3]}`` (the last error of cell 3), and ``{{``/``}}`` for braces.
A DataFrame, Series or array becomes its card (:func:`notebook_llm._context.card_text`:
shape, dtypes, nulls, ``describe()``, rows), never pandas' truncated repr;
``{df!r}`` keeps the repr.
Every failure is an :class:`InterpolationError` naming the field, raised
before anything is sent.
"""

from __future__ import annotations

import string
import traceback
from collections.abc import Mapping
from typing import Any

from notebook_llm._context import card_text, has_card
from notebook_llm.notebook._errors import InterpolationError

__all__ = ["DEFAULT_CARD_TOKENS", "format_error", "interpolate"]

DEFAULT_CARD_TOKENS = 1_000
"""The budget of a ``{df}`` card in a prompt."""

# Names whose missing entries deserve a message about cells, not dict keys.
_HISTORY = {"In": "input", "Out": "output", "Err": "error"}


def format_error(error: BaseException, frames: int = 3) -> str:
    """``Type: message`` plus the last few frames outside IPython's own code."""
    head = f"{type(error).__name__}: {error}".rstrip()
    stack = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if "/IPython/" not in frame.filename.replace("\\", "/")
    ][-frames:]
    if not stack:
        return head
    return head + "\n" + "".join(traceback.format_list(stack)).rstrip()


class _Formatter(string.Formatter):
    def __init__(self, namespace: Mapping[str, Any], errors: Mapping[int, str],
                 card_tokens: int) -> None:
        self.namespace = namespace
        self.errors = errors
        self.card_tokens = card_tokens
        self._field = ""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        self._field = field_name
        return self._get_field(field_name, args, kwargs)

    def get_value(self, key: int | str, args: Any, kwargs: Any) -> Any:
        if isinstance(key, int):
            raise InterpolationError(
                "a prompt cannot use positional fields like {} or {0}; name a variable"
            )
        if not key.isidentifier():
            raise InterpolationError(f"{{{key}}} is not a variable name")
        if key in self.namespace:
            return self.namespace[key]
        if key == "Err":
            return self.errors
        raise InterpolationError(f"name {key!r} is not defined (used as {{{key}}} in the prompt)")

    def _get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        try:
            return super().get_field(field_name, args, kwargs)
        except InterpolationError:
            raise
        except (KeyError, IndexError) as exc:
            first = field_name.split("[", 1)[0].split(".", 1)[0]
            if first in _HISTORY:
                raise InterpolationError(
                    f"{{{field_name}}}: cell {exc.args[0] if exc.args else '?'} has no "
                    f"{_HISTORY[first]} recorded"
                ) from None
            raise InterpolationError(f"{{{field_name}}}: no item {exc}") from None
        except (AttributeError, TypeError, ValueError) as exc:
            raise InterpolationError(f"{{{field_name}}}: {exc}") from None

    def format_field(self, value: Any, format_spec: str) -> str:
        if not format_spec and has_card(value):
            return card_text(value, self._field, self.card_tokens)
        try:
            text: str = super().format_field(value, format_spec)  # format(): always a str
            return text
        except (ValueError, TypeError) as exc:
            raise InterpolationError(
                f"cannot format {type(value).__name__} with spec {format_spec!r}: {exc}"
            ) from None

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        try:
            return super().convert_field(value, conversion)
        except ValueError as exc:
            raise InterpolationError(str(exc)) from None


def interpolate(
    template: str,
    namespace: Mapping[str, Any],
    errors: Mapping[int, str] | None = None,
    card_tokens: int = DEFAULT_CARD_TOKENS,
) -> str:
    """Fill ``{...}`` fields of ``template`` from ``namespace``.

    Args:
        template: the prompt as typed, ``{{``/``}}`` for literal braces.
        namespace: the user namespace (``In`` and ``Out`` live there).
        errors: the ``Err`` mapping of execution count to formatted error.
        card_tokens: the budget of each DataFrame, Series or array card.

    Returns:
        The prompt to send.

    Raises:
        InterpolationError: a field could not be filled; the message names it.
    """
    formatter = _Formatter(namespace, errors if errors is not None else {}, card_tokens)
    try:
        return formatter.vformat(template, (), {})
    except InterpolationError:
        raise
    except ValueError as exc:  # unbalanced braces, bad conversions, nested too deep
        raise InterpolationError(f"the prompt's braces do not parse: {exc}") from None
