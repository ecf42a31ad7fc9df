"""The API docs in Chromium with every request off the machine refused (issue 10 item 1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.accounts import PASSWORD, register
from tests.browser.conftest import ConsoleLog
from tests.servers import LiveServer

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def refuse_the_network(context: Any) -> list[str]:
    """Abort every request of ``context`` to a host that is not loopback; the URLs of
    those the pages attempted, in order."""
    attempted: list[str] = []

    def route(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            attempted.append(url)
            route.abort()

    context.route("**/*", route)
    return attempted


@pytest.fixture
def server(serve: Callable[..., LiveServer]) -> LiveServer:
    """A server of the test's own: the conftest's shared one has 2-second access
    tokens, which could expire between Authorize and Execute."""
    return serve()


@pytest.fixture
def offline_page(context: Any) -> tuple[Any, list[str]]:
    attempted = refuse_the_network(context)
    return context.new_page(), attempted


def test_swagger_ui_signs_in_through_authorize_and_calls_users_me_offline(
    offline_page: tuple[Any, list[str]], server: LiveServer, console: ConsoleLog
) -> None:
    page, attempted = offline_page
    username = register(server.client)
    token_statuses: list[int] = []
    page.on(
        "response",
        lambda r: token_statuses.append(r.status) if r.url.endswith("/auth/token") else None,
    )

    page.goto(f"{server.base_url}/docs")
    me = page.locator(".opblock-get").filter(has=page.locator('[data-path="/users/me"]'))
    expect(me).to_have_count(1)
    paths = server.client.get("/openapi.json").json()["paths"]
    expect(page.locator(".opblock")).to_have_count(sum(len(ops) for ops in paths.values()))

    page.locator(".auth-wrapper").get_by_role("button", name="Authorize").click()
    dialog = page.locator(".modal-ux")
    expect(dialog.locator("#oauth_username")).to_be_visible()
    expect(dialog.locator("#oauth_password")).to_be_visible()
    expect(dialog.locator("#client_id_password")).to_have_value("tokenstile")
    # Swagger UI renders these; docs.css must hide them.
    expect(dialog.locator("#client_secret_password")).to_have_count(1)
    expect(dialog.locator("#client_secret_password")).to_be_hidden()
    expect(dialog.get_by_text("client_secret:")).to_be_hidden()
    expect(dialog.locator("#password_type")).to_be_hidden()
    expect(dialog.locator(".scope-def")).to_be_hidden()
    assert "scope" not in dialog.inner_text().lower()

    dialog.locator("#oauth_username").fill(username)
    dialog.locator("#oauth_password").fill(PASSWORD)
    dialog.get_by_role("button", name="Apply given OAuth2 credentials").click()
    expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()
    dialog.get_by_role("button", name="Close").click()

    me.locator(".opblock-summary").click()
    me.get_by_role("button", name="Try it out").click()
    me.get_by_role("button", name="Execute").click()
    live = me.locator(".live-responses-table")
    expect(live.locator("tr.response .response-col_status")).to_have_text("200")
    expect(live.locator("tr.response .response-col_description")).to_contain_text(
        f'"username": "{username}"'
    )

    assert token_statuses == [200]
    assert attempted == []
    assert console.errors == []
