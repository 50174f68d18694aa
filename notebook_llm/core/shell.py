"""Where the library runs: the one check for an IPython shell and a Jupyter kernel.

Found through ``sys.modules`` only: IPython is never imported here, so a
script, a service or the core pay nothing for it, and only a shell that is
already running counts.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["current_kernel", "in_kernel", "ipython_shell"]


def ipython_shell() -> Any:
    """The running IPython shell (a kernel's or terminal IPython's), or ``None``."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return None
    try:
        return get_ipython()
    except Exception:  # noqa: BLE001 - any odd IPython state means "no shell"
        return None


def current_kernel() -> Any:
    """The running Jupyter kernel (ipykernel's ``Kernel``), or ``None`` outside one."""
    shell = ipython_shell()
    return getattr(shell, "kernel", None) if shell is not None else None


def in_kernel() -> bool:
    """True inside a Jupyter kernel (not terminal IPython, not a plain script)."""
    return current_kernel() is not None
