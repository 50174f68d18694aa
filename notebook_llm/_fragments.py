"""Fragments: reusable context from a file, a URL, a notebook variable or an alias.

A fragment's text is stored once in the SQLite log, keyed by its sha256 (llm's
``fragments`` table design; key-looking strings redacted, as in every column of
the log), with any number of aliases
(``fragment_aliases``); ``call_fragments`` links each logged call to the
fragments it used, in order, as prompt or system fragments.

``nl.complete(fragments=[...], system_fragments=[...])``, ``%%llm -F ...``
and ``--sf ...`` resolve references with :func:`resolve`; a fragment larger
than the model's context window (when the price data knows it) or than the
saved limit (``%llm_fragments --limit N``) is refused, with its token count,
before anything is sent. ``nl.fragments()`` lists them as a DataFrame.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from notebook_llm.core.errors import InvalidRequestError, redact
from notebook_llm.core.tokens import CHARS_PER_TOKEN, estimate_tokens
from notebook_llm.store.db import PathLike
from notebook_llm.store.log import call_log

__all__ = [
    "Fragment",
    "FragmentError",
    "check_size",
    "fetch_url",
    "fragments",
    "remove_alias",
    "resolve",
    "set_alias",
    "store_fragments",
]

_FETCH_TIMEOUT_S = 30.0
_MAX_FETCH_BYTES = 20_000_000


class FragmentError(InvalidRequestError):
    """A fragment that cannot be found, read or sent; the message says which."""


@dataclass(frozen=True)
class Fragment:
    """One fragment's text and where it came from."""

    content: str
    source: str
    """A path, a URL, ``variable:name`` or ``alias:name``."""

    @property
    def hash(self) -> str:
        """The sha256 of the text: the fragment's identity in the log."""
        return hashlib.sha256(self.content.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def tokens(self) -> int:
        """The estimated tokens of the text."""
        return estimate_tokens(self.content)


def fetch_url(url: str, *, what: str = "fragment") -> str:
    """The text at an http(s) URL.

    Raises:
        FragmentError: the request failed or the server answered with an error
            status (the message names the URL).
    """
    import httpx

    try:
        with httpx.Client(timeout=_FETCH_TIMEOUT_S, follow_redirects=True) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise FragmentError(f"{what} {url}: the request failed ({type(exc).__name__}: "
                            f"{exc}); nothing was sent to a model") from None
    if response.status_code >= 400:
        raise FragmentError(f"{what} {url}: the server answered HTTP {response.status_code}; "
                            "nothing was sent to a model")
    if len(response.content) > _MAX_FETCH_BYTES:
        raise FragmentError(f"{what} {url}: {len(response.content):,} bytes is too large")
    return response.text


_URL_TTL_S = 300.0
_fetched: dict[str, tuple[float, str]] = {}


def _fetch_cached(url: str) -> str:
    """A URL's text, fetched at most once per :data:`_URL_TTL_S` seconds: the cells of
    a comparison (or repeated calls) that share a fragment do not each wait for it."""
    now = time.monotonic()
    found = _fetched.get(url)
    if found is not None and now - found[0] < _URL_TTL_S:
        return found[1]
    text = fetch_url(url)
    _fetched[url] = (now, text)
    return text


def _store(db_path: PathLike | None) -> Any:
    return call_log(db_path).store


def resolve(
    ref: Any, namespace: Mapping[str, Any] | None = None, *, db_path: PathLike | None = None
) -> Fragment:
    """The fragment ``ref`` names: a :class:`Fragment`, an http(s) URL, a variable of
    ``namespace`` (the notebook's), an alias, a stored fragment's hash, or a file.

    Raises:
        FragmentError: nothing of that name (the message says what was tried),
            a URL that fails or a file that cannot be read.
    """
    if isinstance(ref, Fragment):
        return ref
    if isinstance(ref, Path):
        return _read_file(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise FragmentError(f"a fragment is a path, URL, alias or variable name, not {ref!r}")
    text = ref.strip().strip("'\"")
    if text.startswith(("http://", "https://")):
        return Fragment(_fetch_cached(text), text)
    if namespace is not None and text.isidentifier() and text in namespace:
        value = namespace[text]
        if isinstance(value, Fragment):
            return value
        if not isinstance(value, str):
            raise FragmentError(f"fragment {text}: the variable is a {type(value).__name__}, "
                                "not text (str)")
        return Fragment(value, f"variable:{text}")
    rows = _store(db_path).execute(
        "SELECT f.content, f.source FROM fragment_aliases a JOIN fragments f "
        "ON f.id = a.fragment_id WHERE a.alias = ?", (text,))
    if not rows and len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        rows = _store(db_path).execute(
            "SELECT content, source FROM fragments WHERE hash = ?", (text,))
    if rows:
        return Fragment(str(rows[0]["content"]), f"alias:{text}")
    path = Path(text).expanduser()
    if path.exists():
        return _read_file(path)
    tried = "a URL, an alias, a stored hash or a file"
    if namespace is not None:
        tried = "a URL, a notebook variable, an alias, a stored hash or a file"
    raise FragmentError(f"fragment {text!r} is not {tried} (working directory: {os.getcwd()})")


def _read_file(path: Path) -> Fragment:
    try:
        return Fragment(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError:
        raise FragmentError(f"fragment {path}: not UTF-8 text") from None
    except OSError as exc:
        raise FragmentError(f"fragment {path}: cannot be read ({exc.strerror})") from None


def check_size(fragment: Fragment, *, limit: int | None, context: int | None,
               model: str) -> None:
    """Refuse a fragment larger than ``limit`` or the model's ``context`` (tokens).

    Raises:
        FragmentError: with the fragment's token count and the limit it exceeds.
    """
    tokens = fragment.tokens
    if limit is not None and tokens > limit:
        raise FragmentError(
            f"fragment {fragment.source} is about {tokens:,} tokens, over the limit of "
            f"{limit:,} (%llm_fragments --limit N changes it); nothing was sent")
    if context is not None and tokens > context:
        raise FragmentError(
            f"fragment {fragment.source} is about {tokens:,} tokens, more than {model}'s "
            f"context window of {context:,}; nothing was sent")


_known: dict[tuple[str, str], int] = {}
"""Row ids of fragments this process has stored, by (database, hash): a fragment
used again costs no write."""


def store_fragments(items: Sequence[Fragment], db_path: PathLike | None = None) -> list[int]:
    """Store each fragment once (by hash); their row ids, in order."""
    if not items:
        return []
    store = _store(db_path)
    keys = [(store.path, fragment.hash) for fragment in items]
    missing = [(key, fragment) for key, fragment in zip(keys, items, strict=True)
               if key not in _known]
    if missing:
        now = datetime.now(timezone.utc).isoformat()
        with store.transaction() as conn:
            for key, fragment in missing:
                # Like every text in the log: key-looking strings never reach the file.
                conn.execute(
                    "INSERT OR IGNORE INTO fragments (hash, content, source, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (key[1], redact(fragment.content), redact(fragment.source), now))
                row = conn.execute("SELECT id FROM fragments WHERE hash = ?", (key[1],))
                _known[key] = int(row.fetchone()[0])
    return [_known[key] for key in keys]


def set_alias(alias: str, ref: Any, namespace: Mapping[str, Any] | None = None, *,
              db_path: PathLike | None = None) -> Fragment:
    """Store the fragment ``ref`` names and give it the alias ``alias`` (replacing
    what that alias named before)."""
    if not alias.replace("-", "_").replace(".", "_").isidentifier():
        raise FragmentError(f"{alias!r} is not an alias: use letters, digits, '_', '-', '.'")
    fragment = resolve(ref, namespace, db_path=db_path)
    (fragment_id,) = store_fragments([fragment], db_path)
    with _store(db_path).transaction() as conn:
        conn.execute("INSERT OR REPLACE INTO fragment_aliases (alias, fragment_id) VALUES (?, ?)",
                     (alias, fragment_id))
    return fragment


def remove_alias(alias: str, *, db_path: PathLike | None = None) -> bool:
    """Forget an alias (the fragment stays); False when there was none."""
    with _store(db_path).transaction() as conn:
        cursor = conn.execute("DELETE FROM fragment_aliases WHERE alias = ?", (alias,))
    return bool(cursor.rowcount)


def fragments(*, db_path: PathLike | None = None) -> Any:
    """The stored fragments as a DataFrame: hash, aliases, source, characters,
    estimated tokens, when first stored, how many logged calls used each, and
    the first 100 characters."""
    import pandas as pd

    call_log(db_path).flush()
    rows = _store(db_path).execute(
        "SELECT f.id, f.hash, f.source, f.created_at, length(f.content) AS chars, "
        "substr(f.content, 1, 100) AS preview, "
        "(SELECT group_concat(alias, ', ') FROM fragment_aliases a WHERE a.fragment_id = f.id)"
        " AS aliases, "
        "(SELECT count(DISTINCT call_id) FROM call_fragments c WHERE c.fragment_id = f.id)"
        " AS calls FROM fragments f ORDER BY f.id")
    columns = ["hash", "aliases", "source", "chars", "tokens", "calls", "created_at", "preview"]
    for row in rows:
        row["tokens"] = -(-int(row["chars"] or 0) // CHARS_PER_TOKEN)
    return pd.DataFrame(rows, columns=columns)
