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
from urllib.parse import urlsplit

from notebook_llm.core.errors import InvalidRequestError
from notebook_llm.core.secrets import check_header, remember
from notebook_llm.core.shell import ipython_shell

__all__ = ["NO_KEY", "KeyStatus", "check_base_url", "checked_key", "find_key", "key_status", "mask"]

NO_KEY = "not-needed"
"""Sent as the key to local servers that need none (the SDKs insist on one)."""

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
        from google.colab import userdata

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


def checked_key(key: str | None, provider: str) -> str | None:
    """The key without surrounding whitespace, remembered for redaction; a key with
    a line break inside would split the Authorization header, so it is refused."""
    if key is None or key == NO_KEY:
        return key
    key = key.strip()
    remember(key)
    try:
        check_header("Authorization", key)
    except ValueError:
        raise InvalidRequestError(
            f"The API key for {provider!r} contains a line break or NUL; "
            "set it again without one",
            provider=provider,
        ) from None
    return key


def check_base_url(url: str, provider: str, env_var: str | None) -> None:
    """Refuse a base URL that is not ``http(s)://host...``: ``localhost:8080/v1``
    would otherwise be read as a scheme, and the key sent somewhere else."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        return
    where = f" (from {env_var})" if env_var and os.environ.get(env_var) == url else ""
    raise InvalidRequestError(
        f"The base URL {url!r}{where} for {provider!r} needs http:// or https:// and a host, "
        f"for example 'http://{url.split('://')[-1].lstrip('/') or 'localhost:8080/v1'}'",
        provider=provider,
    )
