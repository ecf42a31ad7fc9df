"""TokenAuth against a live server: SPEC §5 "Clients" and §7 "Python client"."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import tokenstile.client
from tests.accounts import PASSWORD, bearer, refresh, register, signed_in
from tests.outages import stall_redis, stall_sqlite
from tests.redis_server import PrivateRedis
from tests.servers import LiveServer, free_port
from tokenstile.client import LoginFailed, SessionEnded, TokenAuth

STALL_SECONDS = 1.5


class Traffic:
    """What one client sent and got back, in order, recorded by httpx event hooks."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def record(self, response: httpx.Response) -> None:
        self.seen.append((response.request.url.path, response.status_code))

    async def arecord(self, response: httpx.Response) -> None:
        self.record(response)

    @property
    def refreshes(self) -> int:
        return sum(path == "/auth/refresh" for path, _ in self.seen)


def token_auth(
    server: LiveServer, pair: Mapping[str, Any], pairs: list[Mapping[str, Any]], **options: Any
) -> TokenAuth:
    """A TokenAuth for ``pair`` that appends every new pair to ``pairs``."""
    return TokenAuth(
        server.base_url,
        access_token=pair["access_token"],
        refresh_token=pair["refresh_token"],
        expires_in=options.pop("expires_in", pair["expires_in"]),
        on_tokens=pairs.append,
        **options,
    )


def sent_bearer(response: httpx.Response) -> str:
    return response.request.headers["authorization"].removeprefix("Bearer ")


def test_the_public_names_are_listed() -> None:
    public = {name for name in vars(tokenstile.client) if not name.startswith("_")}
    assert public == set(tokenstile.client.__all__)


def test_a_sync_client_calls_as_the_logged_in_user(server: LiveServer) -> None:
    username = register(server.client)
    pairs: list[Mapping[str, Any]] = []
    auth = TokenAuth.login(server.base_url, username, PASSWORD, on_tokens=pairs.append)
    with httpx.Client(base_url=server.base_url, auth=auth) as client:
        response = client.get("/users/me")
    assert (response.status_code, response.json()["username"]) == (200, username)
    assert [pair["access_token"] for pair in pairs] == [sent_bearer(response)]


async def test_an_async_client_calls_as_the_logged_in_user(server: LiveServer) -> None:
    username = register(server.client)
    auth = await TokenAuth.alogin(server.base_url, username, PASSWORD)
    async with httpx.AsyncClient(base_url=server.base_url, auth=auth) as client:
        response = await client.get("/users/me")
    assert (response.status_code, response.json()["username"]) == (200, username)


def test_login_with_a_wrong_password_raises_login_failed(server: LiveServer) -> None:
    username = register(server.client)
    with pytest.raises(LoginFailed) as refused:
        TokenAuth.login(server.base_url, username, "not the password")
    assert (refused.value.code, refused.value.status_code) == ("invalid_credentials", 401)


async def test_alogin_of_an_unknown_user_raises_login_failed(server: LiveServer) -> None:
    with pytest.raises(LoginFailed) as refused:
        await TokenAuth.alogin(server.base_url, "nobody-at-all", PASSWORD)
    assert refused.value.code == "invalid_credentials"


def test_calls_keep_working_across_many_expiries(serve: Callable[..., LiveServer]) -> None:
    # The server honours no clock leeway, so a token the client failed to refresh fails.
    server = serve(access_ttl=2, leeway=0)
    first = signed_in(server.client)
    pairs: list[Mapping[str, Any]] = []
    traffic = Traffic()
    auth = token_auth(server, first, pairs, leeway=1.5)
    bearers: list[str] = []
    with httpx.Client(
        base_url=server.base_url, auth=auth, event_hooks={"response": [traffic.record]}
    ) as client:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            response = client.get("/users/me")
            assert response.status_code == 200, response.text
            bearers.append(sent_bearer(response))
            time.sleep(0.1)

    assert all(status == 200 for _, status in traffic.seen), traffic.seen  # never a 401
    assert len(pairs) == traffic.refreshes >= 5
    assert all(pair["expires_in"] == 2 for pair in pairs)
    access_tokens = [first["access_token"], *(pair["access_token"] for pair in pairs)]
    refresh_tokens = [first["refresh_token"], *(pair["refresh_token"] for pair in pairs)]
    assert len(set(access_tokens)) == len(access_tokens)
    assert len(set(refresh_tokens)) == len(refresh_tokens)
    assert bearers[-1] == access_tokens[-1]
    assert set(bearers) <= set(access_tokens)
    # The chain is unbroken: the last refresh token is the session's live one.
    assert refresh(server.client, refresh_tokens[-1]).status_code == 200


@pytest.mark.parametrize("from_token", [False, True], ids=["expires_in", "exp-iat"])
@pytest.mark.parametrize(("leeway", "refreshes"), [(901.0, 1), (899.0, 0)])
def test_a_refresh_comes_before_the_call_when_less_than_leeway_remains(
    server: LiveServer, leeway: float, refreshes: int, from_token: bool
) -> None:
    first = signed_in(server.client)
    assert first["expires_in"] == 900
    pairs: list[Mapping[str, Any]] = []
    traffic = Traffic()
    expires_in = None if from_token else first["expires_in"]
    auth = token_auth(server, first, pairs, leeway=leeway, expires_in=expires_in)
    with httpx.Client(
        base_url=server.base_url, auth=auth, event_hooks={"response": [traffic.record]}
    ) as client:
        response = client.get("/users/me")

    assert traffic.seen == [("/auth/refresh", 200)] * refreshes + [("/users/me", 200)]
    assert len(pairs) == refreshes
    assert sent_bearer(response) == (pairs[0] if pairs else first)["access_token"]


def test_a_401_refreshes_once_and_retries(server: LiveServer) -> None:
    first = signed_in(server.client)
    pairs: list[Mapping[str, Any]] = []
    traffic = Traffic()
    auth = token_auth(server, {**first, "access_token": "not-a-jwt"}, pairs)
    with httpx.Client(
        base_url=server.base_url, auth=auth, event_hooks={"response": [traffic.record]}
    ) as client:
        response = client.get("/users/me")

    assert response.status_code == 200
    assert traffic.seen == [("/users/me", 401), ("/auth/refresh", 200), ("/users/me", 200)]
    assert [pair["access_token"] for pair in pairs] == [sent_bearer(response)]


def test_a_second_401_is_returned_as_it_is(serve: Callable[..., LiveServer]) -> None:
    # Introspection wants its own secret as the bearer: a user's token, however fresh,
    # gets a 401 there every time.
    server = serve(introspection_secret="a secret for resource servers only")
    pairs: list[Mapping[str, Any]] = []
    traffic = Traffic()
    auth = token_auth(server, signed_in(server.client), pairs)
    with httpx.Client(
        base_url=server.base_url, auth=auth, event_hooks={"response": [traffic.record]}
    ) as client:
        response = client.post("/auth/introspect", data={"token": "x"})
        assert response.status_code == 401
        assert traffic.seen == [
            ("/auth/introspect", 401),
            ("/auth/refresh", 200),
            ("/auth/introspect", 401),
        ]
        assert len(pairs) == 1
        assert client.get("/users/me").status_code == 200  # the session lives on


def test_a_wrong_current_password_reaches_the_server_once_and_refreshes_nothing(
    serve: Callable[..., LiveServer],
) -> None:
    # With limits on, a resent guess would also spend a second password-change attempt.
    server = serve(rate_limit_enabled=True, login_rate_limit="2/minute")
    pairs: list[Mapping[str, Any]] = []
    traffic = Traffic()
    auth = token_auth(server, signed_in(server.client), pairs)
    wrong = {"current_password": "not the password", "new_password": "another good passphrase"}
    with httpx.Client(
        base_url=server.base_url, auth=auth, event_hooks={"response": [traffic.record]}
    ) as client:
        response = client.post("/auth/password", json=wrong)
        second = client.post("/auth/password", json=wrong)
        third = client.post("/auth/password", json=wrong)

    assert (response.status_code, response.json()["error"]) == (403, "invalid_credentials")
    assert (second.status_code, third.status_code) == (403, 429)  # one attempt each
    assert traffic.seen == [("/auth/password", 403)] * 2 + [("/auth/password", 429)]
    assert pairs == []


@pytest.mark.parametrize("cause", ["expired", "rejected"])
async def test_concurrent_async_requests_share_one_refresh(server: LiveServer, cause: str) -> None:
    first = signed_in(server.client)
    pairs: list[Mapping[str, Any]] = []
    traffic = Traffic()
    rejected = asyncio.Barrier(10)

    async def hold(response: httpx.Response) -> None:
        if response.request.url.path == "/auth/refresh":
            await asyncio.sleep(0.2)  # so that every other request waits for this one
        elif response.status_code == 401:
            await asyncio.wait_for(rejected.wait(), 5)  # all ten hold a rejected token

    if cause == "expired":
        auth = token_auth(server, first, pairs, expires_in=0)
    else:
        auth = token_auth(server, {**first, "access_token": "not-a-jwt"}, pairs)
    async with httpx.AsyncClient(
        base_url=server.base_url, auth=auth, event_hooks={"response": [traffic.arecord, hold]}
    ) as client:
        responses = await asyncio.gather(*(client.get("/users/me") for _ in range(10)))

    assert [response.status_code for response in responses] == [200] * 10
    assert traffic.refreshes == len(pairs) == 1
    assert {sent_bearer(response) for response in responses} == {pairs[0]["access_token"]}


@pytest.mark.parametrize("cause", ["expired", "rejected"])
def test_concurrent_sync_requests_share_one_refresh(server: LiveServer, cause: str) -> None:
    first = signed_in(server.client)
    pairs: list[Mapping[str, Any]] = []
    traffic = Traffic()
    rejected = threading.Barrier(10, timeout=5)

    def hold(response: httpx.Response) -> None:
        if response.request.url.path == "/auth/refresh":
            time.sleep(0.2)  # so that every other request waits for this one
        elif response.status_code == 401:
            rejected.wait()  # all ten hold a rejected token

    if cause == "expired":
        auth = token_auth(server, first, pairs, expires_in=0)
    else:
        auth = token_auth(server, {**first, "access_token": "not-a-jwt"}, pairs)
    with (
        httpx.Client(
            base_url=server.base_url, auth=auth, event_hooks={"response": [traffic.record, hold]}
        ) as client,
        ThreadPoolExecutor(max_workers=10) as pool,
    ):
        responses = list(pool.map(lambda _: client.get("/users/me"), range(10)))

    assert [response.status_code for response in responses] == [200] * 10
    assert traffic.refreshes == len(pairs) == 1
    assert {sent_bearer(response) for response in responses} == {pairs[0]["access_token"]}


@pytest.mark.parametrize(
    ("ending", "code"), [("logout-all", "token_revoked"), ("reuse", "token_reused")]
)
def test_a_refused_refresh_ends_the_session_for_good(
    serve: Callable[..., LiveServer], ending: str, code: str
) -> None:
    server = serve(refresh_grace=0)
    first = signed_in(server.client)
    if ending == "logout-all":
        ended = server.client.post("/auth/logout-all", headers=bearer(first["access_token"]))
    else:
        ended = refresh(server.client, first["refresh_token"])  # rotated out: now a reuse
    assert ended.is_success
    pairs: list[Mapping[str, Any]] = []
    traffic = Traffic()
    # After a logout the access token is refused (401, then a refresh); after a reuse
    # only the refresh token is, so that one has to be due.
    auth = token_auth(server, first, pairs, expires_in=0 if ending == "reuse" else 900)
    with httpx.Client(
        base_url=server.base_url, auth=auth, event_hooks={"response": [traffic.record]}
    ) as client:
        with pytest.raises(SessionEnded) as over:
            client.get("/users/me")
        assert over.value.code == code
        assert traffic.seen[-1] == ("/auth/refresh", 401)
        seen = len(traffic.seen)

        with pytest.raises(SessionEnded) as still_over:
            client.get("/users/me")
    assert still_over.value.code == code
    assert len(traffic.seen) == seen  # the server was not asked again
    assert pairs == []


async def test_an_async_request_after_logout_all_raises_session_ended(
    server: LiveServer,
) -> None:
    first = signed_in(server.client)
    server.client.post("/auth/logout-all", headers=bearer(first["access_token"]))
    auth = token_auth(server, first, [])
    async with httpx.AsyncClient(base_url=server.base_url, auth=auth) as client:
        with pytest.raises(SessionEnded) as over:
            await client.get("/users/me")
    assert over.value.code == "token_revoked"


@pytest.fixture
def stallable(
    serve: Callable[..., LiveServer],
    store_mode: str,
    store_settings: dict[str, str],
    request: pytest.FixtureRequest,
) -> Iterator[tuple[LiveServer, Callable[[], Callable[[], object]]]]:
    """A server with a short store timeout, and a function that stalls its store for a
    while and returns a function that waits until the stall is over."""
    settings: dict[str, Any] = {"store_timeout": 0.5}
    if store_mode == "redis":
        private: PrivateRedis = request.getfixturevalue("private_redis")
        settings["redis_url"] = private.url
    server = serve(**settings)
    waiters: list[Callable[[], object]] = []

    def stall() -> Callable[[], object]:
        if store_mode == "sqlite":
            database = Path(store_settings["data_dir"]) / "tokenstile.db"
            waiters.append(stall_sqlite(database, STALL_SECONDS).join)
        else:
            stall_redis(settings["redis_url"], STALL_SECONDS)
            over = time.monotonic() + STALL_SECONDS
            waiters.append(lambda: time.sleep(max(0.0, over - time.monotonic())))
        return waiters[-1]

    yield server, stall
    for wait in waiters:
        wait()


def test_a_store_outage_during_refresh_keeps_the_credentials(
    stallable: tuple[LiveServer, Callable[[], Callable[[], object]]],
) -> None:
    server, stall = stallable
    pairs: list[Mapping[str, Any]] = []
    auth = token_auth(server, signed_in(server.client), pairs, expires_in=0)
    with httpx.Client(base_url=server.base_url, auth=auth) as client:
        wait_until_over = stall()
        with pytest.raises(httpx.HTTPStatusError) as failed:
            client.get("/users/me")
        assert failed.value.response.status_code == 503
        assert failed.value.response.json()["error"] == "store_unavailable"
        assert pairs == []

        wait_until_over()
        response = client.get("/users/me")
    assert response.status_code == 200
    assert [pair["access_token"] for pair in pairs] == [sent_bearer(response)]


def test_a_network_error_during_refresh_is_raised_and_not_the_end(server: LiveServer) -> None:
    first = signed_in(server.client)
    auth = TokenAuth(
        f"http://127.0.0.1:{free_port()}",  # nobody listens: the refresh cannot connect
        access_token=first["access_token"],
        refresh_token=first["refresh_token"],
        expires_in=0,
    )
    with httpx.Client(base_url=server.base_url, auth=auth) as client:
        for _ in range(2):  # raised again, not turned into SessionEnded
            with pytest.raises(httpx.ConnectError):
                client.get("/users/me")
