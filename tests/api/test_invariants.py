"""SPEC §1: each invariant, by name, against a live server on every store mode."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest
import redis

from tests.accounts import bearer, refresh, signed_in
from tests.api.conftest import REDIS_MODES, WITH_CLUSTER
from tests.conftest import run_async
from tests.servers import LiveServer


@pytest.fixture(params=WITH_CLUSTER)
def store_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_invariant_1_rotation(serve: Callable[..., LiveServer]) -> None:
    server = serve(refresh_grace=0)
    pair = signed_in(server.client)

    rotated = refresh(server.client, pair["refresh_token"])

    assert rotated.status_code == 200
    child = rotated.json()
    assert child["refresh_token"] != pair["refresh_token"]
    assert child["access_token"] != pair["access_token"]
    assert server.client.get("/users/me", headers=bearer(child["access_token"])).status_code == 200
    replay = refresh(server.client, pair["refresh_token"])
    assert replay.status_code == 401
    assert replay.json()["error"] == "token_reused"


def test_invariant_2_at_most_one_live_refresh_token_under_concurrency(server: LiveServer) -> None:
    pair = signed_in(server.client)
    start = threading.Barrier(20)

    def race(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            start.wait()
            return refresh(client, pair["refresh_token"])

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(race, range(20)))

    assert [r.status_code for r in responses] == [200] * 20
    children = {r.json()["refresh_token"] for r in responses}
    assert len(children) == 1
    assert refresh(server.client, children.pop()).status_code == 200


def test_invariant_3_grace_window_returns_the_same_child(server: LiveServer) -> None:
    pair = signed_in(server.client)

    first = refresh(server.client, pair["refresh_token"]).json()
    again = refresh(server.client, pair["refresh_token"])

    assert again.status_code == 200
    assert again.json()["refresh_token"] == first["refresh_token"]
    child_jti = jwt.decode(first["refresh_token"], options={"verify_signature": False})["jti"]
    again_jti = jwt.decode(again.json()["refresh_token"], options={"verify_signature": False})
    assert again_jti["jti"] == child_jti
    me = server.client.get("/users/me", headers=bearer(again.json()["access_token"]))
    assert me.status_code == 200


def test_invariant_3_grace_is_only_for_the_immediate_parent(server: LiveServer) -> None:
    pair = signed_in(server.client)
    child = refresh(server.client, pair["refresh_token"]).json()
    grandchild = refresh(server.client, child["refresh_token"]).json()

    replay = refresh(server.client, pair["refresh_token"])

    assert replay.status_code == 401
    assert replay.json()["error"] == "token_reused"
    dead = server.client.get("/users/me", headers=bearer(grandchild["access_token"]))
    assert dead.status_code == 401


def test_invariant_4_reuse_detection_revokes_the_session(
    serve: Callable[..., LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(refresh_grace=1)
    pair = signed_in(server.client)
    child = refresh(server.client, pair["refresh_token"]).json()
    time.sleep(1.3)

    with caplog.at_level(logging.WARNING, logger="tokenstile.audit"):
        replay = refresh(server.client, pair["refresh_token"])

    assert replay.status_code == 401
    assert replay.json()["error"] == "token_reused"
    assert replay.headers["www-authenticate"].startswith("Bearer")
    child_refresh = refresh(server.client, child["refresh_token"])
    assert child_refresh.status_code == 401
    assert child_refresh.json()["error"] == "token_revoked"
    for access in (pair["access_token"], child["access_token"]):
        me = server.client.get("/users/me", headers=bearer(access))
        assert me.status_code == 401
        assert me.json()["error"] == "token_revoked"
    sid = jwt.decode(pair["refresh_token"], options={"verify_signature": False})["sid"]
    audit = [r for r in caplog.records if r.name == "tokenstile.audit"]
    assert any("token.reuse_detected" in r.getMessage() and sid in r.getMessage() for r in audit)
    assert not any(pair["refresh_token"] in r.getMessage() for r in caplog.records)


def test_invariant_5_logout_is_immediate(server: LiveServer) -> None:
    pair = signed_in(server.client)
    child = refresh(server.client, pair["refresh_token"]).json()

    out = server.client.post("/auth/logout", headers=bearer(child["access_token"]))

    assert out.status_code == 204
    for access in (pair["access_token"], child["access_token"]):
        me = server.client.get("/users/me", headers=bearer(access))
        assert (me.status_code, me.json()["error"]) == (401, "token_revoked")
    again = refresh(server.client, child["refresh_token"])
    assert (again.status_code, again.json()["error"]) == (401, "token_revoked")


def test_invariant_5_logout_all_ends_every_session_of_the_user(server: LiveServer) -> None:
    from tests.accounts import login, register

    username = register(server.client)
    sessions = [login(server.client, username) for _ in range(3)]
    stranger = signed_in(server.client)

    out = server.client.post("/auth/logout-all", headers=bearer(sessions[0]["access_token"]))

    assert out.status_code == 204
    for pair in sessions:
        assert (
            server.client.get("/users/me", headers=bearer(pair["access_token"])).status_code == 401
        )
        assert refresh(server.client, pair["refresh_token"]).status_code == 401
    assert (
        server.client.get("/users/me", headers=bearer(stranger["access_token"])).status_code == 200
    )


def test_invariant_5_password_change_ends_every_other_session(server: LiveServer) -> None:
    from tests.accounts import PASSWORD, login, register

    username = register(server.client)
    here, elsewhere = login(server.client, username), login(server.client, username)

    changed = server.client.post(
        "/auth/password",
        headers=bearer(here["access_token"]),
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
    )

    assert changed.status_code == 204
    assert server.client.get("/users/me", headers=bearer(here["access_token"])).status_code == 200
    assert refresh(server.client, here["refresh_token"]).status_code == 200
    gone = server.client.get("/users/me", headers=bearer(elsewhere["access_token"]))
    assert (gone.status_code, gone.json()["error"]) == (401, "token_revoked")
    assert refresh(server.client, elsewhere["refresh_token"]).status_code == 401
    old = server.client.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert old.status_code == 401


def test_invariant_6_revocation_state_expires_by_itself(
    serve: Callable[..., LiveServer], store_mode: str, store_settings: dict[str, str]
) -> None:
    server = serve(purge_interval=1)
    ended, live = signed_in(server.client), signed_in(server.client)
    ended_sid = jwt.decode(ended["access_token"], options={"verify_signature": False})["sid"]
    live_sid = jwt.decode(live["access_token"], options={"verify_signature": False})["sid"]

    server.client.post("/auth/logout", headers=bearer(ended["access_token"]))

    if store_mode in REDIS_MODES:
        url = store_settings["redis_url"]
        client: redis.Redis | redis.RedisCluster = (
            redis.RedisCluster.from_url(url)
            if store_mode == "redis-cluster"
            else redis.Redis.from_url(url)
        )
        prefix = store_settings["redis_prefix"]
        assert client.exists(f"{prefix}{{{ended_sid}}}:session") == 0
        ttl = client.ttl(f"{prefix}{{{live_sid}}}:session")
        assert 0 < ttl <= 604_800
        client.close()
    elif store_mode == "sqlite":
        database = Path(store_settings["data_dir"]) / "tokenstile.db"
        deadline = time.monotonic() + 5
        while _sqlite_has_session(database, ended_sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _sqlite_has_session(database, ended_sid)
        assert _sqlite_has_session(database, live_sid)
    else:
        url = store_settings["database_url"]
        deadline = time.monotonic() + 5
        while _postgres_has_session(url, ended_sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _postgres_has_session(url, ended_sid)
        assert _postgres_has_session(url, live_sid)


def _postgres_has_session(url: str, sid: str) -> bool:
    async def query() -> bool:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql", 1))
        try:
            return await connection.fetchval("SELECT 1 FROM sessions WHERE sid = $1", sid) == 1
        finally:
            await connection.close()

    return run_async(query)


def _sqlite_has_session(database: Path, sid: str) -> bool:
    with sqlite3.connect(database) as connection:
        row = connection.execute("SELECT 1 FROM sessions WHERE sid = ?", (sid,)).fetchone()
    return row is not None
