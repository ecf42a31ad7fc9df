"""32 virtual users chaining refreshes while the store, or a worker, fails under them.

Each case asserts the four counts: no answer other than 2xx/401/429/503, no revoked
token accepted, no session lost (every user's last refresh token still rotates, or the
user's own logout ended it), and recovery within ``MAX_RECOVERY_S`` of the store's
return, without restarting tokenstile. Each store runs once per module and serves every
fault on it; the faults are kept short so the whole module fits in about two minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests.accounts import PASSWORD, bearer
from tests.conftest import run_async, service_missing
from tests.faults import deployments
from tests.faults.deployments import Fault, WorkerKill
from tests.faults.load import FaultLoad, FaultReport
from tests.postgres_server import PrivatePostgres
from tests.redis_server import PrivateRedis, PrivateRedisCluster
from tests.servers import ServiceProcess

if not sys.platform.startswith("linux"):
    pytest.skip("signals whole servers and reads /proc", allow_module_level=True)

T = TypeVar("T")

USERS = 32
WORKERS = 2
BEFORE_S = 1.5
DURING_S = 2.0
MAX_RECOVERY_S = 10.0
MAX_AFTER_S = MAX_RECOVERY_S + 2.0


def assert_four_counts(report: FaultReport) -> None:
    problems = report.failures(max_recovery_s=MAX_RECOVERY_S)
    assert not problems, f"{report.scenario}: {problems}; summary {report.summary()}"


def assert_the_fault_was_felt(report: FaultReport) -> None:
    """The fault must have failed requests while it lasted, or it proved nothing."""
    failed = sum(
        report.failed(operation, since=report.fault_in_effect, until=report.fault_lifted)
        for operation in ("refresh", "users_me", "login", "logout")
    )
    assert failed > 0, f"{report.scenario}: nothing failed during the fault {report.summary()}"


async def run_fault(
    load: FaultLoad, fault: Fault, scenario: str, *, during: float = DURING_S
) -> FaultReport:
    return await load.run(
        f"{scenario}: {fault.name}",
        begin=fault.begin,
        end=fault.end,
        before=BEFORE_S,
        during=during,
        max_after=MAX_AFTER_S,
    )


def registered_load(service: ServiceProcess) -> FaultLoad:
    load = FaultLoad(service.base_url, USERS)
    run_async(load.register)
    return load


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


def provided(stack: contextlib.ExitStack, server: contextlib.AbstractContextManager[T]) -> T:
    """Enter ``server`` on ``stack``; skip (fail under TOKENSTILE_TEST_REQUIRE_SERVICES=1)
    when its binaries are not installed."""
    try:
        return stack.enter_context(server)
    except FileNotFoundError as exc:
        service_missing(str(exc))


@pytest.fixture(scope="module")
def redis_deployment(workdir: Path) -> Iterator[tuple[FaultLoad, PrivateRedis]]:
    """Sessions in a persistent private Redis, users in SQLite."""
    with contextlib.ExitStack() as stack:
        redis = provided(stack, deployments.private_redis())
        settings = deployments.service_settings(workdir / "redis-data", redis_url=redis.url)
        service = stack.enter_context(deployments.running_service(settings, workdir))
        yield registered_load(service), redis


@pytest.fixture(scope="module")
def postgres_deployment(workdir: Path) -> Iterator[tuple[FaultLoad, PrivatePostgres]]:
    """Users and sessions in a private PostgreSQL server."""
    with contextlib.ExitStack() as stack:
        postgres = provided(stack, deployments.private_postgres())
        settings = deployments.service_settings(
            workdir / "pg-data", database_url=postgres.sqlalchemy_url
        )
        service = stack.enter_context(deployments.running_service(settings, workdir))
        yield registered_load(service), postgres


@pytest.fixture(scope="module")
def cluster_deployment(workdir: Path) -> Iterator[tuple[FaultLoad, PrivateRedisCluster]]:
    """Sessions in a private three-master Redis Cluster (fsync always), users in SQLite."""
    with contextlib.ExitStack() as stack:
        cluster = provided(stack, deployments.private_cluster())
        settings = deployments.service_settings(
            workdir / "cluster-data", redis_url=cluster.url, redis_cluster="true"
        )
        service = stack.enter_context(deployments.running_service(settings, workdir))
        yield registered_load(service), cluster


@pytest.mark.redis
@pytest.mark.parametrize("signals", ["SIGTERM, restart", "SIGSTOP, SIGCONT", "SIGKILL, restart"])
async def test_redis_fault_under_load_loses_no_session_and_accepts_no_revoked_token(
    redis_deployment: tuple[FaultLoad, PrivateRedis], signals: str
) -> None:
    load, redis = redis_deployment
    (fault,) = [f for f in deployments.redis_faults(redis) if f.name == signals]

    report = await run_fault(load, fault, "redis")

    assert_the_fault_was_felt(report)
    assert_four_counts(report)


@pytest.mark.postgres
@pytest.mark.parametrize("signals", ["SIGSTOP, SIGCONT", "SIGKILL, restart"])
async def test_postgres_fault_under_load_loses_no_session_and_accepts_no_revoked_token(
    postgres_deployment: tuple[FaultLoad, PrivatePostgres], signals: str
) -> None:
    load, postgres = postgres_deployment
    (fault,) = [f for f in deployments.postgres_faults(postgres) if f.name == signals]

    report = await run_fault(load, fault, "postgresql")

    assert_the_fault_was_felt(report)
    assert_four_counts(report)


@pytest.mark.redis
async def test_redis_cluster_master_killed_under_load_loses_no_session(
    cluster_deployment: tuple[FaultLoad, PrivateRedisCluster],
) -> None:
    load, cluster = cluster_deployment
    (fault,) = [f for f in deployments.cluster_faults(cluster) if "SIGKILL" in f.name]

    report = await run_fault(load, fault, "redis cluster")

    assert_the_fault_was_felt(report)
    assert_four_counts(report)


@pytest.fixture(scope="module")
def two_workers(workdir: Path) -> Iterator[tuple[FaultLoad, ServiceProcess]]:
    """`tokenstile serve --workers 2`, sessions in SQLite."""
    settings = deployments.service_settings(workdir / "workers-data")
    with deployments.running_service(settings, workdir, workers=WORKERS) as service:
        yield registered_load(service), service


async def test_a_worker_killed_mid_refresh_is_replaced_and_no_session_is_lost(
    two_workers: tuple[FaultLoad, ServiceProcess],
) -> None:
    load, service = two_workers
    kill = WorkerKill(service, WORKERS)

    # The fault is the kill itself: recovery counts from that moment.
    report = await run_fault(load, kill.fault(), "2 workers", during=0.0)
    replaced_after = kill.wait_for_replacement()

    assert kill.connections_cut > 0, "the killed worker held no connection: nothing was cut"
    dropped = report.statuses()
    assert sum(n for outcome, n in dropped.items() if outcome.endswith("dropped")) > 0, (
        f"no request was in flight on the killed worker: {dropped}"
    )
    assert replaced_after is not None, "uvicorn did not start a worker in the dead one's place"
    assert_four_counts(report)


@pytest.mark.redis
@pytest.mark.postgres
async def test_postgres_down_in_redis_mode_refuses_logins_while_refresh_and_verify_go_on(
    tmp_path: Path,
) -> None:
    # Users in PostgreSQL, sessions in Redis: only what needs a user's row (login) waits
    # for PostgreSQL.
    with contextlib.ExitStack() as stack:
        postgres = provided(stack, deployments.private_postgres())
        redis = provided(stack, deployments.private_redis())
        settings = deployments.service_settings(
            tmp_path / "data",
            database_url=postgres.sqlalchemy_url,
            redis_url=redis.url,
        )
        service = stack.enter_context(deployments.running_service(settings, tmp_path))
        load = FaultLoad(service.base_url, USERS)
        await load.register()
        fault = Fault("PostgreSQL SIGKILL, restart", postgres.kill, postgres.start)

        report = await run_fault(load, fault, "redis mode")

    during = {"since": report.fault_in_effect, "until": report.fault_lifted}
    logins = report.statuses(**during)
    assert report.failed("login", **during) > 0, f"no login was tried during the outage: {logins}"
    assert report.succeeded("login", **during) == 0, f"a login succeeded without users: {logins}"
    assert logins["login 503"] == report.failed("login", **during), logins
    assert report.failed("refresh", **during) == 0, logins
    assert report.failed("users_me", **during) == 0, logins
    assert report.succeeded("refresh", **during) > 0, logins
    assert_four_counts(report)


@pytest.mark.postgres
async def test_more_requests_than_connections_on_a_frozen_postgres_answer_503_never_500(
    postgres_deployment: tuple[FaultLoad, PrivatePostgres],
) -> None:
    # 10 pooled + 20 overflow connections; the rest of the requests wait for the pool
    # and give up after STORE_TIMEOUT, which is an unavailable store, not a bug.
    load, postgres = postgres_deployment
    requests = 120
    async with httpx.AsyncClient(base_url=load.base_url, timeout=10) as client:
        login = await client.post(
            "/auth/login", json={"username": load.users[0].username, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        pair = login.json()
        postgres.freeze()
        try:
            answers = await asyncio.gather(
                *(
                    client.get("/users/me", headers=bearer(pair["access_token"]))
                    for _ in range(requests)
                )
            )
        finally:
            postgres.thaw()
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {503: requests}, statuses


def require(response: httpx.Response) -> None:
    """A precondition: fails the test outright (never an expected failure)."""
    if response.status_code != 200:
        pytest.fail(f"precondition: {response.status_code} {response.text}")


def _refresh_by_body(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/auth/refresh", json={"refresh_token": token})


def _refresh_by_oauth_grant(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token})


@pytest.mark.parametrize("refresh", [_refresh_by_body, _refresh_by_oauth_grant])
def test_a_refresh_the_client_gave_up_on_does_not_end_the_session_when_it_runs_late(
    two_workers: tuple[FaultLoad, ServiceProcess],
    refresh: Callable[[httpx.Client, str], httpx.Response],
) -> None:
    # A worker stalls (SIGSTOP here; a long GC pause or a starved CPU in life) with a
    # refresh in its socket. The client times out, retries on the other worker inside
    # the grace window, and goes on rotating. When the stalled worker resumes, the old
    # request must not count as reuse of a token the client legitimately retried.
    load, service = two_workers
    stalled, other = service.worker_pids()
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        pair = client.post(
            "/auth/login", json={"username": load.users[0].username, "password": PASSWORD}
        ).json()
    pinned = httpx.Client(base_url=service.base_url, timeout=1.0)
    try:
        os.kill(other, signal.SIGSTOP)
        try:
            require(pinned.get("/healthz"))  # `stalled` holds this connection now
        finally:
            os.kill(other, signal.SIGCONT)
        os.kill(stalled, signal.SIGSTOP)
        try:
            with pytest.raises(httpx.ReadTimeout):
                refresh(pinned, pair["refresh_token"])
            pinned.close()  # the client gives up on that connection
            with httpx.Client(base_url=service.base_url, timeout=10) as client:
                retried = refresh(client, pair["refresh_token"])
                require(retried)
                rotated = refresh(client, retried.json()["refresh_token"])
                require(rotated)
        finally:
            os.kill(stalled, signal.SIGCONT)
        # The resumed worker runs the abandoned request before it answers a new one.
        os.kill(other, signal.SIGSTOP)
        try:
            with httpx.Client(base_url=service.base_url, timeout=10) as client:
                require(client.get("/healthz"))
        finally:
            os.kill(other, signal.SIGCONT)
        time.sleep(0.5)  # and its store call, if any, has finished
        with httpx.Client(base_url=service.base_url, timeout=10) as client:
            latest = rotated.json()
            me = client.get("/users/me", headers=bearer(latest["access_token"]))
            again = refresh(client, latest["refresh_token"])
    finally:
        pinned.close()

    assert me.status_code == 200, f"the session ended: {me.text}"
    assert again.status_code == 200, f"the latest refresh token was refused: {again.text}"
