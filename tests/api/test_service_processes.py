"""`tokenstile serve --workers 2` as real processes: what holds across workers and restarts.

Both workers accept on one shared listening socket, and the kernel does not spread
sequential connections between them: one idle worker usually takes every one. So a
request meant for worker W goes out on a fresh connection while the other workers are
paused (SIGSTOP), and only W can accept it. Routing is therefore certain, not likely.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from redis.crc import key_slot

from tests.accounts import PASSWORD, bearer, new_username
from tests.api.conftest import FAST_HASHING, WITH_CLUSTER
from tests.redis_server import PrivateRedis, PrivateRedisCluster
from tests.servers import ServiceProcess

if not sys.platform.startswith("linux"):
    pytest.skip("routing requests to one worker reads /proc", allow_module_level=True)

WORKERS = 2
PARALLEL_REFRESHES = 24
RACING_REFRESHES_WITHOUT_GRACE = 20
FRESH_CONNECTION_REQUESTS = 30

# One TLS context for every client: building httpx's default one costs ~40 ms each.
_TLS = ssl.create_default_context()


def new_client(**kwargs: Any) -> httpx.Client:
    return httpx.Client(verify=_TLS, timeout=10, **kwargs)


def client_port(response: httpx.Response) -> int:
    """The local port of the connection ``response`` came over."""
    _host, port = response.extensions["network_stream"].get_extra_info("client_addr")
    return int(port)


def owner_of_connection(server_port: int, client_port: int) -> int:
    """The pid holding the server end of the TCP connection from ``client_port``."""
    wanted = f":{server_port:04X} "
    peer = f":{client_port:04X} "
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1] + " ").endswith(wanted) and (fields[2] + " ").endswith(peer):
            inode = fields[9]
    assert inode is not None, "connection not found in /proc/net/tcp"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return int(proc.name)
    raise AssertionError(f"no process holds socket {inode}")


class Service:
    """A running `tokenstile serve --workers N` and its worker processes."""

    def __init__(self, process: ServiceProcess) -> None:
        self.process = process
        self.base_url = process.base_url
        self.workers = process.worker_pids()

    @contextlib.contextmanager
    def only(self, worker: int) -> Iterator[None]:
        """While inside, only ``worker`` can accept new connections."""
        others = [pid for pid in self.workers if pid != worker]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)

    def request(self, worker: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request on a new connection that ``worker`` accepts."""
        with self.only(worker), new_client() as client:
            return client.request(method, f"{self.base_url}{path}", **kwargs)

    def on_every_worker(self, method: str, path: str, **kwargs: Any) -> list[httpx.Response]:
        return [self.request(worker, method, path, **kwargs) for worker in self.workers]

    def pinned_client(self, worker: int) -> tuple[httpx.Client, int]:
        """A keep-alive client whose open connection ``worker`` accepted, and its port."""
        client = new_client(base_url=self.base_url)
        try:
            with self.only(worker):
                response = client.get("/healthz")
            assert response.status_code == 200, response.text
        except BaseException:
            client.close()
            raise
        return client, client_port(response)


StartService = Callable[..., Service]


@pytest.fixture(params=WITH_CLUSTER)
def store_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[StartService]:
    """Start `tokenstile serve --workers 2` with the given settings; stopped afterwards."""
    processes: list[ServiceProcess] = []

    def start(settings: Mapping[str, str]) -> Service:
        process = ServiceProcess(settings, workers=WORKERS, cwd=tmp_path)
        processes.append(process)
        service = Service(process.start())
        assert len(service.workers) == WORKERS, service.workers
        # The first healthy answer proves one worker ready: wait for each of them, and
        # check that `Service.request` reaches the very worker it names.
        for worker in service.workers:
            client, port = service.pinned_client(worker)
            try:
                assert owner_of_connection(process.port, port) == worker
            finally:
                client.close()
        return service

    yield start
    for process in processes:
        process.stop()


def fresh(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request on a new connection, to whichever worker accepts it."""
    with new_client() as client:
        return client.request(method, url, **kwargs)


def register_and_login(service: Service, *, sessions: int = 1) -> tuple[str, list[dict[str, Any]]]:
    """A new user with ``sessions`` logins, alternating between the workers."""
    username = new_username()
    credentials = {"username": username, "password": PASSWORD}
    registered = fresh("POST", f"{service.base_url}/auth/register", json=credentials)
    assert registered.status_code == 201, registered.text
    pairs = []
    for index in range(sessions):
        worker = service.workers[index % len(service.workers)]
        response = service.request(worker, "POST", "/auth/login", json=credentials)
        assert response.status_code == 200, response.text
        pairs.append(response.json())
    return username, pairs


def error_of(response: httpx.Response) -> tuple[int, str | None]:
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, body.get("error") if isinstance(body, dict) else None


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert error_of(response) == (status, code), response.text


def assert_refused_everywhere(service: Service, method: str, path: str, **kwargs: Any) -> None:
    """Many fresh-connection requests, spread evenly over the workers: all ``token_revoked``."""
    outcomes = [
        error_of(service.request(service.workers[i % len(service.workers)], method, path, **kwargs))
        for i in range(FRESH_CONNECTION_REQUESTS)
    ]
    assert outcomes == [(401, "token_revoked")] * FRESH_CONNECTION_REQUESTS


def race_refreshes(service: Service, refresh_token: str, racers: int) -> list[httpx.Response]:
    """``racers`` refreshes of one token released at once, half of them over connections
    each worker accepted, so the worker processes race each other."""
    pinned = [service.pinned_client(service.workers[i % WORKERS]) for i in range(racers)]
    barrier = threading.Barrier(racers)

    def race(client: httpx.Client, port: int) -> httpx.Response:
        barrier.wait(timeout=15)
        response = client.post("/auth/refresh", json={"refresh_token": refresh_token})
        assert client_port(response) == port, "the pinned connection was dropped before the race"
        return response

    try:
        with ThreadPoolExecutor(max_workers=racers) as pool:
            futures = [pool.submit(race, client, port) for client, port in pinned]
            return [future.result() for future in futures]
    finally:
        for client, _ in pinned:
            client.close()


def test_invariant_2_concurrent_refreshes_on_a_multi_worker_server_yield_one_child(
    start_service: StartService, store_settings: dict[str, str]
) -> None:
    service = start_service(store_settings)
    _, [pair] = register_and_login(service)
    parent = pair["refresh_token"]

    responses = race_refreshes(service, parent, PARALLEL_REFRESHES)

    assert [r.status_code for r in responses] == [200] * PARALLEL_REFRESHES, [
        r.text for r in responses if r.status_code != 200
    ]
    children = {r.json()["refresh_token"] for r in responses}
    assert len(children) == 1, f"the session forked into {len(children)} refresh tokens"
    (child,) = children
    assert child != parent
    # Every answer carries an access token that works, on either worker.
    for i, access_token in enumerate({r.json()["access_token"] for r in responses}):
        worker = service.workers[i % WORKERS]
        assert service.request(worker, "GET", "/users/me", headers=bearer(access_token)).is_success

    rotated = service.request(
        service.workers[1], "POST", "/auth/refresh", json={"refresh_token": child}
    )
    assert rotated.status_code == 200, rotated.text
    grandchild = rotated.json()
    assert grandchild["refresh_token"] not in (parent, child)

    # The parent is now a grandparent: theft, and the whole session ends on every worker.
    reused = service.request(
        service.workers[0], "POST", "/auth/refresh", json={"refresh_token": parent}
    )
    assert_error(reused, 401, "token_reused")
    for response in service.on_every_worker(
        "POST", "/auth/refresh", json={"refresh_token": grandchild["refresh_token"]}
    ):
        assert response.status_code == 401, response.text
    for response in service.on_every_worker(
        "GET", "/users/me", headers=bearer(grandchild["access_token"])
    ):
        assert response.status_code == 401, response.text


def test_invariant_5_logout_is_immediate_on_every_worker(
    start_service: StartService, store_settings: dict[str, str]
) -> None:
    service = start_service(store_settings)
    _, [first, second, third] = register_and_login(service, sessions=3)
    _, [stranger] = register_and_login(service)
    # Every session works on every worker beforehand.
    for pair in (first, second, third, stranger):
        for response in service.on_every_worker(
            "GET", "/users/me", headers=bearer(pair["access_token"])
        ):
            assert response.status_code == 200, response.text

    logout = service.request(
        service.workers[0],
        "POST",
        "/auth/logout",
        headers=bearer(first["access_token"]),
        json={"refresh_token": first["refresh_token"]},
    )
    assert logout.status_code == 204, logout.text
    assert_refused_everywhere(service, "GET", "/users/me", headers=bearer(first["access_token"]))
    for response in service.on_every_worker(
        "POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]}
    ):
        assert_error(response, 401, "token_revoked")
    # Only that session ended.
    for pair in (second, third):
        for response in service.on_every_worker(
            "GET", "/users/me", headers=bearer(pair["access_token"])
        ):
            assert response.status_code == 200, response.text

    logout_all = service.request(
        service.workers[1], "POST", "/auth/logout-all", headers=bearer(second["access_token"])
    )
    assert logout_all.status_code == 204, logout_all.text
    for pair in (second, third):
        assert_refused_everywhere(service, "GET", "/users/me", headers=bearer(pair["access_token"]))
        for response in service.on_every_worker(
            "POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        ):
            assert_error(response, 401, "token_revoked")
    # Another user's session is untouched.
    for response in service.on_every_worker(
        "GET", "/users/me", headers=bearer(stranger["access_token"])
    ):
        assert response.status_code == 200, response.text
    renewed = fresh(
        "POST",
        f"{service.base_url}/auth/refresh",
        json={"refresh_token": stranger["refresh_token"]},
    )
    assert renewed.status_code == 200, renewed.text


def test_invariant_2_without_grace_one_of_20_racing_refreshes_over_two_processes_wins(
    start_service: StartService, store_settings: dict[str, str]
) -> None:
    # REFRESH_GRACE=0: a second presentation of a rotated-out token is reuse, even a
    # simultaneous one, so exactly one racer may rotate and its success ends the session.
    service = start_service({**store_settings, "refresh_grace": "0"})
    _, [pair] = register_and_login(service)

    responses = race_refreshes(service, pair["refresh_token"], RACING_REFRESHES_WITHOUT_GRACE)

    winners = [r.json() for r in responses if r.status_code == 200]
    refused = [error_of(r) for r in responses if r.status_code != 200]
    assert len(winners) == 1, refused
    # The first loser finds another token current: theft, and it ends the session; the
    # others find it ended (or, on SQL, also see reuse first).
    assert (401, "token_reused") in refused
    assert set(refused) <= {(401, "token_reused"), (401, "token_revoked")}, refused
    (child,) = winners
    for tokens in (pair, child):
        for response in service.on_every_worker(
            "GET", "/users/me", headers=bearer(tokens["access_token"])
        ):
            assert_error(response, 401, "token_revoked")
        for response in service.on_every_worker(
            "POST", "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        ):
            assert response.status_code == 401, response.text


def test_sessions_survive_a_restart_on_sqlite(start_service: StartService, tmp_path: Path) -> None:
    # No SECRET_KEY: the restarted service must find the secret it generated in DATA_DIR.
    settings = {"data_dir": str(tmp_path / "data"), "rate_limit_enabled": "false", **FAST_HASHING}
    first = start_service(settings)
    username, [kept, ended] = register_and_login(first, sessions=2)
    logout = fresh(
        "POST",
        f"{first.base_url}/auth/logout",
        headers=bearer(ended["access_token"]),
        json={"refresh_token": ended["refresh_token"]},
    )
    assert logout.status_code == 204, logout.text
    secret = (tmp_path / "data" / "secret_key").read_bytes()
    first.process.stop()

    second = start_service(settings)
    assert second.base_url != first.base_url
    assert (tmp_path / "data" / "secret_key").read_bytes() == secret

    for response in second.on_every_worker(
        "GET", "/users/me", headers=bearer(kept["access_token"])
    ):
        assert response.status_code == 200, response.text
        assert response.json()["username"] == username
    rotated = fresh(
        "POST", f"{second.base_url}/auth/refresh", json={"refresh_token": kept["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    for response in second.on_every_worker(
        "GET", "/users/me", headers=bearer(rotated.json()["access_token"])
    ):
        assert response.status_code == 200, response.text
    # What was revoked before the restart stays revoked.
    for response in second.on_every_worker(
        "GET", "/users/me", headers=bearer(ended["access_token"])
    ):
        assert_error(response, 401, "token_revoked")
    for response in second.on_every_worker(
        "POST", "/auth/refresh", json={"refresh_token": ended["refresh_token"]}
    ):
        assert_error(response, 401, "token_revoked")


def is_ready(service: Service, worker: int) -> bool:
    return service.request(worker, "GET", "/readyz").status_code == 200


def poll(check: Callable[[], bool], *, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def assert_fail_closed_on_every_worker(service: Service, pair: dict[str, Any]) -> None:
    """With the store down, every worker answers the checked route, refresh and /readyz
    with a prompt 503 (invariant 8), while /healthz stays 200."""
    for worker in service.workers:
        started = time.monotonic()
        me = service.request(worker, "GET", "/users/me", headers=bearer(pair["access_token"]))
        assert_error(me, 503, "store_unavailable")
        refreshed = service.request(
            worker, "POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert_error(refreshed, 503, "store_unavailable")
        assert_error(service.request(worker, "GET", "/readyz"), 503, "store_unavailable")
        assert service.request(worker, "GET", "/healthz").status_code == 200
        assert time.monotonic() - started < 5, "an outage must be answered promptly"


@pytest.mark.redis
def test_invariant_8_fail_closed_then_recovers_with_redis(
    start_service: StartService, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    settings = {
        "data_dir": str(tmp_path / "data"),  # users stay in SQLite here
        "secret_key": "s" * 48,
        "rate_limit_enabled": "false",
        "redis_url": private_redis.url,
        "store_timeout": "0.5",
        **FAST_HASHING,
    }
    service = start_service(settings)
    username, [pair] = register_and_login(service)
    credentials = {"username": username, "password": PASSWORD}
    old = bearer(pair["access_token"])
    for response in service.on_every_worker("GET", "/users/me", headers=old):
        assert response.status_code == 200, response.text

    private_redis.stop()
    assert_fail_closed_on_every_worker(service, pair)
    for worker in service.workers:
        login = service.request(worker, "POST", "/auth/login", json=credentials)
        assert_error(login, 503, "store_unavailable")

    private_redis.start()  # empty: the server keeps nothing across restarts
    for worker in service.workers:
        ready = functools.partial(is_ready, service, worker)
        assert poll(ready), f"worker {worker} never became ready again"
    # The session went with Redis's data: refused (never accepted) on every worker.
    for _ in range(5):
        for response in service.on_every_worker("GET", "/users/me", headers=old):
            assert_error(response, 401, "token_revoked")
    for response in service.on_every_worker(
        "POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    ):
        assert response.status_code == 401, response.text

    for worker in service.workers:
        login = service.request(worker, "POST", "/auth/login", json=credentials)
        assert login.status_code == 200, login.text
        for response in service.on_every_worker(
            "GET", "/users/me", headers=bearer(login.json()["access_token"])
        ):
            assert response.status_code == 200, response.text


def _node_holding_session(cluster: PrivateRedisCluster, access_token: str) -> int:
    """The index of the master that holds the session record of ``access_token``."""
    sid = jwt.decode(access_token, options={"verify_signature": False})["sid"]
    slot = str(key_slot(sid.encode()))  # the store's keys carry the hash tag {sid}
    for index in range(len(cluster.ports)):
        if cluster.cli(index, "CLUSTER", "COUNTKEYSINSLOT", slot).strip() != "0":
            return index
    raise AssertionError(f"no master holds slot {slot}")


def _cluster_reports_failure(cluster: PrivateRedisCluster, index: int) -> bool:
    return "cluster_state:fail" in cluster.cli(index, "CLUSTER", "INFO")


@pytest.mark.redis
def test_invariant_8_fail_closed_then_recovers_when_a_redis_cluster_master_stops(
    start_service: StartService, private_redis_cluster: PrivateRedisCluster, tmp_path: Path
) -> None:
    cluster = private_redis_cluster
    settings = {
        "data_dir": str(tmp_path / "data"),  # users stay in SQLite here
        "secret_key": "s" * 48,
        "rate_limit_enabled": "false",
        "redis_url": cluster.url,
        "redis_cluster": "true",
        "store_timeout": "0.5",
        **FAST_HASHING,
    }
    service = start_service(settings)
    username, [pair] = register_and_login(service)
    credentials = {"username": username, "password": PASSWORD}
    old = bearer(pair["access_token"])
    for response in service.on_every_worker("GET", "/users/me", headers=old):
        assert response.status_code == 200, response.text
    stopped = _node_holding_session(cluster, pair["access_token"])
    survivor = (stopped + 1) % len(cluster.ports)

    cluster.stop_node(stopped)
    # First the master holding the session refuses connections; once the other masters
    # notice, the whole cluster answers CLUSTERDOWN. Both must be a 503, never a 500.
    assert_fail_closed_on_every_worker(service, pair)
    assert poll(lambda: _cluster_reports_failure(cluster, survivor), timeout=10)
    assert_fail_closed_on_every_worker(service, pair)
    for worker in service.workers:
        login = service.request(worker, "POST", "/auth/login", json=credentials)
        assert_error(login, 503, "store_unavailable")

    cluster.start_node(stopped)  # with its data: the session is still there
    for worker in service.workers:
        ready = functools.partial(is_ready, service, worker)
        assert poll(ready, timeout=10), f"worker {worker} never became ready again"
    for response in service.on_every_worker("GET", "/users/me", headers=old):
        assert response.status_code == 200, response.text
    # The refreshes that failed changed nothing: the same token still rotates.
    rotated = service.request(
        service.workers[0], "POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    for response in service.on_every_worker(
        "GET", "/users/me", headers=bearer(rotated.json()["access_token"])
    ):
        assert response.status_code == 200, response.text
    for worker in service.workers:
        login = service.request(worker, "POST", "/auth/login", json=credentials)
        assert login.status_code == 200, login.text
