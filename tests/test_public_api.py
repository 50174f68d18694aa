"""The public surface is exactly this list, and every name in it resolves.

As httpx's ``test_exported_members.py``: a name added to or dropped from
``nl.__all__`` by accident fails here; a deliberate change edits the list.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import notebook_llm as nl

PUBLIC = [
    "Arena",
    "ArenaResults",
    "AsyncStream",
    "AudioPart",
    "BatchEstimate",
    "BatchResult",
    "CancelToolCall",
    "Capabilities",
    "Chunk",
    "Client",
    "Collection",
    "Comparison",
    "Completion",
    "Conversation",
    "DocumentPart",
    "Embeddings",
    "ImagePart",
    "LogEntry",
    "ModelInfo",
    "Progress",
    "ProviderInfo",
    "RateLimit",
    "RateLimitInfo",
    "Recommendation",
    "RetryPolicy",
    "Server",
    "Stream",
    "Template",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolRun",
    "Tracker",
    "Usage",
    "abatch",
    "acompare",
    "acomplete",
    "aembed",
    "aexpect",
    "afind_local_servers",
    "alist_models",
    "arena",
    "astream",
    "batch",
    "batch_jobs",
    "cache",
    "capture",
    "card",
    "chat",
    "collection",
    "collections",
    "compare",
    "complete",
    "conversation",
    "conversations",
    "costs",
    "default_client",
    "default_model",
    "delete_collection",
    "embed",
    "errors",
    "estimate",
    "expect",
    "fragments",
    "list_models",
    "list_providers",
    "local",
    "local_servers",
    "log_backup",
    "log_entry",
    "log_prune",
    "logs",
    "mcp",
    "options",
    "plot_costs",
    "register_modalities",
    "replay",
    "replay_diff",
    "resume_provider_batch",
    "schema_dsl",
    "serve",
    "set_cache",
    "set_default_client",
    "set_logging",
    "stop_all",
    "stream",
    "templates",
    "tool",
    "track",
    "usage",
]

INIT = Path(nl.__file__)


def test_all_is_exactly_the_public_list() -> None:
    assert nl.__all__ == PUBLIC
    assert PUBLIC == sorted(PUBLIC)


def test_every_public_name_resolves() -> None:
    for name in nl.__all__:
        assert getattr(nl, name) is not None, name


def _type_checking_names() -> set[str]:
    """The names the ``if TYPE_CHECKING:`` block of ``__init__.py`` imports."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(
        node for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )  # fmt: skip
    return {
        alias.asname or alias.name
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_type_checking_mirror_matches_the_lazy_exports() -> None:
    assert _type_checking_names() == set(nl.__all__)


def test_usage_is_the_function_and_providers_is_the_plugin_package() -> None:
    code = (
        "import notebook_llm as nl, notebook_llm.providers.openai, types, warnings;"
        "warnings.simplefilter('error');"
        "print(callable(nl.usage), isinstance(nl.providers, types.ModuleType),"
        " len(nl.list_providers()) > 10)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True", "True"], out.stderr


def test_no_module_of_the_package_is_made_callable() -> None:
    package = INIT.parent
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert ".__class__ = " not in text, path
        assert "(ModuleType)" not in text and "(types.ModuleType)" not in text, path


def test_client_providers_is_a_deprecated_name_of_list_providers() -> None:
    import pytest

    client = nl.Client(log=False)
    with pytest.warns(DeprecationWarning, match="list_providers"):
        assert client.providers() == client.list_providers()
