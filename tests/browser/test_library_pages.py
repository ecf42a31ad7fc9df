"""Pages of your own with tokenstile mounted in your app (README *Deploying*): the
``tokenstile.js`` snippet on the app's own origin, and a single-page app on another
origin through the CORS snippet. The app is built from the README's own code blocks."""

# No `from __future__ import annotations`: FastAPI resolves the page route's annotation.

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from tests.accounts import PASSWORD, register
from tests.api.test_readme_examples import readme_python_block, run_snippet
from tests.servers import LiveServer, free_port

# These names resolve to 127.0.0.1 (the conftest's host resolver rules).
LOOPBACK_NAMES = {"127.0.0.1", "spa.test", "app.demo.test", "auth.demo.test"}

OWN_PAGE = """<!doctype html>
<title>my app</title>
<script type="module">
import { TokenstileClient } from '/js/tokenstile.js';
window.auth = new TokenstileClient();
window.restored = window.auth.restore();
</script>
"""

BLANK_PAGE = "<!doctype html><title>single-page app</title>"

# The README's cross-origin calls, as one function per step.
SPA_CALLS = """
window.spa = {
  csrf: () => document.cookie.match(/(?:^|; )tokenstile_csrf=([^;]*)/)?.[1] ?? '',
  async call(url, init) {
    const response = await fetch(url, init);
    return { status: response.status, body: await response.json().catch(() => null) };
  },
  login(api, username, password) {
    return this.call(`${api}/auth/login`, {
      method: 'POST', credentials: 'include',
      headers: { 'Content-Type': 'application/json', 'X-Token-Transport': 'cookie' },
      body: JSON.stringify({ username, password }),
    });
  },
  me(api, token) {
    return this.call(`${api}/users/me`, { headers: { Authorization: `Bearer ${token}` } });
  },
  refresh(api) {
    return this.call(`${api}/auth/refresh`, {
      method: 'POST', credentials: 'include',
      headers: { 'X-Token-Transport': 'cookie', 'X-CSRF-Token': this.csrf() },
    });
  },
};
"""


def refuse_the_network(context: Any) -> None:
    """Abort every request of ``context`` to a host that is not this machine."""

    def route(route: Any) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK_NAMES:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", route)


@pytest.fixture
def mounted_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., LiveServer]]:
    """Start the README's app (its lifespan block, then the given blocks) with
    ``TOKENSTILE_*`` settings; stopped afterwards."""
    monkeypatch.chdir(tmp_path)
    servers: list[LiveServer] = []

    def start(*blocks: str, **settings: str) -> LiveServer:
        for name, value in {
            "data_dir": str(tmp_path / f"data-{len(servers)}"),
            "cookie_secure": "false",
            "rate_limit_enabled": "false",
            "argon2_time_cost": "1",
            "argon2_memory_kib": "8192",
            "argon2_parallelism": "1",
            **settings,
        }.items():
            monkeypatch.setenv(f"TOKENSTILE_{name.upper()}", value)
        example = run_snippet(readme_python_block("async with auth.lifespan(app)"))
        for block in blocks:
            exec(compile(block, "README.md", "exec"), example)  # noqa: S102 - the README's code
        app: FastAPI = example["app"]

        @app.get("/", include_in_schema=False)
        async def own_page() -> HTMLResponse:
            return HTMLResponse(OWN_PAGE)

        server = LiveServer(app).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def spa_port() -> Iterator[int]:
    """The port of a second server, the single-page app's own, that serves a blank page."""
    app = FastAPI()

    @app.get("/")
    async def blank() -> HTMLResponse:
        return HTMLResponse(BLANK_PAGE)

    server = LiveServer(app).start()
    yield server.port
    server.stop()


def test_an_apps_own_page_signs_in_with_the_packaged_tokenstile_js(
    new_context: Callable[..., Any], mounted_app: Callable[..., LiveServer]
) -> None:
    server = mounted_app(readme_python_block("TOKENSTILE_JS_DIR ="))
    username = register(server.client)
    context = new_context()
    refuse_the_network(context)
    page = context.new_page()

    script = server.client.get("/js/tokenstile.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "export class TokenstileClient" in script.text
    page.goto(f"{server.base_url}/")
    assert page.evaluate("window.restored") is False  # nobody signed in yet
    me = page.evaluate(
        "async ([u, p]) => { await auth.login(u, p); return auth.me(); }", [username, PASSWORD]
    )
    assert me["username"] == username

    page.reload()  # the access token was in memory only: the cookie brings it back
    assert page.evaluate("window.restored") is True
    assert page.evaluate("auth.me()")["username"] == username


def cors_block(origin: str) -> str:
    """The README's CORS block, allowing ``origin`` instead of its example origin."""
    block = readme_python_block("CORSMiddleware")
    assert '"https://example.com:8443"' in block
    return block.replace('"https://example.com:8443"', repr(origin))


def spa_page(new_context: Callable[..., Any], origin: str, *, calls: str | None = SPA_CALLS) -> Any:
    """A page of the single-page app at ``origin`` in a context of its own, the network
    refused but for loopback, with ``calls`` (the README's ``fetch`` calls) loaded."""
    context = new_context()
    refuse_the_network(context)
    page = context.new_page()
    page.goto(f"{origin}/")
    if calls is not None:
        page.evaluate(calls)
    return page


def test_a_page_on_another_port_signs_in_by_cookie_and_refreshes_through_cors(
    new_context: Callable[..., Any],
    mounted_app: Callable[..., LiveServer],
    spa_port: int,
) -> None:
    origin = f"http://127.0.0.1:{spa_port}"
    api = mounted_app(cors_block(origin), allowed_origins=origin)
    username = register(api.client)
    page = spa_page(new_context, origin)

    login = page.evaluate("([a, u, p]) => spa.login(a, u, p)", [api.base_url, username, PASSWORD])
    assert login["status"] == 200, login
    assert "refresh_token" not in login["body"]  # it is in the HttpOnly cookie
    me = page.evaluate("([a, t]) => spa.me(a, t)", [api.base_url, login["body"]["access_token"]])
    assert (me["status"], me["body"]["username"]) == (200, username)
    refreshed = page.evaluate("(a) => spa.refresh(a)", api.base_url)
    assert refreshed["status"] == 200, refreshed
    assert refreshed["body"]["access_token"] != login["body"]["access_token"]
    again = page.evaluate(
        "([a, t]) => spa.me(a, t)", [api.base_url, refreshed["body"]["access_token"]]
    )
    assert again["status"] == 200


# A page of the single-page app that loads tokenstile.js from the API's origin.
CLIENT_FROM_API = """
async (api) => {
  const { TokenstileClient } = await import(`${api}/js/tokenstile.js`);
  window.auth = new TokenstileClient({ baseUrl: api });
  window.refreshes = [];
  auth.addEventListener('refresh', (event) => refreshes.push(event.detail.source));
  return auth.restore();
}
"""


def test_a_page_on_another_port_using_tokenstile_js_stays_signed_in_across_a_reload(
    new_context: Callable[..., Any],
    mounted_app: Callable[..., LiveServer],
    spa_port: int,
) -> None:
    origin = f"http://127.0.0.1:{spa_port}"
    api = mounted_app(
        readme_python_block("TOKENSTILE_JS_DIR ="),
        cors_block(origin),
        allowed_origins=origin,
        access_ttl="2",
    )
    username = register(api.client)
    page = spa_page(new_context, origin, calls=None)
    assert page.evaluate(CLIENT_FROM_API, api.base_url) is False  # nobody signed in yet
    me = page.evaluate(
        "async ([u, p]) => { await auth.login(u, p); return auth.me(); }", [username, PASSWORD]
    )
    assert me["username"] == username
    cookies = {cookie["name"] for cookie in page.context.cookies(f"{api.base_url}/auth/refresh")}
    assert {"tokenstile_refresh", "tokenstile_csrf"} <= cookies  # stored for the API

    page.reload()  # the access token was in memory only: the cookie brings it back
    assert page.evaluate(CLIENT_FROM_API, api.base_url) is True
    first = page.evaluate("auth.accessToken")
    # Access tokens live 2 s: the client refreshes by cookie before this one expires.
    page.wait_for_function("(token) => auth.accessToken !== token", arg=first, timeout=10_000)
    assert page.evaluate("refreshes").count("self") >= 2  # the restore, then the timer
    assert page.evaluate("auth.me()")["username"] == username


def test_a_page_on_another_origin_not_in_allowed_origins_cannot_refresh_by_cookie(
    new_context: Callable[..., Any],
    mounted_app: Callable[..., LiveServer],
    spa_port: int,
) -> None:
    origin = f"http://127.0.0.1:{spa_port}"
    # CORS lets the page call, but ALLOWED_ORIGINS names only the API's own origin.
    api = mounted_app(cors_block(origin), allowed_origins=f"http://127.0.0.1:{free_port()}")
    username = register(api.client)
    page = spa_page(new_context, origin)

    login = page.evaluate("([a, u, p]) => spa.login(a, u, p)", [api.base_url, username, PASSWORD])
    refreshed = page.evaluate("(a) => spa.refresh(a)", api.base_url)

    assert login["status"] == 200
    assert (refreshed["status"], refreshed["body"]["error"]) == (403, "csrf_failed")


def test_a_page_on_another_host_of_the_same_site_cannot_read_the_csrf_cookie(
    new_context: Callable[..., Any],
    mounted_app: Callable[..., LiveServer],
    spa_port: int,
) -> None:
    origin = f"http://app.demo.test:{spa_port}"
    server = mounted_app(cors_block(origin), allowed_origins=origin)
    api = f"http://auth.demo.test:{server.port}"
    username = register(server.client)
    page = spa_page(new_context, origin)

    login = page.evaluate("([a, u, p]) => spa.login(a, u, p)", [api, username, PASSWORD])
    assert login["status"] == 200, login
    cookies = {cookie["name"] for cookie in page.context.cookies(f"{api}/auth/refresh")}
    assert {"tokenstile_refresh", "tokenstile_csrf"} <= cookies  # same site: stored
    assert page.evaluate("spa.csrf()") == ""  # but they are auth.demo.test's, not the page's
    refreshed = page.evaluate("(a) => spa.refresh(a)", api)

    # The cookie came along (same site), the CSRF token could not.
    assert (refreshed["status"], refreshed["body"]["error"]) == (403, "csrf_failed")


def test_a_page_on_another_site_cannot_refresh_by_cookie(
    new_context: Callable[..., Any],
    mounted_app: Callable[..., LiveServer],
    spa_port: int,
) -> None:
    origin = f"http://spa.test:{spa_port}"
    api = mounted_app(cors_block(origin), allowed_origins=origin)
    username = register(api.client)
    page = spa_page(new_context, origin)

    login = page.evaluate("([a, u, p]) => spa.login(a, u, p)", [api.base_url, username, PASSWORD])
    assert login["status"] == 200, login  # CORS let the page call and read the answer
    me = page.evaluate("([a, t]) => spa.me(a, t)", [api.base_url, login["body"]["access_token"]])
    assert me["status"] == 200
    assert page.evaluate("spa.csrf()") == ""  # not this host's cookie
    refreshed = page.evaluate("(a) => spa.refresh(a)", api.base_url)

    # The SameSite=Strict cookie never came with the cross-site request: no token at all.
    assert (refreshed["status"], refreshed["body"]["error"]) == (422, "invalid_request")
    assert refreshed["body"]["detail"] == "refresh_token is required."
