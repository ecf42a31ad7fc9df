"""SPEC §2 "Browsers: the cookie transport": HttpOnly refresh cookie, double-submit CSRF, Origin."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx
import pytest

from tests.accounts import PASSWORD, bearer, register
from tests.servers import LiveServer

COOKIE = {"X-Token-Transport": "cookie"}


@pytest.fixture
def browser_server(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(cookie_secure=False, refresh_grace=1)


def cookie_login(server: LiveServer, **extra: object) -> httpx.Response:
    username = register(server.client)
    response = server.client.post(
        "/auth/login",
        json={"username": username, "password": PASSWORD, **extra},
        headers={**COOKIE, "Origin": server.base_url},
    )
    assert response.status_code == 200, response.text
    return response


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie header by cookie name."""
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


def csrf_headers(server: LiveServer) -> dict[str, str]:
    return {
        **COOKIE,
        "Origin": server.base_url,
        "X-CSRF-Token": server.client.cookies.get("tokenstile_csrf") or "",
    }


def test_cookie_login_puts_the_refresh_token_only_in_an_httponly_cookie(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve()  # COOKIE_SECURE defaults to true
    response = cookie_login(server)

    assert "refresh_token" not in response.json()
    assert response.json()["access_token"]
    cookies = set_cookies(response)
    refresh = cookies["tokenstile_refresh"].lower()
    for attribute in ("httponly", "secure", "samesite=strict", "path=/auth"):
        assert attribute in refresh
    assert "max-age" not in refresh  # a session cookie without remember-me
    csrf = cookies["tokenstile_csrf"].lower()
    assert "httponly" not in csrf
    assert "samesite=strict" in csrf
    assert "path=/" in csrf


def test_a_remember_me_cookie_is_persistent(browser_server: LiveServer) -> None:
    response = cookie_login(browser_server, remember_me=True)

    cookies = set_cookies(response)
    assert "max-age=2592000" in cookies["tokenstile_refresh"].lower()
    assert "max-age=2592000" in cookies["tokenstile_csrf"].lower()


def test_cookie_refresh_rotates_the_cookie_with_csrf_and_origin(browser_server: LiveServer) -> None:
    cookie_login(browser_server)
    before = browser_server.client.cookies.get("tokenstile_refresh")

    response = browser_server.client.post("/auth/refresh", headers=csrf_headers(browser_server))

    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()
    assert response.headers["cache-control"] == "no-store"
    after = browser_server.client.cookies.get("tokenstile_refresh")
    assert after is not None
    assert after != before
    me = browser_server.client.get("/users/me", headers=bearer(response.json()["access_token"]))
    assert me.status_code == 200


@pytest.mark.parametrize(
    ("change", "header_value"),
    [
        ("X-CSRF-Token", None),
        ("X-CSRF-Token", "forged"),
        ("Origin", None),
        ("Origin", "https://evil.example"),
    ],
)
def test_cookie_requests_without_csrf_proof_are_refused(
    browser_server: LiveServer, change: str, header_value: str | None
) -> None:
    cookie_login(browser_server)
    headers = csrf_headers(browser_server)
    if header_value is None:
        del headers[change]
    else:
        headers[change] = header_value

    refresh = browser_server.client.post("/auth/refresh", headers=headers)
    logout = browser_server.client.post("/auth/logout", headers=headers)

    assert (refresh.status_code, refresh.json()["error"]) == (403, "csrf_failed")
    assert (logout.status_code, logout.json()["error"]) == (403, "csrf_failed")
    # Nothing was rotated or ended: the real page can still refresh.
    ok = browser_server.client.post("/auth/refresh", headers=csrf_headers(browser_server))
    assert ok.status_code == 200


def test_allowed_origins_replace_the_same_origin_default(serve: Callable[..., LiveServer]) -> None:
    server = serve(cookie_secure=False, allowed_origins="https://app.example, https://b.example")
    cookie_login(server)

    same_origin = server.client.post("/auth/refresh", headers=csrf_headers(server))
    listed = server.client.post(
        "/auth/refresh", headers={**csrf_headers(server), "Origin": "https://b.example"}
    )

    assert same_origin.status_code == 403
    assert listed.status_code == 200


def test_a_rejected_cookie_is_cleared(
    browser_server: LiveServer,
) -> None:
    cookie_login(browser_server)
    stale = browser_server.client.cookies.get("tokenstile_refresh")
    assert (
        browser_server.client.post(
            "/auth/refresh", headers=csrf_headers(browser_server)
        ).status_code
        == 200
    )
    time.sleep(1.2)  # past the grace window
    browser_server.client.cookies.set("tokenstile_refresh", stale or "", path="/auth")

    reused = browser_server.client.post("/auth/refresh", headers=csrf_headers(browser_server))

    assert (reused.status_code, reused.json()["error"]) == (401, "token_reused")
    cleared = set_cookies(reused)["tokenstile_refresh"].lower()
    assert "max-age=0" in cleared


def test_cookie_logout_ends_the_session_and_clears_both_cookies(browser_server: LiveServer) -> None:
    login = cookie_login(browser_server)
    access = login.json()["access_token"]

    out = browser_server.client.post(
        "/auth/logout", headers={**csrf_headers(browser_server), **bearer(access)}
    )

    assert out.status_code == 204
    cleared = set_cookies(out)
    assert "max-age=0" in cleared["tokenstile_refresh"].lower()
    assert "max-age=0" in cleared["tokenstile_csrf"].lower()
    assert browser_server.client.get("/users/me", headers=bearer(access)).status_code == 401
    assert browser_server.client.cookies.get("tokenstile_refresh") is None


def test_body_transport_ignores_cookies_and_needs_no_csrf(browser_server: LiveServer) -> None:
    username = register(browser_server.client)
    pair = browser_server.client.post(
        "/auth/login", json={"username": username, "password": PASSWORD}
    ).json()

    response = browser_server.client.post(
        "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )

    assert response.status_code == 200
    assert response.json()["refresh_token"]
    assert "set-cookie" not in response.headers


def test_a_refresh_by_the_cookie_alone_answers_by_cookie_without_the_header(
    browser_server: LiveServer,
) -> None:
    cookie_login(browser_server)
    headers = csrf_headers(browser_server)
    del headers["X-Token-Transport"]

    response = browser_server.client.post("/auth/refresh", headers=headers)

    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()
    assert "httponly" in set_cookies(response)["tokenstile_refresh"].lower()


def test_a_body_login_answers_in_the_body_though_a_refresh_cookie_is_held(
    browser_server: LiveServer,
) -> None:
    cookie_login(browser_server)
    username = register(browser_server.client)

    response = browser_server.client.post(
        "/auth/login", json={"username": username, "password": PASSWORD}
    )

    assert response.status_code == 200
    assert response.json()["refresh_token"]
    assert "set-cookie" not in response.headers


def test_a_refused_body_token_leaves_the_refresh_cookie(browser_server: LiveServer) -> None:
    cookie_login(browser_server)

    refused = browser_server.client.post(
        "/auth/refresh", json={"refresh_token": "a.b.c"}, headers=csrf_headers(browser_server)
    )

    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_token")
    assert "set-cookie" not in refused.headers
    ok = browser_server.client.post("/auth/refresh", headers=csrf_headers(browser_server))
    assert ok.status_code == 200


def test_login_rotates_a_planted_csrf_cookie(browser_server: LiveServer) -> None:
    # An attacker who can set cookies for the site (a sibling subdomain, a plain-http
    # response) plants a CSRF value it knows; the login must not adopt it.
    planted = "planted-by-the-attacker"
    browser_server.client.cookies.set("tokenstile_csrf", planted, domain="127.0.0.1", path="/")

    cookie_login(browser_server)

    fresh = browser_server.client.cookies.get("tokenstile_csrf")
    assert fresh
    assert fresh != planted
    # The browser now holds only the fresh value: the planted one no longer passes.
    forged = browser_server.client.post(
        "/auth/refresh", headers={**csrf_headers(browser_server), "X-CSRF-Token": planted}
    )
    assert (forged.status_code, forged.json()["error"]) == (403, "csrf_failed")
    ok = browser_server.client.post("/auth/refresh", headers=csrf_headers(browser_server))
    assert ok.status_code == 200


def test_a_refresh_keeps_the_csrf_cookie(browser_server: LiveServer) -> None:
    cookie_login(browser_server)
    before = browser_server.client.cookies.get("tokenstile_csrf")

    response = browser_server.client.post("/auth/refresh", headers=csrf_headers(browser_server))

    assert response.status_code == 200
    assert set_cookies(response)["tokenstile_csrf"].startswith(f"tokenstile_csrf={before};")


def test_a_cookie_login_over_plain_http_to_a_lan_host_is_warned_about_once(
    serve: Callable[..., LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(cookie_secure="true")
    lan = {**COOKIE, "Host": f"192.168.1.10:{server.port}"}
    with caplog.at_level(logging.WARNING, logger="tokenstile"):
        cookie_login(server)  # loopback: browsers keep Secure cookies there
        assert not [r for r in caplog.records if "plain http" in r.getMessage()]
        for _ in range(2):
            username = register(server.client)
            response = server.client.post(
                "/auth/login", json={"username": username, "password": PASSWORD}, headers=lan
            )
            assert response.status_code == 200, response.text
    warnings = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "192.168.1.10" in warnings[0]
    assert "COOKIE_SECURE=false" in warnings[0]
