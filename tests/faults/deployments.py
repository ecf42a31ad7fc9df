"""The deployments the fault scenarios run on — `tokenstile serve` over a private store
that may be stopped, frozen or killed — and the faults themselves.

Shared by the CI tests and ``bench/faults.py``. Every store here is private to the run;
the shared PostgreSQL and Redis are never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.postgres_server import PrivatePostgres
from tests.redis_server import PrivateRedis, PrivateRedisCluster
from tests.servers import ServiceProcess
from tokenstile.stores.sql import SqlDatabase

CHEAP_HASHING = {"argon2_time_cost": "1", "argon2_memory_kib": "8192", "argon2_parallelism": "1"}
STORE_TIMEOUT = "0.5"
WORKER_RESTART_TIMEOUT = 15.0


@dataclass(frozen=True)
class Fault:
    """``begin()`` breaks something, ``end()`` brings it back (both may block)."""

    name: str
    begin: Callable[[], object]
    end: Callable[[], object]


def service_settings(data_dir: Path, **extra: str) -> dict[str, str]:
    """What every fault deployment shares: no rate limits (one client address), a short
    store timeout (outages are answered promptly), cheap hashing, no audit lines."""
    return {
        "data_dir": str(data_dir),
        "secret_key": secrets.token_urlsafe(32),
        "rate_limit_enabled": "false",
        "store_timeout": STORE_TIMEOUT,
        "audit_log": "off",
        **CHEAP_HASHING,
        **extra,
    }


@contextlib.contextmanager
def running_service(
    settings: dict[str, str], workdir: Path, *, workers: int = 1
) -> Iterator[ServiceProcess]:
    service = ServiceProcess(settings, workers=workers, cwd=workdir).start()
    try:
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    """A persistent private redis-server (append-only file, fsync on every write)."""
    server = PrivateRedis(persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def private_postgres(*, with_schema: bool = True) -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server whose database has tokenstile's schema."""
    server = PrivatePostgres()
    try:
        server.start()
        if with_schema:
            upgrade_schema(server.sqlalchemy_url)
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateRedisCluster]:
    cluster = PrivateRedisCluster(appendfsync="always")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


def upgrade_schema(database_url: str) -> None:
    """``tokenstile db upgrade`` on ``database_url`` (from any thread, loop or not)."""

    async def upgrade() -> None:
        database = SqlDatabase.from_url(database_url)
        try:
            await database.upgrade()
        finally:
            await database.aclose()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, upgrade()).result()


def redis_faults(server: PrivateRedis) -> list[Fault]:
    return [
        Fault("SIGTERM, restart", server.stop, server.start),
        Fault("SIGSTOP, SIGCONT", server.freeze, server.thaw),
        Fault("SIGKILL, restart", server.kill, server.start),
    ]


def postgres_faults(server: PrivatePostgres) -> list[Fault]:
    return [
        Fault("fast shutdown (SIGINT), restart", server.stop, server.start),
        Fault("SIGSTOP, SIGCONT", server.freeze, server.thaw),
        Fault("SIGKILL, restart", server.kill, server.start),
    ]


def cluster_faults(cluster: PrivateRedisCluster, master: int = 0) -> list[Fault]:
    return [
        Fault(
            f"master {master} SIGKILL, restart",
            lambda: cluster.kill_node(master),
            lambda: cluster.start_node(master),
        ),
        Fault(
            f"master {master} SIGSTOP, SIGCONT",
            lambda: cluster.freeze_node(master),
            lambda: cluster.thaw_node(master),
        ),
    ]


def connections_by_worker(service: ServiceProcess) -> dict[int, int]:
    """How many established client connections each worker of ``service`` holds."""
    wanted = f":{service.port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(wanted) and fields[3] == "01":  # 01: ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    counts = {}
    for pid in service.worker_pids():
        held = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    held += os.readlink(fd) in inodes
        counts[pid] = held
    return counts


class WorkerKill:
    """SIGKILL the worker holding the most client connections, while the load's
    requests are in flight on them; ``wait_for_replacement()`` then waits until the
    supervisor runs a full set of workers again."""

    def __init__(self, service: ServiceProcess, workers: int) -> None:
        self._service = service
        self._workers = workers
        self.killed: int | None = None
        self.connections_cut = 0
        self._killed_at = 0.0

    def fault(self) -> Fault:
        return Fault("a worker SIGKILLed mid-refresh", self._kill, lambda: None)

    def _kill(self) -> None:
        held = connections_by_worker(self._service)
        self.killed, self.connections_cut = max(held.items(), key=lambda item: item[1])
        self._killed_at = time.monotonic()
        os.kill(self.killed, signal.SIGKILL)

    def wait_for_replacement(self) -> float | None:
        """Seconds from the kill until a new worker took the dead one's place; None if
        none did within ``WORKER_RESTART_TIMEOUT``."""
        deadline = self._killed_at + WORKER_RESTART_TIMEOUT
        while time.monotonic() < deadline:
            pids = self._service.worker_pids()
            if len(pids) == self._workers and self.killed not in pids:
                return time.monotonic() - self._killed_at
            time.sleep(0.05)
        return None
