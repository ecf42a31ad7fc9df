"""Hostile bytes at a live server (issue 11 item 3): any body, in any content type, on
every route that reads one — the JSON routes and the form parser of the OAuth
endpoints — gets a 2xx or a documented 4xx in the documented error body, never a 5xx.
Then schemathesis against our own OpenAPI document on the Redis store mode (the
SQLite run is in ``test_openapi.py``, whose helpers this reuses).

Everything runs against the Redis store mode: sessions, rotation state and denylist in
Redis, users in SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from tests.accounts import PASSWORD, bearer, register
from tests.api.test_openapi import EXPECTED, INTROSPECTION_SECRET, OAUTH_ROUTES, run_generated
from tests.servers import LiveServer

FUZZ = settings(
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the budget is for coverage
    suppress_health_check=list(HealthCheck),
)
JSON_ROUTES = {
    "/auth/register": ("username", "password"),
    "/auth/login": ("username", "password", "remember_me"),
    "/auth/refresh": ("refresh_token",),
    "/auth/logout": ("refresh_token",),
    "/auth/logout-all": (),
    "/auth/password": ("current_password", "new_password"),
}
FORM_ROUTES = {
    "/auth/token": ("grant_type", "username", "password", "refresh_token", "client_id", "scope"),
    "/auth/revoke": ("token", "token_type_hint", "client_id"),
    "/auth/introspect": ("token",),
}
BEARER_ROUTES = {"/auth/logout", "/auth/logout-all", "/auth/password"}
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "application/json; charset=utf-16",
    "application/x-www-form-urlencoded; charset=latin-1",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "text/plain",
    "multipart/form-data; boundary=xyz",
    "application/merge-patch+json",
    "*/*",
    "",
]
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
# Lone surrogates: JSON can spell them ("\udc80"), and Python decodes them into str.
nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\udc80", "\ud800x", "a\x00b", "x" * 5_000, "%00", "é", "\u202e"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=8,
)


def json_bodies(fields: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """Objects with the route's own fields (of any type) and others, or any JSON at all."""
    objects = st.fixed_dictionaries(
        {}, optional=dict.fromkeys(fields, json_values)
    ) | st.dictionaries(nasty_text, json_values, max_size=4)
    return st.one_of(objects, json_values).flatmap(
        lambda value: st.sampled_from(
            [
                json.dumps(value).encode(),
                json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"),
            ]
        )
    )


def form_bodies(fields: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """Forms with the route's own fields, repeated or empty, and raw percent-junk."""
    names = st.sampled_from(fields) | ascii_text if fields else ascii_text
    values = st.sampled_from(["password", "refresh_token", "client_credentials", ""]) | nasty_text
    pairs = st.lists(st.tuples(names, values), max_size=40)
    encoded = pairs.map(
        lambda items: urlencode(
            [(name, value.encode("utf-8", "surrogatepass")) for name, value in items]
        ).encode()
    )
    raw = st.lists(st.sampled_from(["=", "&", "%", "%zz", "%ff", "%00", "+", ";", "a", "é"]))
    return encoded | raw.map(lambda parts: "".join(parts).encode())


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    path = draw(st.sampled_from(sorted({**JSON_ROUTES, **FORM_ROUTES})))
    fields = {**JSON_ROUTES, **FORM_ROUTES}[path]
    body = draw(st.binary(max_size=400) | json_bodies(fields) | form_bodies(fields))
    headers = {"Content-Type": draw(st.sampled_from(CONTENT_TYPES) | ascii_text)}
    if draw(st.booleans()):  # the cookie transport, with its CSRF checks
        headers |= {
            "X-Token-Transport": "cookie",
            "Cookie": f"tokenstile_refresh={quote(draw(ascii_text))}",
            "X-CSRF-Token": draw(ascii_text),
            "Origin": draw(st.sampled_from(["http://127.0.0.1", "null", ""]) | ascii_text),
        }
    if path in FORM_ROUTES and path != "/auth/introspect" and draw(st.booleans()):
        headers["Authorization"] = draw(st.sampled_from(["Basic ", "Bearer x", "Basic %%%"]))
        headers["Authorization"] += draw(ascii_text)
    # h11 refuses to send a header value with surrounding whitespace.
    return path, body, {name: value.strip() for name, value in headers.items()}


def assert_documented(path: str, response: httpx.Response) -> None:
    """A 2xx, or a 4xx this route documents, in the body the document gives it."""
    status = response.status_code
    assert status < 500, (path, status, response.text)
    documented = EXPECTED[("post", path)]
    assert status in documented, (path, status, response.text)
    if status == 204:
        return
    body = response.json()
    if status >= 400:
        oauth_answer = path in OAUTH_ROUTES and status not in (404, 408, 413)
        assert {"error", "error_description" if oauth_answer else "detail"} <= body.keys()
        assert body["error"] in (documented[status] or ()), (path, status, body)


@pytest.fixture
def store_mode() -> str:
    return "redis"


@pytest.fixture
def live(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(introspection_secret=INTROSPECTION_SECRET)


def test_hostile_bodies_get_a_documented_answer_never_a_5xx(live: LiveServer) -> None:
    username = register(live.client)
    credentials = {"username": username, "password": PASSWORD}

    @settings(FUZZ, max_examples=400)
    @given(request=hostile_requests())
    @example(request=("/auth/refresh", b'{"refresh_token": "\\udc80"}', {}))
    @example(request=("/auth/logout", b'{"refresh_token": "a\\ud800.b.c"}', {}))
    @example(request=("/auth/login", b'{"username": "\\udc80", "password": "x"}', {}))
    @example(request=("/auth/token", b"grant_type=refresh_token&refresh_token=%ED%A0%80", {}))
    def answers_are_documented(request: tuple[str, bytes, dict[str, str]]) -> None:
        path, body, headers = request
        headers = {"Content-Type": "application/json", **headers}
        if path in BEARER_ROUTES:  # a session of its own, which the request may end
            login = live.client.post("/auth/login", json=credentials)
            headers |= bearer(login.json()["access_token"])
        elif path == "/auth/introspect":
            headers |= bearer(INTROSPECTION_SECRET)
        response = live.client.post(path, content=body, headers=headers)
        assert_documented(path, response)

    answers_are_documented()
    assert live.client.get("/readyz").status_code == 200


def test_the_token_endpoint_form_parser_answers_every_form_with_an_oauth_error(
    live: LiveServer,
) -> None:
    username = register(live.client)

    @settings(FUZZ, max_examples=250)
    @given(
        body=form_bodies(FORM_ROUTES["/auth/token"]),
        content_type=st.sampled_from(CONTENT_TYPES[1:5]),
    )
    @example(body=f"grant_type=password&username={username}&password=x".encode(), content_type="")
    @example(body=b"&".join([b"a=1"] * 40), content_type="application/x-www-form-urlencoded")
    @example(body=b"grant_type=password&grant_type=password", content_type=CONTENT_TYPES[1])
    def answers_are_oauth_errors(body: bytes, content_type: str) -> None:
        response = live.client.post(
            "/auth/token", content=body, headers={"Content-Type": content_type}
        )
        assert_documented("/auth/token", response)
        if response.status_code == 200:  # only a real grant can succeed
            assert response.json()["token_type"] == "Bearer"

    answers_are_oauth_errors()


def test_answers_to_generated_requests_match_the_document_on_redis(live: LiveServer) -> None:
    schema: Any = schemathesis.openapi.from_url(f"{live.base_url}/openapi.json")
    seen: dict[str, set[int]] = {}

    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if {"parameters", "requestBody"} & operation.definition.raw.keys():
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            seen.setdefault(operation.label, set()).update(run_generated(operation, mode, live))

    # The requests reached the store, not only validation: sessions live in Redis here.
    assert 200 in seen["GET /users/me"]
    assert 200 in seen["GET /auth/sessions"]
    assert 404 in seen["DELETE /auth/sessions/{sid}"]
