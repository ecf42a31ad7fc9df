"""The processes under test: ``tokenstile serve`` and uvicorn apps, and their stores.

Every server runs in its own process group (so its workers can be measured and stopped
together), in a temporary directory (so a stray ``.env`` cannot change it), on a free
127.0.0.1 port. Stores are reset before use, and only loopback ones are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis

from bench.connection import HOST, HttpConnection, build_request
from bench.errors import REQUEST_ERRORS, BenchError

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
STARTUP_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 5.0
KEEP_ALIVE_TIMEOUT = 5  # as `tokenstile serve`
BENCH_DIR = Path(__file__).resolve().parent


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tokenstile_command() -> list[str]:
    """The ``tokenstile`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "tokenstile"
    if script.exists():
        return [str(script)]
    found = shutil.which("tokenstile")
    if found is None:
        raise BenchError("the `tokenstile` command is not installed in this environment")
    return [found]


def tokenstile_serve(port: int, workers: int) -> list[str]:
    return [
        *tokenstile_command(),
        *("serve", "--host", HOST, "--port", str(port), "--workers", str(workers)),
    ]


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
    log_path = work_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=work_dir,  # keep a stray .env file in the caller's directory out of it
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield Server(process, port, log_path)
        finally:
            stop_server(process)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=SERVER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def wait_healthy(server: Server, path: str = "/healthz") -> None:
    deadline = time.perf_counter() + STARTUP_TIMEOUT
    request = build_request(server.port, "GET", path)
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"the server exited early:\n{server.log_tail()}")
        conn = HttpConnection(server.port)
        try:
            if (await conn.send(request)).status == 200:
                return
        except REQUEST_ERRORS:
            pass
        finally:
            conn.close()
        await asyncio.sleep(0.1)
    raise BenchError(f"no healthy {path} within {STARTUP_TIMEOUT:.0f}s:\n{server.log_tail()}")


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
