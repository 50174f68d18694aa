"""One module per wire protocol: openai (and every OpenAI-compatible server),
anthropic, offline demo models and local in-process GGUF models.

``nl.providers()`` is public API, and importing this package makes
``notebook_llm.providers`` refer to it; so the package itself is callable and
answers like ``nl.providers()``.
"""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """One record per provider: key and base-URL variables, capabilities."""
        from notebook_llm._api import default_client

        return default_client().providers(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
