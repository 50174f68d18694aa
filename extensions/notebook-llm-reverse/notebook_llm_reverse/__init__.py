"""An example third-party provider, registered through the
``notebook_llm.providers`` entry-point group (see this package's pyproject.toml).

``reverse:text`` answers with the last user message reversed, streamed a
character at a time. Copy this package to start a provider of your own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from notebook_llm.core.types import Capabilities, Chunk, Completion, ProviderInfo, Request, Usage
from notebook_llm.providers.base import Provider

__all__ = ["ReverseProvider"]


def _reply(request: Request) -> str:
    last = next(m for m in reversed(request.messages) if m.get("role") == "user")
    return str(last.get("content") or "")[::-1]


class ReverseProvider(Provider):
    """Answers with the prompt reversed; needs no key and no network."""

    INFO = ProviderInfo(
        name="reverse",
        protocol="plugin",
        description="Example plugin: the prompt reversed",
        capabilities=Capabilities(streaming=True),
        key_required=False,
        free=True,
    )

    async def complete(self, request: Request) -> Completion:
        """The reversed prompt."""
        text = _reply(request)
        return Completion(text=text, usage=Usage(output_tokens=len(text)))

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:  # type: ignore[override]
        """The reversed prompt, a character at a time."""
        text = _reply(request)
        for char in text:
            yield Chunk(text=char)
        yield Chunk(finish_reason="stop", usage=Usage(output_tokens=len(text)))
