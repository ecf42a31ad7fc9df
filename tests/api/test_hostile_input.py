"""Bad input is a 4xx on every store: nothing a client sends reaches the database in a
form it refuses (PostgreSQL rejects NUL characters and over-long strings), and only a
real outage answers 503."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.accounts import PASSWORD, bearer, register, signed_in
from tests.servers import LiveServer

HOSTILE_NAMES = ["ab\x00cd", "nul\x00" * 40, "x" * 5000, "tab\tname", "\x7f\x01\x02"]


@pytest.fixture
def server(serve: Callable[..., LiveServer]) -> LiveServer:
    # Limits on, so hostile names reach the rate counters in the store as well; high
    # enough that the registrations of other tests on a shared store never reach them.
    return serve(
        rate_limit_enabled=True, login_rate_limit="100/minute", register_rate_limit="1000/minute"
    )


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_usernames_get_4xx_and_the_store_stays_ready(server: LiveServer, name: str) -> None:
    registered = server.client.post("/auth/register", json={"username": name, "password": PASSWORD})
    logged_in = server.client.post("/auth/login", json={"username": name, "password": PASSWORD})
    granted = server.client.post(
        "/auth/token", data={"grant_type": "password", "username": name, "password": PASSWORD}
    )

    assert (registered.status_code, registered.json()["error"]) == (422, "invalid_request")
    # Over-long names stop at the request schema; the others are simply unknown accounts.
    assert (logged_in.status_code, logged_in.json()["error"]) in {
        (401, "invalid_credentials"),
        (422, "invalid_request"),
    }
    assert (granted.status_code, granted.json()["error"]) == (400, "invalid_grant")
    assert server.client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    "sid", ["%00abc", "a%00" * 30, "x" * 300, "%E2%80%AE-rtl", "..%2F..%2Fetc"]
)
def test_a_malformed_session_id_is_404_not_an_outage(server: LiveServer, sid: str) -> None:
    pair = signed_in(server.client)

    ended = server.client.delete(f"/auth/sessions/{sid}", headers=bearer(pair["access_token"]))

    assert (ended.status_code, ended.json()["error"]) == (404, "not_found")
    assert server.client.get("/readyz").status_code == 200


def test_a_client_address_that_is_not_an_ip_address_is_not_stored(server: LiveServer) -> None:
    # The in-process test server believes X-Forwarded-For from loopback (uvicorn's
    # default), so this is what a misconfigured proxy would hand tokenstile.
    username = register(server.client)
    response = server.client.post(
        "/auth/login",
        json={"username": username, "password": PASSWORD},
        headers={"X-Forwarded-For": "not-an-address-" + "y" * 100, "User-Agent": "agent-" * 300},
    )
    assert response.status_code == 200, response.text

    listed = server.client.get(
        "/auth/sessions", headers=bearer(response.json()["access_token"])
    ).json()

    assert [session["ip"] for session in listed] == [None]
    assert len(listed[0]["user_agent"]) == 512


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "The body is not valid JSON."),
        (b"[1, 2]", "The body must be a JSON object."),
        (b'"a string"', "The body must be a JSON object."),
        (b'{"password": "correct horse battery"}', "username is required."),
        (b'{"username": 5, "password": "correct horse battery"}', "username must be a string."),
    ],
    ids=["malformed", "array", "string", "missing-field", "wrong-type"],
)
def test_a_bad_body_is_explained_without_the_parsers_internals(
    server: LiveServer, body: bytes, expected: str
) -> None:
    response = server.client.post(
        "/auth/login", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json() == {"error": "invalid_request", "detail": expected}
