"""Data objects shared by every provider: requests in, chunks and completions out.

Plain dataclasses (no pydantic) so that ``import notebook_llm`` stays cheap.
Messages use the OpenAI chat shape (``{"role": ..., "content": ...}``) as the
lingua franca; providers translate at their edge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from notebook_llm.core.money import format_usd

if TYPE_CHECKING:
    from notebook_llm.core.ratelimit import RateLimitInfo

__all__ = [
    "Capabilities",
    "Chunk",
    "Completion",
    "EmbeddingResponse",
    "FinishReason",
    "Message",
    "ModelInfo",
    "ProviderInfo",
    "Request",
    "Tool",
    "ToolCall",
    "Usage",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "cancelled", "error"]
Message = dict[str, Any]

_FINISH_ALIASES: dict[str, FinishReason] = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "eos": "stop",
    "eos_token": "stop",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "length": "length",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "cancelled": "cancelled",
    "error": "error",
}


def normalise_finish_reason(value: str | None) -> FinishReason | None:
    """Map a provider's finish/stop reason onto the six reasons this library uses."""
    if value is None:
        return None
    return _FINISH_ALIASES.get(value, "stop")


@dataclass(slots=True)
class Usage:
    """Token counts for one call, as the provider reported them."""

    input_tokens: int = 0
    """Prompt tokens, including cached ones."""
    output_tokens: int = 0
    """Generated tokens, including reasoning tokens."""
    cached_input_tokens: int = 0
    """Prompt tokens read from the provider's prompt cache."""
    cache_write_tokens: int = 0
    """Prompt tokens written to the provider's prompt cache (Anthropic)."""
    reasoning_tokens: int = 0
    """Hidden reasoning tokens (part of ``output_tokens``)."""
    estimated: bool = False
    """True when the library counted these (about four characters a token) because
    the provider sent no usage: a stopped stream, or a server that reports none."""

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, int]:
        """The counts as a plain dict, ``total_tokens`` included."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(slots=True)
class ToolCall:
    """A function call the model asked for."""

    id: str
    name: str
    arguments: dict[str, Any]
    """Arguments decoded from JSON (``{}`` when the model sent none)."""
    arguments_json: str = ""
    """The arguments exactly as the model sent them."""

    def to_message_part(self) -> dict[str, Any]:
        """This call in the OpenAI ``tool_calls`` message shape."""
        return {
            "id": self.id,
            "type": "function",
            "function": {
                "name": self.name,
                "arguments": self.arguments_json or json.dumps(self.arguments),
            },
        }


@dataclass(slots=True)
class Tool:
    """A function the model may call: a name, a description and a JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Any = None
    """The Python callable that runs the tool, when there is one."""


@dataclass(slots=True)
class Request:
    """One normalised request, as a provider receives it."""

    model: str
    """The provider's own model name (no ``provider:`` prefix)."""
    messages: list[Message]
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    """``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``."""
    reasoning_effort: str | None = None
    timeout: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Provider-specific keyword arguments, passed through untouched."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra HTTP headers for this request (``extra_headers=``), already checked:
    no line breaks, and secret values remembered for redaction. Never logged,
    cached or stored; its ``repr`` hides secret values."""


@dataclass(slots=True)
class Chunk:
    """One streamed increment. Every field is a delta, not a running total."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    """Tool-call fragments: ``{"index", "id", "name", "arguments"}``, any may be missing;
    ``"legacy": True`` marks an OpenAI ``function_call`` fragment, used only when the
    stream has no ``tool_calls``."""
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    response_model: str | None = None
    id: str | None = None
    raw: Any = None
    rate_limits: RateLimitInfo | None = None
    """The response's rate-limit headers, on the first chunk of a stream only."""

    def __str__(self) -> str:
        return self.text


@dataclass
class Completion:
    """The result of one call, in the same shape for every provider.

    ``str(completion)`` is the text; in a notebook it shows as Markdown.
    """

    text: str
    model: str = ""
    """The model as asked, ``provider:model``."""
    provider: str = ""
    response_model: str | None = None
    """The model name the provider answered with."""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    latency_s: float | None = None
    ttft_s: float | None = None
    """Time to the first token, when streamed."""
    cost_usd: float | None = None
    """Cost in US dollars, or ``None`` when the price is unknown."""
    cost_status: Literal["priced", "free", "unpriced", "cached", "unknown"] = "unknown"
    parsed: Any = None
    """The decoded object when ``response_format`` was a Pydantic model."""
    refusal: str | None = None
    id: str | None = None
    """The provider's response id."""
    cached: bool = False
    """True when the response came from the local response cache."""
    raw: Any = None
    """The provider payload: a dict, or the list of events for a stream."""
    messages: list[Message] = field(default_factory=list, repr=False)
    """The conversation sent, so a chat can continue from here."""
    rate_limits: RateLimitInfo | None = field(default=None, repr=False)
    """What the provider's rate-limit headers said with this answer, when it sent any."""
    attempts: int = 0
    """Requests sent for this answer, retries included (0 when none was: a cache hit)."""

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return (
            f"Completion(model={self.model!r}, finish_reason={self.finish_reason!r}, "
            f"tokens={self.usage.input_tokens}+{self.usage.output_tokens}, text={text!r})"
        )

    def to_message(self) -> Message:
        """The reply as an assistant message, ready to append to a conversation."""
        message: Message = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            message["tool_calls"] = [call.to_message_part() for call in self.tool_calls]
        return message

    def to_dict(self) -> dict[str, Any]:
        """A flat, JSON-friendly summary (no raw payload)."""
        return {
            "model": self.model,
            "provider": self.provider,
            "response_model": self.response_model,
            "text": self.text,
            "reasoning": self.reasoning,
            "finish_reason": self.finish_reason,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ],
            **self.usage.to_dict(),
            "latency_s": self.latency_s,
            "ttft_s": self.ttft_s,
            "cost_usd": self.cost_usd,
            "cost_status": self.cost_status,
            "cached": self.cached,
        }

    def to_json(self, *, raw: bool = False) -> str:
        """Everything needed to rebuild this completion, as JSON text.

        The parsed object is kept as its JSON data (a Pydantic model dumped);
        ``raw=True`` keeps the provider payload too. Rate limits and the
        messages sent are not kept. :meth:`from_json` reads it back.
        """
        parsed = self.parsed
        dump = getattr(parsed, "model_dump", None)
        data: dict[str, Any] = {
            "text": self.text,
            "model": self.model,
            "provider": self.provider,
            "response_model": self.response_model,
            "reasoning": self.reasoning,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments,
                 "arguments_json": c.arguments_json}
                for c in self.tool_calls
            ],
            "finish_reason": self.finish_reason,
            "usage": {**self.usage.to_dict(), "estimated": self.usage.estimated},
            "latency_s": self.latency_s,
            "ttft_s": self.ttft_s,
            "cost_usd": self.cost_usd,
            "cost_status": self.cost_status,
            "parsed": dump(mode="json") if dump is not None else parsed,
            "refusal": self.refusal,
            "id": self.id,
            "cached": self.cached,
            "attempts": self.attempts,
        }
        if raw:
            data["raw"] = self.raw
        return json.dumps(data, ensure_ascii=False, default=str)

    @classmethod
    def from_json(cls, text: str, *, response_format: Any = None) -> Completion:
        """A completion from :meth:`to_json`'s text.

        ``response_format`` (a Pydantic model) turns the kept parsed data back
        into that model; without it ``parsed`` is the JSON data.
        """
        data = json.loads(text)
        usage = dict(data.get("usage") or {})
        usage.pop("total_tokens", None)
        parsed = data.get("parsed")
        validate = getattr(response_format, "model_validate", None)
        if parsed is not None and validate is not None:
            parsed = validate(parsed)
        return cls(
            text=data.get("text") or "",
            model=data.get("model") or "",
            provider=data.get("provider") or "",
            response_model=data.get("response_model"),
            reasoning=data.get("reasoning"),
            tool_calls=[
                ToolCall(c.get("id") or "", c.get("name") or "", c.get("arguments") or {},
                         c.get("arguments_json") or "")
                for c in data.get("tool_calls") or []
            ],
            finish_reason=data.get("finish_reason") or "stop",
            usage=Usage(**usage),
            latency_s=data.get("latency_s"),
            ttft_s=data.get("ttft_s"),
            cost_usd=data.get("cost_usd"),
            cost_status=data.get("cost_status") or "unknown",
            parsed=parsed,
            refusal=data.get("refusal"),
            id=data.get("id"),
            cached=bool(data.get("cached")),
            raw=data.get("raw"),
            attempts=int(data.get("attempts") or 0),
        )

    def footer(self) -> str:
        """One line: model, tokens, time to first token, latency and cost."""
        parts = [self.model or self.provider]
        approx = "~" if self.usage.estimated else ""
        parts.append(
            f"{approx}{self.usage.input_tokens} in / {approx}{self.usage.output_tokens} out"
        )
        if self.ttft_s is not None:
            parts.append(f"TTFT {self.ttft_s:.2f}s")
        if self.latency_s is not None:
            parts.append(f"{self.latency_s:.2f}s")
        parts.append(format_usd(self.cost_usd, self.cost_status))
        if self.finish_note:
            parts.append(self.finish_note)
        return " · ".join(parts)

    @property
    def finish_note(self) -> str:
        """How the answer ended, in words, when it did not end on its own:
        ``cut off at max_tokens``, ``content filtered``, ``stopped`` or ``error``;
        ``""`` otherwise. Every footer (cell, compare card, dashboard) shows it."""
        return _FINISH_NOTES.get(self.finish_reason, "")

    def _repr_markdown_(self) -> str:
        from notebook_llm._render import escape_markdown, markdown_code, markdown_text

        body = escape_markdown(self.text) if self.text else "*(no text)*"
        if self.tool_calls:
            # Names and arguments come from the model: as code that cannot end early.
            calls = "\n".join(
                f"- {markdown_code(f'{c.name}({json.dumps(c.arguments)[:200]})')}"
                for c in self.tool_calls
            )
            body += f"\n\n**Tool calls**\n\n{calls}"
        return f"{body}\n\n---\n<small>{markdown_text(self.footer())}</small>"



_FINISH_NOTES: dict[str, str] = {
    "length": "cut off at max_tokens",
    "content_filter": "content filtered",
    "cancelled": "stopped",
    "error": "error",
}


@dataclass(slots=True)
class EmbeddingResponse:
    """Vectors for a list of texts, in input order."""

    vectors: list[list[float]]
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    raw: Any = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider can do."""

    streaming: bool = True
    tools: bool = False
    structured_output: bool = False
    reasoning: bool = False
    image_input: bool = False
    embeddings: bool = False
    list_models: bool = False
    batch: bool = False

    def to_dict(self) -> dict[str, bool]:
        """The capabilities as a plain dict."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """One provider: how to reach it, where its key lives, what it can do."""

    name: str
    protocol: Literal["openai", "anthropic", "offline", "local", "plugin"]
    description: str
    capabilities: Capabilities
    key_env: tuple[str, ...] = ()
    """Environment variables read for the key, in order (empty: no key needed)."""
    base_url_env: str | None = None
    default_base_url: str | None = None
    key_required: bool = True
    free: bool = False
    """True for local and offline models: every call costs nothing."""
    pricing_id: str | None = None
    """The provider id in the price data, when it differs from ``name``."""

    def to_dict(self) -> dict[str, Any]:
        """A flat dict, capabilities included, for a DataFrame row."""
        return {
            "provider": self.name,
            "protocol": self.protocol,
            "description": self.description,
            "key_env": ", ".join(self.key_env),
            "base_url_env": self.base_url_env or "",
            "default_base_url": self.default_base_url or "",
            **self.capabilities.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model a provider offers."""

    id: str
    provider: str
    owned_by: str | None = None
    created: int | None = None

    @property
    def model_string(self) -> str:
        """``provider:id``, ready for ``model=``."""
        return f"{self.provider}:{self.id}"
