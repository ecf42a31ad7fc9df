"""Chromium driving the demo page against a live server (SPEC §5 Browser, §7 Cookies).

Chromium comes from the system (``/usr/bin/chromium``, or ``TOKENSTILE_TEST_CHROMIUM``):
Playwright's own browser download is not needed. Without it the tests are skipped,
or fail under ``TOKENSTILE_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import FAST_HASHING, make_settings
from tests.conftest import service_missing
from tests.servers import LiveServer
from tokenstile.api import create_app

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("TOKENSTILE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Names that reach this machine's loopback without being loopback names, so a page
    # can be a plain-http, non-secure context (demo.test), another host of one site
    # (app.demo.test, auth.demo.test) or another site (spa.test).
    "--host-resolver-rules=MAP demo.test 127.0.0.1, MAP *.demo.test 127.0.0.1, "
    "MAP spa.test 127.0.0.1",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-output"

# Hides the Web Locks API, so the client falls back to a BroadcastChannel lease.
WITHOUT_WEB_LOCKS = """
Object.defineProperty(Navigator.prototype, 'locks', { get() { return undefined; } });
"""

# Records CSP violations, which a page cannot hide from this listener.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        service_missing(f"Chromium is not installed at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        except sync_api.Error as exc:
            service_missing(f"Chromium at {CHROMIUM} does not start: {exc.message}")
        yield chromium
        chromium.close()


def start_server(data_dir: Path, **overrides: Any) -> LiveServer:
    """A live server (SQLite in ``data_dir``) set up for plain-http browsers."""
    settings = {
        "data_dir": str(data_dir),
        "secret_key": secrets.token_urlsafe(32),
        "cookie_secure": "false",
        "rate_limit_enabled": "false",
        **FAST_HASHING,
    }
    return LiveServer(create_app(make_settings(settings, **overrides))).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Shared by a module's tests (each signs up its own user). Access tokens live
    2 s, so a test sees many silent refreshes."""
    server = start_server(tmp_path_factory.mktemp("data"), access_ttl=2)
    yield server
    server.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start a server of the test's own, with setting overrides."""
    servers: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        server = start_server(tmp_path / f"data-{len(servers)}", **overrides)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass
class ConsoleLog:
    """Console errors and uncaught exceptions of every page in a context."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Any) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def new_context(browser: Any, console: ConsoleLog) -> Iterator[Callable[..., Any]]:
    """Open a browser context (a profile: one cookie jar, shared by its pages)."""
    contexts: list[Any] = []

    def open_context(**options: Any) -> Any:
        init_scripts = options.pop("init_scripts", [])
        context = browser.new_context(**{"locale": "en-US", **options})
        context.set_default_timeout(10_000)
        context.add_init_script(RECORD_CSP_VIOLATIONS)
        for script in init_scripts:
            context.add_init_script(script)
        context.on("page", console.watch)
        contexts.append(context)
        return context

    yield open_context
    for context in contexts:
        context.close()


@pytest.fixture
def context(new_context: Callable[..., Any]) -> Any:
    return new_context()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()
