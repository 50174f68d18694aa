"""SQLite storage: the call log, response cache, batch checkpoints and collections.

Standard library only (``sqlite3``); features turn rows into DataFrames.
"""

from notebook_llm.store.db import Store, connect, default_db_path
from notebook_llm.store.log import CallLog, scrub
from notebook_llm.store.migrations import migrate

__all__ = ["CallLog", "Store", "connect", "default_db_path", "migrate", "scrub"]
