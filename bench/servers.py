"""The processes under test: ``tokenstile serve`` and uvicorn apps, and their stores.

Starting, waiting for and stopping a server is ``tests/processes.py``, shared with the
test suite (see there why it lives in ``tests/``): every server runs in its own process
group (so its workers can be measured and stopped together), in a temporary directory
(so a stray ``.env`` cannot change it), on a free 127.0.0.1 port. What is here is the
benchmark's own: the uvicorn apps of ``bench/``, the servers' environment, and the stores,
which are reset before use and only accepted on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import redis

from bench.connection import HOST
from bench.errors import BenchError
from tests.processes import ServerFailed, ServerProcess, serve_command
from tests.processes import free_port as free_port  # for the entry points
from tests.processes import tokenstile_executable as _tokenstile_executable

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
STARTUP_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 5.0
KEEP_ALIVE_TIMEOUT = 5  # as `tokenstile serve`
BENCH_DIR = Path(__file__).resolve().parent

Server = ServerProcess
"""A running server: ``process`` (its Popen), ``port``, ``log_tail()``."""


def tokenstile_command() -> list[str]:
    """The ``tokenstile`` console script of this interpreter's environment."""
    try:
        return [_tokenstile_executable()]
    except FileNotFoundError as exc:
        raise BenchError(str(exc)) from None


def tokenstile_serve(port: int, workers: int) -> list[str]:
    try:
        return serve_command(port, workers)
    except FileNotFoundError as exc:
        raise BenchError(str(exc)) from None


def uvicorn_app(app: str, port: int, workers: int) -> list[str]:
    """uvicorn serving ``module:app`` from ``bench/`` the way ``tokenstile serve`` runs."""
    return [
        *(sys.executable, "-m", "uvicorn", app, "--app-dir", str(BENCH_DIR)),
        *("--host", HOST, "--port", str(port), "--workers", str(workers)),
        *("--loop", "uvloop", "--http", "httptools", "--no-access-log"),
        *("--timeout-keep-alive", str(KEEP_ALIVE_TIMEOUT), "--log-level", "info"),
    ]


def tokenstile_env(
    data_dir: Path,
    *,
    secret_key: str | None = None,
    redis_url: str | None = None,
    database_url: str | None = None,
) -> dict[str, str]:
    """The environment minus inherited TOKENSTILE_* settings, plus the benchmark's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSTILE_")}
    env["TOKENSTILE_DATA_DIR"] = str(data_dir)
    env["TOKENSTILE_RATE_LIMIT_ENABLED"] = "false"
    env["TOKENSTILE_SECRET_KEY"] = secret_key or secrets.token_urlsafe(48)
    if redis_url is not None:
        env["TOKENSTILE_REDIS_URL"] = redis_url
    if database_url is not None:
        env["TOKENSTILE_DATABASE_URL"] = database_url
    return env


@contextlib.contextmanager
def running_server(
    work_dir: Path, port: int, command: list[str], env: dict[str, str]
) -> Iterator[Server]:
    """Start ``command`` in its own process group in ``work_dir``; always stop it again."""
    server = ServerProcess(
        command, port=port, env=env, cwd=work_dir, log_path=work_dir / "server.log"
    ).start()
    try:
        yield server
    finally:
        server.stop(SERVER_STOP_TIMEOUT)


async def wait_healthy(server: Server, path: str = "/healthz") -> None:
    """Wait until ``server`` answers ``GET path`` with 200 (in a thread: the event loop
    stays free); :class:`BenchError` with its log tail when it exits or takes too long."""
    try:
        await asyncio.to_thread(server.wait_until_healthy, path, STARTUP_TIMEOUT)
    except ServerFailed as exc:
        raise BenchError(str(exc)) from None


def require_loopback(url: str) -> None:
    if urlsplit(url).hostname not in LOOPBACK_NAMES:
        raise BenchError(f"refusing to use a non-loopback store: {url}")


def flush_redis(url: str) -> None:
    """FLUSHDB the dedicated benchmark database (never db 0, never a remote host)."""
    require_loopback(url)
    client = redis.Redis.from_url(url)
    try:
        if int(client.connection_pool.connection_kwargs.get("db", 0)) == 0:
            raise BenchError("refusing to FLUSHDB Redis db 0; use a dedicated db such as /14")
        client.flushdb()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {url} is not usable: {exc}") from exc
    finally:
        client.close()


async def recreate_postgres(url: str) -> None:
    """Drop and create the database of ``url`` (connecting to ``postgres`` to do it)."""
    await _administer(
        url, "recreate", 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', 'CREATE DATABASE "{name}"'
    )


async def drop_postgres(url: str) -> None:
    """Drop the database of ``url`` again (after :func:`recreate_postgres`)."""
    await _administer(url, "drop", 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _administer(url: str, verb: str, *statements: str) -> None:
    """Run ``statements`` (``{name}`` is the database of ``url``) connected to the
    server's ``postgres`` database; only on loopback, never on a system database."""
    import asyncpg

    require_loopback(url)
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.replace("_", "").isalnum() or name in ("postgres", "template0", "template1"):
        raise BenchError(f"refusing to {verb} the PostgreSQL database {name!r}")
    admin = parts._replace(path="/postgres").geturl()
    try:
        conn = await asyncpg.connect(admin)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"PostgreSQL at {admin} is not usable: {exc}") from exc
    try:
        for statement in statements:
            await conn.execute(statement.format(name=name))
    finally:
        await conn.close()


def upgrade_database(env: dict[str, str], work_dir: Path) -> None:
    """``tokenstile db upgrade`` with the server's environment."""
    command = [*tokenstile_command(), "db", "upgrade"]
    done = subprocess.run(command, env=env, cwd=work_dir, capture_output=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")
        raise BenchError(f"`tokenstile db upgrade` failed:\n{output}")
