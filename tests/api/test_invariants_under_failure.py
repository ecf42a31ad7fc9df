"""SPEC §1 invariants 7–10: forged tokens, store outages, failed refreshes, logout races."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.accounts import PASSWORD, bearer, login, refresh, register, signed_in
from tests.api.conftest import FAST_HASHING, REDIS_MODES, WITH_CLUSTER, make_settings
from tests.outages import stall_postgres, stall_redis, stall_sqlite
from tests.redis_server import PrivateRedis, PrivateRedisCluster
from tests.servers import LiveServer
from tokenstile.api import create_app

STALL_SECONDS = 3.0


@pytest.fixture(params=WITH_CLUSTER)
def store_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def stallable(
    serve: Callable[..., LiveServer],
    store_mode: str,
    store_settings: dict[str, str],
    request: pytest.FixtureRequest,
) -> Iterator[tuple[LiveServer, Callable[[], None]]]:
    """A server with a short store timeout, and a function that stalls its store."""
    settings: dict[str, Any] = {"store_timeout": 0.5}
    # Redis pauses its clients; one of this test's own, so no other test is paused.
    redis_nodes: list[str] = []
    if store_mode == "redis":
        private: PrivateRedis = request.getfixturevalue("private_redis")
        settings["redis_url"] = private.url
        redis_nodes.append(private.url)
    elif store_mode == "redis-cluster":
        cluster: PrivateRedisCluster = request.getfixturevalue("private_redis_cluster")
        settings["redis_url"] = cluster.url
        redis_nodes.extend(f"redis://127.0.0.1:{port}" for port in cluster.ports)
    server = serve(**settings)
    waiters: list[Callable[[], object]] = []

    def stall() -> None:
        if store_mode == "sqlite":
            database = Path(store_settings["data_dir"]) / "tokenstile.db"
            waiters.append(stall_sqlite(database, STALL_SECONDS).join)
        elif store_mode == "postgres":
            waiters.append(stall_postgres(store_settings["database_url"], STALL_SECONDS).join)
        else:
            for node in redis_nodes:
                stall_redis(node, STALL_SECONDS)
            waiters.append(lambda: time.sleep(STALL_SECONDS))

    yield server, stall
    for wait in waiters:
        wait()


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forgeries(pair: dict[str, Any], secret: str) -> dict[str, str]:
    claims = _claims(pair["access_token"])
    now = int(time.time())
    header = {"typ": "at+jwt"}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    head, body, signature = pair["access_token"].split(".")
    return {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{_b64(claims)}.",
        "RS256 with an attacker key": jwt.encode(claims, rsa_key, "RS256", headers=header),
        "wrong secret": jwt.encode(claims, "x" * 40, "HS256", headers=header),
        "unknown kid": jwt.encode(claims, secret, "HS256", headers={**header, "kid": "k9"}),
        "wrong iss": jwt.encode({**claims, "iss": "evil"}, secret, "HS256", headers=header),
        "wrong aud": jwt.encode({**claims, "aud": "other"}, secret, "HS256", headers=header),
        "wrong typ": jwt.encode(claims, secret, "HS256", headers={"typ": "JWT"}),
        "refresh token as access token": pair["refresh_token"],
        "not yet valid": jwt.encode({**claims, "nbf": now + 600}, secret, "HS256", headers=header),
        "tampered payload": f"{head}.{_b64({**claims, 'sub': 'someone-else'})}.{signature}",
        "tampered signature": f"{head}.{body}.{signature[:-4]}AAAA",
        "oversized": f"{head}.{body}{'A' * 20_000}.{signature}",
        "garbage": "not-a-jwt",
    }


def test_invariant_7_algorithms_are_pinned(
    server: LiveServer, store_settings: dict[str, str]
) -> None:
    pair = signed_in(server.client)
    secret = store_settings["secret_key"]
    assert server.client.get("/users/me", headers=bearer(pair["access_token"])).status_code == 200

    for name, token in _forgeries(pair, secret).items():
        response = server.client.get("/users/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.json()["error"] == "invalid_token", name
        assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')

    expired = jwt.encode(
        {**_claims(pair["access_token"]), "exp": int(time.time()) - 60},
        secret,
        "HS256",
        headers={"typ": "at+jwt"},
    )
    response = server.client.get("/users/me", headers=bearer(expired))
    assert (response.status_code, response.json()["error"]) == (401, "token_expired")
    access_as_refresh = refresh(server.client, pair["access_token"])
    assert (access_as_refresh.status_code, access_as_refresh.json()["error"]) == (
        401,
        "invalid_token",
    )


def test_invariant_8_fail_closed(
    stallable: tuple[LiveServer, Callable[[], None]], store_mode: str
) -> None:
    server, stall = stallable
    username = register(server.client)
    pair = login(server.client, username)

    stall()
    rotation = refresh(server.client, pair["refresh_token"])
    new_login = server.client.post("/auth/login", json={"username": username, "password": PASSWORD})
    me = server.client.get("/users/me", headers=bearer(pair["access_token"]))
    ready = server.client.get("/readyz")
    alive = server.client.get("/healthz")

    assert (rotation.status_code, rotation.json()["error"]) == (503, "store_unavailable")
    assert (new_login.status_code, new_login.json()["error"]) == (503, "store_unavailable")
    assert alive.status_code == 200
    if store_mode == "sqlite":
        # Readers never wait in WAL mode: the store still answers them, truthfully.
        assert me.status_code == 200
        assert ready.status_code == 200
    else:
        assert (me.status_code, me.json()["error"]) == (503, "store_unavailable")
    if store_mode in REDIS_MODES:
        assert ready.status_code == 503
    time.sleep(STALL_SECONDS)
    assert server.client.get("/readyz").status_code == 200
    assert server.client.get("/users/me", headers=bearer(pair["access_token"])).status_code == 200
    assert refresh(server.client, pair["refresh_token"]).status_code == 200


def test_invariant_9_a_failed_refresh_changes_nothing(
    stallable: tuple[LiveServer, Callable[[], None]],
) -> None:
    server, stall = stallable
    pair = signed_in(server.client)

    stall()
    failed = refresh(server.client, pair["refresh_token"])
    assert (failed.status_code, failed.json()["error"]) == (503, "store_unavailable")
    time.sleep(STALL_SECONDS)

    # The session is intact and the presented token still refreshes; if the store
    # applied the rotation after the client gave up, the grace window answers.
    still_alive = server.client.get("/users/me", headers=bearer(pair["access_token"]))
    assert still_alive.status_code == 200
    retried = refresh(server.client, pair["refresh_token"])
    assert retried.status_code == 200, retried.text
    assert refresh(server.client, retried.json()["refresh_token"]).status_code == 200


def test_invariant_10_logout_wins(server: LiveServer) -> None:
    for _ in range(8):
        pair = signed_in(server.client)
        start = threading.Barrier(2)

        def do_refresh(
            pair: dict[str, Any] = pair, start: threading.Barrier = start
        ) -> httpx.Response:
            with httpx.Client(base_url=server.base_url, timeout=10) as client:
                start.wait()
                return refresh(client, pair["refresh_token"])

        def do_logout(
            pair: dict[str, Any] = pair, start: threading.Barrier = start
        ) -> httpx.Response:
            with httpx.Client(base_url=server.base_url, timeout=10) as client:
                start.wait()
                return client.post("/auth/logout", headers=bearer(pair["access_token"]))

        with ThreadPoolExecutor(max_workers=2) as pool:
            refreshed, logged_out = pool.submit(do_refresh), pool.submit(do_logout)
            refreshed_response, logout_response = refreshed.result(), logged_out.result()

        assert logout_response.status_code == 204
        tokens = [pair]
        if refreshed_response.status_code == 200:
            tokens.append(refreshed_response.json())
        else:
            assert refreshed_response.json()["error"] == "token_revoked"
        for tokens_of_session in tokens:
            me = server.client.get("/users/me", headers=bearer(tokens_of_session["access_token"]))
            assert me.status_code == 401
            assert refresh(server.client, tokens_of_session["refresh_token"]).status_code == 401


@pytest.fixture
def on_private_redis(tmp_path: Path, private_redis: PrivateRedis) -> Iterator[LiveServer]:
    """A server whose sessions live in a redis-server of this test's own."""
    settings = {
        "data_dir": str(tmp_path / "data"),
        "secret_key": secrets.token_urlsafe(32),
        "rate_limit_enabled": "false",
        "redis_url": private_redis.url,
        "store_timeout": "0.5",
        "refresh_grace": "1",
        **FAST_HASHING,
    }
    server = LiveServer(create_app(make_settings(settings))).start()
    yield server
    server.stop()


def test_invariant_9_a_refresh_that_timed_out_on_a_frozen_redis_still_rotates_on_retry(
    on_private_redis: LiveServer, private_redis: PrivateRedis
) -> None:
    server = on_private_redis
    first = refresh(server.client, signed_in(server.client)["refresh_token"])
    assert first.status_code == 200  # Redis now knows the rotation script
    pair = first.json()

    private_redis.freeze()
    try:
        failed = refresh(server.client, pair["refresh_token"])
        assert (failed.status_code, failed.json()["error"]) == (503, "store_unavailable")
        time.sleep(1.5)  # past the grace window, with the rotation queued in Redis
    finally:
        private_redis.thaw()
    time.sleep(0.3)  # Redis runs what waited in its sockets

    retried = refresh(server.client, pair["refresh_token"])
    assert retried.status_code == 200, retried.text
    assert refresh(server.client, retried.json()["refresh_token"]).status_code == 200
