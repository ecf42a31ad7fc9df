"""Rate-limit counters in the SQL database (a ``core.ratelimit.RateCounter``)."""

from __future__ import annotations

from sqlalchemy import case, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from tokenstile.stores.sql_connections import Connections
from tokenstile.stores.sql_tables import rate_limits


class SqlRateCounter:
    """Fixed-window counters in ``rate_limits`` (a ``core.ratelimit.RateCounter``)."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections
        dialect = connections.dialect
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    async def hit(self, key: str, *, period: int, now: float) -> tuple[int, float]:
        # One upsert: a new key, a key whose window ended, or one more in the window.
        expired = rate_limits.c.window_ends <= now
        statement = (
            self._insert(rate_limits)
            .values(key=key, window_ends=now + period, count=1)
            .on_conflict_do_update(
                index_elements=[rate_limits.c.key],
                set_={
                    "count": case((expired, 1), else_=rate_limits.c.count + 1),
                    "window_ends": case((expired, now + period), else_=rate_limits.c.window_ends),
                },
            )
            .returning(rate_limits.c.count, rate_limits.c.window_ends)
        )
        async with self._connections.write() as connection:
            count, ends = (await connection.execute(statement)).one()
        return int(count), float(ends)

    async def peek(self, key: str, *, period: int, now: float) -> tuple[int, float]:
        statement = select(rate_limits.c.count, rate_limits.c.window_ends).where(
            rate_limits.c.key == key, rate_limits.c.window_ends > now
        )
        async with self._connections.read() as connection:
            row = (await connection.execute(statement)).first()
        return (0, now + period) if row is None else (int(row[0]), float(row[1]))

    async def clear(self, key: str) -> None:
        async with self._connections.write() as connection:
            await connection.execute(delete(rate_limits).where(rate_limits.c.key == key))

    async def purge(self, *, now: float) -> int:
        """Drop the counters of ended windows."""
        statement = delete(rate_limits).where(rate_limits.c.window_ends <= now)
        async with self._connections.write() as connection:
            return (await connection.execute(statement)).rowcount
