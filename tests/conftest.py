"""Real services for the test suite: Redis, PostgreSQL, a private redis-server and a
private three-master Redis Cluster; the store modes that tests run on; and live servers on
the store under test (``store_settings``, ``serve``, ``server``), for every suite that
starts them.

Tests that need a service the machine lacks are skipped with the reason, unless
``TOKENSTILE_TEST_REQUIRE_SERVICES=1`` (CI), where a missing service fails them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, TypeVar
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis
import redis.asyncio

from tests.redis_server import PrivateRedis, PrivateRedisCluster
from tests.servers import LiveServer
from tokenstile.api import create_app
from tokenstile.settings import Settings
from tokenstile.stores.redis import RedisSessionStore
from tokenstile.stores.sql import SqlDatabase

T = TypeVar("T")

REDIS_URL = os.environ.get("TOKENSTILE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "TOKENSTILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def service_missing(reason: str) -> NoReturn:
    """Skip the test, or fail it when the environment requires every service."""
    if os.environ.get("TOKENSTILE_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (TOKENSTILE_TEST_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def run_async(make_coroutine: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a test's event loop."""

    async def main() -> T:
        return await make_coroutine()

    # A separate thread gets its own loop and leaves pytest-asyncio's loop alone.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the shared test Redis (database 15 unless overridden)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing(f"Redis is not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"tstest:{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parts = urlsplit(url)._replace(scheme="postgresql")
    if database is not None:
        parts = parts._replace(path=f"/{database}")
    return parts.geturl()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """URL (asyncpg form) of a PostgreSQL database we may CREATE DATABASE from."""
    dsn = _asyncpg_dsn(POSTGRES_URL)

    async def check() -> None:
        connection = await asyncpg.connect(dsn, timeout=2)
        await connection.close()

    try:
        run_async(check)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        service_missing(f"PostgreSQL is not reachable at {dsn}: {exc}")
    return dsn


@contextmanager
def _new_postgres_database(admin_url: str, prefix: str) -> Iterator[str]:
    """Create an empty database, yield its asyncpg URL, drop it afterwards."""
    database = f"{prefix}_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(admin_url, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    run_async(lambda: admin(f'CREATE DATABASE "{database}"'))
    try:
        yield _asyncpg_dsn(admin_url, database)
    finally:
        run_async(lambda: admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database for this test session, as a SQLAlchemy asyncpg URL; dropped after."""
    with _new_postgres_database(postgres_admin_url, "tokenstile_test") as url:
        yield url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
def fresh_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test's own, empty (no schema); dropped afterwards."""
    with _new_postgres_database(postgres_admin_url, "tokenstile_fresh") as url:
        yield url


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A running redis-server of this test's own, which the test may stop and restart."""
    try:
        server = PrivateRedis()
    except FileNotFoundError as exc:
        service_missing(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _started_cluster() -> PrivateRedisCluster:
    try:
        cluster = PrivateRedisCluster()
    except FileNotFoundError as exc:
        service_missing(str(exc))
    cluster.start()
    return cluster


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[PrivateRedisCluster]:
    """A running three-master Redis Cluster shared by the session; tests must not stop
    its nodes (use ``private_redis_cluster``) and keep to ``redis_cluster_prefix``."""
    cluster = _started_cluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_cluster_prefix(redis_cluster: PrivateRedisCluster) -> Iterator[str]:
    """A key prefix of this test's own on the shared cluster; its keys are deleted
    afterwards, on every master."""
    prefix = f"tstest:{secrets.token_hex(6)}:"
    yield prefix
    client = redis.RedisCluster.from_url(redis_cluster.url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)  # split by slot by the cluster client
    finally:
        client.close()


@pytest.fixture
def private_redis_cluster() -> Iterator[PrivateRedisCluster]:
    """A running Redis Cluster of this test's own, whose nodes it may stop and freeze."""
    cluster = _started_cluster()
    try:
        yield cluster
    finally:
        cluster.close()


# -- store modes -------------------------------------------------------------------------

_SERVICE_MARKS = {
    "sqlite": (),
    "postgres": (pytest.mark.postgres,),
    "redis": (pytest.mark.redis,),
    "redis-cluster": (pytest.mark.redis,),
}


def store_modes(*modes: str) -> list[pytest.ParameterSet]:
    """``modes`` as params of a store-mode fixture, each marked with the service it needs,
    so ``-m "not redis"`` deselects the Redis runs."""
    return [pytest.param(mode, marks=_SERVICE_MARKS[mode]) for mode in modes]


class StoreSpec(NamedTuple):
    """Where the session store under test lives."""

    kind: str
    url: str
    redis_prefix: str = ""

    @property
    def on_redis(self) -> bool:
        """Whether the store is the Redis one (on one server or on a cluster)."""
        return self.kind in ("redis", "redis-cluster")

    def redis_store(self) -> RedisSessionStore:
        """A new Redis store for this spec."""
        return RedisSessionStore.from_url(
            self.url, prefix=self.redis_prefix, cluster=self.kind == "redis-cluster"
        )

    def raw_redis(self) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
        """A plain client (bytes replies) to look behind the store."""
        if self.kind == "redis-cluster":
            return redis.asyncio.RedisCluster.from_url(self.url)
        return redis.asyncio.Redis.from_url(self.url)


@pytest.fixture(params=store_modes("sqlite", "postgres", "redis", "redis-cluster"))
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    """Every session store: a SQLite file of this test's own, the session's PostgreSQL
    database, and Redis and the shared Redis Cluster under this test's own prefix."""
    # Sync, so that service fixtures are resolved (and skipped) outside the event loop.
    kind: str = request.param
    if kind == "sqlite":
        return StoreSpec(kind, f"sqlite+aiosqlite:///{tmp_path / 'tokenstile.db'}")
    if kind == "postgres":
        return StoreSpec(kind, request.getfixturevalue("postgres_database_url"))
    if kind == "redis-cluster":
        cluster: PrivateRedisCluster = request.getfixturevalue("redis_cluster")
        return StoreSpec(kind, cluster.url, request.getfixturevalue("redis_cluster_prefix"))
    return StoreSpec(
        kind, request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    )


# -- live servers on the store under test ---------------------------------------------
# ``store_settings`` asks for ``store_mode``, which each suite that starts servers
# (tests/api, tests/client) defines with the modes it runs on.

# Cheap hashing keeps the suite fast; production defaults are tested in core.
FAST_HASHING = {"argon2_time_cost": "1", "argon2_memory_kib": "8192", "argon2_parallelism": "1"}


@pytest.fixture(scope="session")
def postgres_store_url(postgres_database_url: str) -> str:
    """The session's PostgreSQL database with the schema applied (`db upgrade`)."""

    async def upgrade() -> None:
        database = SqlDatabase.from_url(postgres_database_url)
        try:
            await database.upgrade()
        finally:
            await database.aclose()

    run_async(upgrade)
    return postgres_database_url


@pytest.fixture
def store_settings(
    store_mode: str, request: pytest.FixtureRequest, tmp_path: Path
) -> dict[str, str]:
    """Settings (by field name) that put tokenstile's state in the store under test."""
    settings = {
        "data_dir": str(tmp_path / "data"),
        "secret_key": secrets.token_urlsafe(32),
        "rate_limit_enabled": "false",
        **FAST_HASHING,
    }
    if store_mode == "postgres":
        settings["database_url"] = request.getfixturevalue("postgres_store_url")
    elif store_mode == "redis":
        settings["redis_url"] = request.getfixturevalue("redis_url")
        settings["redis_prefix"] = request.getfixturevalue("redis_prefix")
    elif store_mode == "redis-cluster":
        settings["redis_url"] = request.getfixturevalue("redis_cluster").url
        settings["redis_cluster"] = "true"
        settings["redis_prefix"] = request.getfixturevalue("redis_cluster_prefix")
    return settings


def make_settings(base: dict[str, str], **overrides: Any) -> Settings:
    return Settings(_env_file=None, **{**base, **overrides})  # type: ignore[call-arg]


@pytest.fixture
def serve(store_settings: dict[str, str]) -> Iterator[Callable[..., LiveServer]]:
    """Start a live server on the store under test, with setting overrides."""
    servers: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        server = LiveServer(create_app(make_settings(store_settings, **overrides))).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(serve: Callable[..., LiveServer]) -> LiveServer:
    """A live server with default settings on the store under test."""
    return serve()
