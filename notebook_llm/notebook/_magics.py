"""The magics: ``%%llm``, ``%llm``, ``%%llm_compare``, ``%%chat``, ``%chat_history``,
``%chat_clear``, ``%llm_models``, ``%llm_config``, ``%llm_usage`` and ``%llm_keys``.

Each one parses its arguments, calls the public API (``nl.default_client()``
and its ``stream`` / ``complete`` / ``list_models``), shows the result and
stores it. Library errors become a short :class:`CellError`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, magics_class

from notebook_llm import _render
from notebook_llm._api import default_client
from notebook_llm._conversations import Conversation, select_conversation
from notebook_llm.core.errors import LLMError
from notebook_llm.core.types import Completion
from notebook_llm.notebook._asset_magics import (
    call_assets,
    extract_format,
    model_options,
    save_config,
)
from notebook_llm.notebook._cell_context import add_context
from notebook_llm.notebook._display import (
    CellView,
    Format,
    StreamResult,
    TerminalView,
    View,
    consume,
    final_bundle,
    footer_bundle,
)
from notebook_llm.notebook._errors import CellError
from notebook_llm.notebook._interpolate import format_error, interpolate
from notebook_llm.notebook._ipython import (
    argument,
    cell_magic,
    line_cell_magic,
    line_magic,
    magic_arguments,
    magic_parser,
    parse_argstring,
)
from notebook_llm.notebook._replay_magics import live_options
from notebook_llm.notebook._schema import resolve_schema
from notebook_llm.notebook._tool_magics import (
    ToolSession,
    chat_tool_options,
    tool_options,
)
from notebook_llm.notebook._uipoll import UIEvents

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["LLMMagics", "NotebookConfig"]

_FORMATS = ("markdown", "text", "code", "json", "html")
_ON = {"on": True, "true": True, "1": True, "yes": True,
       "off": False, "false": False, "0": False, "no": False}


@dataclass
class NotebookConfig:
    """Defaults the magics add to every call (``%llm_config``)."""

    temperature: float | None = None
    max_tokens: int | None = None
    confirm_tokens: int | None = None
    """Show the bill first for calls over this many input tokens (default 2,000)."""
    client_snapshot: dict[str, Any] | None = field(default=None, repr=False)
    """The client's settings before ``%llm_config`` first changed them (for ``--reset``)."""


class Table:
    """A small table that shows itself as HTML or plain text."""

    def __init__(self, columns: list[str], rows: list[list[Any]], title: str = "") -> None:
        self.columns = columns
        self.rows = rows
        self.title = title

    def _repr_html_(self) -> str:
        title = f"<strong>{_render.html_escape(self.title)}</strong>" if self.title else ""
        return title + _render.plain_table_html(self.columns, self.rows)

    def __repr__(self) -> str:
        cells = [self.columns, *[["" if v is None else str(v) for v in row] for row in self.rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
                 for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        # Cells can hold what a server sent (model ids): printed as they are.
        return _render.terminal_text("\n".join([self.title, *lines] if self.title else lines))


class MarkdownText:
    """Escaped Markdown (from model text) with a plain-text form."""

    def __init__(self, markdown: str, plain: str) -> None:
        self.markdown = markdown
        self.plain = plain

    def _repr_markdown_(self) -> str:
        return self.markdown

    def __repr__(self) -> str:
        return _render.terminal_text(self.plain)


def _unquote(value: str | None) -> str | None:
    # IPython's argument splitter keeps quotes: -s "be brief" arrives quoted.
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _as_cell_error(error: LLMError) -> CellError:
    return CellError(str(error), title=type(error).__name__)


@magics_class
class LLMMagics(Magics):
    """Magics over the default client (``nl.default_client()``)."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self._shell = shell
        """``self.shell``, which IPython types as optional: these magics always have one."""
        self.settings = NotebookConfig()
        self.errors: dict[int, str] = {}
        """The last error of each cell by execution count, for ``{Err[n]}``."""
        self.chats: dict[str, Conversation] = {}
        self.chat_tools: dict[str, dict[str, Any]] = {}
        shell.events.register("post_run_cell", self._record_error)

    def _record_error(self, result: Any) -> None:
        error = result.error_in_exec or result.error_before_exec
        if error is not None and result.execution_count is not None:
            self.errors[result.execution_count] = format_error(error)

    def unregister(self) -> None:
        """Stop recording errors (``%unload_ext``)."""
        try:
            self._shell.events.unregister("post_run_cell", self._record_error)
        except ValueError:
            pass

    # -- helpers -------------------------------------------------------------

    @property
    def _ns(self) -> dict[str, Any]:
        namespace: dict[str, Any] = self._shell.user_ns
        return namespace

    def _prompt(self, text: str, empty_ok: bool = False) -> Any:
        prompt = interpolate(text, self._ns, self.errors).strip()
        if not prompt and not empty_ok:
            raise CellError("the prompt is empty", title="UsageError")
        return prompt or None  # a template's own prompt needs no $input

    def _store(self, completion: Completion | None, out: str | None) -> None:
        if completion is None:
            return
        self._ns["_llm"] = completion
        if out:
            self._ns[out] = completion

    def _call_options(self, args: Any) -> dict[str, Any]:
        options: dict[str, Any] = {
            "system": _unquote(getattr(args, "system", None)),
            "temperature": args.temperature if getattr(args, "temperature", None) is not None
            else self.settings.temperature,
            "max_tokens": args.max_tokens if getattr(args, "max_tokens", None) is not None
            else self.settings.max_tokens,
        }
        if getattr(args, "no_log", False):
            options["log"] = False
        if getattr(args, "schema", None):
            options["response_format"] = resolve_schema(args.schema, self._ns)
        options.update(call_assets(args, self._ns))  # --template, -p, -F, --sf, -O, ...
        if hasattr(args, "tool") and not hasattr(args, "new"):  # %%chat remembers its own
            options.update(tool_options(args, self._ns))
        if getattr(args, "live", False):
            options = live_options(options)
        return options

    def _view(self, fmt: Format) -> tuple[View, UIEvents | None]:
        kernel = getattr(self._shell, "kernel", None)
        if kernel is None:  # terminal IPython: plain text on stdout
            return TerminalView(fmt), None
        events = UIEvents.for_kernel(kernel)
        # Without a way for clicks to arrive, a Stop button would only mislead.
        return CellView(fmt, widgets=events is not None), events

    def _stream(self, request: Any, model: str | None, fmt: Format,
                options: dict[str, Any]) -> StreamResult:
        """Stream into the cell; always returns (errors are in the result)."""
        tools = ToolSession(getattr(self._shell, "kernel", None))
        try:
            with tools.asking():
                stream = default_client().astream(request, _unquote(model), **options)
        except LLMError as exc:
            raise _as_cell_error(exc) from None
        view, events = self._view(fmt)
        view.start(lambda: stream.stop("button"))
        server = tools.serve(view, widgets=events is not None)
        try:
            result = consume(stream, view.update, events=events, on_tools=view.tools,
                             tick=server.tick)
        finally:
            tools.close()
            if events is not None:
                events.close()
        self._finish(view, result, fmt, options)
        return result

    def _complete(self, request: Any, model: str | None, fmt: Format,
                  options: dict[str, Any]) -> StreamResult:
        try:
            completion = default_client().complete(request, _unquote(model), **options)
        except LLMError as exc:
            return StreamResult(None, exc)
        except KeyboardInterrupt:
            return StreamResult(None, None, interrupted=True, stopped=True)
        result = StreamResult(completion)
        view, _ = self._view(fmt)
        self._finish(view, result, fmt, options)
        return result

    def _finish(self, view: View, result: StreamResult, fmt: Format,
                options: dict[str, Any]) -> None:
        completion = result.completion
        if completion is None:
            if isinstance(view, CellView) and view.started:
                view.finish({"text/plain": ""}, footer_bundle(None, "no answer"))
            return
        problem = ""
        if not result.stopped and result.error is None:
            problem = _parse(completion, fmt, options.get("response_format"))
        note = "⏹ stopped" if result.stopped else ("error" if result.error else "")
        if isinstance(view, CellView) and not view.started:
            view.start(None)
        if completion.tool_runs:  # --no-stream: the loop's calls, shown at the end
            view.tools(completion.tool_runs)
        view.finish(final_bundle(completion, fmt), footer_bundle(completion, note))
        if problem:
            result.error = CellError(problem, title="FormatError",
                                     hint="The answer is shown above and stored in _llm.")

    def _conclude(self, result: StreamResult, out: str | None, fmt: Format) -> None:
        """Store the result, then fail the cell if something went wrong."""
        self._store(result.completion, out)
        completion = result.completion
        if (fmt in ("code", "code_last") and completion is not None and not result.stopped
                and result.error is None):
            self._next_input(completion, last=fmt == "code_last")
        if result.interrupted:
            raise CellError("the stream was stopped; the partial answer is in _llm",
                            title="KeyboardInterrupt")
        error = result.error
        if isinstance(error, CellError):
            raise error
        if isinstance(error, LLMError):
            raise _as_cell_error(error) from None
        if error is not None:
            raise error

    def _next_input(self, completion: Completion, last: bool = False) -> None:
        from notebook_llm.notebook._display import first_code_block

        code = first_code_block(completion.text, last=last)
        if not code or "google.colab" in sys.modules:
            return  # Colab cannot insert a cell: the code block above is copyable
        self._shell.set_next_input(code, replace=False)

    # -- %%llm / %llm ----------------------------------------------------------

    @magic_arguments()
    @argument("-m", "--model", action="append", default=[],
              help="provider:model or an alias (default: the client's); "
                   "two or more (-m a -m b, or -m a,b) compare them side by side")
    @argument("-s", "--system", help="a system prompt (quote it)")
    @argument("-t", "--temperature", type=float, help="sampling temperature")
    @argument("--max-tokens", type=int, help="the most tokens to generate")
    @argument("-o", "--output", help="also store the result in this variable")
    @argument("-f", "--format", default="markdown", choices=_FORMATS,
              help="how to show the answer (code: into a new cell below)")
    @argument("--no-stream", action="store_true", help="wait for the whole answer")
    @argument("--schema", help="a Pydantic model name, or fields: 'name: str, age: int'")
    @argument("--no-log", action="store_true", help="do not write this call to the log")
    @argument("--template", help="a saved template (nl.templates); the cell is its $input")
    @argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
              help="a template parameter: -p topic cats")
    @argument("-F", "--fragment", action="append", help="a file, URL, variable or alias")
    @argument("--sf", action="append", help="a system fragment (as -F)")
    @argument("--schema-multi", help="as --schema, for a list of such objects")
    @argument("-O", "--option", nargs=2, action="append", metavar=("KEY", "VALUE"),
              help="a model option, checked against the provider: -O top_p 0.9")
    @argument("--tool", action="append", help="a function, toolbox or MCP server (repeat)")
    @argument("--max-tool-rounds", type=int, help="the most rounds of tool calls")
    @argument("--approve", choices=("always", "never", "ask"), help="who allows tool calls")
    @argument("--with", dest="with_", action="append",
              help="variables to send as context: DataFrames as cards, figures as PNGs")
    @argument("--context-tokens", type=int, help="token budget of the --with cards")
    @argument("--figure", action="store_true", help="send the current matplotlib figure")
    @argument("-a", "--attach", action="append", help="a file or URL to send (repeatable)")
    @argument("--yes", action="store_true", help="send without showing the bill first")
    @argument("--live", action="store_true", help="call the model, not the replay file; refresh it")
    @line_cell_magic
    def llm(self, line: str, cell: str | None = None) -> Any:
        """Ask a model. ``%%llm [options]`` + prompt streams the answer into the
        cell; ``x = %llm [options] prompt`` returns the Completion.

        ``{name}`` in the prompt is replaced by a variable (``{x:.2f}``,
        ``{In[3]}``, ``{Out[3]}``, ``{Err[3]}``); ``{{``/``}}`` are braces.
        The result is stored in ``_llm`` (and in ``-o VAR``).
        """
        if cell is None:
            return self._llm_line(line)
        args = parse_argstring(self.llm, line)
        if args.output and not args.output.isidentifier():
            raise CellError(f"-o {args.output}: not a variable name", title="UsageError")
        if len(models := _models(args.model, required=False)) > 1:  # compare side by side
            if (args.schema or args.schema_multi or args.no_stream or args.template
                    or args.format != "markdown" or args.with_ or args.attach or args.figure):
                raise CellError("-f, --schema, --template, --no-stream, --with, -a and "
                                "--figure do not apply to a comparison",
                                title="UsageError", hint="Use %%llm_compare -m a -m b.")
            self._compare(self._prompt(cell), models, args)
            return None
        args.model = models[0] if models else None
        options = self._call_options(args)
        prompt = self._prompt(cell, empty_ok="template" in options)
        if not add_context(self._shell, default_client(), args, prompt, args.model, options,
                           self.settings.confirm_tokens):
            return None
        fmt: Format = extract_format(options.get("template"), args.format)
        run = self._complete if args.no_stream else self._stream
        result = run(prompt, args.model, fmt, options)
        self._conclude(result, args.output, fmt)
        return None

    def _llm_line(self, line: str) -> Completion | None:
        options_text, prompt_text = _split_options(line, magic_parser(self.llm))
        args = parse_argstring(self.llm, options_text)
        if len(models := _models(args.model, required=False)) > 1:
            raise CellError("x = %llm takes one model", title="UsageError",
                            hint="Compare models in a cell: %%llm -m a -m b, or nl.compare().")
        args.model = models[0] if models else None
        options = self._call_options(args)
        prompt = self._prompt(prompt_text, empty_ok="template" in options)
        if not add_context(self._shell, default_client(), args, prompt, args.model, options,
                           self.settings.confirm_tokens):
            return None
        try:
            completion = default_client().complete(prompt, _unquote(args.model), **options)
        except LLMError as exc:
            raise _as_cell_error(exc) from None
        self._store(completion, args.output)
        return completion

    # -- %%llm_compare ---------------------------------------------------------

    @magic_arguments()
    @argument("-m", "--model", action="append", default=[],
              help="a model to compare (repeat -m, or separate models with commas)")
    @argument("--runs", type=int, default=1, help="run each model this many times")
    @argument("-s", "--system", help="a system prompt (quote it)")
    @argument("-t", "--temperature", type=float, help="sampling temperature")
    @argument("--max-tokens", type=int, help="the most tokens to generate")
    @argument("-o", "--output", help="also store the Comparison in this variable")
    @argument("--no-log", action="store_true", help="do not write these calls to the log")
    @cell_magic
    def llm_compare(self, line: str, cell: str) -> None:
        """``%%llm_compare -m a -m b [--runs N]`` + prompt: stream every model side by
        side (one column each, Stop buttons), then a summary of latency, tokens and cost.

        ``%%llm -m a,b`` does the same. The Comparison is stored in ``_llm``
        (and in ``-o VAR``); ``{name}`` in the prompt is filled in as for ``%%llm``.
        """
        args = parse_argstring(self.llm_compare, line)
        if args.output and not args.output.isidentifier():
            raise CellError(f"-o {args.output}: not a variable name", title="UsageError")
        if args.runs < 1:
            raise CellError("--runs must be at least 1", title="UsageError")
        self._compare(self._prompt(cell), _models(args.model), args)

    def _compare(self, prompt: str, models: list[str], args: Any) -> None:
        """Run the live dashboard; store the Comparison, then fail the cell on interrupt."""
        from notebook_llm.notebook._dashboard import run_compare

        options = self._call_options(args)
        try:
            run = run_compare(prompt, models, runs=getattr(args, "runs", 1), **options)
        except LLMError as exc:
            raise _as_cell_error(exc) from None
        except ValueError as exc:
            raise CellError(str(exc), title="UsageError") from None
        self._ns["_llm"] = run.comparison
        if args.output:
            self._ns[args.output] = run.comparison
        if run.interrupted:
            raise CellError("the comparison was stopped; the partial answers are in _llm",
                            title="KeyboardInterrupt")
        if isinstance(run.error, LLMError):
            raise _as_cell_error(run.error) from None
        if run.error is not None:
            raise run.error

    # -- chat ----------------------------------------------------------------

    @magic_arguments()
    @argument("-m", "--model", help="provider:model or an alias")
    @argument("--new", action="store_true", help="start the conversation afresh")
    @argument("--name", default="default", help="which conversation (default: 'default')")
    @argument("--tool", action="append", help="a tool for this and later turns (repeat)")
    @argument("--max-tool-rounds", type=int, help="the most rounds of tool calls")
    @argument("--approve", choices=("always", "never", "ask"), help="who allows tool calls")
    @argument("--live", action="store_true", help="call the model, not the replay file; refresh it")
    @argument("-c", "--continue", dest="resume", action="store_true",
              help="continue the most recent conversation in the log (also after a restart)")
    @argument("--cid", help="continue this logged conversation (an id from nl.conversations())")
    @line_cell_magic
    def chat(self, line: str, cell: str | None = None) -> None:
        """``%%chat``: continue a named conversation; the answer streams in. Every
        turn is logged, so ``%%chat -c`` or ``--cid ID`` carries on after a restart."""
        args = parse_argstring(self.chat, line)
        if args.new:
            self.chats.pop(args.name, None)
            self.chat_tools.pop(args.name, None)
        if cell is None or not cell.strip():
            if args.new:
                return None
            raise CellError("%%chat needs a message in the cell body", title="UsageError")
        try:
            conversation = select_conversation(
                self.chats, args.name, new=args.new, resume=args.resume,
                cid=_unquote(args.cid), model=_unquote(args.model))
            turn = conversation.prepare(self._prompt(cell), warn=False)
        except (KeyError, ValueError) as exc:
            raise CellError(str(exc.args[0]), title="UsageError") from None
        except LLMError as exc:
            raise _as_cell_error(exc) from None
        if turn.note is not None:
            print(turn.note)
        options = {**self._call_options(args), **turn.call_options(),
                   **chat_tool_options(self.chat_tools, args.name, args, self._ns)}
        result = self._stream(turn.messages, turn.model, "markdown", options)
        completion = result.completion
        if completion is not None and (completion.text or completion.tool_calls) and (
                result.error is None or result.stopped):
            conversation.record(turn, completion)
        self._conclude(result, None, "markdown")
        return None

    @line_magic
    def chat_history(self, line: str) -> MarkdownText:
        """``%chat_history [NAME]``: the turns of a conversation (``nl.conversation(id)``
        shows one in full)."""
        name = line.strip() or "default"
        conversation = self.chats.get(name)
        turns = conversation.messages if conversation is not None else []
        if not turns:
            return MarkdownText(f"*No messages in conversation {name!r}.*",
                                f"No messages in conversation {name!r}.")
        markdown, plain = [], []
        for message in turns:
            role = str(message.get("role", "?"))
            content = str(message.get("content") or "")
            markdown.append(f"**{_render.markdown_text(role)}**\n\n"
                            f"{_render.escape_markdown(content)}")
            plain.append(f"{role}: {content}")
        return MarkdownText("\n\n---\n\n".join(markdown), "\n".join(plain))

    @line_magic
    def chat_clear(self, line: str) -> None:
        """``%chat_clear [NAME]``: forget a conversation."""
        self.chats.pop(line.strip() or "default", None)

    # -- models, config, keys -----------------------------------------------

    @line_magic
    def llm_models(self, line: str) -> Any:
        """``%llm_models``: providers and capabilities; ``%llm_models PROVIDER``: its models."""
        client = default_client()
        name = line.strip().rstrip(":")
        if name.startswith("--options"):  # %llm_models --options MODEL
            return model_options(name[len("--options"):])
        if not name:
            capabilities = ["streaming", "tools", "structured_output", "reasoning",
                            "image_input", "embeddings", "list_models", "batch"]
            rows = [
                [info.name, info.description, ", ".join(info.key_env) or "-",
                 *["✓" if getattr(info.capabilities, c) else "" for c in capabilities]]
                for info in client.list_providers()
            ]
            return Table(["provider", "description", "key", *capabilities], rows)
        try:
            models = client.list_models(name)
        except LLMError as exc:
            raise _as_cell_error(exc) from None
        return Table(["model", "owned_by"],
                     [[m.model_string, m.owned_by] for m in models], title=name)

    @line_magic
    def llm_config(self, line: str) -> Table | MarkdownText | None:
        """``%llm_config``: show settings. ``%llm_config model M``, ``alias NAME M``,
        ``temperature T``, ``max_tokens N``, ``log on|off``, ``cache on|off``,
        ``images on|off`` (let images from other hosts load in answers),
        ``embedding_model M``, ``--reset``; ``--save`` keeps aliases and default
        models for later kernels, ``--unsave [alias NAME|model|embedding_model]``."""
        client = default_client()
        words = line.split()
        if words and words[0] in ("--save", "--unsave"):
            saved = save_config(client, words)
            return MarkdownText(_render.escape_markdown(saved), saved)
        if not words:
            default = client.default_model()
            rows: list[list[Any]] = [
                ["model", default.model, default.reason],
                ["temperature", self.settings.temperature, "%llm_config temperature T"],
                ["max_tokens", self.settings.max_tokens, "%llm_config max_tokens N"],
                ["log", "on" if client.log else "off", "the SQLite call log"],
                ["cache", "on" if client.cache else "off", "the response cache"],
                ["images", "on" if _render.remote_images() else "off",
                 "remote images in answers (off: shown as links)"],
                *[[f"alias {k}", v, ""] for k, v in sorted(client.aliases.items())],
            ]
            return Table(["setting", "value", "note"], rows)
        if words == ["--reset"]:
            snapshot = self.settings.client_snapshot
            if snapshot is not None:
                snapshot = dict(snapshot)
                _render.set_remote_images(snapshot.pop("images", False))
                for key, value in snapshot.items():
                    setattr(client, key, value)
            self.settings = NotebookConfig()
            return None
        if self.settings.client_snapshot is None:
            self.settings.client_snapshot = {"default": client.default,
                                           "aliases": dict(client.aliases),
                                           "log": client.log, "cache": client.cache,
                                           "embedding_model": client.embedding_model,
                                           "images": _render.remote_images()}
        key, values = words[0].replace("-", "_"), words[1:]
        try:
            _configure(client, self.settings, key, values)
        except (ValueError, IndexError, KeyError):
            raise CellError(f"cannot understand %llm_config {line.strip()}", title="UsageError",
                            hint="Try: model M | alias NAME M | temperature T | max_tokens N | "
                                 "log on|off | cache on|off | images on|off | --reset") from None
        except LLMError as exc:
            raise _as_cell_error(exc) from None
        return None

    @magic_arguments()
    @argument("--by", default="model",
              help="model, provider, day, notebook or tag (default: model)")
    @argument("--since", default=None, help="e.g. 1h, 7d, today or an ISO date")
    @line_magic
    def llm_usage(self, line: str) -> Any:
        """``%llm_usage [--by model|provider|day|notebook|tag] [--since 7d]``: calls,
        tokens and cost from the call log, with a total row."""
        from notebook_llm._usage_table import usage_table

        args = parse_argstring(self.llm_usage, line)
        try:
            return usage_table(by=args.by, since=args.since)
        except ValueError as exc:
            raise CellError(f"%llm_usage: {exc}") from None

    @line_magic
    def llm_keys(self, line: str) -> Table:
        """``%llm_keys``: which providers have a key and where it comes from (masked)."""
        rows = [[s.provider, s.env_var, s.source if s.found else "not set", s.masked]
                for s in default_client().key_status()]
        rows.sort(key=lambda row: (row[2] == "not set", row[0]))
        return Table(["provider", "variable", "source", "key"], rows)


def _models(values: list[str], required: bool = True) -> list[str]:
    """The model strings of ``-m a,b -m c``, in order; each at most once."""
    models = [m.strip() for value in values for m in (_unquote(value) or "").split(",")]
    models = [m for m in models if m]
    if not models and required:
        raise CellError("name the models to compare: -m a -m b (or -m a,b)", title="UsageError")
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise CellError(f"{', '.join(repeated)} named twice", title="UsageError",
                        hint="Use --runs N to run a model several times.")
    return models


def _configure(client: Any, config: NotebookConfig, key: str, values: list[str]) -> None:
    if key == "model" and len(values) == 1:
        client.resolve(values[0])  # an unknown provider fails here, not at the next call
        client.default = values[0]
    elif key == "alias" and len(values) == 2:
        client.resolve(values[1])
        client.aliases[values[0]] = values[1]
    elif key == "temperature" and len(values) == 1:
        config.temperature = None if values[0] == "none" else float(values[0])
    elif key in ("max_tokens", "confirm_tokens") and len(values) == 1:
        setattr(config, key, None if values[0] == "none" else int(values[0]))
    elif key == "embedding_model" and len(values) == 1:
        client.embedding_model = None if values[0] == "none" else values[0]
    elif key in ("log", "cache") and len(values) == 1:
        setattr(client, key, _ON[values[0].lower()])
    elif key == "images" and len(values) == 1:
        _render.set_remote_images(_ON[values[0].lower()])
    else:
        raise ValueError(key)


def _parse(completion: Completion, fmt: Format, schema: Any) -> str:
    """Fill ``parsed`` for ``-f json`` / ``--schema``; returns a problem or ''."""
    if schema is not None and hasattr(schema, "model_validate_json"):
        if completion.parsed is None:
            try:
                completion.parsed = schema.model_validate_json(_strip_fence(completion.text))
            except ValueError as exc:
                first = str(exc).splitlines()
                return f"the answer does not match the schema: {' '.join(first[:3])}"
        return ""
    if fmt == "json":
        try:
            completion.parsed = json.loads(_strip_fence(completion.text))
        except ValueError as exc:
            return f"the answer is not valid JSON: {exc}"
    return ""


def _strip_fence(text: str) -> str:
    body = text.strip()
    match = re.fullmatch(r"(`{3,}|~{3,})[^\n]*\n(.*)\n\s*\1\s*", body, re.S)
    return match.group(2) if match else body


_OPTION_LIKE = re.compile(r"--?[A-Za-z]")


def _split_options(line: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    """Split ``%llm -m x -t 0.2 the prompt`` into the options and the verbatim prompt.

    Only leading options are options; the rest of the line is the prompt exactly
    as typed (apostrophes and dashes included). ``--`` ends the options.
    """
    actions = parser._option_string_actions
    position = 0
    pattern = re.compile(r"\s*(\S+)")
    while True:
        match = pattern.match(line, position)
        if match is None:
            return line[:position], ""
        token = match.group(1)
        if token == "--":
            return line[: match.start(1)], line[match.end() :]
        name = token.split("=", 1)[0]
        action = actions.get(name)
        if action is None and _OPTION_LIKE.match(name):
            # As %%llm does: a mistyped flag must not be sent as the prompt.
            known = ", ".join(sorted(n for n in actions if n.startswith("--")))
            raise CellError(
                f"unrecognized option {name}",
                title="UsageError",
                hint=f"Options: {known}. Put -- before a prompt that starts with a dash.",
            )
        if action is None:
            return line[:position], line[match.start(1) :]
        position = match.end()
        values = action.nargs if isinstance(action.nargs, int) else 1  # -p KEY VALUE: 2
        for _ in range(values if "=" not in token else 0):
            value = pattern.match(line, position)
            if value is None:
                return line, ""
            quote = value.group(1)[0]
            if quote in "'\"":  # a quoted value may contain spaces
                end = line.find(quote, value.start(1) + 1)
                position = len(line) if end < 0 else end + 1
            else:
                position = value.end()
