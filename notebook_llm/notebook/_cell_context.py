"""``%%llm --with df,fig --figure -a FILE --context-tokens N --yes``: the notebook's
objects as context, and the bill before a large call.

The magics in ``_magics`` parse the flags and hand them here. Variables are
looked up in the user namespace (a missing one fails the cell, nothing sent),
turned into cards and PNGs by :mod:`notebook_llm._context`, attachments are read
by :mod:`notebook_llm._attachments`, and :mod:`notebook_llm.notebook._bill`
shows the cost when the call is large.

``--figure`` sends the current matplotlib figure; once the inline backend has
shown and closed it (at the end of the cell that drew it), the last PNG the
notebook displayed, which :func:`remember_figures` keeps.
"""

from __future__ import annotations

import sys
from typing import Any

from notebook_llm._attachments import attachment_parts
from notebook_llm._context import context_parts, figure_png
from notebook_llm.core.errors import LLMError
from notebook_llm.core.types import ContentPart, ImagePart
from notebook_llm.notebook._bill import DEFAULT_CONFIRM_TOKENS, make_bill, settle
from notebook_llm.notebook._errors import CellError

__all__ = ["add_context", "last_png", "remember_figures"]

_last_png: dict[int, bytes] = {}
"""The last PNG each shell displayed, by ``id(shell)``."""


def remember_figures(shell: Any) -> None:
    """Keep the last PNG ``shell`` displays (for ``--figure``); idempotent."""
    publisher = getattr(shell, "display_pub", None)
    register = getattr(publisher, "register_hook", None)
    if register is None or getattr(publisher, "_notebook_llm_figures", False):
        return
    key = id(shell)

    def hook(msg: Any) -> Any:
        try:
            if msg.get("msg_type") in ("display_data", "execute_result", "update_display_data"):
                data = msg.get("content", {}).get("data", {})
                png = data.get("image/png")
                if isinstance(png, str):
                    import base64

                    _last_png[key] = base64.b64decode(png)
        except Exception:  # noqa: BLE001 - a display must never fail for this
            pass
        return msg

    register(hook)
    setattr(publisher, "_notebook_llm_figures", True)  # noqa: B010 - an IPython object


def last_png(shell: Any) -> bytes | None:
    """The last PNG ``shell`` displayed, if :func:`remember_figures` saw one."""
    return _last_png.get(id(shell))


def _current_figure(shell: Any) -> ImagePart:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and pyplot.get_fignums():
        return figure_png(pyplot.gcf(), "current figure")
    png = last_png(shell)
    if png is not None:
        return ImagePart("image/png", png, label="last figure shown")
    raise CellError("--figure: there is no figure to send", title="UsageError",
                    hint="Draw one first (plt.plot(...)), or name it: --with fig.")


def _names(values: list[str] | None) -> list[str]:
    names = [n.strip() for value in values or [] for n in value.strip("'\"").split(",")]
    return [n for n in names if n]


def _lookup(namespace: dict[str, Any], name: str) -> Any:
    head, *attributes = name.split(".")
    if not head.isidentifier():
        raise CellError(f"--with {name}: not a variable name", title="UsageError")
    if head not in namespace:
        close = sorted(n for n in namespace if n.lower() == head.lower() and n != head)
        hint = f"Did you mean {close[0]}? " if close else ""
        raise CellError(f"--with {name}: name {head!r} is not defined", title="NameError",
                        hint=f"{hint}Nothing was sent. Run the cell that defines it first.")
    value = namespace[head]
    for attribute in attributes:
        try:
            value = getattr(value, attribute)
        except AttributeError:
            raise CellError(f"--with {name}: {type(value).__name__} has no attribute "
                            f"{attribute!r}", title="AttributeError",
                            hint="Nothing was sent.") from None
    return value


def context_for(shell: Any, args: Any) -> list[ContentPart]:
    """The parts the flags name: ``--with`` cards and figures, ``--figure``, ``-a``."""
    namespace: dict[str, Any] = shell.user_ns
    named = {name: _lookup(namespace, name) for name in _names(getattr(args, "with_", None))}
    tokens = getattr(args, "context_tokens", None)
    try:
        parts = context_parts(named, tokens) if named else []
        if getattr(args, "figure", False):
            parts.append(_current_figure(shell))
        attached = [a.strip("'\"") for a in getattr(args, "attach", None) or []]
        parts.extend(attachment_parts(attached))
    except LLMError as exc:
        raise CellError(str(exc), title=type(exc).__name__) from None
    return parts


def add_context(shell: Any, client: Any, args: Any, prompt: str, model: str | None,
                options: dict[str, Any], threshold: int | None = None) -> bool:
    """Put the flags' context into ``options`` and show the bill when the call is large.

    Returns False when the user cancelled (nothing is sent then). Raises a
    :class:`CellError` for a missing variable or file, a model that cannot
    take a part, or a budget the call could exceed: before anything is sent.
    """
    parts = context_for(shell, args)
    if parts:
        options["context"] = parts
    try:
        bill = make_bill(client, prompt, model, options, parts)
    except LLMError as exc:
        raise CellError(str(exc), title=type(exc).__name__) from None
    limit = DEFAULT_CONFIRM_TOKENS if threshold is None else threshold
    return settle(client, bill, threshold=limit, yes=bool(getattr(args, "yes", False)),
                  shell=shell)
