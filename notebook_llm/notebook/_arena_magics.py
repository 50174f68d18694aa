"""``%%llm_arena``: a blind arena from a cell (see :func:`notebook_llm.arena`).

::

    %%llm_arena -m openai:gpt-4o-mini -m anthropic:claude-haiku-4-5
    Explain recursion to a ten-year-old.
    ---
    Write a haiku about databases.

Prompts are separated by lines holding only ``---`` (without one, each
non-empty line is a prompt). The arena is stored in ``_arena`` (or the
``-o`` variable); its votes survive a restart, and running the cell again
resumes it.
"""

from __future__ import annotations

import re

from IPython.core.magic import Magics, magics_class

from notebook_llm._arena import Arena, arena
from notebook_llm.notebook._errors import CellError
from notebook_llm.notebook._ipython import argument, cell_magic, magic_arguments, parse_argstring

__all__ = ["ArenaMagics", "arena_prompts"]

_SEPARATOR = re.compile(r"^\s*---\s*$", re.MULTILINE)


def arena_prompts(cell: str) -> list[str]:
    """The prompts of a ``%%llm_arena`` cell: ``---``-separated blocks, else lines."""
    if _SEPARATOR.search(cell):
        prompts = [block.strip() for block in _SEPARATOR.split(cell)]
    else:
        prompts = [line.strip() for line in cell.splitlines()]
    return [prompt for prompt in prompts if prompt]


@magics_class
class ArenaMagics(Magics):
    """The ``%%llm_arena`` cell magic."""

    @magic_arguments()
    @argument("-m", "--model", action="append", default=[],
              help="a model in the arena (repeat -m, or separate models with commas)")
    @argument("--name", help="the arena's name (to resume it by name)")
    @argument("-s", "--system", help="a system prompt for every answer (quote it)")
    @argument("--max-tokens", type=int, help="the most tokens per answer")
    @argument("--text", action="store_true", help="vote through input() instead of widgets")
    @argument("-o", "--output", default="_arena", help="the variable that holds the arena")
    @cell_magic
    def llm_arena(self, line: str, cell: str) -> Arena:
        """Two anonymous answers per prompt, side by side; vote, then see who was who."""
        args = parse_argstring(self.llm_arena, line)
        models = [m.strip().strip("'\"") for value in args.model for m in value.split(",")]
        models = [m for m in models if m]
        if len(models) < 2 or len(set(models)) != len(models):
            raise CellError("name two or more different models: -m a -m b (or -m a,b)",
                            title="UsageError")
        prompts = arena_prompts(cell)
        if not prompts:
            raise CellError("write one prompt per line, or blocks separated by ---",
                            title="UsageError")
        params = {} if args.max_tokens is None else {"max_tokens": args.max_tokens}
        result = arena(prompts, models, name=args.name, system=args.system,
                       frontend="text" if args.text else "auto", **params)
        if self.shell is not None:
            self.shell.user_ns[args.output] = result
        return result
