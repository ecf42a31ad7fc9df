"""SPEC §1 invariant 11: credential changes win over logins in flight, on every store.

Each test keeps logins with the old credentials running in several threads while the
change happens, with real Argon2 costs so that a login spends long enough between
reading the user and creating its session. Once the change has answered, no session
that any of those logins opened may work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.accounts import PASSWORD, bearer, login, refresh, register
from tests.api.conftest import make_settings
from tests.conftest import run_async
from tests.servers import LiveServer
from tokenstile.runtime import open_runtime

# Slow enough that a login's password check overlaps the change (about 50 ms here).
SLOW_HASHING = {"argon2_time_cost": "2", "argon2_memory_kib": "32768", "argon2_parallelism": "1"}
LOGIN_THREADS = 4


@dataclass
class Attempt:
    started: float
    answered: float
    response: httpx.Response


def _log_in_until(
    server: LiveServer, username: str, stop: threading.Event, attempts: list[Attempt]
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            response = client.post("/auth/login", json={"username": username, "password": PASSWORD})
            attempts.append(Attempt(started, time.monotonic(), response))


@dataclass
class Race:
    attempts: list[Attempt]
    began: float
    answered: float

    def overlapped(self, moment: float) -> bool:
        """Whether a login that began before ``moment`` answered after the change did."""
        return any(a.started < moment and a.answered > self.answered for a in self.attempts)

    def started_before(self, moment: float) -> list[Attempt]:
        """The attempts that began before ``moment``, after checking that some of them
        were still in flight when the change answered (else nothing was raced)."""
        assert self.overlapped(moment), "no login overlapped the change"
        return [a for a in self.attempts if a.started < moment]


def _race(server: LiveServer, username: str, change: Callable[[], None]) -> Race:
    """Run ``change`` while logins with the old password keep going.

    The logins stop once the change has answered, and the ones then in flight finish.
    """
    stop = threading.Event()
    attempts: list[Attempt] = []
    threads = [
        threading.Thread(target=_log_in_until, args=(server, username, stop, attempts))
        for _ in range(LOGIN_THREADS)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while not any(a.response.status_code == 200 for a in attempts):  # logins are under way
        assert time.monotonic() < deadline, "no login succeeded before the change"
        time.sleep(0.01)
    time.sleep(0.1)
    began = time.monotonic()
    change()
    answered = time.monotonic()
    time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    return Race(attempts, began, answered)


def _assert_no_session_survives(server: LiveServer, attempts: list[Attempt]) -> None:
    opened = [a.response.json() for a in attempts if a.response.status_code == 200]
    assert opened, "no login succeeded before the change"
    for pair in opened:
        me = server.client.get("/users/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 401, me.text
        assert refresh(server.client, pair["refresh_token"]).status_code == 401
    refused = [a.response for a in attempts if a.response.status_code != 200]
    assert {(r.status_code, r.json()["error"]) for r in refused} <= {(401, "invalid_credentials")}


def _tokenstile(store_settings: dict[str, str], *args: str) -> None:
    """Run the real ``tokenstile`` command on the store under test."""
    executable = shutil.which("tokenstile", path=str(Path(sys.executable).parent))
    assert executable is not None
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOKENSTILE_")},
        **{f"TOKENSTILE_{name.upper()}": value for name, value in store_settings.items()},
    }
    result = subprocess.run(
        [executable, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_invariant_11_a_login_in_flight_cannot_outlive_a_password_change(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve(**SLOW_HASHING)
    username = register(server.client)
    own: dict[str, Any] = login(server.client, username)

    def change_password() -> None:
        response = server.client.post(
            "/auth/password",
            headers=bearer(own["access_token"]),
            json={"current_password": PASSWORD, "new_password": "a brand new secret"},
        )
        assert response.status_code == 204, response.text

    race = _race(server, username, change_password)

    _assert_no_session_survives(server, race.started_before(race.answered))
    # The session that made the change goes on.
    assert server.client.get("/users/me", headers=bearer(own["access_token"])).status_code == 200
    assert refresh(server.client, own["refresh_token"]).status_code == 200


def test_invariant_11_a_login_in_flight_cannot_outlive_a_disable(
    serve: Callable[..., LiveServer], store_settings: dict[str, str]
) -> None:
    server = serve(**SLOW_HASHING)
    username = register(server.client)

    race = _race(server, username, lambda: _tokenstile(store_settings, "user", "disable", username))

    _assert_no_session_survives(server, race.started_before(race.answered))


def test_invariant_11_a_login_in_flight_cannot_outlive_an_admin_end_all(
    serve: Callable[..., LiveServer], store_settings: dict[str, str]
) -> None:
    server = serve(**SLOW_HASHING)
    settings = make_settings(store_settings)
    username = ""

    async def end_all() -> None:
        # What `tokenstile sessions revoke --user` runs, in process: a command's start-up
        # would take longer than a login, and logins after the change may succeed.
        admin = open_runtime(settings)
        try:
            account = await admin.accounts.find(username)
            await admin.accounts.invalidate_credentials(account.id)
            await admin.sessions.end_all(account.id, reason="admin")
        finally:
            await admin.aclose()

    # Only logins that began before the change began surely used the old credential
    # state, and the change is quick: try a few rounds until one such login overlaps it.
    for _ in range(5):
        username = register(server.client)
        race = _race(server, username, lambda: run_async(end_all))
        early = [a for a in race.attempts if a.started < race.began]
        _assert_no_session_survives(server, early)
        assert login(server.client, username)["access_token"]  # the password still works
        if race.overlapped(race.began):
            break
    assert race.overlapped(race.began), "no login overlapped the change in five rounds"


def test_sessions_revoke_command_ends_every_session_of_the_user(
    serve: Callable[..., LiveServer], store_settings: dict[str, str]
) -> None:
    server = serve()
    username = register(server.client)
    pairs = [login(server.client, username) for _ in range(3)]

    _tokenstile(store_settings, "sessions", "revoke", "--user", username)

    for pair in pairs:
        assert (
            server.client.get("/users/me", headers=bearer(pair["access_token"])).status_code == 401
        )
