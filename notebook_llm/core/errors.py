"""One error hierarchy for every provider.

```
LLMError
├── MissingKeyError          no key found for a provider that needs one
├── AuthenticationError      the provider rejected the key (401/403)
├── RateLimitError           429; ``retry_after`` in seconds when known
├── ContextLengthError       the prompt does not fit the model's context
├── ModelNotFoundError       the provider does not know the model (404)
├── UnknownProviderError     the ``provider:`` prefix names no provider
├── InvalidRequestError      any other 4xx
├── ContentFilterError       the provider's safety filter refused
├── ProviderError            5xx, overloaded (529), malformed responses
├── TimeoutError             no answer in time (also a builtin TimeoutError)
├── ConnectionError          could not connect, or the connection dropped
├── CancelledError           the request was cancelled (Stop, interrupt)
├── UnsupportedError         the provider lacks the capability asked for
├── BudgetExceededError      the call would go over a spending budget
└── StorageError             the local SQLite store could not be written (disk full...)
```

Every error keeps ``provider``, ``status_code``, ``request_id``, the
response's ``rate_limits`` when it had rate-limit headers, and the
original exception (also as ``__cause__``). Messages say what to do next and
never contain a key: key-looking strings from providers are redacted.
"""

from __future__ import annotations

import builtins
import difflib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from notebook_llm.core.secrets import scrub

if TYPE_CHECKING:
    from notebook_llm.core.ratelimit import RateLimitInfo
    from notebook_llm.core.types import Completion

__all__ = [
    "AuthenticationError",
    "BudgetExceededError",
    "CancelledError",
    "ConnectionError",
    "ContentFilterError",
    "ContextLengthError",
    "InvalidRequestError",
    "LLMError",
    "MissingKeyError",
    "ModelNotFoundError",
    "ProviderError",
    "RateLimitError",
    "StorageError",
    "TimeoutError",
    "UnknownProviderError",
    "UnsupportedError",
    "redact",
]

# sk-..., sk-proj-..., sk-ant-..., gsk_..., AIza..., xai-..., hf_..., Bearer tokens,
# and the masked form OpenAI echoes back ("sk-abc*****1234").
_KEY_PATTERN = re.compile(
    r"(?:sk-(?:proj-|ant-(?:api\d\d-)?|or-v1-)?[A-Za-z0-9_\-*]{8,}"
    r"|gsk_[A-Za-z0-9]{8,}"
    r"|AIza[0-9A-Za-z_\-]{20,}"
    r"|xai-[A-Za-z0-9]{8,}"
    r"|hf_[A-Za-z0-9]{8,}"
    r"|(?<=Bearer )[A-Za-z0-9._\-]{8,})"
)
# Every match of _KEY_PATTERN contains one of these: a text without any of them
# (most prompts and answers) skips the regular expression.
_KEY_MARKERS = ("sk-", "gsk_", "AIza", "xai-", "hf_", "Bearer ")


def redact(text: str, *secrets: str | None) -> str:
    """Remove from ``text`` every key the library has sent (any format, see
    :mod:`notebook_llm.core.secrets`), key-looking strings, and ``secrets``."""
    text = scrub(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[REDACTED]")
    if any(marker in text for marker in _KEY_MARKERS):
        text = _KEY_PATTERN.sub("[REDACTED]", text)
    return text


class LLMError(Exception):
    """Base class: something went wrong talking to a model. Shown to the user."""

    hint: str = ""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        original: BaseException | None = None,
        body: Any = None,
        rate_limits: RateLimitInfo | None = None,
        completion: Completion | None = None,
    ) -> None:
        self.message = redact(message)
        self.provider = provider
        self.model = model
        self.status_code = status_code
        self.request_id = request_id
        self.original = original
        self.body = body
        self.rate_limits = rate_limits
        """What the error response's rate-limit headers said (``None``: it sent none)."""
        self.completion = completion
        """The answer that arrived before the error, when one did (a structured
        answer that failed validation): what was paid for is not lost."""
        self.attempts = 0
        """Requests sent for the call before it failed, retries included."""
        super().__init__(self.message)
        if original is not None:
            self.__cause__ = original

    def __str__(self) -> str:
        where = self.provider or ""
        if self.model:
            where = f"{where}:{self.model}" if where else self.model
        prefix = f"[{where}] " if where else ""
        status = f" (HTTP {self.status_code})" if self.status_code else ""
        hint = f" {self.hint}" if self.hint else ""
        end = "" if self.message.endswith((".", "!", "?")) and not status else "."
        return f"{prefix}{self.message}{status}{end}{hint}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, provider={self.provider!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable (multiprocessing, batch workers) without the original.
        return (_rebuild, (type(self), self.message, self.provider, self.model, self.status_code))


def _rebuild(
    cls: type[LLMError], message: str, provider: str | None, model: str | None, status: int | None
) -> LLMError:
    error = cls.__new__(cls)
    LLMError.__init__(error, message, provider=provider, model=model, status_code=status)
    return error


class MissingKeyError(LLMError):
    """No API key was found for a provider that needs one."""

    def __init__(self, provider: str, env_vars: tuple[str, ...] | list[str]) -> None:
        names = " or ".join(env_vars) or "an API key"
        super().__init__(
            f"No API key for {provider!r}. Set {names} in the environment or a .env file, "
            f"add it to Colab secrets, or pass api_key=...",
            provider=provider,
        )
        self.env_vars = tuple(env_vars)


class AuthenticationError(LLMError):
    """The provider rejected the key (401 or 403)."""

    hint = "Check that the key is valid and has access to this model."


class RateLimitError(LLMError):
    """The provider is rate limiting (429)."""

    hint = "Wait and retry, lower concurrency, or set rpm/tpm limits."

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ContextLengthError(LLMError):
    """The prompt and output do not fit in the model's context window."""

    hint = "Shorten the prompt or lower max_tokens."


class ModelNotFoundError(LLMError):
    """The provider does not know this model."""

    hint = "List the provider's models with nl.list_models(provider)."


class UnknownProviderError(ModelNotFoundError):
    """The ``provider:`` part of a model string names no known provider."""

    hint = ""


class InvalidRequestError(LLMError):
    """The provider refused the request as invalid (a 4xx other than the above)."""


class ContentFilterError(LLMError):
    """The provider's content filter refused the prompt or the answer."""


class ProviderError(LLMError):
    """The provider failed: 5xx, overloaded, or a response that could not be read."""

    hint = "This is usually temporary; retry later."


class TimeoutError(LLMError, builtins.TimeoutError):
    """No answer within the timeout."""

    hint = "Raise timeout=... or try again."


class ConnectionError(LLMError, builtins.ConnectionError):
    """Could not connect to the provider, or the connection dropped mid-response."""

    hint = "Check the base URL and that the server is running."


class CancelledError(LLMError):
    """The request was cancelled (Stop button, interrupt, ``.cancel()``)."""


class UnsupportedError(LLMError):
    """The provider does not support what was asked (for example embeddings)."""


class BudgetExceededError(LLMError):
    """The call would take spending over the budget; it was not sent."""

    def __init__(self, message: str, *, spent_usd: float, budget_usd: float) -> None:
        super().__init__(message)
        self.spent_usd = spent_usd
        self.budget_usd = budget_usd


class StorageError(LLMError):
    """The local store (call log, batch checkpoints) could not be written: a full
    disk, a read-only or locked file. What was paid for is kept in memory."""

    def __init__(self, message: str, *, result: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.result = result
        """What was done before the failure, kept in memory (for a batch job, its
        ``BatchResult``: every answer received, saved or not)."""


RETRYABLE: tuple[type[LLMError], ...] = (RateLimitError, ProviderError, ConnectionError)
"""Errors worth retrying with backoff. Timeouts are retried only when configured."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices`` to a mistyped
    ``name`` (``opnai``, ``smolm2``), or ``""``; every "unknown name" message
    uses it."""
    close = difflib.get_close_matches(name, sorted(set(choices)), n=1)
    if not close:
        close = difflib.get_close_matches(name.lower(), sorted({c.lower() for c in choices}), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""

