"""The magics of saved assets: ``%llm_template`` and ``%llm_fragments``, and the work
behind ``%%llm``'s ``--template``, ``-p``, ``-F``, ``--sf``, ``--schema-multi`` and
``-O`` flags, ``%llm_models --options`` and ``%llm_config --save``.

A thin shell: templates, fragments, options and settings live in
``notebook_llm._templates``, ``_fragments``, ``_options`` and ``_settings``.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, magics_class

from notebook_llm import _render
from notebook_llm._api import default_client
from notebook_llm._fragments import fragments, remove_alias, resolve, set_alias
from notebook_llm._options import known_options, options, split_options
from notebook_llm._schemas import SchemaError, schema_dsl
from notebook_llm._settings import load_settings, save_settings
from notebook_llm._templates import Template, templates
from notebook_llm.core.errors import LLMError
from notebook_llm.notebook._display import Format
from notebook_llm.notebook._errors import CellError
from notebook_llm.notebook._ipython import line_cell_magic, line_magic, magic_parser
from notebook_llm.notebook._schema import resolve_schema

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["AssetMagics", "call_assets", "extract_format", "model_options", "save_config"]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _error(exc: Exception, title: str = "UsageError") -> CellError:
    name = type(exc).__name__ if isinstance(exc, LLMError) else title
    return CellError(str(exc), title=name)


def call_assets(args: argparse.Namespace, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The call options ``%%llm``'s asset flags add: the template and its params, the
    fragments (read now: a name may be a notebook variable), the ``-O`` options
    checked against the model's provider, and ``--schema-multi``.

    Raises:
        CellError: an unknown template or option, a fragment that cannot be read,
            a schema that does not parse; nothing has been sent.
    """
    out: dict[str, Any] = {}
    try:
        template: Template | None = None
        if getattr(args, "template", None):
            template = templates.get(_unquote(args.template))
            out["template"] = template
            out["params"] = {key: _unquote(value) for key, value in args.param or []}
        elif getattr(args, "param", None):
            raise CellError("-p fills a template's $names: add --template NAME",
                            title="UsageError")
        if getattr(args, "fragment", None):
            out["fragments"] = [resolve(_unquote(f), namespace) for f in args.fragment]
        if getattr(args, "sf", None):
            out["system_fragments"] = [resolve(_unquote(f), namespace) for f in args.sf]
        if getattr(args, "option", None):
            model = (_unquote(args.model) if getattr(args, "model", None) else None) or (
                template.model if template else None)
            target = str(default_client().resolve(model))
            call, extra = split_options(target, {k: _unquote(v) for k, v in args.option})
            out.update(call)
            out.update(extra)
    except LLMError as exc:
        raise _error(exc) from None
    if getattr(args, "schema_multi", None):
        out["response_format"] = resolve_schema(args.schema_multi, namespace, multi=True)
    return out


def model_options(model: str) -> Any:
    """What ``%llm_models --options MODEL`` shows: the options its provider takes."""
    try:
        name = str(default_client().resolve(_unquote(model.strip())))
        if known_options(name.split(":", 1)[0]) is None:
            raise CellError(f"{name}'s provider does not list its options; they are passed "
                            "on unchecked", title="UsageError")
        return options.valid(name)
    except LLMError as exc:
        raise _error(exc) from None


def save_config(client: Any, words: list[str]) -> str:
    """``%llm_config --save``: keep this kernel's aliases, default model and default
    embedding model; ``%llm_config --unsave [alias NAME | model | embedding_model]``
    removes saved ones (all of them without a name)."""
    saved = load_settings()
    if words[0] == "--save":
        saved.aliases.update(client.aliases)
        if client.default:
            saved.default_model = client.default
        if client.embedding_model:
            saved.default_embedding_model = client.embedding_model
    elif words[1:] == []:
        saved.aliases.clear()
        saved.default_model = saved.default_embedding_model = None
    elif words[1] == "alias" and len(words) == 3:
        if saved.aliases.pop(words[2], None) is None:
            raise CellError(f"no saved alias {words[2]!r}", title="UsageError")
    elif words[1:] == ["model"]:
        saved.default_model = None
    elif words[1:] == ["embedding_model"]:
        saved.default_embedding_model = None
    else:
        raise CellError(f"cannot understand %llm_config {' '.join(words)}", title="UsageError",
                        hint="Try: --save | --unsave [alias NAME | model | embedding_model]")
    path = save_settings(saved)
    return f"saved to {path}"


_BRACE_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_]\w*)\}(?!\})")


def template_from_cell(name: str, source: str, parser: argparse.ArgumentParser) -> Template:
    """A template from a ``%%llm`` cell (its flags and prompt; ``{name}`` becomes
    ``$name``) or from a plain cell (its text is the prompt)."""
    first, _, body = source.partition("\n")
    if not first.lstrip().startswith("%%llm"):
        return Template(name=name, prompt=source.strip())
    line = first.strip()[len("%%llm"):]
    try:
        args = parser.parse_args(shlex.split(line))
    except (SystemExit, ValueError) as exc:
        raise CellError(f"cannot read the %%llm flags of the cell above: {line}",
                        title="UsageError") from exc
    models = [m.strip() for value in args.model or [] for m in value.split(",") if m.strip()]
    if len(models) > 1:
        raise CellError("a template names one model; the cell above names "
                        f"{', '.join(models)}", title="UsageError")
    prompt = _BRACE_FIELD.sub(r"${\1}", body.strip()).replace("{{", "{").replace("}}", "}")
    import yaml

    # -O values typed as YAML reads them (0.9 a number, true a bool), as the call would.
    option_values: dict[str, Any] = {k: yaml.safe_load(_unquote(v)) for k, v in args.option or []}
    if args.temperature is not None:
        option_values["temperature"] = args.temperature
    if args.max_tokens is not None:
        option_values["max_tokens"] = args.max_tokens
    schema = args.schema or args.schema_multi
    try:
        schema_object = schema_dsl(schema, multi=bool(args.schema_multi)) if schema else None
    except SchemaError as exc:
        raise _error(exc) from None
    return Template(
        name=name, prompt=prompt or None, system=args.system, model=models[0] if models else None,
        options=option_values or None, schema_object=schema_object,
        fragments=args.fragment or None, system_fragments=args.sf or None,
    )


@magics_class
class AssetMagics(Magics):
    """``%llm_template`` and ``%llm_fragments``."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self._shell = shell

    @line_cell_magic
    def llm_template(self, line: str, cell: str | None = None) -> Any:
        """``%llm_template [list]``, ``show NAME``, ``save NAME`` (from the cell above,
        a ``%%llm`` cell or plain text), ``edit NAME`` (a cell below to change and
        run), ``delete NAME``, ``load PATH_OR_URL [NAME]``. ``%%llm_template save
        NAME`` saves the cell's YAML."""
        words = line.split()
        command, rest = (words[0], words[1:]) if words else ("list", [])
        try:
            if command == "list" and not rest:
                return templates.list()
            if command == "save" and len(rest) == 1:
                if cell is not None:
                    templates.save(rest[0], cell)
                else:
                    templates.save(rest[0], self._cell_above(rest[0]))
                return templates.get(rest[0])
            if command == "show" and len(rest) == 1:
                return templates.show(rest[0])
            if command == "edit" and len(rest) == 1:
                text = templates.get(rest[0]).to_yaml()
                self._shell.set_next_input(f"%%llm_template save {rest[0]}\n{text}",
                                           replace=False)
                return None
            if command == "delete" and len(rest) == 1:
                templates.delete(rest[0])
                return None
            if command == "load" and len(rest) in (1, 2):
                loaded = templates.load(_unquote(rest[0]), rest[1] if len(rest) == 2 else None)
                return templates.save(loaded.name, loaded)
        except LLMError as exc:
            raise _error(exc) from None
        raise CellError(f"cannot understand %llm_template {line.strip()}", title="UsageError",
                        hint="Try: list | show NAME | save NAME | edit NAME | delete NAME | "
                             "load PATH_OR_URL [NAME]")

    def _cell_above(self, name: str) -> Template:
        history = self._shell.user_ns.get("In") or []
        source = history[-2] if len(history) >= 2 else ""
        if not source.strip():
            raise CellError("there is no cell above to save", title="UsageError")
        # %%llm's own parser (registered beside these magics), so its flags read the same.
        llm: Any = self._shell.magics_manager.registry["LLMMagics"]
        return template_from_cell(name, _source_of(source), magic_parser(llm.llm))

    @line_magic
    def llm_fragments(self, line: str) -> Any:
        """``%llm_fragments``: the stored fragments; ``alias NAME PATH_URL_OR_VARIABLE``,
        ``remove NAME``, ``show NAME``, ``--limit N`` (refuse larger fragments; ``none``
        lifts it)."""
        words = line.split()
        try:
            if not words:
                return fragments()
            if words[0] == "alias" and len(words) == 3:
                fragment = set_alias(words[1], _unquote(words[2]), self._shell.user_ns)
                return _Text(f"{words[1]}: {fragment.source}, about {fragment.tokens:,} tokens")
            if words[0] == "remove" and len(words) == 2:
                if not remove_alias(words[1]):
                    raise CellError(f"no fragment alias {words[1]!r}", title="UsageError")
                return None
            if words[0] == "show" and len(words) == 2:
                return _Text(resolve(_unquote(words[1]), self._shell.user_ns).content)
            if words[0] == "--limit" and len(words) == 2:
                saved = load_settings()
                saved.fragment_max_tokens = None if words[1] == "none" else int(words[1])
                save_settings(saved)
                return None
        except LLMError as exc:
            raise _error(exc) from None
        except ValueError:
            pass
        raise CellError(f"cannot understand %llm_fragments {line.strip()}", title="UsageError",
                        hint="Try: alias NAME PATH_URL_OR_VARIABLE | remove NAME | show NAME | "
                             "--limit N")


def _source_of(text: str) -> str:
    """A cell's source as typed: IPython records ``%%llm`` cells as a call of
    ``run_cell_magic('llm', 'FLAGS', 'BODY')``."""
    match = re.match(r"get_ipython\(\)\.run_cell_magic\((.*)\)\s*$", text.strip(), re.S)
    if match is None:
        return text
    import ast

    try:
        name, flags, body = ast.literal_eval(f"({match.group(1)})")
    except (ValueError, SyntaxError):
        return text
    return f"%%{name} {flags}\n{body}"


class _Text:
    """Plain text shown as it is (escaped for the terminal)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return _render.terminal_text(self.text)


def extract_format(template: Any, fmt: Format) -> Format:
    """How ``%%llm --template NAME`` shows its answer: a template with llm's
    ``extract`` (``extract_last``) shows the first (last) fenced code block, and
    puts it in a new cell below, as ``-f code`` does, unless ``-f`` says otherwise."""
    if fmt != "markdown" or not isinstance(template, Template):
        return fmt
    if template.extract_last:
        return "code_last"
    return "code" if template.extract else fmt

