"""Model options: which a provider accepts, checking them, and saved defaults.

``%%llm -O top_p 0.9``, a template's ``options:`` and ``nl.options.set(model,
key, value)`` all go through :func:`split_options`: each option is checked
against what the model's provider takes (its wire protocol's parameters) and
converted to its type; an unknown one is an error that lists the valid ones,
never dropped. ``temperature``, ``max_tokens`` and ``reasoning_effort`` become
the call's own options; the rest go to the provider as keyword arguments.

Plugin providers may list theirs in an ``OPTIONS`` class attribute (a dict of
name to description); without one, their options are passed on unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from notebook_llm._settings import load_settings, save_settings
from notebook_llm.core.errors import InvalidRequestError
from notebook_llm.core.models import parse_model
from notebook_llm.core.registry import get_spec

__all__ = ["CALL_OPTIONS", "ModelOptions", "OptionSpec", "known_options", "options",
           "split_options"]


@dataclass(frozen=True)
class OptionSpec:
    """One option: its type (``float``, ``int``, ``bool``, ``str``, ``list``, ``dict``,
    or ``"str|list"``) and what it does."""

    kind: str
    description: str


def _spec(kind: str, description: str) -> OptionSpec:
    return OptionSpec(kind, description)


CALL_OPTIONS: dict[str, OptionSpec] = {
    "temperature": _spec("float", "sampling temperature"),
    "max_tokens": _spec("int", "the most tokens to generate"),
    "reasoning_effort": _spec("str", "low, medium or high (reasoning models)"),
}
"""Options every provider takes: they are the call's own arguments."""

_SAMPLING = {
    "top_p": _spec("float", "nucleus sampling: keep this much probability mass"),
    "seed": _spec("int", "a seed for repeatable sampling"),
    "stop": _spec("str|list", "stop at this text (or any of a list)"),
    "presence_penalty": _spec("float", "penalise tokens already present"),
    "frequency_penalty": _spec("float", "penalise frequent tokens"),
    "logit_bias": _spec("dict", "token id to bias"),
}
_OPENAI = {
    **_SAMPLING,
    "logprobs": _spec("bool", "return log probabilities"),
    "top_logprobs": _spec("int", "log probabilities of this many top tokens"),
    "n": _spec("int", "answers per request"),
    "user": _spec("str", "an end-user id for abuse monitoring"),
    "parallel_tool_calls": _spec("bool", "let the model call several tools at once"),
    "service_tier": _spec("str", "auto, default, flex or priority"),
    "store": _spec("bool", "store the answer for distillation and evals"),
    "verbosity": _spec("str", "low, medium or high (GPT-5)"),
    "max_completion_tokens": _spec("int", "the newer name of max_tokens"),
    "api": _spec("str", "chat or responses: which OpenAI API to call"),
}
# What llama.cpp's and Ollama's OpenAI-compatible servers and the in-process
# local provider take beyond OpenAI's sampling parameters.
_LOCAL_SAMPLING = {
    **_SAMPLING,
    "top_k": _spec("int", "sample from the k most likely tokens"),
    "min_p": _spec("float", "drop tokens below this probability relative to the best"),
    "typical_p": _spec("float", "locally typical sampling"),
    "repeat_penalty": _spec("float", "penalise repeated tokens"),
    "mirostat_mode": _spec("int", "0, 1 or 2"),
    "mirostat_tau": _spec("float", "mirostat target entropy"),
    "mirostat_eta": _spec("float", "mirostat learning rate"),
}
_ANTHROPIC = {
    "top_p": _SAMPLING["top_p"],
    "top_k": _spec("int", "sample from the k most likely tokens"),
    "stop_sequences": _spec("list", "stop at any of these texts"),
    "thinking": _spec("dict", "extended thinking, e.g. {type: enabled, budget_tokens: 2048}"),
    "service_tier": _spec("str", "auto or standard_only"),
}
_OFFLINE = {
    "chunk_delay": _spec("float", "seconds between streamed chunks"),
    "fail": _spec("str", "fail the call with this message (for testing error paths)"),
}


def known_options(provider: str) -> dict[str, OptionSpec] | None:
    """The options ``provider`` accepts, the call's own first; ``None`` when a
    plugin provider does not say (its options are passed on unchecked)."""
    spec = get_spec(provider)
    protocol = spec.info.protocol
    extra: dict[str, OptionSpec]
    if protocol == "openai":
        extra = dict(_OPENAI) if spec.info.name == "openai" else {**_OPENAI, **_LOCAL_SAMPLING}
    elif protocol == "anthropic":
        extra = dict(_ANTHROPIC)
    elif protocol == "local":
        extra = dict(_LOCAL_SAMPLING)
    elif protocol == "offline":
        extra = dict(_OFFLINE)
    else:
        declared = getattr(spec.load(), "OPTIONS", None)
        if not isinstance(declared, Mapping):
            return None
        extra = {str(k): _spec("any", str(v)) for k, v in declared.items()}
    return {**CALL_OPTIONS, **extra}


_NUMBER = (int, float)


def _convert(name: str, value: Any, kind: str, where: str) -> Any:
    if isinstance(value, str) and kind != "str":
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    ok = {
        "float": isinstance(value, _NUMBER) and not isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, (str, int, float)) and not isinstance(value, bool),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
        "str|list": isinstance(value, (str, list)),
        "any": True,
    }[kind]
    if not ok:
        wanted = {"float": "a number", "int": "a whole number", "bool": "true or false",
                  "str": "text", "list": "a list like [a, b]", "dict": "a mapping like {k: v}",
                  "str|list": "text or a list"}[kind]
        raise InvalidRequestError(f"option {name} for {where}: expected {wanted}, got {value!r}")
    if kind == "float":
        return float(value)
    if kind == "str":
        return str(value)
    return value


def split_options(model: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check and convert options for ``model`` (``provider:model``).

    Returns:
        ``(call_options, provider_kwargs)``: ``temperature``, ``max_tokens`` and
        ``reasoning_effort`` first, the provider's own options second.

    Raises:
        InvalidRequestError: an option the provider does not take (the message
            lists the ones it does) or a value of the wrong type.
    """
    provider = model.split(":", 1)[0]
    known = known_options(provider)
    call: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in values.items():
        if known is None:
            target = call if name in CALL_OPTIONS else extra
            target[name] = _convert(name, value, CALL_OPTIONS[name].kind, model) \
                if name in CALL_OPTIONS else value
            continue
        spec = known.get(name)
        if spec is None:
            import difflib

            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise InvalidRequestError(
                f"{model} has no option {name!r}.{hint} Valid options for {provider}: "
                f"{', '.join(known)}"
            )
        converted = _convert(name, value, spec.kind, model)
        (call if name in CALL_OPTIONS else extra)[name] = converted
    return call, extra


class ModelOptions:
    """Saved option defaults per model (``nl.options``), applied to every call of
    that model unless the call sets the option itself."""

    def set(self, model: str, key: str, value: Any) -> None:
        """Save ``key = value`` as a default for ``model`` (checked first)."""
        name = self._model(model)
        call, extra = split_options(name, {key: value})
        saved = load_settings()
        saved.options.setdefault(name, {}).update({**call, **extra})
        save_settings(saved)

    def unset(self, model: str, key: str | None = None) -> None:
        """Forget one saved default of ``model`` (``key=None``: all of them)."""
        name = self._model(model)
        saved = load_settings()
        values = saved.options.get(name, {})
        if key is None:
            values.clear()
        else:
            values.pop(key, None)
        save_settings(saved)

    def get(self, model: str) -> dict[str, Any]:
        """The saved defaults of ``model``."""
        return dict(load_settings().options.get(self._model(model), {}))

    def valid(self, model: str) -> Any:
        """The options ``model``'s provider takes, as a DataFrame (name, type,
        description, saved default)."""
        import pandas as pd

        name = self._model(model)
        known = known_options(name.split(":", 1)[0]) or dict(CALL_OPTIONS)
        saved = self.get(name)
        rows = [{"option": key, "type": spec.kind, "description": spec.description,
                 "default": saved.get(key)} for key, spec in known.items()]
        return pd.DataFrame(rows, columns=["option", "type", "description", "default"])

    def list(self) -> Any:
        """Every saved default as a DataFrame (model, option, value)."""
        import pandas as pd

        rows = [{"model": model, "option": key, "value": value}
                for model, values in sorted(load_settings().options.items())
                for key, value in values.items()]
        return pd.DataFrame(rows, columns=["model", "option", "value"])

    @staticmethod
    def _model(model: str) -> str:
        # Saved aliases resolve here; a kernel's unsaved ones do not (the default
        # is saved under the provider:model it is for).
        return str(parse_model(model, load_settings().aliases))

    def __repr__(self) -> str:
        return "<notebook_llm model options: set(model, key, value), get, unset, valid, list>"


options = ModelOptions()
"""Saved per-model option defaults (``nl.options.set("openai:gpt-4o-mini", "top_p", 0.9)``)."""
