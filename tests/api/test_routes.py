"""SPEC §2 and §7: the HTTP API's answers, error bodies and headers, on every store mode."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from tests.accounts import PASSWORD, bearer, login, new_username, refresh, register, signed_in
from tests.api.conftest import FAST_HASHING, make_settings
from tests.conftest import run_async
from tests.servers import LiveServer
from tokenstile.api import create_app
from tokenstile.stores.sql import SqlDatabase


def test_register_answers_201_with_the_normalised_user(server: LiveServer) -> None:
    username = new_username()

    response = server.client.post(
        "/auth/register", json={"username": f"  {username.upper()} ", "password": PASSWORD}
    )

    assert response.status_code == 201
    body = response.json()
    assert body["username"] == username
    assert set(body) == {"id", "username"}
    assert login(server.client, username.upper())["token_type"] == "bearer"


def test_register_refuses_a_taken_username_weak_passwords_and_bad_names(server: LiveServer) -> None:
    username = register(server.client)

    taken = server.client.post("/auth/register", json={"username": username, "password": PASSWORD})
    short = server.client.post(
        "/auth/register", json={"username": new_username(), "password": "short"}
    )
    odd = server.client.post("/auth/register", json={"username": "a b<c>", "password": PASSWORD})

    assert (taken.status_code, taken.json()["error"]) == (409, "username_taken")
    assert (short.status_code, short.json()["error"]) == (422, "weak_password")
    assert (odd.status_code, odd.json()["error"]) == (422, "invalid_request")


def test_register_is_closed_when_registration_is_off(serve: Callable[..., LiveServer]) -> None:
    server = serve(allow_registration=False)

    response = server.client.post(
        "/auth/register", json={"username": new_username(), "password": PASSWORD}
    )

    assert (response.status_code, response.json()["error"]) == (403, "registration_closed")


def test_login_returns_a_pair_that_is_not_cached(server: LiveServer) -> None:
    username = register(server.client)

    response = server.client.post("/auth/login", json={"username": username, "password": PASSWORD})

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["refresh_expires_in"] == 604_800
    header = jwt.get_unverified_header(body["access_token"])
    assert header["typ"] == "at+jwt"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"iss", "sub", "aud", "exp", "iat", "jti", "sid", "client_id"} <= set(claims)
    refresh_claims = jwt.decode(body["refresh_token"], options={"verify_signature": False})
    assert set(refresh_claims) == {"iss", "sub", "exp", "iat", "jti", "sid"}
    assert refresh_claims["sid"] == claims["sid"]


def test_remember_me_gives_the_longer_refresh_lifetime(server: LiveServer) -> None:
    body = signed_in(server.client, remember_me=True)

    assert body["refresh_expires_in"] == 2_592_000


def test_unknown_user_and_wrong_password_answer_alike(server: LiveServer) -> None:
    username = register(server.client)

    wrong = server.client.post("/auth/login", json={"username": username, "password": "nope" * 3})
    unknown = server.client.post(
        "/auth/login", json={"username": new_username(), "password": PASSWORD}
    )

    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "error": "invalid_credentials",
            "detail": "Incorrect username or password.",
        }
    )


def test_the_password_never_travels_in_the_query_string(server: LiveServer) -> None:
    username = register(server.client)

    response = server.client.post(
        "/auth/login", params={"username": username, "password": PASSWORD}
    )

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_refresh_without_a_token_is_invalid_request(server: LiveServer) -> None:
    for body in (None, {}, {"refresh_token": ""}, {"refresh_token": None}):
        response = server.client.post("/auth/refresh", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"] == "invalid_request"


def test_users_me_answers_the_token_owner(server: LiveServer) -> None:
    username = register(server.client)
    pair = login(server.client, username)

    response = server.client.get("/users/me", headers=bearer(pair["access_token"]))

    assert response.status_code == 200
    assert response.json()["username"] == username
    sub = jwt.decode(pair["access_token"], options={"verify_signature": False})["sub"]
    assert response.json()["id"] == sub


def test_rfc6750_3_a_missing_or_malformed_bearer_gets_401_with_www_authenticate(
    server: LiveServer,
) -> None:
    missing = server.client.get("/users/me")
    basic = server.client.get("/users/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"] == "invalid_token"
    assert basic.status_code == 401
    assert basic.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


def test_sessions_lists_the_users_live_sessions_and_marks_the_current(server: LiveServer) -> None:
    username = register(server.client)
    first = login(server.client, username)
    second = server.client.post(
        "/auth/login",
        json={"username": username, "password": PASSWORD},
        headers={"User-Agent": "phone-app/1.0"},
    ).json()
    ended = login(server.client, username)
    server.client.post("/auth/logout", headers=bearer(ended["access_token"]))

    response = server.client.get("/auth/sessions", headers=bearer(first["access_token"]))

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    sessions = response.json()
    sid = jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
    other = jwt.decode(second["access_token"], options={"verify_signature": False})["sid"]
    assert [s["id"] for s in sessions] == [sid, other]
    assert [s["current"] for s in sessions] == [True, False]
    assert sessions[1]["user_agent"] == "phone-app/1.0"
    assert sessions[0]["ip"] == "127.0.0.1"
    assert set(sessions[0]) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "ip",
        "current",
    }


def test_delete_session_ends_only_your_own(server: LiveServer) -> None:
    mine, other_device = signed_in(server.client), None
    username = register(server.client)
    theirs = login(server.client, username)
    other_device = login(server.client, username)
    their_sid = jwt.decode(theirs["access_token"], options={"verify_signature": False})["sid"]

    foreign = server.client.delete(
        f"/auth/sessions/{their_sid}", headers=bearer(mine["access_token"])
    )
    unknown = server.client.delete("/auth/sessions/nope", headers=bearer(mine["access_token"]))
    own = server.client.delete(
        f"/auth/sessions/{their_sid}", headers=bearer(other_device["access_token"])
    )

    assert (foreign.status_code, foreign.json()["error"]) == (404, "not_found")
    assert unknown.status_code == 404
    assert own.status_code == 204
    assert server.client.get("/users/me", headers=bearer(theirs["access_token"])).status_code == 401
    assert (
        server.client.get("/users/me", headers=bearer(other_device["access_token"])).status_code
        == 200
    )


def test_password_change_checks_the_current_password_and_the_policy(server: LiveServer) -> None:
    pair = signed_in(server.client)
    headers = bearer(pair["access_token"])

    wrong = server.client.post(
        "/auth/password",
        headers=headers,
        json={"current_password": "not it at all", "new_password": "another passphrase"},
    )
    weak = server.client.post(
        "/auth/password", headers=headers, json={"current_password": PASSWORD, "new_password": "x"}
    )

    assert (wrong.status_code, wrong.json()["error"]) == (403, "invalid_credentials")
    assert (weak.status_code, weak.json()["error"]) == (422, "weak_password")


def test_logout_with_only_the_refresh_token_ends_the_session(server: LiveServer) -> None:
    pair = signed_in(server.client)

    out = server.client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})

    assert out.status_code == 204
    assert server.client.get("/users/me", headers=bearer(pair["access_token"])).status_code == 401
    assert refresh(server.client, pair["refresh_token"]).status_code == 401


def test_logout_without_any_token_is_401(server: LiveServer) -> None:
    response = server.client.post("/auth/logout")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_health_and_readiness(server: LiveServer) -> None:
    assert server.client.get("/healthz").json() == {"status": "ok"}
    assert server.client.get("/readyz").json() == {"status": "ready"}


def test_the_service_logs_where_its_stores_are_when_it_starts(
    serve: Callable[..., LiveServer], store_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tokenstile"):
        serve()

    [started] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stores: ")]
    expected = {
        "sqlite": "stores: users and sessions: sqlite ",
        "postgres": "stores: users and sessions: postgresql ",
        "redis": "stores: users: sqlite ",
    }
    assert started.startswith(expected[store_mode]), started
    assert ("; sessions: redis 127.0.0.1:" in started) == (store_mode == "redis"), started


KNOWN_CODES = {
    "invalid_request",
    "invalid_token",
    "not_found",
    "method_not_allowed",
    "weak_password",
}
BAD_REQUESTS = [
    ("POST", "/auth/login", b"{not json"),
    ("POST", "/auth/login", b"[]"),
    ("POST", "/auth/login", b'{"username": 5, "password": []}'),
    ("POST", "/auth/login", b'{"username": "a", "password": "b", "remember_me": "maybe"}'),
    ("POST", "/auth/login", b'{"username": "' + b"a" * 5000 + b'", "password": "b"}'),
    ("POST", "/auth/register", b'{"username": "\\u0000\\u0001", "password": "xxxxxxxxxx"}'),
    ("POST", "/auth/register", '{"username": "😀😀😀", "password": "xxxxxxxxxx"}'.encode()),
    ("POST", "/auth/refresh", b'{"refresh_token": 12}'),
    ("POST", "/auth/refresh", b'{"refresh_token": "a.b.c"}'),
    ("POST", "/auth/refresh", b'{"refresh_token": "' + b"x" * 20000 + b'"}'),
    ("POST", "/auth/logout", b'{"refresh_token": "garbage"}'),
    ("POST", "/auth/password", b"{}"),
    ("GET", "/auth/sessions", b""),
    ("DELETE", "/auth/sessions/x", b""),
    ("PUT", "/auth/login", b""),
    ("GET", "/no/such/route", b""),
]


def test_bad_input_gets_a_4xx_json_error_never_a_500(server: LiveServer) -> None:
    for method, path, content in BAD_REQUESTS:
        response = server.client.request(
            method, path, content=content, headers={"Content-Type": "application/json"}
        )

        assert 400 <= response.status_code < 500, (path, content[:40], response.text)
        body = response.json()
        assert body["error"] in KNOWN_CODES, path
        assert isinstance(body["detail"], str), path
        assert body["detail"], path


def test_error_details_speak_korean_when_asked_and_codes_do_not_change(
    server: LiveServer,
) -> None:
    korean = server.client.get("/users/me", headers={"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.5"})
    english = server.client.get("/users/me", headers={"Accept-Language": "en-US,ko;q=0.3"})

    assert korean.json()["error"] == english.json()["error"] == "invalid_token"
    assert korean.json()["detail"] != english.json()["detail"]
    assert any("\uac00" <= char <= "\ud7a3" for char in korean.json()["detail"])
    assert english.json()["detail"].isascii()


@pytest.mark.postgres
def test_readyz_answers_503_until_the_postgres_schema_is_migrated(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        {"data_dir": str(tmp_path), "secret_key": secrets.token_urlsafe(32), **FAST_HASHING},
        database_url=fresh_postgres_url,
    )
    server = LiveServer(create_app(settings)).start()
    try:
        unmigrated = server.client.get("/readyz")
        assert unmigrated.status_code == 503, unmigrated.text
        assert unmigrated.json()["error"] == "store_unavailable"
        assert fresh_postgres_url.split("@")[-1] not in unmigrated.text  # no host to clients

        run_async(lambda: upgraded(settings.resolved_database_url))

        ready = server.client.get("/readyz")
        assert ready.status_code == 200, ready.text
    finally:
        server.stop()


async def upgraded(url: str) -> None:
    database = SqlDatabase.from_url(url)
    try:
        await database.upgrade()
    finally:
        await database.aclose()
