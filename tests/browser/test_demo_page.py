"""The demo page and /static/tokenstile.js in Chromium (SPEC §2 cookie transport, §5 Browser)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect

from tests.accounts import PASSWORD, bearer, login, register
from tests.browser.conftest import ARTIFACTS, WITHOUT_WEB_LOCKS, ConsoleLog
from tests.servers import LiveServer

ACCESS_TOKEN = "tokenstileDemo.client.accessToken"
RETRY_SOON = {"Retry-After": "1"}


def sign_in(page: Any, server: LiveServer, *, remember_me: bool = False) -> str:
    """Register a fresh user, then sign in through the page's form."""
    username = register(server.client)
    page.goto(f"{server.base_url}/")
    form = page.locator("#signin-form")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Password").fill(PASSWORD)
    if remember_me:
        form.get_by_label("Remember me on this device").check()
    form.get_by_role("button", name="Sign in").click()
    expect(page.locator("#username")).to_have_text(username)
    return username


def refreshes_logged(page: Any) -> int:
    count: int = page.locator("#refresh-log li").count()
    return count


def watch_responses(target: Any, path: str) -> list[int]:
    """Statuses of the responses to ``path`` that ``target`` (page or context) sees."""
    statuses: list[int] = []
    target.on("response", lambda r: statuses.append(r.status) if r.url.endswith(path) else None)
    return statuses


def expect_signed_out(page: Any) -> None:
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.locator("#signed-in")).to_be_hidden()


def test_signing_in_through_the_form_shows_the_username(page: Any, server: LiveServer) -> None:
    username = sign_in(page, server)

    expect(page.get_by_role("heading", level=1)).to_contain_text(username)
    expect(page.locator("#signin-form")).to_be_hidden()
    expect(page.locator("#sessions li.current")).to_have_count(1)
    expect(page.locator("#sessions li.current")).to_contain_text("This device")


def test_a_failed_sign_in_shows_the_server_error_in_a_live_region(
    page: Any, server: LiveServer
) -> None:
    username = register(server.client)
    page.goto(f"{server.base_url}/")
    form = page.locator("#signin-form")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Password").fill("not the password")
    form.get_by_role("button", name="Sign in").click()

    alert = page.get_by_role("alert").filter(has_text="incorrect")
    expect(alert).to_have_attribute("aria-live", "assertive")
    expect(page.locator("#signed-in")).to_be_hidden()


def test_registering_through_the_form_signs_the_new_user_in(page: Any, server: LiveServer) -> None:
    page.goto(f"{server.base_url}/")
    page.get_by_role("button", name="Create an account").click()
    form = page.locator("#register-form")
    form.get_by_label("Username").fill("new-reader")
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_role("button", name="Create account").click()

    expect(page.locator("#username")).to_have_text("new-reader")


def test_the_refresh_token_is_only_in_an_httponly_cookie(
    page: Any, context: Any, server: LiveServer
) -> None:
    sign_in(page, server)
    access_token = page.evaluate(ACCESS_TOKEN)

    cookies = {cookie["name"]: cookie for cookie in context.cookies()}
    refresh = cookies["tokenstile_refresh"]
    assert refresh["httpOnly"] is True
    assert refresh["path"] == "/auth"
    assert refresh["sameSite"] == "Strict"
    assert refresh["expires"] == -1  # a session cookie without "remember me"
    assert cookies["tokenstile_csrf"]["httpOnly"] is False
    readable = page.evaluate("document.cookie")
    assert "tokenstile_csrf=" in readable
    assert "tokenstile_refresh" not in readable
    assert refresh["value"] not in readable
    storage = page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert access_token not in storage
    assert refresh["value"] not in storage


def test_remember_me_makes_the_refresh_cookie_outlive_the_browser(
    page: Any, context: Any, server: LiveServer
) -> None:
    sign_in(page, server, remember_me=True)

    cookies = {cookie["name"]: cookie for cookie in context.cookies()}
    assert cookies["tokenstile_refresh"]["expires"] > time.time() + 29 * 86400


def test_an_authenticated_call_keeps_working_across_many_access_token_expiries(
    page: Any, server: LiveServer
) -> None:
    username = sign_in(page, server)  # access tokens live 2 s
    me_statuses = watch_responses(page, "/users/me")
    tokens = {page.evaluate(ACCESS_TOKEN)}

    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert page.evaluate("tokenstileDemo.client.me()")["username"] == username
        tokens.add(page.evaluate(ACCESS_TOKEN))
        page.wait_for_timeout(400)

    page.get_by_role("button", name="Ask the server who I am").click()
    expect(page.locator("#whoami-result")).to_contain_text(f"you are {username}")
    # Refreshed ahead of expiry: no call ever met a 401 and needed the retry.
    assert me_statuses
    assert set(me_statuses) == {200}
    assert len(tokens) >= 4
    assert refreshes_logged(page) >= 4


def test_two_tabs_keep_one_session_alive_without_a_reuse_alarm(
    new_context: Callable[..., Any], serve: Callable[..., LiveServer]
) -> None:
    # Without a grace window, two tabs racing one refresh cookie would end the session.
    server = serve(access_ttl=2, refresh_grace=0)
    profiles = {}  # two browser profiles at once: with Web Locks, and with the fallback
    tabs: list[Any] = []
    for coordination, scripts in (("web-locks", []), ("broadcast-lease", [WITHOUT_WEB_LOCKS])):
        context = new_context(init_scripts=scripts)
        refresh_statuses = watch_responses(context, "/auth/refresh")
        first = context.new_page()
        username = sign_in(first, server)
        second = context.new_page()
        second.goto(f"{server.base_url}/")
        expect(second.locator("#username")).to_have_text(username)
        profiles[coordination] = (refresh_statuses, first, second)
        tabs += [first, second]

    tabs[0].wait_for_timeout(8000)  # all four tabs keep refreshing meanwhile

    for coordination, (refresh_statuses, *tabs) in profiles.items():
        sids = set()
        for tab in tabs:
            assert tab.evaluate("tokenstileDemo.client.coordination") == coordination
            expect(tab.locator("#signed-in")).to_be_visible()
            expect(tab.locator("#signin-form")).to_be_hidden()
            assert refreshes_logged(tab) >= 4
            token = tab.evaluate(ACCESS_TOKEN)
            response = server.client.get("/auth/sessions", headers=bearer(token))
            assert response.status_code == 200, response.text
            sids.update(session["id"] for session in response.json() if session["current"])
        assert len(sids) == 1
        assert refresh_statuses
        assert set(refresh_statuses) == {200}
        # One tab refreshes and the other adopts its token: not one refresh per tab.
        assert len(refresh_statuses) <= 8


def test_reloading_the_page_keeps_the_user_signed_in(page: Any, server: LiveServer) -> None:
    username = sign_in(page, server)
    before = page.evaluate(ACCESS_TOKEN)

    page.reload()

    expect(page.locator("#username")).to_have_text(username)
    expect(page.locator("#signin-form")).to_be_hidden()
    after = page.evaluate(ACCESS_TOKEN)
    assert after
    assert after != before  # restored through a cookie refresh, not from storage


def test_logging_out_returns_to_the_form_and_ends_both_tokens(
    page: Any, context: Any, server: LiveServer
) -> None:
    sign_in(page, server)
    access_token = page.evaluate(ACCESS_TOKEN)
    assert server.client.get("/users/me", headers=bearer(access_token)).status_code == 200
    refresh_cookie = next(c for c in context.cookies() if c["name"] == "tokenstile_refresh")

    page.get_by_role("button", name="Log out", exact=True).click()

    expect_signed_out(page)
    expect(page.locator("#auth-notice")).to_have_text("You have signed out.")
    assert page.evaluate(ACCESS_TOKEN) is None
    assert "tokenstile_refresh" not in {c["name"] for c in context.cookies()}
    me = server.client.get("/users/me", headers=bearer(access_token))
    assert me.status_code == 401
    assert me.json()["error"] == "token_revoked"
    refresh = server.client.post("/auth/refresh", json={"refresh_token": refresh_cookie["value"]})
    assert refresh.status_code == 401
    assert refresh.json()["error"] in {"token_revoked", "token_reused"}


def test_logging_out_everywhere_signs_out_every_tab(context: Any, server: LiveServer) -> None:
    first = context.new_page()
    sign_in(first, server)
    second = context.new_page()
    second.goto(f"{server.base_url}/")
    expect(second.locator("#signed-in")).to_be_visible()

    first.bring_to_front()  # back to the first tab, as its user would
    first.get_by_role("button", name="Log out everywhere").click()

    for page in (first, second):
        expect_signed_out(page)
    expect(first.locator("#auth-notice")).to_have_text("You have signed out on every device.")


def test_a_session_revoked_elsewhere_signs_the_page_out_without_a_retry_loop(
    page: Any, server: LiveServer
) -> None:
    sign_in(page, server)
    refresh_statuses = watch_responses(page, "/auth/refresh")
    token = page.evaluate(ACCESS_TOKEN)

    ended = server.client.post("/auth/logout-all", headers=bearer(token))
    assert ended.status_code == 204

    expect_signed_out(page)
    expect(page.locator("#auth-notice")).to_have_text(
        "Your session was ended. Please sign in again."
    )
    page.wait_for_timeout(1500)  # a retry loop, or a backoff from 1 s, would show by now
    assert refresh_statuses == [401]


def test_a_401_from_the_api_refreshes_once_and_retries_the_request(
    page: Any, server: LiveServer
) -> None:
    username = sign_in(page, server)
    refresh_statuses = watch_responses(page, "/auth/refresh")
    me_statuses = watch_responses(page, "/users/me")
    rejected = json.dumps({"error": "invalid_token", "detail": "rejected by the test"})
    page.route(
        "**/users/me",
        lambda route: route.fulfill(status=401, body=rejected, content_type="application/json"),
        times=1,
    )

    assert page.evaluate("tokenstileDemo.client.me()")["username"] == username

    assert me_statuses == [401, 200]
    assert refresh_statuses == [200]


def test_a_503_on_refresh_keeps_the_session_and_retries_later(
    page: Any, server: LiveServer
) -> None:
    sign_in(page, server)
    refresh_statuses = watch_responses(page, "/auth/refresh")
    unavailable = json.dumps({"error": "store_unavailable", "detail": "down for the test"})
    page.route(
        "**/auth/refresh",
        lambda route: route.fulfill(
            status=503, body=unavailable, content_type="application/json", headers=RETRY_SOON
        ),
        times=1,
    )
    token = page.evaluate(ACCESS_TOKEN)

    outcome = page.evaluate("tokenstileDemo.client.refresh().then(() => 'ok', (e) => e.code)")

    assert outcome == "store_unavailable"
    assert page.evaluate(ACCESS_TOKEN) == token  # the server rejected nothing: kept
    expect(page.locator("#app-error")).to_contain_text("Trying again in 1 s")
    expect(page.locator("#refresh-log li").first).to_be_visible()  # the retry, a second later
    expect(page.locator("#app-error")).to_be_empty()
    expect(page.locator("#signed-in")).to_be_visible()
    assert refresh_statuses[:2] == [503, 200]


def test_korean_browsers_get_the_korean_page(
    new_context: Callable[..., Any], server: LiveServer
) -> None:
    page = new_context(locale="ko-KR").new_page()
    response = page.goto(f"{server.base_url}/")
    assert response is not None
    assert response.headers["content-language"] == "ko"

    expect(page.locator("html")).to_have_attribute("lang", "ko")
    expect(page.get_by_role("heading", level=1)).to_have_text("로그인")
    username = register(server.client)
    form = page.locator("#signin-form")
    form.get_by_label("사용자 이름").fill(username)
    form.get_by_label("비밀번호").fill(PASSWORD)
    form.get_by_role("button", name="로그인").click()
    expect(page.locator("#username")).to_have_text(username)
    expect(page.get_by_role("button", name="로그아웃", exact=True)).to_be_visible()


def test_the_page_has_no_console_errors_or_csp_violations(
    page: Any, console: ConsoleLog, server: LiveServer
) -> None:
    username = sign_in(page, server)
    login(server.client, username)  # a second session, to end from the list
    page.get_by_role("button", name="Reload list").click()
    page.get_by_role("button", name="End this session").click()
    expect(page.locator("#sessions li")).to_have_count(1)
    page.get_by_role("button", name="Ask the server who I am").click()
    expect(page.locator("#whoami-result")).to_contain_text(username)
    expect(page.locator("#refresh-log li").first).to_be_visible()  # a silent refresh
    page.reload()
    expect(page.locator("#username")).to_have_text(username)
    page.get_by_role("button", name="Log out", exact=True).click()
    expect_signed_out(page)
    page.reload()
    expect_signed_out(page)

    assert refreshes_logged(page) == 0
    assert page.evaluate("window.__cspViolations") == []
    assert console.errors == []


def test_screenshot_of_the_signed_in_page(page: Any, server: LiveServer) -> None:
    page.set_viewport_size({"width": 1200, "height": 900})
    username = sign_in(page, server)
    login(server.client, username)  # another device, with its "End this session" button
    page.get_by_role("button", name="Reload list").click()
    expect(page.locator("#sessions li")).to_have_count(2)
    page.get_by_role("button", name="Ask the server who I am").click()
    expect(page.locator("#refresh-log li").first).to_be_visible()  # a silent refresh

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "demo-signed-in.png"
    page.screenshot(path=str(path), full_page=True)

    assert path.stat().st_size > 10_000
    expect(page.get_by_role("button", name="End this session")).to_have_count(1)


# -- Secure cookies over plain http ------------------------------------------------------

INSECURE_HTTP_WARNING = "#insecure-http-warning"


def open_demo_page(page: Any, server: LiveServer, host: str) -> None:
    """Load the demo page through ``host`` (demo.test resolves to 127.0.0.1) and wait
    until it has decided whether to warn about dropped cookies."""
    page.goto(f"http://{host}:{server.port}/")
    expect(page.locator("html")).to_have_attribute("data-cookie-warning", re.compile("."))


def test_plain_http_to_another_host_with_secure_cookies_shows_a_warning(
    page: Any, serve: Callable[..., LiveServer]
) -> None:
    server = serve(cookie_secure="true")
    open_demo_page(page, server, "demo.test")

    warning = page.get_by_role("alert").filter(has_text="plain http")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("demo.test")
    expect(warning).to_contain_text("TOKENSTILE_COOKIE_SECURE=false")
    assert page.locator("html").get_attribute("data-cookie-warning") == "shown"


def test_the_warning_is_in_korean_for_korean_browsers(
    new_context: Callable[..., Any], serve: Callable[..., LiveServer]
) -> None:
    server = serve(cookie_secure="true")
    page = new_context(locale="ko-KR").new_page()
    open_demo_page(page, server, "demo.test")

    expect(page.locator(INSECURE_HTTP_WARNING)).to_contain_text("암호화되지 않은 http")


def test_plain_http_to_loopback_shows_no_warning(
    page: Any, serve: Callable[..., LiveServer]
) -> None:
    server = serve(cookie_secure="true")
    open_demo_page(page, server, "127.0.0.1")

    assert page.locator("html").get_attribute("data-cookie-warning") == "none"
    expect(page.locator(INSECURE_HTTP_WARNING)).to_have_count(0)


def test_plain_http_without_secure_cookies_shows_no_warning(
    page: Any, serve: Callable[..., LiveServer]
) -> None:
    server = serve(cookie_secure="false")
    open_demo_page(page, server, "demo.test")

    assert page.locator("html").get_attribute("data-cookie-warning") == "none"
    expect(page.locator(INSECURE_HTTP_WARNING)).to_have_count(0)
