"""``%llm_logs``: browse and search the call log from a cell.

A thin shell over :func:`notebook_llm.logs`: the result shows itself, with
the matches of a search highlighted (escaped: the log holds model output).
"""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, magics_class

from notebook_llm._usage import Logs, logs
from notebook_llm.notebook._errors import CellError
from notebook_llm.notebook._ipython import argument, line_magic, magic_arguments, parse_argstring

__all__ = ["LogMagics"]


@magics_class
class LogMagics(Magics):
    """``%llm_logs``: the call log, searched and filtered."""

    @magic_arguments()
    @argument("-q", "--query", nargs="+",
              help='full-text search: words, "a phrase", OR, NOT, prefix* (best match first)')
    @argument("-n", "--count", type=int, default=20, help="how many calls (default 20)")
    @argument("-m", "--model", help="only this model (provider:model or its name)")
    @argument("--cid", help="only this conversation (an id from nl.conversations())")
    @argument("--since", help="only calls since then: 1h, 7d, today or an ISO date")
    @argument("--tag", help="only calls carrying this tag")
    @line_magic
    def llm_logs(self, line: str) -> Logs:
        """``%llm_logs [-q TEXT] [-n 20] [-m MODEL] [--cid ID] [--since 7d] [--tag T]``:
        the latest calls, or the best matches of a search with the matches
        highlighted. ``_.call(0)`` opens the first one in full."""
        try:
            args = parse_argstring(self.llm_logs, line)
        except ValueError as exc:  # shlex: an unclosed quote
            raise CellError(f"cannot read the options: {exc}", title="UsageError",
                            hint='Close the quotes: -q "a phrase".') from None
        query = " ".join(_unquote_single(word) for word in args.query) if args.query else None
        options: dict[str, Any] = {"q": query, "model": args.model, "since": args.since,
                                   "tag": args.tag, "conversation": args.cid}
        try:
            return logs(args.count, **options)
        except ValueError as exc:
            raise CellError(str(exc), title="UsageError") from None


def _unquote_single(word: str) -> str:
    # IPython keeps quotes: double quotes mean a phrase to FTS5 and stay;
    # single quotes only group words here.
    if len(word) >= 2 and word[0] == word[-1] == "'":
        return word[1:-1]
    return word
