"""Connections to the SQL database, each use translated into tokenstile's errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenstile.errors import InvalidRequest, StoreUnavailable

# SQLSTATE class 22, "data exception": a value the database refuses to store (a NUL
# character, a string longer than its column). The input is at fault, not the database.
_DATA_EXCEPTION = "22"


@contextmanager
def store_errors() -> Iterator[None]:
    """Translate a lost or refused database connection into ``StoreUnavailable``, and a
    value the database cannot store into ``InvalidRequest``."""
    try:
        yield
    except IntegrityError:
        raise
    except DBAPIError as exc:
        if str(getattr(exc.orig, "sqlstate", "")).startswith(_DATA_EXCEPTION):
            raise InvalidRequest("A value in the request cannot be stored.") from exc
        # Lost connections, refused logins, missing databases, lock timeouts: no
        # answer we could trust, so the request fails closed.
        raise StoreUnavailable() from exc
    except (OSError, TimeoutError) as exc:
        raise StoreUnavailable() from exc


class Connections:
    """Autocommit connections, each use translated by ``store_errors``.

    SQLite has one writer at a time; its busy handler makes waiting writers poll and
    sleep, which under load wastes the timeout. So on SQLite this process's writers
    queue on a lock first and meet the file lock one at a time.
    """

    def __init__(self, engine: AsyncEngine, *, serialize_writes: bool, timeout: float) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._write_lock = asyncio.Lock() if serialize_writes else None
        self._timeout = timeout
        self.dialect = engine.dialect.name

    async def dispose(self) -> None:
        await self._engine.dispose()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        with store_errors():
            async with self._engine.connect() as connection:
                yield connection

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self.read() as connection:
                yield connection
            return
        with store_errors():
            async with asyncio.timeout(self._timeout):
                await self._write_lock.acquire()
        try:
            async with self.read() as connection:
                yield connection
        finally:
            self._write_lock.release()
