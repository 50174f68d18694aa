"""The provider seam: one small async interface every wire protocol implements.

A provider instance is bound to one base URL, one key and one event loop; the
client caches instances and reuses them (building an SDK client costs tens of
milliseconds). Providers translate their SDK's or server's errors into
``notebook_llm.errors`` at this seam, so nothing above ever sees vendor types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from notebook_llm.core.errors import UnsupportedError
from notebook_llm.core.types import (
    Chunk,
    Completion,
    EmbeddingResponse,
    ModelInfo,
    ProviderInfo,
    Request,
)

__all__ = ["Provider"]


class Provider:
    """Base class for providers. Subclasses override what they support.

    Args:
        info: the provider's record (name, key variables, capabilities).
        api_key: the key, or ``None`` for providers that need none.
        api_base: the base URL, or ``None`` for the provider's default.
        settings: provider-specific options from the client configuration.
    """

    #: Set by subclasses that need no key, no network (offline, local).
    in_process: ClassVar[bool] = False

    def __init__(
        self,
        info: ProviderInfo,
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        **settings: Any,
    ) -> None:
        self.info = info
        self.name = info.name
        self._api_key = api_key
        self.api_base = api_base or info.default_base_url
        self.settings = settings

    def __repr__(self) -> str:
        # Never show the key.
        return f"<{type(self).__name__} {self.name} {self.api_base or ''}>".replace(" >", ">")

    async def complete(self, request: Request) -> Completion:
        """Send one request and return the whole completion (no streaming)."""
        raise UnsupportedError("Completions are not supported", provider=self.name)

    def stream(self, request: Request) -> AsyncIterator[Chunk]:
        """Send one request and yield chunks as they arrive.

        Implementations are async generators; closing the generator (``aclose``)
        must close the HTTP response so the server stops generating.
        """
        raise UnsupportedError("Streaming is not supported", provider=self.name)

    async def embed(self, texts: list[str], model: str, **kwargs: Any) -> EmbeddingResponse:
        """Embed ``texts`` with ``model``; vectors come back in input order."""
        raise UnsupportedError(
            f"{self.name} does not offer embeddings; try 'offline:hash', 'local:minilm' "
            "or an OpenAI embedding model",
            provider=self.name,
        )

    async def list_models(self) -> list[ModelInfo]:
        """The models this provider offers."""
        raise UnsupportedError("Listing models is not supported", provider=self.name)

    async def aclose(self) -> None:
        """Release connections."""
