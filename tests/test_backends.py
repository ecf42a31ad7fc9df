"""The backend factory: which stores a configuration gets, and how it describes them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_async
from tokenstile.backends import BACKENDS, backend_name, open_stores
from tokenstile.errors import StoreUnavailable
from tokenstile.settings import Settings


def settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "sqlite"),
        ({"database_url": "sqlite:////tmp/users.db"}, "sqlite"),
        ({"database_url": "postgresql://u@db.example/tokenstile"}, "postgresql"),
        ({"redis_url": "redis://127.0.0.1:6379/0"}, "redis"),
        ({"redis_url": "redis://127.0.0.1:7000", "redis_cluster": True}, "redis-cluster"),
        (
            {"database_url": "postgresql://u@db/t", "redis_url": "redis://127.0.0.1:6379/0"},
            "redis",
        ),
    ],
)
def test_the_settings_pick_one_registered_backend(
    tmp_path: Path, values: dict[str, Any], expected: str
) -> None:
    assert backend_name(settings(tmp_path, **values)) == expected
    assert expected in BACKENDS


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "users and sessions: sqlite {data}/tokenstile.db"),
        (
            {"database_url": "postgresql://admin:hunter2-pg@db.example:6543/auth"},
            "users and sessions: postgresql db.example:6543/auth",
        ),
        (
            {"redis_url": "redis://:hunter2-redis@10.0.0.5:6380/3"},
            "users: sqlite {data}/tokenstile.db; sessions: redis 10.0.0.5:6380 db 3",
        ),
        (
            {"redis_url": "rediss://user:hunter2-redis@cache.example"},
            "users: sqlite {data}/tokenstile.db; sessions: redis (TLS) cache.example:6379 db 0",
        ),
        (
            {"redis_url": "unix:///run/redis.sock?db=2&password=hunter2-redis"},
            "users: sqlite {data}/tokenstile.db; sessions: redis /run/redis.sock db 2",
        ),
        (
            {
                "redis_url": "redis://:hunter2-redis@10.0.0.7:7000",
                "redis_cluster": True,
                "database_url": "postgresql://admin:hunter2-pg@db.example/auth",
            },
            "users: postgresql db.example:5432/auth; sessions: redis cluster via 10.0.0.7:7000",
        ),
    ],
)
def test_the_description_names_each_store_without_its_password(
    tmp_path: Path, values: dict[str, Any], expected: str
) -> None:
    stores = open_stores(settings(tmp_path, **values))
    try:
        assert stores.description == expected.format(data=(tmp_path / "data").resolve())
        assert "hunter2" not in stores.description
    finally:
        run_async(stores.aclose)


def test_the_embedded_default_migrates_on_start_and_a_shared_database_does_not(
    tmp_path: Path,
) -> None:
    embedded = open_stores(settings(tmp_path))
    shared = open_stores(settings(tmp_path, database_url="postgresql://u@127.0.0.1:1/t"))
    try:
        assert embedded.migrate_on_start
        assert not shared.migrate_on_start
    finally:
        run_async(embedded.aclose)
        run_async(shared.aclose)


def test_the_sqlite_default_never_imports_redis(tmp_path: Path) -> None:
    # A fresh interpreter: this one has imported redis for other tests already.
    script = """
import asyncio, sys
from tokenstile.runtime import open_runtime
from tokenstile.settings import Settings

async def main():
    runtime = open_runtime(Settings(_env_file=None, data_dir=sys.argv[1]))
    await runtime.stores.start()
    await runtime.stores.ping()
    await runtime.purge()
    await runtime.aclose()

asyncio.run(main())
print(sorted(name for name in sys.modules if name.split(".")[0] == "redis"))
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_ping_fails_when_the_session_store_is_down_though_the_database_answers(
    tmp_path: Path,
) -> None:
    stores = open_stores(settings(tmp_path, redis_url="redis://127.0.0.1:1/0", store_timeout=0.5))

    async def ping() -> None:
        await stores.start()
        await stores.database.ping()
        try:
            await stores.ping()
        finally:
            await stores.aclose()

    with pytest.raises(StoreUnavailable):
        run_async(ping)
