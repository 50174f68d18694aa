"""The secrets this process sends, so that nothing it shows or stores repeats them.

Key formats differ by provider (OpenAI's ``sk-...``, but also Mistral's and
Azure's bare 32-character keys, Together's, a company proxy's token), so a
pattern cannot recognise them all. Instead every key the library sends, and
the value of every secret-looking header (``Authorization``, ``api-key``,
``Ocp-Apim-Subscription-Key``...), is remembered here when a provider or a
request is built; :func:`notebook_llm.errors.redact` removes them from any
text, whatever their format. The notebook layer runs every traceback through
the same function (``%xmode Verbose`` prints local variables).

:class:`SecretHeaders` is a dict of request headers whose ``repr`` hides the
secret values, for the objects a traceback or a debugger prints.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

__all__ = [
    "SecretHeaders",
    "check_header",
    "is_secret_header",
    "remember",
    "scrub",
]

REDACTED = "[REDACTED]"

# Shorter values are too likely to be ordinary words or numbers to scrub
# everywhere; real keys are far longer.
_MIN_LENGTH = 8

_SECRET_HEADER = re.compile(
    r"authorization|api[-_]?key|(?:^|[-_])key$|token|secret|password|cookie|subscription",
    re.IGNORECASE,
)
# A header name is an RFC 9110 token; a value may not hold CR, LF or NUL.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")

_lock = threading.Lock()
_known: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None


def remember(secret: str | None) -> None:
    """Scrub ``secret`` from every text the library shows or stores from now on."""
    global _known, _pattern
    if not secret or len(secret) < _MIN_LENGTH or secret in _known:
        return
    with _lock:
        known = _known | {secret}
        # Longest first, so a key that contains another is removed whole.
        alternatives = sorted(known, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(value) for value in alternatives))
        _known = known


def scrub(text: str) -> str:
    """``text`` with every remembered secret replaced by ``[REDACTED]``."""
    known = _known
    if not known or not text:
        return text
    if len(known) <= 16:
        # A few substring searches beat one regular expression of alternatives
        # (the call log scrubs every prompt and answer it writes).
        if not any(secret in text for secret in known):
            return text
    pattern = _pattern
    return text if pattern is None else pattern.sub(REDACTED, text)


def is_secret_header(name: str) -> bool:
    """True for header names that carry credentials (``Authorization``, ``api-key``...)."""
    return bool(_SECRET_HEADER.search(name))


def check_header(name: str, value: str) -> None:
    """Raise ``ValueError`` unless ``name: value`` is one well-formed header line.

    A CR or LF in a value would end the header early and let the rest be read
    as another header (or another request): refused on every transport.
    """
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid HTTP header name")
    if not isinstance(value, str):
        raise ValueError(f"the value of header {name!r} must be a string")
    if _BAD_VALUE.search(value):
        raise ValueError(
            f"the value of header {name!r} contains a line break or NUL; remove it "
            "(a key copied with its trailing newline, perhaps)"
        )


class SecretHeaders(dict[str, str]):
    """Request headers that never show their secret values in a ``repr``."""

    def __init__(self, headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(headers)

    def __repr__(self) -> str:
        shown = {
            name: REDACTED if is_secret_header(name) else value for name, value in self.items()
        }
        return f"SecretHeaders({shown!r})"

    __str__ = __repr__

    @classmethod
    def checked(cls, headers: Mapping[str, str] | None) -> SecretHeaders:
        """Validated headers, their secret values remembered (see :func:`remember`)."""
        out = cls()
        for name, value in (headers or {}).items():
            check_header(name, value)
            if is_secret_header(name):
                remember(value)
                # "Bearer <token>": the token alone may show up elsewhere too.
                remember(value.partition(" ")[2] if " " in value else None)
            out[name] = value
        return out
