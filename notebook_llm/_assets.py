"""One call's saved assets resolved: template, parameters, fragments, options, schema.

:class:`notebook_llm.Client` calls :func:`expand` before it builds a request,
so ``nl.complete``, ``nl.stream``, the magics, ``batch`` and ``compare`` all
mean the same thing by ``template=``, ``params=``, ``fragments=`` and
``system_fragments=``. Everything that can fail (a missing parameter, an
unknown option, a fragment that cannot be read or is too large) fails here,
before anything is sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from notebook_llm._fragments import Fragment, check_size, resolve, store_fragments
from notebook_llm._options import split_options
from notebook_llm._schemas import json_schema_of, response_format, schema_id
from notebook_llm._settings import cached_settings, option_defaults
from notebook_llm._templates import Template, TemplateError, templates
from notebook_llm.core.errors import InvalidRequestError
from notebook_llm.core.options import CallOptions
from notebook_llm.core.types import Message
from notebook_llm.pricing import context_window
from notebook_llm.store.db import PathLike
from notebook_llm.store.log import call_log

__all__ = [
    "Expanded",
    "apply_option_defaults",
    "expand",
    "record_schema",
    "store_call_fragments",
    "with_schema",
]


@dataclasses.dataclass
class Expanded:
    """A call after its assets are resolved."""

    prompt: str | list[Message]
    model: str | None
    options: CallOptions
    provider_kwargs: dict[str, Any]
    fragments: list[Fragment] = dataclasses.field(default_factory=list)
    system_fragments: list[Fragment] = dataclasses.field(default_factory=list)


def as_template(value: Any) -> Template:
    """A :class:`Template`, or the saved one a name means."""
    if isinstance(value, Template):
        return value
    if isinstance(value, str):
        return templates.get(value)
    raise TemplateError(f"template= takes a Template or a saved template's name, not "
                        f"{type(value).__name__}")


def expand(
    prompt: str | Sequence[Message] | None,
    model: str | None,
    options: CallOptions,
    provider_kwargs: Mapping[str, Any],
    *,
    resolve_model: Any,
    namespace: Mapping[str, Any] | None = None,
    db_path: PathLike | None = None,
) -> Expanded:
    """Fill the template, read the fragments and check the options of one call.

    Args:
        resolve_model: the client's ``resolve`` (a model string to its ModelRef).
        namespace: where fragment names may be variables (the notebook's).

    Raises:
        InvalidRequestError: what is wrong, named; nothing has been sent.
    """
    kwargs = dict(provider_kwargs)
    changes: dict[str, Any] = {"template": None, "params": None, "fragments": None,
                               "system_fragments": None}
    fragment_refs = list(options.fragments or ())
    system_refs = list(options.system_fragments or ())
    system = options.system
    text: str | list[Message]
    if options.template is not None:
        template = as_template(options.template)
        if prompt is not None and not isinstance(prompt, str):
            raise InvalidRequestError("template= fills a prompt: pass text, not messages")
        filled = template.fill(options.params, input=prompt)
        text = filled.prompt
        if system is None:
            system = filled.system
        model = model or template.model
        fragment_refs = [*(template.fragments or ()), *fragment_refs]
        system_refs = [*(template.system_fragments or ()), *system_refs]
        if options.response_format is None and template.schema_object:
            changes["response_format"] = response_format(template.schema_object)
        if template.options:
            ref = str(resolve_model(model))
            call, extra = split_options(ref, template.options)
            for name, value in call.items():
                if getattr(options, name) is None:
                    changes[name] = value
            kwargs = {**extra, **kwargs}
    elif options.params is not None:
        raise InvalidRequestError("params= fills a template's $names: pass template= too")
    elif prompt is None:
        raise InvalidRequestError("pass a prompt (or messages, or template=...)")
    else:
        text = prompt if isinstance(prompt, str) else [dict(m) for m in prompt]
    target = str(resolve_model(model))
    fragments = [resolve(ref, namespace, db_path=db_path) for ref in fragment_refs]
    system_fragments = [resolve(ref, namespace, db_path=db_path) for ref in system_refs]
    limit = cached_settings().fragment_max_tokens
    provider, _, name = target.partition(":")
    window = context_window(provider, name) if fragments or system_fragments else None
    for fragment in [*fragments, *system_fragments]:
        check_size(fragment, limit=limit, context=window, model=target)
    if fragments:
        text = _prepend(text, [f.content for f in fragments])
    if system_fragments:
        system = "\n".join([*(f.content for f in system_fragments), *([system] if system else [])])
    changes["system"] = system
    return Expanded(text, model, dataclasses.replace(options, **changes), kwargs,
                    fragments, system_fragments)


def _prepend(prompt: str | list[Message], parts: list[str]) -> str | list[Message]:
    """The fragments' text before the prompt (llm joins them with newlines)."""
    if isinstance(prompt, str):
        return "\n".join([*parts, prompt])
    messages = [dict(m) for m in prompt]
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            message["content"] = "\n".join([*parts, str(message["content"])])
            return messages
    raise InvalidRequestError("fragments= needs a user message with text to go before")


def apply_option_defaults(resolve_model: Any, model: str | None, options: CallOptions,
                          provider_kwargs: dict[str, Any]) -> CallOptions:
    """Saved defaults for the call's model (``nl.options.set``) where the call sets
    none. Costs a dict lookup when nothing is saved (every call comes here)."""
    if not cached_settings().options:
        return options
    target = str(resolve_model(model))
    saved = option_defaults(target)
    if not saved:
        return options
    try:
        call, extra = split_options(target, saved)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"a saved option default is not valid: {exc}; change it with "
                                  "nl.options.set or nl.options.unset") from None
    for key, value in extra.items():
        provider_kwargs.setdefault(key, value)
    changes = {k: v for k, v in call.items() if getattr(options, k) is None}
    return dataclasses.replace(options, **changes) if changes else options


def with_schema(options: CallOptions) -> CallOptions:
    """``response_format`` as DSL text or a bare JSON schema made into what the core
    takes (a Pydantic model or a wire-format dict)."""
    value = options.response_format
    if value is None or value == "json" or not isinstance(value, (str, dict)):
        return options
    converted = response_format(value)
    return options if converted is value else dataclasses.replace(options,
                                                                 response_format=converted)


_stored_schemas: set[tuple[str, str]] = set()


def record_schema(format_dict: Mapping[str, Any] | None, db_path: PathLike | None) -> str | None:
    """Store the JSON schema a call asks for (once per file) and return its id."""
    schema = json_schema_of(dict(format_dict)) if format_dict else None
    if not schema:
        return None
    identity = schema_id(schema)
    log = call_log(db_path)
    key = (log.store.path, identity)
    if key not in _stored_schemas:
        import json
        from datetime import datetime, timezone

        with log.store.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO schemas (id, content, created_at) VALUES (?, ?, ?)",
                         (identity, json.dumps(schema, sort_keys=True),
                          datetime.now(timezone.utc).isoformat()))
        _stored_schemas.add(key)
    return identity


def store_call_fragments(expanded: Expanded, db_path: PathLike | None) -> tuple[
        tuple[int, ...], tuple[int, ...]]:
    """Store the call's fragments (once each, by hash); their ids, prompt then system."""
    return (tuple(store_fragments(expanded.fragments, db_path)),
            tuple(store_fragments(expanded.system_fragments, db_path)))
