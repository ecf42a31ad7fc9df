"""Liveness reads of the SQLite file straight from the event loop.

A liveness check is a primary-key lookup that takes microseconds; through aiosqlite it
costs a thread hop and SQLAlchemy's machinery, many times the lookup itself. In WAL
mode a reader never waits for writers, and each autocommit ``SELECT`` is a read
transaction of its own that sees every commit made before it began, in this process
or any other. So the embedded default reads sessions on the loop, with a connection
that cannot write, and leaves every write to the async engine.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from sqlalchemy import bindparam
from sqlalchemy.dialects import sqlite

from tokenstile.stores.sql_tables import session_is_live

logger = logging.getLogger("tokenstile")

# A reader only waits during rare WAL-index recovery; never stall the loop for long.
_BUSY_TIMEOUT = 0.05
_MAX_PARAMETERS = 500  # under SQLite's oldest default limit of 999
# The store's own live condition, rendered once; its one "?" is ``now``.
_LIVE = str(session_is_live(bindparam("now")).compile(dialect=sqlite.dialect()))


class SqliteLoopReader:
    """Answers "which of these sessions are live?" from the SQLite file at ``path``.

    :meth:`live` returns ``None`` when it cannot answer at once (the file is busy, not
    created yet, not migrated): the caller then asks the async engine, which has the
    store timeout and the error translation.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None

    def live(self, sids: list[str], *, now: float) -> set[str] | None:
        if len(sids) > _MAX_PARAMETERS:
            return None
        try:
            connection = self._connection or self._connect()
            placeholders = ",".join("?" * len(sids))  # constants and "?"s only: no values
            rows = connection.execute(
                f"SELECT sid FROM sessions WHERE {_LIVE} AND sid IN ({placeholders})",  # noqa: S608
                (now, *sids),
            ).fetchall()
        except sqlite3.Error as exc:
            logger.debug("loop-side SQLite read failed (%s); using the engine", type(exc).__name__)
            self.close()
            return None
        return {row[0] for row in rows}

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            f"{Path(self._path).resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=_BUSY_TIMEOUT,
            isolation_level=None,  # autocommit: every SELECT sees the newest commits
            check_same_thread=False,
        )
        connection.execute("PRAGMA query_only = ON")
        self._connection = connection
        return connection
