"""What a middleware sees of one call (:class:`CallContext`) and the hooks it
overrides (:class:`Middleware`).

Plugin authors import both from :mod:`notebook_llm.core.client` as before;
they live here so the client module keeps to its one job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from notebook_llm.core.errors import CancelledError
from notebook_llm.core.models import ModelRef
from notebook_llm.core.types import Completion, ProviderInfo, Request, ToolRun

__all__ = ["CallContext", "Middleware"]


@dataclass
class CallContext:
    """Everything a middleware may want to know about one call."""

    kind: Literal["complete", "stream", "embed"]
    ref: ModelRef
    info: ProviderInfo
    request: Request
    log: bool = True
    cache: bool = False
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    attempts: int = 0
    """Tries so far (retries included); ends up on the completion or the error."""
    format_model: Any = None
    """The Pydantic model ``response_format`` named, which parses the answer."""
    fragment_ids: tuple[int, ...] = ()
    """Stored fragments before the prompt, then the system prompt (the log links them)."""
    system_fragment_ids: tuple[int, ...] = ()
    schema_id: str | None = None
    """The stored JSON schema the call asked for (the log links it)."""
    trackers: tuple[Any, ...] | None = None
    """The ``nl.track()`` blocks open where the call was made (``None``: not looked
    up yet; ``notebook_llm.Client`` does it where the call is made)."""
    budget_held: dict[int, float] = field(default_factory=dict)
    """Dollars a budget holds for this call while it runs, by tracker id."""
    tool_runs: list[ToolRun] = field(default_factory=list)
    """The tool calls whose results this request carries back (logged with it)."""
    model_as_written: str | None = None
    """The model string the caller gave, before defaults and aliases (``None``: the default)."""

    @property
    def model(self) -> str:
        """``provider:model`` as asked."""
        return str(self.ref)

    def stopped_unsent(self, completion: Completion | None, error: BaseException | None) -> bool:
        """Whether the call was stopped before any request left: cancelled while
        it waited (for a rate limiter, say), no answer, nothing to log or count.
        A stopped batch's queued rows end this way."""
        return completion is None and self.attempts == 0 and isinstance(error, CancelledError)


class Middleware:
    """Hooks around every call. Subclasses override what they need."""

    async def before(self, ctx: CallContext) -> Completion | None:
        """Called before sending; return a Completion to answer without sending
        (a cache hit), or raise to refuse (a budget)."""
        return None

    async def after(
        self, ctx: CallContext, completion: Completion | None, error: BaseException | None
    ) -> None:
        """Called once the call has ended, successfully or not."""
