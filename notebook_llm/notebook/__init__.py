"""The notebook layer: magics, streaming display and the Stop button.

Imported only by ``%load_ext notebook_llm``; ``import notebook_llm`` never
imports IPython. Everything here is a thin shell over the public API.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["load_ipython_extension", "show_compare", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics (``%%llm``, ``%%chat``, ``%llm_models``, ...)."""
    from notebook_llm.notebook._arena_magics import ArenaMagics
    from notebook_llm.notebook._asset_magics import AssetMagics
    from notebook_llm.notebook._fix_magics import FixMagics
    from notebook_llm.notebook._log_magics import LogMagics
    from notebook_llm.notebook._magics import LLMMagics
    from notebook_llm.notebook._replay_magics import ReplayMagics
    from notebook_llm.notebook._serve_magics import ServeMagics
    from notebook_llm.notebook._tracebacks import install

    install(ipython)
    ipython.register_magics(LLMMagics)
    ipython.register_magics(ArenaMagics)
    ipython.register_magics(AssetMagics)
    ipython.register_magics(ServeMagics)
    ipython.register_magics(import_module("notebook_llm.notebook._tool_magics").ToolMagics)
    ipython.register_magics(FixMagics)
    ipython.register_magics(ReplayMagics)
    ipython.register_magics(LogMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """Stop recording cell errors for ``{Err[n]}``; the magics stay registered."""
    for name in ("LLMMagics", "FixMagics"):
        magics = ipython.magics_manager.registry.get(name)
        if magics is not None:
            magics.unregister()


def show_compare(prompt: str | None = None, models: Any = (), **kwargs: Any) -> Any:
    """:func:`notebook_llm.compare` with the live dashboard: a column per model,
    streaming, with Stop buttons; returns the ``Comparison``."""
    from notebook_llm.notebook._dashboard import show_compare as show

    return show(prompt, models, **kwargs)
