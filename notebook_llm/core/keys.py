"""Finding API keys: argument, environment, ``.env``, Colab secrets, then a prompt.

A key found here is only ever handed to a provider constructor. What the rest
of the library sees is a :class:`KeyStatus`: where a key came from and a
masked form, never the key.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from notebook_llm.core.shell import ipython_shell

__all__ = ["KeyStatus", "find_key", "key_status", "mask"]

KeySource = Literal["argument", "environment", ".env", "colab", "prompt", "config", "none"]

# Keys typed at a getpass prompt live for the process only, keyed by variable name.
_prompted: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """Where a provider's key comes from, with the key masked."""

    provider: str
    env_var: str | None
    source: KeySource
    masked: str

    @property
    def found(self) -> bool:
        """True when a key was found."""
        return self.source != "none"


def mask(key: str | None) -> str:
    """``sk-...abcd`` style masking that shows at most the last four characters."""
    if not key:
        return ""
    if len(key) < 12:
        return "*" * 8
    head = key[:3] if key[:3].isalpha() or key.startswith("sk-") else ""
    return f"{head}...{key[-4:]}"


def _read_dotenv(path: Path) -> dict[str, str]:
    # A small reader: KEY=VALUE lines, optional "export ", quotes, comments.
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return values
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if value[:1] in ("'", '"') and value[-1:] == value[:1]:
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[name.strip()] = value
    return values


def _colab_secret(name: str) -> str | None:
    if "google.colab" not in sys.modules:
        return None
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        return userdata.get(name) or None
    except Exception:  # noqa: BLE001 - SecretNotFoundError, NotebookAccessError, ...
        return None


def _interactive() -> bool:
    if os.environ.get("CI") or os.environ.get("NOTEBOOK_LLM_NO_PROMPT"):
        return False
    # An IPython shell (a notebook kernel, terminal IPython) can prompt even
    # without a terminal on stdin. Only one that is already running counts:
    # the core never imports IPython itself.
    if ipython_shell() is not None:
        return True
    return sys.stdin is not None and sys.stdin.isatty()


def find_key(
    env_vars: tuple[str, ...],
    *,
    explicit: str | None = None,
    configured: str | None = None,
    prompt: bool = True,
    provider: str = "",
) -> tuple[str | None, KeySource]:
    """Look a key up in order: argument, configuration, environment, ``.env``,
    Colab secrets, then (interactive sessions only) a ``getpass`` prompt."""
    if explicit:
        return explicit, "argument"
    if configured:
        return configured, "config"
    for name in env_vars:
        if os.environ.get(name):
            return os.environ[name], "environment"
    dotenv = _read_dotenv(Path.cwd() / ".env")
    for name in env_vars:
        if dotenv.get(name):
            return dotenv[name], ".env"
    for name in env_vars:
        if name in _prompted:
            return _prompted[name], "prompt"
        secret = _colab_secret(name)
        if secret:
            return secret, "colab"
    if prompt and env_vars and _interactive():
        import getpass

        try:
            typed = getpass.getpass(f"{env_vars[0]} for {provider or 'this provider'}: ").strip()
        except (EOFError, OSError):
            typed = ""
        if typed:
            _prompted[env_vars[0]] = typed
            return typed, "prompt"
    return None, "none"


def key_status(
    provider: str, env_vars: tuple[str, ...], configured: str | None = None
) -> KeyStatus:
    """Where ``provider``'s key would come from, masked; never prompts."""
    key, source = find_key(env_vars, configured=configured, prompt=False)
    return KeyStatus(provider, env_vars[0] if env_vars else None, source, mask(key))
