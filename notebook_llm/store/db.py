"""Opening the SQLite database: where it lives, how it is configured, who holds it.

One file per user by default (``NOTEBOOK_LLM_DB``, else the platform data
directory). Connections use WAL, so readers never block the writer and
several kernels can log to one file at once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeAlias

from notebook_llm.store.migrations import _retry_locked, migrate

__all__ = ["Store", "connect", "default_db_path", "transaction"]

PathLike: TypeAlias = "str | os.PathLike[str]"

MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 30_000


def default_db_path() -> Path:
    """The database file to use when none is given.

    ``$NOTEBOOK_LLM_DB`` when set, else ``notebook_llm.db`` in the user data
    directory (``platformdirs.user_data_dir("notebook-llm")``).
    """
    env = os.environ.get("NOTEBOOK_LLM_DB")
    if env:
        return Path(env).expanduser()
    import platformdirs  # lazy: only needed when no path is configured

    return Path(platformdirs.user_data_dir("notebook-llm")) / "notebook_llm.db"


def connect(path: PathLike | None = None, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``.

    Args:
        path: A file path, ``":memory:"``, or ``None`` for :func:`default_db_path`.
        check_same_thread: Passed to :func:`sqlite3.connect`. Leave it on unless
            you guarantee one thread at a time (as :class:`Store` does).

    Returns:
        A connection in autocommit mode (``isolation_level=None``: use
        :func:`transaction` or explicit ``BEGIN``), with WAL, ``synchronous=NORMAL``,
        a 30 s busy timeout, foreign keys on and :class:`sqlite3.Row` rows.
    """
    target = str(default_db_path() if path is None else path)
    if target != MEMORY:
        _private_file(Path(target))
    conn = sqlite3.connect(
        target,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=check_same_thread,
    )
    try:
        conn.row_factory = sqlite3.Row
        # busy_timeout first: switching to WAL needs the lock when several
        # processes open a new file together.
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if target != MEMORY:
            _retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _private_file(path: Path) -> None:
    """Create ``path`` (and a missing directory) readable by this user only.

    The call log holds prompts and answers: the file is 0600, and the directory
    is 0700 when the library made it or it is the library's own data directory
    (an existing directory chosen by the user keeps its mode). SQLite gives its
    ``-wal`` and ``-shm`` files the database file's mode.
    """
    parent = path.parent
    own_directory = parent == _library_dir()
    if not parent.exists():
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        own_directory = True
    if own_directory:
        _restrict(parent, 0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if file.exists():
            _restrict(file, 0o600)


def _library_dir() -> Path:
    import platformdirs  # lazy: only needed when a file is opened

    return Path(platformdirs.user_data_dir("notebook-llm"))


def _restrict(path: Path, mode: int) -> None:
    try:
        if path.stat().st_mode & 0o777 & ~mode:
            path.chmod(mode)
    except OSError:  # not ours to change (a shared file): leave it
        pass


@contextmanager
def transaction(
    conn: sqlite3.Connection, *, immediate: bool = True
) -> Iterator[sqlite3.Connection]:
    """Run the block in one transaction: commit on success, roll back on error.

    ``immediate=True`` takes the write lock up front (``BEGIN IMMEDIATE``), so a
    read-then-write block cannot fail half way with "database is locked".
    """
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Store:
    """One database file, with one connection per thread.

    SQLite connections must not be shared between threads, so :attr:`conn`
    opens a connection the first time each thread asks. An in-memory store
    (``":memory:"``) is the exception: a private in-memory database exists
    only inside its connection, so every thread shares that one connection,
    and :meth:`transaction` serialises writers with a lock.

    Args:
        path: A file path, ``":memory:"``, or ``None`` for :func:`default_db_path`.
    """

    def __init__(self, path: PathLike | None = None) -> None:
        self.path: str = str(default_db_path() if path is None else path)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._connections: list[sqlite3.Connection] = []
        self._shared: sqlite3.Connection | None = None
        self._closed = False

    @property
    def is_memory(self) -> bool:
        """True for an in-memory database."""
        return self.path == MEMORY

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened (and migrated) on first use."""
        if self._closed:
            raise RuntimeError(f"Store({self.path!r}) is closed")
        if self.is_memory:
            with self._lock:
                if self._shared is None:
                    self._shared = connect(MEMORY, check_same_thread=False)
                    self._connections.append(self._shared)
                return self._shared
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so close() may close it from any thread;
            # the connection is still used by its own thread alone.
            conn = connect(self.path, check_same_thread=False)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """This thread's connection inside one transaction (see :func:`transaction`)."""
        conn = self.conn
        if self.is_memory:
            with self._lock, transaction(conn, immediate=immediate):
                yield conn
        else:
            with transaction(conn, immediate=immediate):
                yield conn

    def execute(
        self, sql: str, params: tuple[object, ...] | dict[str, object] = ()
    ) -> list[dict[str, object]]:
        """Run one statement on this thread's connection; rows as plain dicts."""
        if self.is_memory:
            with self._lock:
                return [dict(row) for row in self.conn.execute(sql, params)]
        return [dict(row) for row in self.conn.execute(sql, params)]

    def tuples(
        self, sql: str, params: tuple[object, ...] | dict[str, object] = ()
    ) -> list[tuple[object, ...]]:
        """Run one query on this thread's connection; rows as plain tuples.

        For reading many rows: cheaper in time and memory than :meth:`execute`'s dicts.
        """
        if self.is_memory:
            with self._lock:
                return self._tuples(sql, params)
        return self._tuples(sql, params)

    def _tuples(
        self, sql: str, params: tuple[object, ...] | dict[str, object]
    ) -> list[tuple[object, ...]]:
        cursor = self.conn.cursor()
        cursor.row_factory = None
        try:
            return cursor.execute(sql, params).fetchall()
        finally:
            cursor.close()

    def close(self) -> None:
        """Close every connection this store opened, in every thread."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
            self._shared = None
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r})"
