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
    "Arena": "notebook_llm._arena",
    "ArenaResults": "notebook_llm._arena",
    "AsyncStream": "notebook_llm.core.stream",
    "AudioPart": "notebook_llm.core.types",
    "BatchEstimate": "notebook_llm.batches",
    "BatchResult": "notebook_llm.batches",
    "CancelToolCall": "notebook_llm.core.errors",
    "Capabilities": "notebook_llm.core.types",
    "Chunk": "notebook_llm.core.types",
    "Client": "notebook_llm._client",
    "Collection": "notebook_llm.embeddings",
    "Comparison": "notebook_llm._compare",
    "Completion": "notebook_llm.core.types",
    "Conversation": "notebook_llm._conversations",
    "DocumentPart": "notebook_llm.core.types",
    "Embeddings": "notebook_llm.embeddings",
    "ImagePart": "notebook_llm.core.types",
    "LogEntry": "notebook_llm._log_entry",
    "ModelInfo": "notebook_llm.core.types",
    "Progress": "notebook_llm.progress",
    "ProviderInfo": "notebook_llm.core.types",
    "RateLimit": "notebook_llm.core.ratelimit",
    "RateLimitInfo": "notebook_llm.core.ratelimit",
    "Recommendation": "notebook_llm._decide",
    "RetryPolicy": "notebook_llm.core.retry",
    "Server": "notebook_llm._serve",
    "Stream": "notebook_llm.core.stream",
    "Template": "notebook_llm._templates",
    "TextPart": "notebook_llm.core.types",
    "Tool": "notebook_llm.core.types",
    "ToolCall": "notebook_llm.core.types",
    "ToolRun": "notebook_llm.core.types",
    "Tracker": "notebook_llm._tracking",
    "Usage": "notebook_llm.core.types",
    "abatch": "notebook_llm.batches",
    "acompare": "notebook_llm._compare",
    "arena": "notebook_llm._arena",
    "acomplete": "notebook_llm._api",
    "aexpect": "notebook_llm._expect",
    "aembed": "notebook_llm.embeddings",
    "afind_local_servers": "notebook_llm.providers.discovery",
    "alist_models": "notebook_llm._api",
    "astream": "notebook_llm._api",
    "batch": "notebook_llm.batches",
    "batch_jobs": "notebook_llm.batches",
    "cache": "notebook_llm._middleware",
    "capture": "notebook_llm._capture",
    "card": "notebook_llm._context",
    "chat": "notebook_llm._conversations",
    "collection": "notebook_llm.embeddings",
    "collections": "notebook_llm.embeddings",
    "compare": "notebook_llm._compare",
    "complete": "notebook_llm._api",
    "conversation": "notebook_llm._conversations",
    "conversations": "notebook_llm._conversations",
    "costs": "notebook_llm._usage",
    "default_client": "notebook_llm._api",
    "default_model": "notebook_llm._api",
    "delete_collection": "notebook_llm.embeddings",
    "embed": "notebook_llm.embeddings",
    "estimate": "notebook_llm.batches",
    "expect": "notebook_llm._expect",
    "fragments": "notebook_llm._fragments",
    "list_models": "notebook_llm._api",
    "list_providers": "notebook_llm._api",
    "log_backup": "notebook_llm._log_files",
    "log_entry": "notebook_llm._log_entry",
    "log_prune": "notebook_llm._log_files",
    "logs": "notebook_llm._usage",
    "options": "notebook_llm._options",
    "plot_costs": "notebook_llm._usage",
    "register_modalities": "notebook_llm.core.modalities",
    "replay": "notebook_llm._replay",
    "replay_diff": "notebook_llm._replay",
    "resume_provider_batch": "notebook_llm.batches",
    "schema_dsl": "notebook_llm._schemas",
    "serve": "notebook_llm._serve",
    "set_cache": "notebook_llm._middleware",
    "set_default_client": "notebook_llm._api",
    "set_logging": "notebook_llm._middleware",
    "stop_all": "notebook_llm.core.inflight",
    "stream": "notebook_llm._api",
    "templates": "notebook_llm._templates",
    "tool": "notebook_llm.core.tools",
    "track": "notebook_llm._tracking",
    "usage": "notebook_llm._usage",
}

# Submodules that are public API themselves: ``nl.errors.RateLimitError``,
# ``nl.local.load(...)``.
_MODULES = {"errors", "local", "mcp"}

# Public functions whose name differs from where they live.
_RENAMED = {"local_servers": ("notebook_llm.providers.discovery", "find_local_servers")}

__all__ = sorted([*_EXPORTS, *_MODULES, *_RENAMED])


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(f"notebook_llm.{name}")
    elif name in _RENAMED:
        module, attribute = _RENAMED[name]
        value = getattr(importlib.import_module(module), attribute)
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'notebook_llm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


def _notebook_progress_ui() -> Any:
    """The notebook layer's progress UI: widgets, and a wait that lets Stop clicks in.

    Registered below with :func:`notebook_llm.progress.register_ui`, so the
    feature layer never imports the notebook layer; called only inside a
    Jupyter kernel, the first time a progress display or a blocking job needs it.
    """
    return importlib.import_module("notebook_llm.notebook._progress")


# Cheap: notebook_llm.progress imports only the standard library, and the
# loader above runs on first use in a kernel, never at import.
importlib.import_module("notebook_llm.progress").register_ui(_notebook_progress_ui)


# The arena's widget view lives in the notebook layer; the arena asks for it
# through this loader, only when it shows widgets in a kernel.
importlib.import_module("notebook_llm._views").register(
    "arena", lambda: importlib.import_module("notebook_llm.notebook._arena_view")
)

# track(capture=True) reaches the capture switch above it through this loader,
# called only when such a block is entered.
importlib.import_module("notebook_llm.core.capture_hooks").register_switch(
    lambda: importlib.import_module("notebook_llm._capture")
)


def _redact_ipython_tracebacks() -> None:
    """Inside IPython, keep keys out of every traceback it renders (see
    ``notebook_llm.notebook._tracebacks``); costs nothing elsewhere."""
    shell = importlib.import_module("notebook_llm.core.shell").ipython_shell()
    if shell is not None:
        importlib.import_module("notebook_llm.notebook._tracebacks").install(shell)


_redact_ipython_tracebacks()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext notebook_llm``: register the magics."""
    from notebook_llm.notebook import load_ipython_extension as load

    load(ipython)


if TYPE_CHECKING:
    # The same names for type checkers and IDEs (tests/test_public_api.py keeps
    # this in step with _EXPORTS).
    from notebook_llm import errors as errors, local as local, mcp as mcp
    from notebook_llm._api import (
        acomplete as acomplete,
        alist_models as alist_models,
        astream as astream,
        complete as complete,
        default_client as default_client,
        default_model as default_model,
        list_models as list_models,
        list_providers as list_providers,
        set_default_client as set_default_client,
        stream as stream,
    )
    from notebook_llm._arena import (
        Arena as Arena,
        ArenaResults as ArenaResults,
        arena as arena,
    )
    from notebook_llm._capture import (
        capture as capture,
    )
    from notebook_llm._client import (
        Client as Client,
    )
    from notebook_llm._compare import (
        Comparison as Comparison,
        acompare as acompare,
        compare as compare,
    )
    from notebook_llm._context import (
        card as card,
    )
    from notebook_llm._conversations import (
        Conversation as Conversation,
        chat as chat,
        conversation as conversation,
        conversations as conversations,
    )
    from notebook_llm._decide import (
        Recommendation as Recommendation,
    )
    from notebook_llm._expect import (
        aexpect as aexpect,
        expect as expect,
    )
    from notebook_llm._fragments import (
        fragments as fragments,
    )
    from notebook_llm._log_entry import (
        LogEntry as LogEntry,
        log_entry as log_entry,
    )
    from notebook_llm._log_files import (
        log_backup as log_backup,
        log_prune as log_prune,
    )
    from notebook_llm._middleware import (
        cache as cache,
        set_cache as set_cache,
        set_logging as set_logging,
    )
    from notebook_llm._options import (
        options as options,
    )
    from notebook_llm._replay import (
        replay as replay,
        replay_diff as replay_diff,
    )
    from notebook_llm._schemas import (
        schema_dsl as schema_dsl,
    )
    from notebook_llm._serve import (
        Server as Server,
        serve as serve,
    )
    from notebook_llm._templates import (
        Template as Template,
        templates as templates,
    )
    from notebook_llm._tracking import (
        Tracker as Tracker,
        track as track,
    )
    from notebook_llm._usage import (
        costs as costs,
        logs as logs,
        plot_costs as plot_costs,
        usage as usage,
    )
    from notebook_llm.batches import (
        BatchEstimate as BatchEstimate,
        BatchResult as BatchResult,
        abatch as abatch,
        batch as batch,
        batch_jobs as batch_jobs,
        estimate as estimate,
        resume_provider_batch as resume_provider_batch,
    )
    from notebook_llm.core.errors import (
        CancelToolCall as CancelToolCall,
    )
    from notebook_llm.core.inflight import (
        stop_all as stop_all,
    )
    from notebook_llm.core.modalities import (
        register_modalities as register_modalities,
    )
    from notebook_llm.core.ratelimit import (
        RateLimit as RateLimit,
        RateLimitInfo as RateLimitInfo,
    )
    from notebook_llm.core.retry import (
        RetryPolicy as RetryPolicy,
    )
    from notebook_llm.core.stream import (
        AsyncStream as AsyncStream,
        Stream as Stream,
    )
    from notebook_llm.core.tools import (
        tool as tool,
    )
    from notebook_llm.core.types import (
        AudioPart as AudioPart,
        Capabilities as Capabilities,
        Chunk as Chunk,
        Completion as Completion,
        DocumentPart as DocumentPart,
        ImagePart as ImagePart,
        ModelInfo as ModelInfo,
        ProviderInfo as ProviderInfo,
        TextPart as TextPart,
        Tool as Tool,
        ToolCall as ToolCall,
        ToolRun as ToolRun,
        Usage as Usage,
    )
    from notebook_llm.embeddings import (
        Collection as Collection,
        Embeddings as Embeddings,
        aembed as aembed,
        collection as collection,
        collections as collections,
        delete_collection as delete_collection,
        embed as embed,
    )
    from notebook_llm.progress import (
        Progress as Progress,
    )
    from notebook_llm.providers.discovery import (
        afind_local_servers as afind_local_servers,
        find_local_servers as local_servers,  # noqa: F401 - exported as local_servers
    )
