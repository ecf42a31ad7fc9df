"""Live servers over every store mode: SQLite, PostgreSQL, Redis and a Redis Cluster (users
in SQLite with either Redis)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_async, store_modes
from tests.servers import LiveServer
from tokenstile.api import create_app
from tokenstile.settings import Settings
from tokenstile.stores.sql import SqlDatabase

STORE_MODES = store_modes("sqlite", "postgres", "redis")
"""What every API test runs on (params marked with the service they need)."""
WITH_CLUSTER = [*STORE_MODES, *store_modes("redis-cluster")]
"""What the SPEC §1 invariant tests and the multi-process tests run on (each such module
overrides ``store_mode``). The other API tests check behaviour above the store, which a
Redis Cluster does not change, so they keep to one Redis."""
REDIS_MODES = ("redis", "redis-cluster")

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


@pytest.fixture(params=STORE_MODES)
def store_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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
