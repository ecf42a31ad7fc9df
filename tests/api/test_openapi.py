"""The OpenAPI document tells the truth (issue 10 item 2): every route lists the statuses
and error codes it can answer with, in the bodies it really sends, and the answers a live
server gives (to generated requests and to real flows) match it, checked by schemathesis."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.errors import FailureGroup
from schemathesis.generation import GenerationMode

import tokenstile
from tests.accounts import PASSWORD, bearer, new_username, register
from tests.api.conftest import make_settings
from tests.servers import LiveServer
from tokenstile.api import create_app

INTROSPECTION_SECRET = "introspection-" + "s" * 32
TOKEN_ERRORS = {"invalid_token", "token_expired", "token_revoked"}
BODY_ERRORS = {400: {"invalid_request"}, 408: {"invalid_request"}, 413: {"invalid_request"}}
OAUTH_LIMITS = {408: {"invalid_request"}, 413: {"invalid_request"}}
UNAVAILABLE = {503: {"store_unavailable"}}
BEARER = {401: TOKEN_ERRORS, **UNAVAILABLE}

# Each route's statuses: None for a success, the error codes for an error.
EXPECTED: dict[tuple[str, str], dict[int, set[str] | None]] = {
    ("post", "/auth/register"): {
        201: None,
        **BODY_ERRORS,
        403: {"registration_closed"},
        409: {"username_taken"},
        422: {"invalid_request", "weak_password"},
        429: {"rate_limited"},
        **UNAVAILABLE,
    },
    ("post", "/auth/login"): {
        200: None,
        **BODY_ERRORS,
        401: {"invalid_credentials"},
        422: {"invalid_request"},
        429: {"rate_limited"},
        **UNAVAILABLE,
    },
    ("post", "/auth/refresh"): {
        200: None,
        **BODY_ERRORS,
        401: {*TOKEN_ERRORS, "token_reused"},
        403: {"csrf_failed"},
        422: {"invalid_request"},
        429: {"rate_limited"},
        **UNAVAILABLE,
    },
    ("post", "/auth/logout"): {
        204: None,
        **BODY_ERRORS,
        **BEARER,
        403: {"csrf_failed"},
        422: {"invalid_request"},
    },
    ("post", "/auth/logout-all"): {204: None, **BEARER},
    ("get", "/auth/sessions"): {200: None, **BEARER},
    ("delete", "/auth/sessions/{sid}"): {204: None, **BEARER, 404: {"not_found"}},
    ("post", "/auth/password"): {
        204: None,
        **BODY_ERRORS,
        **BEARER,
        401: {*TOKEN_ERRORS, "invalid_credentials"},
        403: {"invalid_credentials"},
        422: {"invalid_request", "weak_password"},
        429: {"rate_limited"},
    },
    ("get", "/users/me"): {200: None, **BEARER},
    ("post", "/auth/token"): {
        200: None,
        400: {"invalid_request", "invalid_grant", "invalid_scope", "unsupported_grant_type"},
        401: {"invalid_client"},
        **OAUTH_LIMITS,
        429: {"slow_down"},
        503: {"temporarily_unavailable"},
    },
    ("post", "/auth/revoke"): {
        200: None,
        400: {"invalid_request"},
        401: {"invalid_client"},
        **OAUTH_LIMITS,
        503: {"temporarily_unavailable"},
    },
    ("post", "/auth/introspect"): {
        200: None,
        400: {"invalid_request"},
        401: {"invalid_client"},
        404: {"not_found"},
        **OAUTH_LIMITS,
        503: {"temporarily_unavailable"},
    },
    ("get", "/.well-known/jwks.json"): {200: None},
    ("get", "/.well-known/oauth-authorization-server"): {200: None},
    ("get", "/healthz"): {200: None},
    ("get", "/readyz"): {200: None, **UNAVAILABLE},
    ("get", "/metrics"): {200: None},
}
JSON = {"Content-Type": "application/json"}
OAUTH_ROUTES = {"/auth/token", "/auth/revoke", "/auth/introspect"}
# What the conformance checks look at: the status, the Content-Type, the body's schema
# and the documented headers, besides "no 5xx".
CONFORMANCE = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = {
        "data_dir": str(tmp_path_factory.mktemp("data")),
        "secret_key": secrets.token_urlsafe(32),
    }
    openapi: dict[str, Any] = create_app(make_settings(settings)).openapi()
    return openapi


def operations(document: dict[str, Any]) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    for path, by_method in document["paths"].items():
        for method, operation in by_method.items():
            yield (method, path), operation


def documented_codes(response: dict[str, Any]) -> set[str] | None:
    content = response.get("content", {}).get("application/json", {})
    enum = content.get("schema", {}).get("properties", {}).get("error", {}).get("enum")
    return None if enum is None else set(enum)


def test_every_route_documents_each_status_and_error_code_it_can_answer(
    document: dict[str, Any],
) -> None:
    found = {
        key: {
            int(status): documented_codes(response)
            for status, response in operation["responses"].items()
        }
        for key, operation in operations(document)
    }

    assert found == EXPECTED


def test_error_answers_are_documented_with_the_body_tokenstile_sends(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorBody"]["required"]) == {"error", "detail"}
    assert set(schemas["OAuthErrorBody"]["required"]) == {"error", "error_description"}
    assert "HTTPValidationError" not in schemas
    for (_, path), operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]
            oauth_answer = path in OAUTH_ROUTES and int(status) not in (404, 408, 413)
            body = "OAuthErrorBody" if oauth_answer else "ErrorBody"
            assert schema["$ref"] == f"#/components/schemas/{body}", (path, status)
            for code in documented_codes(response) or ():
                assert f"`{code}`" in response["description"], (path, status, code)


def test_bearer_challenges_and_retry_after_are_documented(document: dict[str, Any]) -> None:
    me = document["paths"]["/users/me"]["get"]["responses"]
    login = document["paths"]["/auth/login"]["post"]["responses"]
    password = document["paths"]["/auth/password"]["post"]["responses"]

    assert me["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert me["503"]["headers"]["Retry-After"]["required"] is True
    assert login["429"]["headers"]["Retry-After"]["required"] is True
    assert "headers" not in login["401"]  # invalid_credentials carries no challenge
    # A disabled account's 401 has none either, so the header is not always there.
    assert password["401"]["headers"]["WWW-Authenticate"]["required"] is False


def test_every_operation_has_a_summary_and_a_description(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document):
        assert operation.get("summary"), (method, path)
        if path == "/metrics":
            continue  # api/metrics.py's route: documented by its owner, not here
        assert operation.get("description"), (method, path)


def test_the_oauth_endpoints_document_the_forms_they_read(document: dict[str, Any]) -> None:
    forms = {
        path: document["paths"][path]["post"]["requestBody"]["content"][
            "application/x-www-form-urlencoded"
        ]["schema"]
        for path in OAUTH_ROUTES
    }

    assert forms["/auth/token"]["required"] == ["grant_type"]
    assert "client_secret" not in forms["/auth/token"]["properties"]
    assert forms["/auth/revoke"]["required"] == ["token"]
    assert forms["/auth/introspect"]["required"] == ["token"]


def test_the_document_states_the_package_version(document: dict[str, Any]) -> None:
    assert document["info"]["version"] == tokenstile.__version__


# Conformance against a live server.


@pytest.fixture
def store_mode() -> str:
    """SQLite only: the document describes the HTTP layer, which no store changes."""
    return "sqlite"


@pytest.fixture
def live(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(refresh_grace=0, introspection_secret=INTROSPECTION_SECRET)


@pytest.fixture
def schema(live: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{live.base_url}/openapi.json")


def fresh_bearer(server: LiveServer) -> dict[str, str]:
    username = register(server.client)
    response = server.client.post("/auth/login", json={"username": username, "password": PASSWORD})
    return bearer(response.json()["access_token"])


def run_generated(operation: Any, mode: GenerationMode, server: LiveServer) -> set[int]:
    """Call ``server`` with generated requests for ``operation``; fail on any answer
    that does not conform. The statuses it answered with."""
    secured = bool(operation.definition.raw.get("security"))
    statuses: set[int] = set()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the budget is for coverage
        suppress_health_check=list(HealthCheck),
    )
    def answers_conform(case: Any) -> None:
        headers = {}
        if secured:
            headers = fresh_bearer(server)  # a live session of its own, which it may end
        elif case.path == "/auth/introspect":
            headers = bearer(INTROSPECTION_SECRET)
        response = case.call(base_url=server.base_url, headers=headers)
        statuses.add(response.status_code)
        case.validate_response(response, checks=CONFORMANCE)

    try:
        answers_conform()
    except Unsatisfiable:
        # Input that accepts anything (a free-form path segment) has no wrong form.
        if mode is not GenerationMode.NEGATIVE:
            raise
    return statuses


def test_answers_to_generated_requests_match_the_document(schema: Any, live: LiveServer) -> None:
    seen: dict[str, set[int]] = {}

    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if {"parameters", "requestBody"} & operation.definition.raw.keys():
            modes.append(GenerationMode.NEGATIVE)  # there is input to get wrong
        for mode in modes:
            seen.setdefault(operation.label, set()).update(run_generated(operation, mode, live))

    # The requests reached past authentication and validation, not only their errors.
    assert 200 in seen["GET /users/me"]
    assert 200 in seen["GET /auth/sessions"]
    assert 404 in seen["DELETE /auth/sessions/{sid}"]
    assert 422 in seen["POST /auth/login"]
    assert 401 in seen["POST /auth/login"]
    assert 400 in seen["POST /auth/token"]


class Flow:
    """Requests of a real client, each answer checked against its operation's entry."""

    def __init__(self, schema: Any, server: LiveServer) -> None:
        self.schema = schema
        self.server = server
        self.client = httpx.Client(base_url=server.base_url, timeout=10)

    def __call__(self, method: str, path: str, template: str | None = None, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        case = self.schema[template or path][method].Case()
        case.validate_response(response, checks=CONFORMANCE)
        return response


@pytest.fixture
def flow(schema: Any, live: LiveServer) -> Iterator[Flow]:
    flow = Flow(schema, live)
    yield flow
    flow.client.close()


def status_and_code(response: httpx.Response) -> tuple[int, str | None]:
    error = response.json().get("error") if response.content else None
    return response.status_code, error


def test_answers_of_the_account_and_session_flows_match_the_document(flow: Flow) -> None:
    username = new_username()
    account = {"username": username, "password": PASSWORD}
    answers = [
        flow("POST", "/auth/register", json=account),
        flow("POST", "/auth/register", json=account),
        flow("POST", "/auth/register", json={"username": new_username(), "password": "short"}),
        flow("POST", "/auth/login", json={**account, "password": "wrong password"}),
        flow("POST", "/auth/login", content=b'{"username": "\xff"}', headers=JSON),
        flow("POST", "/auth/login", json={"username": username}),
        flow("POST", "/auth/login", content=b"x" * 70_000),
    ]
    first = flow("POST", "/auth/login", json=account).json()
    second = flow("POST", "/auth/login", json=account).json()
    rotated = flow("POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]})
    me = bearer(rotated.json()["access_token"])
    sessions = flow("GET", "/auth/sessions", headers=me).json()
    other = next(session["id"] for session in sessions if not session["current"])
    answers += [
        flow("POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]}),
        flow("POST", "/auth/refresh", json={}),
        flow("GET", "/users/me", headers=bearer(second["access_token"])),
        flow("GET", "/users/me"),
        flow("POST", "/auth/logout-all", headers=bearer("not-a-token")),
    ]
    # The replay above ended the rotated session (token_reused): sign in again.
    fresh = flow("POST", "/auth/login", json=account).json()
    me = bearer(fresh["access_token"])
    answers += [
        flow("DELETE", f"/auth/sessions/{other}", "/auth/sessions/{sid}", headers=me),
        flow("DELETE", "/auth/sessions/nobody", "/auth/sessions/{sid}", headers=me),
        flow(
            "POST",
            "/auth/password",
            headers=me,
            json={"current_password": "wrong password", "new_password": PASSWORD + "!"},
        ),
        flow(
            "POST",
            "/auth/password",
            headers=me,
            json={"current_password": PASSWORD, "new_password": "short"},
        ),
        flow(
            "POST",
            "/auth/refresh",
            headers={"Cookie": f"tokenstile_refresh={fresh['refresh_token']}"},
        ),
        flow("POST", "/auth/logout", headers=me, json={"refresh_token": fresh["refresh_token"]}),
        flow("POST", "/auth/logout"),
    ]

    assert [status_and_code(answer) for answer in answers] == [
        (201, None),
        (409, "username_taken"),
        (422, "weak_password"),
        (401, "invalid_credentials"),
        (400, "invalid_request"),
        (422, "invalid_request"),
        (413, "invalid_request"),
        (401, "token_reused"),
        (422, "invalid_request"),
        (200, None),
        (401, "invalid_token"),
        (401, "invalid_token"),
        (204, None),
        (404, "not_found"),
        (403, "invalid_credentials"),
        (422, "weak_password"),
        (403, "csrf_failed"),
        (204, None),
        (401, "invalid_token"),
    ]
    assert rotated.status_code == 200


def test_answers_of_the_oauth_endpoints_match_the_document(flow: Flow) -> None:
    username = register(flow.server.client)
    password_grant = {"grant_type": "password", "username": username, "password": PASSWORD}
    secret = base64.b64encode(b"tokenstile:a-secret").decode()
    granted = flow("POST", "/auth/token", data=password_grant)
    token = granted.json()["refresh_token"]
    introspector = bearer(INTROSPECTION_SECRET)
    answers = [
        granted,
        flow("POST", "/auth/token", data={"grant_type": "refresh_token", "refresh_token": token}),
        flow("POST", "/auth/token", data={**password_grant, "password": "wrong password"}),
        flow("POST", "/auth/token", data={**password_grant, "scope": "admin"}),
        flow("POST", "/auth/token", data={"grant_type": "client_credentials"}),
        flow("POST", "/auth/token", json=password_grant),
        flow(
            "POST", "/auth/token", data=password_grant, headers={"Authorization": f"Basic {secret}"}
        ),
        flow("POST", "/auth/introspect", data={"token": granted.json()["access_token"]}),
        flow("POST", "/auth/introspect", headers=introspector, data={"token": "nonsense"}),
        flow(
            "POST",
            "/auth/introspect",
            headers=introspector,
            data={"token": granted.json()["access_token"]},
        ),
        flow("POST", "/auth/revoke", data={"token": granted.json()["access_token"]}),
        flow("POST", "/auth/revoke", data={}),
        flow("GET", "/.well-known/jwks.json"),
        flow("GET", "/.well-known/oauth-authorization-server"),
        flow("GET", "/healthz"),
        flow("GET", "/readyz"),
    ]

    assert [(answer.status_code, answer.json().get("error")) for answer in answers[:7]] == [
        (200, None),
        (200, None),
        (400, "invalid_grant"),
        (400, "invalid_scope"),
        (400, "unsupported_grant_type"),
        (400, "invalid_request"),
        (401, "invalid_client"),
    ]
    assert [answer.status_code for answer in answers[7:]] == [
        401,
        200,
        200,
        200,
        400,
        200,
        200,
        200,
        200,
    ]
    assert answers[8].json() == {"active": False}
    assert answers[9].json()["active"] is True


def test_limits_and_closed_registration_answer_as_documented(
    serve: Callable[..., LiveServer], schema: Any
) -> None:
    closed = serve(allow_registration=False, rate_limit_enabled=True)
    flow = Flow(schema, closed)
    attempt = {"username": new_username(), "password": "wrong password"}

    registration = flow("POST", "/auth/register", json={**attempt, "password": PASSWORD})
    logins = [flow("POST", "/auth/login", json=attempt) for _ in range(6)]
    grants = [
        flow("POST", "/auth/token", data={"grant_type": "password", **attempt}) for _ in range(2)
    ]
    flow.client.close()

    assert status_and_code(registration) == (403, "registration_closed")
    assert [status_and_code(login) for login in logins] == [
        *[(401, "invalid_credentials")] * 5,
        (429, "rate_limited"),
    ]
    assert [status_and_code(grant) for grant in grants] == [(429, "slow_down")] * 2


def test_the_conformance_checks_refuse_an_undocumented_code_status_or_header(
    schema: Any, live: LiveServer
) -> None:
    case = schema["/users/me"]["GET"].Case()
    challenge = {"WWW-Authenticate": "Bearer"}

    def answer(status: int, body: dict[str, str], headers: dict[str, str]) -> httpx.Response:
        response = httpx.Response(status, json=body, headers=headers)
        response.request = httpx.Request("GET", f"{live.base_url}/users/me")
        response.elapsed = timedelta(0)
        return response

    wrong = [
        answer(401, {"error": "made_up", "detail": "x"}, challenge),
        answer(401, {"error": "invalid_token"}, challenge),
        answer(401, {"error": "invalid_token", "detail": "x"}, {}),
        answer(409, {"error": "username_taken", "detail": "x"}, {}),
    ]

    for response in wrong:
        with pytest.raises(FailureGroup):
            case.validate_response(response, checks=CONFORMANCE)
    right = answer(401, {"error": "invalid_token", "detail": "x"}, challenge)
    case.validate_response(right, checks=CONFORMANCE)
