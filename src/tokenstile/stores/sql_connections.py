"""Connections to the SQL database, each use translated into tokenstile's errors."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenstile.errors import InvalidRequest
from tokenstile.stores.failures import network_reason, store_failure

# SQLSTATE class 22, "data exception": a value the database refuses to store (a NUL
# character, a string longer than its column). The input is at fault, not the database.
_DATA_EXCEPTION = "22"
UPGRADE_HINT = "the schema is missing or out of date; run `tokenstile db upgrade`"

# SQLSTATE classes and codes whose server message names the problem (and never a
# statement's parameters), and whether an operator must act.
_SERVER_MESSAGES = {
    "3D000": True,  # invalid_catalog_name: the database does not exist
    "28": True,  # invalid authorization: unknown role, wrong password
    "42501": True,  # insufficient_privilege
    "08": False,  # connection exception
    "53": False,  # insufficient resources: too many connections, disk full
    "57": False,  # operator intervention: shutting down, starting up
}
_SCHEMA_MISSING = ("42P01", "42703")  # undefined_table, undefined_column
# sqlite3's messages carry no parameters; these mean the file itself is unusable.
_SQLITE_FILE_PROBLEMS = {
    "unable to open database file": "cannot open the database file (is DATA_DIR there "
    "and writable?)",
    "attempt to write a readonly database": "the database file is read-only",
    "file is not a database": "the file is not a SQLite database",
}


def _reason(exc: DBAPIError) -> tuple[str, bool]:
    """Why ``exc`` happened, in words safe to log, and whether an operator must act."""
    sqlstate = str(getattr(exc.orig, "sqlstate", "") or "")
    message = str(exc.orig).strip()
    if sqlstate in _SCHEMA_MISSING or message.startswith(("no such table", "no such column")):
        return UPGRADE_HINT, True
    for prefix, misconfigured in _SERVER_MESSAGES.items():
        if sqlstate.startswith(prefix):
            return message, misconfigured
    if isinstance(exc.orig, sqlite3.Error):
        for problem, reason in _SQLITE_FILE_PROBLEMS.items():
            if problem in message:
                return reason, True
        return message, False
    # Another driver error: its name only, as its message may quote parameters.
    return network_reason(exc) or type(exc.orig).__name__, False


@contextmanager
def store_errors(store: str) -> Iterator[None]:
    """Translate a lost or refused connection to ``store`` (its description), or a wait
    for a pooled connection that timed out, into ``StoreUnavailable`` naming the cause
    (``StoreMisconfigured`` when an operator must act), and a value the database cannot
    store into ``InvalidRequest``."""
    try:
        yield
    except IntegrityError:
        raise
    except DBAPIError as exc:
        if str(getattr(exc.orig, "sqlstate", "")).startswith(_DATA_EXCEPTION):
            raise InvalidRequest("A value in the request cannot be stored.") from exc
        # Lost connections, refused logins, missing databases, lock timeouts: no
        # answer we could trust, so the request fails closed.
        reason, misconfigured = _reason(exc)
        raise store_failure(store, reason, misconfigured=misconfigured) from exc
    except PoolTimeout as exc:
        # Every pooled connection is busy (a stalled database holds them all): this
        # request waited its STORE_TIMEOUT for one.
        raise store_failure(store, "no free connection in the pool (timed out)") from exc
    except (OSError, TimeoutError) as exc:
        raise store_failure(store, network_reason(exc) or str(exc)) from exc


class Connections:
    """Autocommit connections, each use translated by ``store_errors``.

    SQLite has one writer at a time; its busy handler makes waiting writers poll and
    sleep, which under load wastes the timeout. So on SQLite this process's writers
    queue on a lock first and meet the file lock one at a time.
    """

    def __init__(
        self, engine: AsyncEngine, *, name: str, serialize_writes: bool, timeout: float
    ) -> None:
        self.name = name
        """The database's description in errors and logs (no password)."""
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._write_lock = asyncio.Lock() if serialize_writes else None
        self._timeout = timeout
        self.dialect = engine.dialect.name

    async def dispose(self) -> None:
        await self._engine.dispose()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        with store_errors(self.name):
            async with self._engine.connect() as connection:
                yield connection

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self.read() as connection:
                yield connection
            return
        with store_errors(self.name):
            async with asyncio.timeout(self._timeout):
                await self._write_lock.acquire()
        try:
            async with self.read() as connection:
                yield connection
        finally:
            self._write_lock.release()
