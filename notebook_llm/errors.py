"""The errors every provider raises (see :mod:`notebook_llm.core.errors`)."""

from notebook_llm.core.errors import *  # noqa: F403
from notebook_llm.core.errors import __all__ as __all__
