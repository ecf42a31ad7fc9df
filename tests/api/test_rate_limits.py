"""SPEC §1 invariant 12, §2/§3/§7 rate limits: every attempt counted before the password
check, over any period-long span, shared by every process, keyed by account or address."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.accounts import PASSWORD, bearer, login, new_username, refresh, register, signed_in
from tests.api.conftest import FAST_HASHING
from tests.conftest import run_async, store_modes
from tests.servers import LiveServer, ServiceProcess

ServeLimited = Callable[..., LiveServer]

GUESSES = 23  # wrong passwords sent at once with the right one


async def _clear_postgres_counters(url: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await connection.execute("DELETE FROM rate_events")
    finally:
        await connection.close()


# ASCII letters and digits to their fullwidth forms, which NFKC folds back.
FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}


@pytest.fixture
def serve_limited(
    serve: Callable[..., LiveServer], store_mode: str, store_settings: dict[str, str]
) -> ServeLimited:
    """Start a live server with rate limits on, with setting overrides."""

    def start(**overrides: Any) -> LiveServer:
        if store_mode == "postgres":
            # The PostgreSQL database is shared by the session (and so is the per-address
            # log of 127.0.0.1): start from empty logs.
            run_async(lambda: _clear_postgres_counters(store_settings["database_url"]))
        return serve(rate_limit_enabled=True, **overrides)

    return start


@pytest.fixture
def limited(serve_limited: ServeLimited) -> LiveServer:
    return serve_limited(register_rate_limit="4/minute", refresh_rate_limit="3/minute")


def race_logins(base_urls: list[str], username: str) -> list[int]:
    """Send GUESSES wrong logins and the right one at the same moment, spread over
    ``base_urls``; their statuses, the right one's last."""
    bodies = [{"username": username, "password": f"wrong guess {i}"} for i in range(GUESSES)]
    bodies.append({"username": username, "password": PASSWORD})
    clients = [httpx.Client(base_url=base_urls[i % len(base_urls)], timeout=30) for i in range(24)]
    for client in clients:
        assert client.get("/healthz").status_code == 200  # connected before the start
    start = threading.Barrier(len(bodies))

    def attempt(index: int) -> int:
        start.wait()
        return clients[index].post("/auth/login", json=bodies[index]).status_code

    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            return list(pool.map(attempt, range(len(bodies))))
    finally:
        for client in clients:
            client.close()


def assert_at_most_five_guesses_were_checked(statuses: list[int]) -> None:
    guesses, right = statuses[:-1], statuses[-1]
    assert set(guesses) <= {401, 429}, statuses
    # Five failed logins per account per minute, however many arrive at once.
    assert guesses.count(401) <= 5, statuses
    # The password is found only if it was among the first five admitted; a right
    # password takes its count back, so then one more wrong guess may be admitted.
    assert right in (200, 429), statuses
    assert statuses.count(429) >= 24 - 5 - (right == 200), statuses


# -- invariant 12: limits cannot be raced ------------------------------------------------


def test_invariant_12_parallel_login_guesses_cannot_beat_the_account_limit(
    serve_limited: ServeLimited,
) -> None:
    server = serve_limited()
    username = register(server.client)

    statuses = race_logins([server.base_url], username)

    assert_at_most_five_guesses_were_checked(statuses)
    wrong = {"username": username, "password": "one more wrong guess"}
    after = [server.client.post("/auth/login", json=wrong).status_code for _ in range(6)]
    assert statuses.count(401) + after.count(401) == 5, (statuses, after)  # five in all


@pytest.fixture
def shared_service_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Settings for separate `tokenstile serve` processes sharing one store."""
    settings = {
        "data_dir": str(tmp_path / "data"),  # users in one SQLite file, shared
        "secret_key": "a shared secret key of thirty-two bytes or more",
        "rate_limit_enabled": "true",
        **FAST_HASHING,
    }
    if request.param == "redis":
        settings["redis_url"] = request.getfixturevalue("redis_url")
        settings["redis_prefix"] = request.getfixturevalue("redis_prefix")
    else:
        settings["database_url"] = request.getfixturevalue("postgres_store_url")
        run_async(lambda: _clear_postgres_counters(settings["database_url"]))
    return settings


@pytest.mark.parametrize("shared_service_settings", store_modes("redis", "postgres"), indirect=True)
def test_invariant_12_parallel_login_guesses_across_two_processes_cannot_beat_the_account_limit(
    shared_service_settings: dict[str, str], tmp_path: Path
) -> None:
    processes: list[ServiceProcess] = []
    try:
        for _ in range(2):  # one after the other: the first applies the migrations
            processes.append(ServiceProcess(shared_service_settings, cwd=tmp_path).start())
        first, second = (process.base_url for process in processes)
        with httpx.Client(base_url=first, timeout=10) as client:
            username = register(client)

        statuses = race_logins([first, second], username)
    finally:
        for process in processes:
            process.stop()

    assert_at_most_five_guesses_were_checked(statuses)


# -- logins ------------------------------------------------------------------------------


def test_login_failures_beyond_the_fifth_for_one_account_answer_429(limited: LiveServer) -> None:
    username = register(limited.client)
    other = register(limited.client)
    wrong = {"username": username, "password": "not the password"}

    failures = [limited.client.post("/auth/login", json=wrong) for _ in range(5)]
    blocked = limited.client.post("/auth/login", json={"username": username, "password": PASSWORD})

    assert [r.status_code for r in failures] == [401] * 5
    assert (blocked.status_code, blocked.json()["error"]) == (429, "rate_limited")
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    assert login(limited.client, other)["access_token"]  # another account is unaffected


def test_successful_logins_do_not_use_up_the_account_limit(limited: LiveServer) -> None:
    username = register(limited.client)

    for _ in range(8):
        assert login(limited.client, username)["access_token"]
    failures = [
        limited.client.post(
            "/auth/login", json={"username": username, "password": "not the password"}
        ).status_code
        for _ in range(6)
    ]

    assert failures == [401] * 5 + [429]


def test_the_login_limit_slides_over_any_period_long_span(serve_limited: ServeLimited) -> None:
    server = serve_limited(login_rate_limit="4/3seconds")
    username = register(server.client)
    wrong = {"username": username, "password": "not the password"}

    def attempts(count: int) -> list[int]:
        return [server.client.post("/auth/login", json=wrong).status_code for _ in range(count)]

    early = attempts(2)
    early_done = time.monotonic()
    time.sleep(1.5)
    late = attempts(2)
    time.sleep(max(0.0, early_done + 3.1 - time.monotonic()))
    # The early two have left the window, the late two have not: two places, not four
    # (a window that restarted after 3 s would have four).
    after = attempts(3)

    assert (early, late, after) == ([401] * 2, [401] * 2, [401, 401, 429])


def test_every_spelling_of_one_account_shares_its_limit(limited: LiveServer) -> None:
    username = register(limited.client)
    spellings = [
        username,
        username.upper(),
        f"  {username} ",
        username.upper().translate(FULLWIDTH),
    ]

    answers = [
        limited.client.post(
            "/auth/login", json={"username": spellings[i % 4], "password": "not the password"}
        ).status_code
        for i in range(6)
    ]

    assert answers == [401] * 5 + [429]


def test_unknown_accounts_are_limited_like_known_ones(limited: LiveServer) -> None:
    ghost = {"username": new_username(), "password": "not the password"}

    answers = [limited.client.post("/auth/login", json=ghost).status_code for _ in range(6)]

    assert answers == [401] * 5 + [429]


@pytest.mark.parametrize(
    "username", ["bad\x00name", "x" * 256, "🔑" * 64, "' OR 1=1; --"], ids=repr
)
def test_unusable_usernames_are_counted_without_breaking_the_store(
    limited: LiveServer, username: str
) -> None:
    wrong = {"username": username, "password": "not the password"}

    answers = [limited.client.post("/auth/login", json=wrong).status_code for _ in range(6)]

    assert answers == [401] * 5 + [429]


def test_the_oauth_password_grant_shares_the_login_limit(limited: LiveServer) -> None:
    username = register(limited.client)

    def grant(password: str) -> httpx.Response:
        form = {"grant_type": "password", "username": username, "password": password}
        return limited.client.post("/auth/token", data=form)

    logins = [
        limited.client.post(
            "/auth/login", json={"username": username, "password": "not the password"}
        ).status_code
        for _ in range(3)
    ]
    grants = [grant("not the password").status_code for _ in range(2)]
    blocked = grant(PASSWORD)

    assert logins == [401] * 3
    assert grants == [400] * 2  # RFC 6749 §5.2 invalid_grant
    assert (blocked.status_code, blocked.json()["error"]) == (429, "slow_down")
    assert 1 <= int(blocked.headers["retry-after"]) <= 60


def test_parallel_password_grants_cannot_beat_the_account_limit(limited: LiveServer) -> None:
    username = register(limited.client)
    forms = [
        {"grant_type": "password", "username": username, "password": f"wrong guess {i}"}
        for i in range(GUESSES)
    ]
    start = threading.Barrier(len(forms))

    def attempt(form: dict[str, str]) -> int:
        with httpx.Client(base_url=limited.base_url, timeout=30) as client:
            client.get("/healthz")
            start.wait()
            return client.post("/auth/token", data=form).status_code

    with ThreadPoolExecutor(len(forms)) as pool:
        statuses = list(pool.map(attempt, forms))

    assert statuses.count(400) == 5, statuses
    assert statuses.count(429) == GUESSES - 5, statuses


# -- password changes --------------------------------------------------------------------


def test_wrong_current_password_is_403_invalid_credentials(limited: LiveServer) -> None:
    headers = bearer(signed_in(limited.client)["access_token"])

    wrong = limited.client.post(
        "/auth/password",
        headers=headers,
        json={"current_password": "not it at all", "new_password": "another passphrase"},
    )

    # 403, not 401: the bearer token was fine, and clients refresh on a 401.
    assert (wrong.status_code, wrong.json()["error"]) == (403, "invalid_credentials")
    assert "www-authenticate" not in wrong.headers
    assert limited.client.get("/users/me", headers=headers).status_code == 200


def test_password_change_attempts_are_limited_per_user(serve_limited: ServeLimited) -> None:
    server = serve_limited(login_rate_limit="5/2seconds")
    username = register(server.client)
    headers = bearer(login(server.client, username)["access_token"])
    other = bearer(signed_in(server.client)["access_token"])

    def change(current: str, who: dict[str, str] = headers) -> httpx.Response:
        body = {"current_password": current, "new_password": "a brand new passphrase"}
        return server.client.post("/auth/password", headers=who, json=body)

    wrong = [change("not the password").status_code for _ in range(5)]
    checked_until = time.monotonic()
    sixth = change("not the password")
    right = change(PASSWORD)
    another_user = change("not the password", other)
    time.sleep(max(0.0, checked_until + 2.1 - time.monotonic()))
    after_the_window = change(PASSWORD)

    assert wrong == [403] * 5
    assert (sixth.status_code, sixth.json()["error"]) == (429, "rate_limited")
    assert (right.status_code, right.json()["error"]) == (429, "rate_limited")
    assert 1 <= int(right.headers["retry-after"]) <= 2
    assert another_user.status_code == 403  # counted per user
    assert after_the_window.status_code == 204


# -- registration and refresh ------------------------------------------------------------


def test_registration_is_limited_per_address(limited: LiveServer) -> None:
    answers = [
        limited.client.post(
            "/auth/register", json={"username": new_username(), "password": PASSWORD}
        ).status_code
        for _ in range(5)
    ]

    assert answers == [201] * 4 + [429]


def test_the_registration_limit_slides_over_any_period_long_span(
    serve_limited: ServeLimited,
) -> None:
    server = serve_limited(register_rate_limit="4/3seconds")

    def registrations(count: int) -> list[int]:
        return [
            server.client.post(
                "/auth/register", json={"username": new_username(), "password": PASSWORD}
            ).status_code
            for _ in range(count)
        ]

    early = registrations(2)
    early_done = time.monotonic()
    time.sleep(1.5)
    late = registrations(2)
    time.sleep(max(0.0, early_done + 3.1 - time.monotonic()))
    after = registrations(3)

    assert (early, late, after) == ([201] * 2, [201] * 2, [201, 201, 429])


def test_refresh_is_limited_per_address(limited: LiveServer) -> None:
    username = register(limited.client)
    token = login(limited.client, username)["refresh_token"]

    for _ in range(3):
        response = refresh(limited.client, token)
        assert response.status_code == 200
        token = response.json()["refresh_token"]
    blocked = refresh(limited.client, token)

    assert (blocked.status_code, blocked.json()["error"]) == (429, "rate_limited")
    assert "retry-after" in blocked.headers


def test_rate_limits_can_be_turned_off(serve: Callable[..., LiveServer]) -> None:
    server = serve(rate_limit_enabled=False)
    username = register(server.client)
    wrong = {"username": username, "password": "not the password"}

    answers = [server.client.post("/auth/login", json=wrong).status_code for _ in range(8)]

    assert answers == [401] * 8
