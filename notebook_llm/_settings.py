"""Settings that persist: the config directory and ``settings.yaml`` in it.

The directory is ``$NOTEBOOK_LLM_HOME`` when set, else the platform's user
config directory for notebook-llm (``platformdirs``). It holds
``settings.yaml`` (saved aliases, the default model, the default embedding
model and per-model option defaults) and ``templates/`` (one YAML file per
template, see :mod:`notebook_llm._templates`).

Every file is written atomically (a temporary file in the same directory,
then ``os.replace``), so a crash mid-write leaves the old file whole.
``settings.yaml`` is written with mode 0600: it is the user's own
configuration and may name private hosts. No API key is ever written here
(option names that look like secrets are refused).

A leaf: it imports only the standard library, ``platformdirs`` and ``yaml``
(lazily), and nothing of the package but the error types.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notebook_llm.core.errors import InvalidRequestError

__all__ = [
    "SavedSettings",
    "apply_saved",
    "atomic_write",
    "cached_settings",
    "config_dir",
    "load_settings",
    "option_defaults",
    "save_settings",
    "settings_path",
]

_SECRET = re.compile(r"api[_-]?key|secret|password|token$|authorization|credential|header",
                     re.IGNORECASE)


def config_dir() -> Path:
    """``$NOTEBOOK_LLM_HOME``, else the user config directory (not created here)."""
    home = os.environ.get("NOTEBOOK_LLM_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("notebook-llm", appauthor=False))


def settings_path() -> Path:
    """Where ``settings.yaml`` lives."""
    return config_dir() / "settings.yaml"


def atomic_write(path: Path, text: str, *, private: bool = False) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never
    half of either: a temporary file beside it, flushed to disk, then ``os.replace``.

    Args:
        path: the file; its directory is created if needed.
        text: the whole new content.
        private: give the file mode 0600 (owner only), from its first byte.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp creates the file 0600; a public file gets the usual mode.
        if not private:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


@dataclass
class SavedSettings:
    """What ``settings.yaml`` holds."""

    default_model: str | None = None
    default_embedding_model: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Option defaults by model string (``provider:model``)."""
    fragment_max_tokens: int | None = None
    """Refuse fragments larger than this many tokens (``None``: only the model's context)."""

    def to_dict(self) -> dict[str, Any]:
        """The YAML document (empty parts left out)."""
        data: dict[str, Any] = {}
        if self.default_model:
            data["default_model"] = self.default_model
        if self.default_embedding_model:
            data["default_embedding_model"] = self.default_embedding_model
        if self.aliases:
            data["aliases"] = dict(sorted(self.aliases.items()))
        options = {model: dict(values) for model, values in sorted(self.options.items()) if values}
        if options:
            data["options"] = options
        if self.fragment_max_tokens:
            data["fragment_max_tokens"] = self.fragment_max_tokens
        return data

    def copy(self) -> SavedSettings:
        """A deep enough copy to change and save."""
        return SavedSettings(
            self.default_model, self.default_embedding_model, dict(self.aliases),
            {model: dict(values) for model, values in self.options.items()},
            self.fragment_max_tokens,
        )


_lock = threading.Lock()
_cache: dict[Path, SavedSettings] = {}


def _parse(path: Path, text: str) -> SavedSettings:
    import yaml

    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise InvalidRequestError(
            f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix or delete "
            "the file"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{path}: expected a mapping of settings at the top level")
    known = {"default_model", "default_embedding_model", "aliases", "options",
             "fragment_max_tokens"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidRequestError(
            f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    aliases = data.get("aliases") or {}
    options = data.get("options") or {}
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        raise InvalidRequestError(f"{path}: 'aliases' must map names to model strings")
    if not isinstance(options, dict) or not all(
        isinstance(v, dict) for v in options.values()
    ):
        raise InvalidRequestError(f"{path}: 'options' must map models to {{option: value}}")
    return SavedSettings(
        default_model=data.get("default_model") or None,
        default_embedding_model=data.get("default_embedding_model") or None,
        aliases={str(k): str(v) for k, v in aliases.items()},
        options={str(k): {str(o): v for o, v in values.items()} for k, values in options.items()},
        fragment_max_tokens=int(data["fragment_max_tokens"]) if data.get("fragment_max_tokens")
        else None,
    )


def load_settings(*, reload: bool = False) -> SavedSettings:
    """The saved settings (read once per process and directory; ``reload``: read again).

    A missing file means nothing is saved. A copy is returned: change it and
    pass it to :func:`save_settings`.

    Raises:
        InvalidRequestError: the file is not valid YAML or has unknown keys (the
            message names the file and line).
    """
    path = settings_path()
    with _lock:
        cached = _cache.get(path)
        if cached is None or reload:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            cached = _cache[path] = _parse(path, text)
            _by_home.clear()
        return cached.copy()


_by_home: dict[str | None, SavedSettings] = {}


def cached_settings() -> SavedSettings:
    """The saved settings as last read (not a copy: do not change it). Cheap after
    the first call (every call asks): a dict lookup by ``$NOTEBOOK_LLM_HOME``. A
    broken file reads as no settings here (:func:`load_settings` reports it)."""
    home = os.environ.get("NOTEBOOK_LLM_HOME")
    found = _by_home.get(home)
    if found is None:
        path = settings_path()
        cached = _cache.get(path)
        found = _by_home[home] = cached if cached is not None else _load_quietly(path)
    return found


def option_defaults(model: str) -> dict[str, Any]:
    """The saved option defaults for one ``provider:model`` (empty when none)."""
    values = cached_settings().options.get(model)
    return dict(values) if values else {}


def _load_quietly(path: Path) -> SavedSettings:
    try:
        load_settings()
    except InvalidRequestError:
        # A broken settings file must not break every call; %llm_config shows the error.
        with _lock:
            _cache[path] = SavedSettings()
            _by_home.clear()
    return _cache[path]


def save_settings(settings: SavedSettings) -> Path:
    """Write ``settings`` to ``settings.yaml`` (atomically, mode 0600); returns the path."""
    import yaml

    for model, values in settings.options.items():
        secret = [name for name in values if _SECRET.search(name)]
        if secret:
            raise InvalidRequestError(
                f"{secret[0]} for {model} looks like a credential and is never saved; set it "
                "in the environment instead"
            )
    path = settings_path()
    text = yaml.safe_dump(settings.to_dict(), sort_keys=False, allow_unicode=True)
    with _lock:
        atomic_write(path, "" if text.strip() == "{}" else text, private=True)
        _cache[path] = settings.copy()
        _by_home.clear()
    return path


def apply_saved(client: Any) -> None:
    """Give ``client`` the saved aliases (its own win), default model and default
    embedding model (the environment's ``NOTEBOOK_LLM_MODEL`` and
    ``NOTEBOOK_LLM_EMBEDDING_MODEL`` win over saved ones)."""
    saved = cached_settings()
    for name, model in saved.aliases.items():
        client.aliases.setdefault(name, model)
    if saved.default_model and not client.default and not os.environ.get("NOTEBOOK_LLM_MODEL"):
        client.default = saved.default_model
    if (saved.default_embedding_model and not client.embedding_model
            and not os.environ.get("NOTEBOOK_LLM_EMBEDDING_MODEL")):
        client.embedding_model = saved.default_embedding_model
