"""notebook-llm: a Jupyter-first toolkit for large language models.

``import notebook_llm as nl`` is cheap: names are imported on first use, and
no provider SDK, pandas or IPython is imported until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it (imported on first attribute access)
_EXPORTS: dict[str, str] = {
    "AsyncStream": "notebook_llm.core.stream",
    "Capabilities": "notebook_llm.core.types",
    "Chunk": "notebook_llm.core.types",
    "Client": "notebook_llm._client",
    "Completion": "notebook_llm.core.types",
    "ModelInfo": "notebook_llm.core.types",
    "ProviderInfo": "notebook_llm.core.types",
    "RateLimit": "notebook_llm.core.ratelimit",
    "RetryPolicy": "notebook_llm.core.retry",
    "Stream": "notebook_llm.core.stream",
    "Tool": "notebook_llm.core.types",
    "ToolCall": "notebook_llm.core.types",
    "Usage": "notebook_llm.core.types",
    "acomplete": "notebook_llm._api",
    "aembed": "notebook_llm._api",
    "alist_models": "notebook_llm._api",
    "astream": "notebook_llm._api",
    "complete": "notebook_llm._api",
    "default_client": "notebook_llm._api",
    "default_model": "notebook_llm._api",
    "embed": "notebook_llm._api",
    "list_models": "notebook_llm._api",
    "providers": "notebook_llm._api",
    "set_default_client": "notebook_llm._api",
    "stream": "notebook_llm._api",
}

__all__ = sorted([*_EXPORTS, "errors"])


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("notebook_llm.errors")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'notebook_llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext notebook_llm``: register the magics."""
    from notebook_llm.notebook import load_ipython_extension as load

    load(ipython)


if TYPE_CHECKING:
    from notebook_llm import errors as errors
    from notebook_llm._api import (
        acomplete as acomplete,
    )
    from notebook_llm._api import (
        aembed as aembed,
    )
    from notebook_llm._api import (
        alist_models as alist_models,
    )
    from notebook_llm._api import (
        astream as astream,
    )
    from notebook_llm._api import (
        complete as complete,
    )
    from notebook_llm._api import (
        default_client as default_client,
    )
    from notebook_llm._api import (
        default_model as default_model,
    )
    from notebook_llm._api import (
        embed as embed,
    )
    from notebook_llm._api import (
        list_models as list_models,
    )
    from notebook_llm._api import (
        providers as providers,
    )
    from notebook_llm._api import (
        set_default_client as set_default_client,
    )
    from notebook_llm._api import (
        stream as stream,
    )
    from notebook_llm._client import Client as Client
    from notebook_llm.core.ratelimit import RateLimit as RateLimit
    from notebook_llm.core.retry import RetryPolicy as RetryPolicy
    from notebook_llm.core.stream import AsyncStream as AsyncStream
    from notebook_llm.core.stream import Stream as Stream
    from notebook_llm.core.types import (
        Capabilities as Capabilities,
    )
    from notebook_llm.core.types import (
        Chunk as Chunk,
    )
    from notebook_llm.core.types import (
        Completion as Completion,
    )
    from notebook_llm.core.types import (
        ModelInfo as ModelInfo,
    )
    from notebook_llm.core.types import (
        ProviderInfo as ProviderInfo,
    )
    from notebook_llm.core.types import (
        Tool as Tool,
    )
    from notebook_llm.core.types import (
        ToolCall as ToolCall,
    )
    from notebook_llm.core.types import (
        Usage as Usage,
    )
