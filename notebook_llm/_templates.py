"""Templates: saved prompts in llm's YAML format, usable everywhere.

A template has llm's keys (``prompt``, ``system``, ``model``, ``options``,
``schema_object``, ``fragments``, ``system_fragments``, ``defaults``,
``extract``, ``extract_last``, and llm's others kept as they are) and
``$input`` / ``$name`` parameters (``string.Template``: ``$$`` is a dollar).
A file saved here loads in llm (``llm.templates.Template`` forbids unknown
keys, so none are added) and llm's files load here. As in llm, ``extract`` and
``extract_last`` change what is shown, not the answer: ``%%llm --template``
shows the first (last) fenced code block and puts it in a new cell below,
while the Completion keeps the whole text.

``nl.templates`` (:data:`templates`) saves, lists, shows, edits, deletes and
loads them; each is one YAML file in ``<config dir>/templates`` (see
:mod:`notebook_llm._settings`). A :class:`Template` goes to
``nl.complete(template=t, params={...})``, ``nl.batch(df, template=t)`` (the
columns fill the parameters) and ``nl.compare(template=t, data=...)``.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from notebook_llm._settings import atomic_write, config_dir
from notebook_llm.core.errors import InvalidRequestError

__all__ = ["Filled", "Template", "TemplateError", "Templates", "templates"]

_NAME = re.compile(r"^[A-Za-z0-9_][\w.-]*$")
_KEYS = ("prompt", "system", "model", "defaults", "options", "extract", "extract_last",
         "schema_object", "fragments", "system_fragments", "attachments", "attachment_types",
         "tools", "functions")
"""llm's template keys besides ``name``, in the order files list them."""


class TemplateError(InvalidRequestError):
    """A template that cannot be read, found or filled; the message says which and where."""


@dataclasses.dataclass(frozen=True)
class Filled:
    """A template with its parameters filled in."""

    prompt: str
    system: str | None


@dataclasses.dataclass
class Template:
    """A reusable prompt: llm's template fields (see the module docstring)."""

    name: str
    prompt: str | None = None
    system: str | None = None
    model: str | None = None
    defaults: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    extract: bool | None = None
    extract_last: bool | None = None
    schema_object: dict[str, Any] | None = None
    fragments: list[str] | None = None
    system_fragments: list[str] | None = None
    attachments: list[str] | None = None
    attachment_types: list[dict[str, str]] | None = None
    tools: list[str] | None = None
    functions: str | None = None
    path: Path | None = dataclasses.field(default=None, compare=False, repr=False)
    """The file it was read from (not a YAML key)."""

    # -- parameters -----------------------------------------------------------

    def params(self) -> list[str]:
        """The ``$names`` the prompt and system use, in order (``input`` included)."""
        names: list[str] = []
        for text in (self.prompt, self.system):
            for name in _names(text):
                if name not in names:
                    names.append(name)
        return names

    def required(self) -> list[str]:
        """The parameters without a default (``input`` aside: a prompt fills it)."""
        defaults = self.defaults or {}
        return [name for name in self.params() if name not in defaults and name != "input"]

    def fill(self, params: Mapping[str, Any] | None = None, input: str | None = None) -> Filled:
        """The prompt and system text with ``params`` (then ``defaults``) filled in.

        As llm does: ``input`` is ``$input``; a template without a prompt sends
        ``input`` as the prompt.

        Raises:
            TemplateError: a parameter is missing (named), before anything is sent.
        """
        unused = [key for key in ("attachments", "attachment_types", "tools", "functions")
                  if getattr(self, key)]
        if unused:
            raise TemplateError(
                f"template {self.name!r} uses llm's {unused[0]!r}, which notebook-llm does not "
                "apply (it never runs a template's code): remove it to use the template here"
            )
        values: dict[str, Any] = {**(self.defaults or {}), **(params or {})}
        if input is not None:
            values["input"] = input
        missing = [name for name in self.params() if name not in values]
        if missing:
            hint = "a prompt" if missing[0] == "input" else f"params={{{missing[0]!r}: ...}}"
            raise TemplateError(
                f"template {self.name!r} needs the parameter {missing[0]!r} "
                f"(uses {', '.join('$' + n for n in self.params())}): pass {hint} "
                f"or -p {missing[0]} VALUE"
            )
        system = _substitute(self.system, values, self.name)
        if self.prompt:
            prompt = _substitute(self.prompt, values, self.name) or ""
        elif input is not None or "input" in values:
            prompt = str(values["input"])
        else:
            raise TemplateError(
                f"template {self.name!r} has no prompt: pass the input as the prompt"
            )
        return Filled(prompt, system)

    # -- YAML -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """llm's YAML document: the keys that are set, ``name`` left out (it is the file's)."""
        data: dict[str, Any] = {}
        for key in _KEYS:
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data

    def to_yaml(self) -> str:
        """The YAML text of :meth:`to_dict` (block style for multi-line text)."""
        import yaml

        class _Dumper(yaml.SafeDumper):
            pass

        def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
            style = "|" if "\n" in value else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

        _Dumper.add_representer(str, text)
        dumped: str = yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False,
                                allow_unicode=True)
        return "" if dumped.strip() == "{}" else dumped

    @classmethod
    def from_yaml(cls, text: str, name: str, source: str = "<text>") -> Template:
        """Read llm's YAML format; a bare string is a prompt (as llm reads it).

        Raises:
            TemplateError: not YAML, or an unknown key or a wrong type (the
                message names ``source``, the line or the key).
        """
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise TemplateError(f"{source}{where}: not valid YAML: {problem}") from None
        if data is None:
            data = {}
        if isinstance(data, str):
            data = {"prompt": data}
        if not isinstance(data, dict):
            raise TemplateError(f"{source}: a template is a mapping of llm's keys, not "
                                f"{type(data).__name__}")
        data.pop("name", None)
        unknown = sorted(str(key) for key in data if key not in _KEYS)
        if unknown:
            raise TemplateError(f"{source}: unknown key {unknown[0]!r} (a template takes: "
                                f"{', '.join(_KEYS)})")
        _check_types(data, source)
        return cls(name=name, **data)

    # -- display ----------------------------------------------------------------

    def __repr__(self) -> str:
        from notebook_llm import _render

        where = f" ({self.path})" if self.path else ""
        return _render.terminal_text(f"Template {self.name!r}{where}\n{self.to_yaml()}".rstrip())

    def _repr_markdown_(self) -> str:
        from notebook_llm import _render

        body = self.to_yaml()
        # A fence longer than any run of backticks in the text, which cannot end it.
        longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
        fence = "`" * max(3, longest + 1)
        code = _render.escape_markdown(f"{fence}yaml\n{body}{fence}")
        return f"**Template {_render.markdown_text(self.name)}**\n\n{code}"


def _names(text: str | None) -> list[str]:
    if not text:
        return []
    found = string.Template(text).pattern.finditer(text)
    return [m.group("named") or m.group("braced") for m in found
            if m.group("named") or m.group("braced")]


def _substitute(text: str | None, values: Mapping[str, Any], name: str) -> str | None:
    if text is None:
        return None
    try:
        return string.Template(text).substitute({k: str(v) for k, v in values.items()})
    except ValueError as exc:  # a lone '$' not followed by a name
        raise TemplateError(f"template {name!r}: {exc} (write $$ for a dollar sign)") from None


_TYPES: dict[str, tuple[type, ...]] = {
    "prompt": (str,), "system": (str,), "model": (str,), "defaults": (dict,),
    "options": (dict,), "extract": (bool,), "extract_last": (bool,), "schema_object": (dict,),
    "fragments": (list,), "system_fragments": (list,), "attachments": (list,),
    "attachment_types": (list,), "tools": (list,), "functions": (str,),
}


def _check_types(data: Mapping[str, Any], source: str) -> None:
    for key, value in data.items():
        if value is not None and not isinstance(value, _TYPES[key]):
            raise TemplateError(f"{source}: {key!r} must be {_TYPES[key][0].__name__}, "
                                f"not {type(value).__name__}")


def check_name(name: str) -> str:
    """``name`` when it can be a file name in the templates directory."""
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith(".yaml"):
        raise TemplateError(
            f"{name!r} is not a template name: use letters, digits, '_', '-' and '.'"
        )
    return name


class Templates:
    """The saved templates (``nl.templates``): one YAML file each in the config directory."""

    @property
    def directory(self) -> Path:
        """``<config dir>/templates`` (``$NOTEBOOK_LLM_HOME/templates`` when set)."""
        return config_dir() / "templates"

    def path(self, name: str) -> Path:
        """The file of template ``name`` (it may not exist)."""
        return self.directory / f"{check_name(name)}.yaml"

    def names(self) -> list[str]:
        """Every saved template's name, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(path.stem for path in self.directory.glob("*.yaml")
                      if _NAME.match(path.stem))

    def get(self, name: str) -> Template:
        """The saved template ``name``.

        Raises:
            TemplateError: there is none (the message lists the saved ones), or
                its file does not parse (the message names the file and line).
        """
        if isinstance(name, Template):
            return name
        path = self.path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            known = self.names()
            listed = f"saved: {', '.join(known)}" if known else "none is saved yet"
            raise TemplateError(
                f"no template named {name!r} in {self.directory} ({listed}); save one with "
                "nl.templates.save(name, prompt=...) or %llm_template save NAME"
            ) from None
        template = Template.from_yaml(text, name, str(path))
        template.path = path
        return template

    def save(self, name: str, template: Template | str | None = None, **fields: Any) -> Template:
        """Save a template as ``name`` (replacing one of that name) and return it.

        ``template`` is a :class:`Template`, YAML text, or a prompt; keyword
        arguments set llm's keys (``prompt=``, ``system=``, ``model=``,
        ``options=``, ``schema_object=``, ``defaults=``, ...).
        """
        check_name(name)
        if isinstance(template, Template):
            base = dataclasses.replace(template, name=name)
        elif isinstance(template, str):
            base = Template.from_yaml(template, name)
        else:
            base = Template(name=name)
        unknown = sorted(set(fields) - set(_KEYS))
        if unknown:
            raise TemplateError(f"unknown template key {unknown[0]!r} (keys: {', '.join(_KEYS)})")
        _check_types(fields, f"template {name!r}")
        result = dataclasses.replace(base, **fields)
        path = self.path(name)
        atomic_write(path, result.to_yaml())
        result.path = path
        return result

    def edit(self, name: str, **fields: Any) -> Template:
        """Change some keys of a saved template (``None`` removes a key); returns it."""
        return self.save(name, self.get(name), **fields)

    def delete(self, name: str) -> None:
        """Delete a saved template.

        Raises:
            TemplateError: there is none of that name.
        """
        self.get(name)  # the same error for an unknown name
        self.path(name).unlink()

    def show(self, name: str) -> Template:
        """The saved template (it shows its YAML)."""
        return self.get(name)

    def load(self, path_or_url: str | Path, name: str | None = None) -> Template:
        """A template read from a YAML file or an http(s) URL (not saved: pass it to
        :meth:`save` to keep it).

        Raises:
            TemplateError: the file or URL cannot be read, or does not parse.
        """
        source = str(path_or_url)
        if source.startswith(("http://", "https://")):
            from notebook_llm._fragments import fetch_url

            text = fetch_url(source, what="template")
            stem = source.rstrip("/").rsplit("/", 1)[-1]
        else:
            path = Path(source).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise TemplateError(f"cannot read template {source}: {exc.strerror}") from None
            stem = path.name
        stem = re.sub(r"\.ya?ml$", "", stem)
        template_name = name or (stem if _NAME.match(stem) else "template")
        return Template.from_yaml(text, template_name, source)

    def list(self) -> Any:
        """The saved templates as a DataFrame: name, model, parameters, system, prompt, path."""
        import pandas as pd

        rows = []
        for name in self.names():
            try:
                t = self.get(name)
            except TemplateError as exc:
                rows.append({"name": name, "model": None, "params": "", "system": None,
                             "prompt": f"(unreadable: {exc})", "path": str(self.path(name))})
                continue
            rows.append({"name": name, "model": t.model, "params": ", ".join(t.params()),
                         "system": t.system, "prompt": t.prompt, "path": str(t.path)})
        return pd.DataFrame(rows, columns=["name", "model", "params", "system", "prompt", "path"])

    def __repr__(self) -> str:
        return f"<notebook_llm templates in {self.directory}: {len(self.names())} saved>"


templates = Templates()
"""The saved templates (``nl.templates.save / list / get / show / edit / delete / load``)."""
