"""SPEC §2/§3/§7 rate limits: shared by every process, keyed by account or address."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from tests.accounts import PASSWORD, login, new_username, refresh, register
from tests.conftest import run_async
from tests.servers import LiveServer


async def _clear_postgres_counters(url: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await connection.execute("DELETE FROM rate_limits")
    finally:
        await connection.close()


# ASCII letters and digits to their fullwidth forms, which NFKC folds back.
FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}


@pytest.fixture
def limited(
    serve: Callable[..., LiveServer], store_mode: str, store_settings: dict[str, str]
) -> LiveServer:
    if store_mode == "postgres":
        # The PostgreSQL database is shared by the session; start from fresh windows.
        run_async(lambda: _clear_postgres_counters(store_settings["database_url"]))
    return serve(
        rate_limit_enabled=True,
        register_rate_limit="4/minute",
        refresh_rate_limit="3/minute",
    )


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


def test_registration_is_limited_per_address(limited: LiveServer) -> None:
    answers = [
        limited.client.post(
            "/auth/register", json={"username": new_username(), "password": PASSWORD}
        ).status_code
        for _ in range(5)
    ]

    assert answers == [201] * 4 + [429]


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
