"""The stores of a deployment, chosen from :class:`Settings` in one place.

Users always live in the SQL database (``DATABASE_URL``, the SQLite file in ``DATA_DIR``
by default). Sessions, rotation state and rate limits live in the *session backend* that
:func:`backend_name` picks:

=================  ==============================================================
``sqlite``         the users' SQLite file
``postgresql``     the users' PostgreSQL database
``redis``          one Redis server (``REDIS_URL``)
``redis-cluster``  a Redis Cluster (``REDIS_URL`` names one node, ``REDIS_CLUSTER=true``)
=================  ==============================================================

A new backend is one module in :mod:`tokenstile.stores` and one entry in :data:`BACKENDS`.
A backend imports its driver only when it is opened, so the SQLite default never
imports redis.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.engine import make_url

from tokenstile.core.ratelimit import RateCounter
from tokenstile.core.store import SessionStore
from tokenstile.settings import Settings
from tokenstile.stores.sql import SqlDatabase

__all__ = ["BACKENDS", "Service", "Stores", "backend_name", "open_stores"]


class _Connected(Protocol):
    """A connection (pool) to one service: answers a ping and can be closed."""

    @property
    def name(self) -> str:
        """The service, for logs and errors: ``redis 10.0.0.5:6379 db 0``; no password."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class _Purgeable(Protocol):
    """State that does not expire by itself and is deleted by a periodic purge."""

    async def purge(self, *, now: float) -> int: ...


@dataclass(frozen=True)
class Service:
    """One connection of a deployment and what it holds (``users``, ``sessions``, or
    ``users and sessions``)."""

    holds: str
    connection: _Connected

    @property
    def description(self) -> str:
        return f"{self.holds}: {self.connection.name}"


@dataclass(frozen=True, eq=False)
class Stores:
    """What a deployment's stores provide, whichever backend holds the sessions.

    ``services`` are the distinct connections (the users' database first), each pinged
    and closed exactly once; ``purgeable`` is the state that needs deleting once expired
    (SQL rows; Redis keys carry a TTL, so only its session indexes are listed).
    """

    database: SqlDatabase
    sessions: SessionStore
    rates: RateCounter
    migrate_on_start: bool
    """True for the embedded SQLite file, whose schema tokenstile upgrades by itself; a
    shared database is migrated by ``tokenstile db upgrade`` only."""
    services: tuple[Service, ...]
    purgeable: tuple[_Purgeable, ...]

    @property
    def description(self) -> str:
        """Where each kind of state lives, for logs and ``tokenstile check``; never a
        password: ``users: postgresql db:5432/auth; sessions: redis 10.0.0.5:6379 db 0``."""
        return "; ".join(service.description for service in self.services)

    async def start(self) -> None:
        """Make the stores ready for use: migrate the embedded database's schema."""
        if self.migrate_on_start:
            await self.database.upgrade()

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless every store answers."""
        for service in self.services:
            await service.connection.ping()

    async def check(self) -> list[str]:
        """Ping every store and check that the database's schema is the newest; one line
        per store saying what was checked.

        Raises ``StoreUnavailable`` naming the first store that does not answer, or
        ``StoreMisconfigured`` (which names ``tokenstile db upgrade``) for a schema that
        is missing or behind.
        """
        lines = []
        for service in self.services:
            await service.connection.ping()
            line = f"{service.description} answers"
            if service.connection is self.database:
                revision = await self.database.schema_revision()
                line += f"; schema at {revision}, the newest"
            lines.append(line)
        return lines

    async def purge(self, *, now: float) -> int:
        """Delete state that expired by ``now`` (and revoked sessions); how many went."""
        removed = 0
        for state in self.purgeable:
            removed += await state.purge(now=now)
        return removed

    async def aclose(self) -> None:
        """Close every connection, the users' database last, even if one close fails."""
        async with AsyncExitStack() as stack:
            for service in self.services:
                stack.push_async_callback(service.connection.aclose)


Backend = Callable[[Settings, SqlDatabase], Stores]
"""Builds a deployment's stores around its users' database; connects to nothing yet."""


def _sql(settings: Settings, database: SqlDatabase) -> Stores:
    """Sessions and rate limits in the users' own database."""
    return Stores(
        database=database,
        sessions=database.sessions,
        rates=database.rate_limits,
        migrate_on_start=_is_embedded(settings),
        services=(Service("users and sessions", database),),
        purgeable=(database.sessions, database.rate_limits),
    )


def _redis(settings: Settings, database: SqlDatabase, *, cluster: bool) -> Stores:
    """Sessions and rate limits in Redis (a server, or a Cluster), users in SQL."""
    from tokenstile.stores.redis import RedisSessionStore

    assert settings.redis_url is not None, "backend_name() picks Redis only with REDIS_URL"
    url = settings.redis_url.get_secret_value()
    store = RedisSessionStore.from_url(
        url,
        prefix=settings.redis_prefix,
        timeout=settings.store_timeout,
        cluster=cluster,
        name=_describe_redis(url, cluster=cluster),
    )
    return Stores(
        database=database,
        sessions=store,
        rates=store.rate_counter(),
        migrate_on_start=_is_embedded(settings),
        services=(Service("users", database), Service("sessions", store)),
        purgeable=(store,),
    )


BACKENDS: dict[str, Backend] = {
    "sqlite": _sql,
    "postgresql": _sql,
    "redis": functools.partial(_redis, cluster=False),
    "redis-cluster": functools.partial(_redis, cluster=True),
}
"""Session backends by the name :func:`backend_name` gives them."""


def backend_name(settings: Settings) -> str:
    """The session backend ``settings`` choose: Redis when ``REDIS_URL`` is set (a Cluster
    with ``REDIS_CLUSTER``), else the SQL database's own dialect."""
    if settings.redis_url is not None:
        return "redis-cluster" if settings.redis_cluster else "redis"
    return make_url(settings.resolved_database_url).get_backend_name()


def open_stores(settings: Settings) -> Stores:
    """The stores ``settings`` name, wired but not connected (nothing connects until first
    use); creates ``DATA_DIR`` for the embedded database. Raises ``OSError`` if it cannot,
    and ``ConfigurationError`` when the database's driver is not installed."""
    if _is_embedded(settings):
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    database = SqlDatabase.from_url(settings.resolved_database_url, timeout=settings.store_timeout)
    return BACKENDS[backend_name(settings)](settings, database)


def _is_embedded(settings: Settings) -> bool:
    return make_url(settings.resolved_database_url).get_backend_name() == "sqlite"


def _describe_redis(url: str, *, cluster: bool) -> str:
    """``redis host:port db N``, ``redis /socket db N`` or ``redis cluster via host:port``."""
    parts = urlsplit(url)
    tls = " (TLS)" if parts.scheme == "rediss" else ""
    if parts.scheme == "unix":
        where = parts.path
        database = parse_qs(parts.query).get("db", ["0"])[0]
    else:
        where = f"{parts.hostname}:{parts.port or 6379}"
        database = parts.path.strip("/") or "0"
    if cluster:
        return f"redis cluster{tls} via {where}"
    return f"redis{tls} {where} db {database}"
