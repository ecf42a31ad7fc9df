"""Rate-limit logs in the SQL database (a ``core.ratelimit.RateCounter``).

``acquire`` is delete-expired, count and insert in one transaction that holds the key
exclusively: on PostgreSQL a transaction-scoped advisory lock on the key's hash, on
SQLite ``BEGIN IMMEDIATE`` (the database's one write lock, taken before the count). So
concurrent attempts, from this process or any other, are admitted one after another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenstile.core.ratelimit import storage_key
from tokenstile.stores.sql_connections import Connections
from tokenstile.stores.sql_tables import rate_events

__all__ = ["SqlRateCounter"]


class SqlRateCounter:
    """Sliding logs in ``rate_events``: one row per admitted event, until it expires."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    async def acquire(
        self, key: str, *, limit: int, period: float, now: float, event_id: str
    ) -> tuple[bool, float]:
        stored = storage_key(key)
        of_key = rate_events.c.key == stored
        async with self._exclusively(stored) as connection:
            await connection.execute(
                delete(rate_events).where(of_key, rate_events.c.expires_at <= now)
            )
            count = (
                await connection.execute(
                    select(func.count()).select_from(rate_events).where(of_key)
                )
            ).scalar_one()
            if count < limit:
                await connection.execute(
                    insert(rate_events).values(
                        key=stored, event_id=event_id, expires_at=now + period
                    )
                )
                return True, 0.0
            # Room comes when the event that fills the limit leaves the window.
            frees_at = (
                await connection.execute(
                    select(rate_events.c.expires_at)
                    .where(of_key)
                    .order_by(rate_events.c.expires_at)
                    .offset(count - limit)
                    .limit(1)
                )
            ).scalar_one()
        return False, float(frees_at) - now

    async def release(self, key: str, event_id: str) -> None:
        statement = delete(rate_events).where(
            rate_events.c.key == storage_key(key), rate_events.c.event_id == event_id
        )
        async with self._connections.write() as connection:
            await connection.execute(statement)

    async def purge(self, *, now: float) -> int:
        """Drop the events that left their window; returns how many."""
        statement = delete(rate_events).where(rate_events.c.expires_at <= now)
        async with self._connections.write() as connection:
            return (await connection.execute(statement)).rowcount

    @asynccontextmanager
    async def _exclusively(self, stored: str) -> AsyncIterator[AsyncConnection]:
        """A transaction in which no other acquire of ``stored`` runs; commits on exit."""
        async with self._connections.write() as connection:
            if self._connections.dialect == "postgresql":
                # The engine autocommits; this one connection runs a real transaction.
                await connection.execution_options(isolation_level="READ COMMITTED")
                async with connection.begin():
                    lock = func.pg_advisory_xact_lock(func.hashtext(stored))
                    await connection.execute(select(lock))
                    yield connection
                return
            # SQLite in autocommit: pysqlite opens no transaction itself, so we do, and
            # IMMEDIATE takes the write lock now rather than at the insert.
            await connection.execute(text("BEGIN IMMEDIATE"))
            try:
                yield connection
            except BaseException:
                await connection.execute(text("ROLLBACK"))
                raise
            await connection.execute(text("COMMIT"))
