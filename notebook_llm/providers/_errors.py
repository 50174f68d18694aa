"""HTTP status and error bodies to ``notebook_llm.errors``: one mapping for every provider.

Both wire protocols use this module: the Anthropic provider and the
OpenAI-protocol provider (OpenAI, Azure, OpenRouter, Groq, local servers...).
It is pure: no SDK, httpx or aiohttp import. Exceptions from those libraries
are recognised by their class names, so this module works with whichever of
them is installed.

Error envelopes understood:

- OpenAI: ``{"error": {"message", "type", "code", "param"}}``, pretty-printed
  or compact, ``code``/``param`` possibly null or missing.
- Azure: ``{"error": {"code": "401", "message": ...}}`` (string code, no type),
  ``{"error": {"code": "DeploymentNotFound", ...}}``, content-filter codes.
- OpenRouter: a numeric ``code`` and ``metadata.raw`` with the upstream error.
- Anthropic: ``{"type": "error", "error": {"type", "message"}, "request_id"}``,
  in any key order (also inside a 200 event stream, as an ``error`` event).
- Groq in-stream errors: ``{"error": {..., "status_code": 400}}``.
- Bare bodies from local servers: ``{"error": "..."}``, ``{"detail": ...}``,
  ``{"message": ...}`` or plain text.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from notebook_llm.core.errors import (
    AuthenticationError,
    ConnectionError as LLMConnectionError,
    ContentFilterError,
    ContextLengthError,
    InvalidRequestError,
    LLMError,
    ModelNotFoundError,
    ProviderError,
    RateLimitError,
    TimeoutError as LLMTimeoutError,
    UnsupportedError,
    redact,
)
from notebook_llm.core.ratelimit import RateLimitInfo
from notebook_llm.core.retry import parse_retry_after

__all__ = ["ErrorInfo", "error_from_exception", "error_from_status", "parse_error_body"]

# Anthropic's error types, and the status each one comes with. Used when the
# status says nothing (an ``error`` event inside a 200 stream).
ANTHROPIC_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_CONTEXT_CODES = frozenset(
    {
        "context_length_exceeded",
        "context_window_exceeded",
        "exceed_context_size_error",  # llama.cpp's llama-server
        "string_above_max_length",
        "too_many_tokens",
    }
)
_CONTEXT_TEXT = re.compile(
    r"maximum context length|context[ _-]?(?:length|window|limit|size)|prompt is too long"
    r"|too many tokens|input is too long|reduce the length of the messages"
    r"|exceeds? the (?:model'?s? )?(?:maximum )?(?:context|token limit)",
    re.IGNORECASE,
)
_NOT_FOUND_CODES = frozenset(
    {"model_not_found", "deploymentnotfound", "not_found_error", "not_found"}
)
_NOT_FOUND_TEXT = re.compile(
    r"model\b.{0,80}\b(?:not found|does not exist|not exist)|no such model|unknown model"
    r"|\bmodel_not_found\b|deployment.{0,40}not (?:found|exist)",
    re.IGNORECASE | re.DOTALL,
)
_FILTER_CODES = frozenset(
    {
        "content_filter",
        "content_policy_violation",
        "responsibleaipolicyviolation",
        "content_filtered",
    }
)
_AUTH_CODES = frozenset(
    {
        "invalid_api_key",
        "authentication_error",
        "permission_error",
        "unauthorized",
        "invalid_authentication",
    }
)
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_error", "billing_hard_limit_reached"})


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What an error body says, whatever its envelope.

    Attributes:
        message: the human-readable message ("" when none).
        type: ``error.type`` (OpenAI, Anthropic), or ``None``.
        code: ``error.code`` as a string (Azure's ``"401"``, OpenRouter's ``429``), or ``None``.
        param: the offending parameter (OpenAI), or ``None``.
        status: a status carried inside the body (``status_code``, a numeric code), or ``None``.
        request_id: the body's ``request_id`` (Anthropic), or ``None``.
    """

    message: str = ""
    type: str | None = None
    code: str | None = None
    param: str | None = None
    status: int | None = None
    request_id: str | None = None


def _as_status(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 400 <= value < 600:
        return value
    if isinstance(value, str) and value.isdigit() and 400 <= int(value) < 600:
        return int(value)
    return None


def parse_error_body(body: Any) -> ErrorInfo:
    """Read ``message``, ``type``, ``code``, ``param`` out of any known error envelope.

    ``body`` may be a dict, a JSON string, bytes, plain text or ``None``.
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        try:
            body = json.loads(text)
        except ValueError:
            return ErrorInfo(message=text[:500])
    if not isinstance(body, dict):
        return ErrorInfo(message="" if body is None else str(body)[:500])
    request_id = body.get("request_id") if isinstance(body.get("request_id"), str) else None
    error = body.get("error", body)
    if isinstance(error, str):
        # Ollama and some proxies: {"error": "model 'x' not found"}.
        return ErrorInfo(message=error, request_id=request_id)
    if not isinstance(error, dict):
        return ErrorInfo(message=json.dumps(body)[:500], request_id=request_id)
    message = error.get("message")
    if message is None:
        message = error.get("detail") if "detail" in error else body.get("detail")
    if message is not None and not isinstance(message, str):
        message = json.dumps(message)[:500]
    message = message or ""
    metadata = error.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("raw"), str) and metadata["raw"]:
        # OpenRouter keeps the upstream provider's own error here.
        upstream = parse_error_body(metadata["raw"]).message or metadata["raw"]
        where = metadata.get("provider_name")
        message = f"{message} (upstream{' ' + where if where else ''}: {upstream[:300]})"
    code = error.get("code")
    kind = error.get("type")
    param = error.get("param")
    status = _as_status(error.get("status_code")) or _as_status(error.get("status"))
    status = status or _as_status(code)
    return ErrorInfo(
        message=message,
        type=kind if isinstance(kind, str) else None,
        code=None if code is None else str(code),
        param=None if param is None else str(param),
        status=status,
        request_id=request_id,
    )


def _scrub(value: Any) -> Any:
    """``value`` with key-looking strings redacted, at any depth."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def _scrub_exception(exc: BaseException | None) -> None:
    # The original stays attached as __cause__, and a notebook traceback prints
    # it: redact its message too (OpenAI echoes a masked key on a 401).
    if exc is None:
        return
    try:
        exc.args = tuple(_scrub(arg) for arg in exc.args)
        # The SDKs' errors carry these (checked above), BaseException does not:
        if isinstance(getattr(exc, "message", None), str):
            exc.message = redact(exc.message)  # type: ignore[attr-defined]
        if getattr(exc, "body", None) is not None:
            exc.body = _scrub(exc.body)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # read-only attributes: best effort
        pass


def _header(headers: Mapping[str, str] | None, *names: str) -> str | None:
    if not headers:
        return None
    lower = {str(k).lower(): v for k, v in headers.items()}
    for name in names:
        if lower.get(name):
            return str(lower[name])
    return None


def _with(message: str, detail: str) -> str:
    detail = detail.strip()
    if not detail:
        return message
    return f"{message}: {detail}"


def error_from_status(
    provider: str,
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
    original: BaseException | None = None,
) -> LLMError:
    """The :class:`~notebook_llm.errors.LLMError` for an HTTP error response.

    Args:
        provider: the provider's name, kept on the error.
        status: the HTTP status. For an error inside a 200 stream, pass 200 (or
            any non-error status): the status is then read from the body
            (``status_code``, a numeric ``code``, or Anthropic's error ``type``).
        body: the response body: a parsed dict, text, bytes or ``None``.
        headers: the response headers, for ``retry-after``, the request id and
            the rate limits (the error's ``rate_limits``).
        original: the exception being translated (kept as ``original`` and ``__cause__``).

    Returns:
        The most specific error: authentication, rate limit (with
        ``retry_after``), context length, model not found, content filter,
        invalid request, or provider error. Key-looking text is redacted from
        the message, the kept body and the original exception's message.
    """
    info = parse_error_body(body)
    kind = (info.type or "").lower()
    code = (info.code or "").lower()
    if not 400 <= status < 600:
        status = info.status or ANTHROPIC_ERROR_STATUS.get(kind) or 500
    text = info.message
    request_id = (
        _header(headers, "request-id", "x-request-id", "apim-request-id") or info.request_id
    )
    _scrub_exception(original)
    common: dict[str, Any] = {
        "provider": provider,
        "status_code": status,
        "request_id": request_id,
        "original": original,
        "body": _scrub(body),
        "rate_limits": RateLimitInfo.from_headers(headers) if headers else None,
    }
    codes = {kind, code}
    haystack = f"{text} {info.code or ''} {info.type or ''}"

    if codes & _AUTH_CODES or status in (401, 403) or code in ("401", "403"):
        if status == 403 or kind == "permission_error":
            return AuthenticationError(
                _with("The key is valid but may not use this model or resource", text), **common
            )
        return AuthenticationError(_with("The API key was rejected", text), **common)
    if codes & _QUOTA_CODES or status == 402:
        # Not a rate limit: waiting does not help, so it must not be retried.
        return InvalidRequestError(
            _with("The account is out of credit or quota; check the plan and billing", text),
            **common,
        )
    if status == 429 or kind == "rate_limit_error" or code == "rate_limit_exceeded":
        retry_after = parse_retry_after(headers)
        when = f"; retry after {retry_after:g}s" if retry_after is not None else ""
        return RateLimitError(_with(f"Rate limited{when}", text), retry_after=retry_after, **common)
    if codes & _FILTER_CODES:
        return ContentFilterError(
            _with("The provider's content filter refused this; rephrase the prompt", text),
            **common,
        )
    if codes & _CONTEXT_CODES or (
        400 <= status < 500 and status != 404 and _CONTEXT_TEXT.search(haystack)
    ):
        return ContextLengthError(
            _with("The prompt does not fit the model's context", text), **common
        )
    if codes & _NOT_FOUND_CODES or (status in (400, 404) and _NOT_FOUND_TEXT.search(text)):
        return ModelNotFoundError(
            _with("The provider does not know this model; check the model name", text), **common
        )
    if status == 404:
        return ModelNotFoundError(
            _with("Not found (HTTP 404): check the model name and the base URL", text), **common
        )
    if status == 413 or kind == "request_too_large":
        return InvalidRequestError(
            _with("The request is too large; send smaller images or documents, or split it", text),
            **common,
        )
    if status == 501:
        # Not Implemented: the server lacks the endpoint or feature (llama-server
        # without --embeddings, say). Asking again cannot help, so no retry.
        return UnsupportedError(
            _with("The server does not implement this (HTTP 501)", text), **common
        )
    if status == 529 or kind == "overloaded_error":
        return ProviderError(_with("The provider is overloaded", text or "Overloaded"), **common)
    if status >= 500 or status in (408, 409) or kind in ("api_error", "timeout_error"):
        return ProviderError(_with(f"The provider failed (HTTP {status})", text), **common)
    param = f" (parameter {info.param!r})" if info.param else ""
    return InvalidRequestError(
        _with(f"The provider refused the request{param}; check the arguments", text), **common
    )


# Exception class names from httpx/httpx2, aiohttp and the openai/anthropic SDKs.
_TIMEOUT_NAMES = frozenset(
    {
        "APITimeoutError", "TimeoutException", "ReadTimeout", "ConnectTimeout", "WriteTimeout",
        "PoolTimeout", "ServerTimeoutError", "ConnectionTimeoutError", "SocketTimeoutError",
    }
)  # fmt: skip
_CONNECTION_NAMES = frozenset(
    {
        "APIConnectionError", "TransportError", "NetworkError", "ProtocolError",
        "RemoteProtocolError", "ReadError", "WriteError", "ConnectError", "CloseError",
        "ClientConnectionError", "ClientPayloadError", "ServerDisconnectedError",
        "ClientOSError", "ClientConnectorError", "TransferEncodingError", "ContentLengthError",
        "IncompleteRead", "SSEError",
    }
)  # fmt: skip


def error_from_exception(provider: str, exc: BaseException) -> LLMError:
    """The :class:`~notebook_llm.errors.LLMError` for an exception raised while talking to a server.

    Recognises timeouts and dropped or refused connections from the SDKs,
    httpx/httpx2 and aiohttp (by class name, so none of them is imported), SDK
    status errors (anything with ``status_code`` and ``body``), and builtin
    ``TimeoutError``/``OSError``. An ``LLMError`` comes back unchanged; anything
    else becomes a :class:`ProviderError`.
    """
    if isinstance(exc, LLMError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400 and hasattr(exc, "body"):
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        return error_from_status(
            provider, status, getattr(exc, "body", None), dict(headers) if headers else None, exc
        )
    _scrub_exception(exc)
    detail = redact(str(exc))[:300]
    if names & _TIMEOUT_NAMES or isinstance(exc, (builtins.TimeoutError, asyncio.TimeoutError)):
        return LLMTimeoutError(
            _with("No answer from the server in time", detail), provider=provider, original=exc
        )
    if names & _CONNECTION_NAMES or isinstance(exc, (builtins.ConnectionError, OSError, EOFError)):
        return LLMConnectionError(
            _with("The connection to the server failed or dropped", detail),
            provider=provider,
            original=exc,
        )
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)) or "DecodingError" in names:
        return ProviderError(
            _with("The server's answer could not be read", detail), provider=provider, original=exc
        )
    return ProviderError(
        _with(f"Unexpected {type(exc).__name__}", detail), provider=provider, original=exc
    )
