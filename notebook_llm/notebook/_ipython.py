"""Typed signatures for the IPython functions this package calls that IPython
leaves unannotated (``display``, the ``magic_arguments`` helpers) or annotates
loosely (the magic markers, typed as returning a function or a decorator).

Each imports IPython when called, never at import time, so importing this
module costs nothing outside a notebook.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = [
    "argument",
    "cell_magic",
    "display",
    "line_cell_magic",
    "line_magic",
    "magic_arguments",
    "magic_parser",
    "parse_argstring",
]

F = TypeVar("F", bound=Callable[..., Any])


def display(*objs: object, **kwargs: Any) -> Any:
    """``IPython.display.display``: a ``DisplayHandle`` with ``display_id=``, else ``None``."""
    from IPython.display import display as ipython_display

    show: Callable[..., Any] = ipython_display
    return show(*objs, **kwargs)


def magic_arguments() -> Callable[[F], F]:
    """``@magic_arguments()``: the outermost of a magic's argument decorators,
    which builds its parser (the magic's ``parser`` attribute)."""
    from IPython.core.magic_arguments import magic_arguments as decorator

    make: Callable[[], Callable[[F], F]] = decorator
    return make()


def argument(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """``@argument(...)``: one ``ArgumentParser.add_argument`` call for the magic."""
    from IPython.core.magic_arguments import argument as decorator

    make: Callable[..., Callable[[F], F]] = decorator
    return make(*args, **kwargs)


def parse_argstring(magic: Callable[..., Any], argstring: str) -> argparse.Namespace:
    """The options of a magic decorated with :func:`magic_arguments`, parsed."""
    from IPython.core.magic_arguments import parse_argstring as parse

    parse_typed: Callable[[Callable[..., Any], str], argparse.Namespace] = parse
    return parse_typed(magic, argstring)



def magic_parser(magic: Callable[..., Any]) -> argparse.ArgumentParser:
    """The parser that :func:`magic_arguments` attached to ``magic``."""
    parser = getattr(magic, "parser", None)
    if not isinstance(parser, argparse.ArgumentParser):
        raise TypeError(f"{magic!r} has no @magic_arguments() parser")
    return parser


def line_magic(method: F) -> F:
    """``@line_magic`` on a method of a ``@magics_class`` class."""
    from IPython.core.magic import line_magic as mark

    return cast(F, mark(method))  # given a function, the marker returns it


def cell_magic(method: F) -> F:
    """``@cell_magic`` on a method of a ``@magics_class`` class."""
    from IPython.core.magic import cell_magic as mark

    return cast(F, mark(method))  # given a function, the marker returns it


def line_cell_magic(method: F) -> F:
    """``@line_cell_magic`` on a method of a ``@magics_class`` class."""
    from IPython.core.magic import line_cell_magic as mark

    return cast(F, mark(method))  # given a function, the marker returns it
