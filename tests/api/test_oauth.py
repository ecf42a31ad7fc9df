"""The standards surface with unmodified OAuth 2.0 clients: Authlib and requests-oauthlib.

Each test names the RFC section it proves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from oauthlib.oauth2 import LegacyApplicationClient
from oauthlib.oauth2.rfc6749.errors import InvalidGrantError
from pydantic import ValidationError
from requests_oauthlib import OAuth2Session

from tests.accounts import PASSWORD, bearer, register
from tests.conftest import store_modes
from tests.servers import LiveServer
from tokenstile.settings import Settings

INTROSPECTION_SECRET = "introspect-" + "s" * 32


@pytest.fixture(params=store_modes("sqlite", "redis"))
def store_mode(request: pytest.FixtureRequest) -> str:
    """Protocol behaviour does not depend on the SQL dialect: SQLite and Redis suffice."""
    return str(request.param)


@pytest.fixture
def oauth_server(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(access_ttl=2, leeway=0, refresh_grace=0, introspection_secret=INTROSPECTION_SECRET)


def token_form(server: LiveServer, **form: str) -> httpx.Response:
    return server.client.post("/auth/token", data=form)


def test_rfc6749_4_3_password_grant_with_authlib(oauth_server: LiveServer) -> None:
    username = register(oauth_server.client)
    updates: list[dict[str, Any]] = []
    session = AuthlibSession(
        client_id="authlib-app",
        token_endpoint_auth_method="none",
        token_endpoint=f"{oauth_server.base_url}/auth/token",
        update_token=lambda token, refresh_token=None, access_token=None: updates.append(token),
        leeway=1,
    )
    token = session.fetch_token(
        f"{oauth_server.base_url}/auth/token", username=username, password=PASSWORD
    )

    assert token["token_type"] == "Bearer"
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == "authlib-app"  # RFC 9068 §2.2
    assert session.get(f"{oauth_server.base_url}/users/me").json()["username"] == username

    time.sleep(2.2)  # the access token expires; Authlib refreshes by itself (RFC 6749 §6)
    me = session.get(f"{oauth_server.base_url}/users/me")

    assert me.status_code == 200
    assert len(updates) == 1
    assert updates[0]["refresh_token"] != token["refresh_token"]
    session.close()


def test_rfc6749_6_refresh_with_requests_oauthlib_and_invalid_grant_on_replay(
    oauth_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # a local http test server
    username = register(oauth_server.client)
    token_url = f"{oauth_server.base_url}/auth/token"
    saved: list[dict[str, Any]] = []
    session = OAuth2Session(
        client=LegacyApplicationClient(client_id="cli-app"),
        auto_refresh_url=token_url,
        auto_refresh_kwargs={"client_id": "cli-app"},
        token_updater=saved.append,
    )
    first = session.fetch_token(
        token_url, username=username, password=PASSWORD, include_client_id=True
    )
    assert session.get(f"{oauth_server.base_url}/users/me").status_code == 200

    time.sleep(3)  # oauthlib rounds the issue time, so allow a whole second more
    me = session.get(f"{oauth_server.base_url}/users/me")

    assert me.status_code == 200
    assert len(saved) == 1
    with pytest.raises(InvalidGrantError):
        session.refresh_token(token_url, refresh_token=first["refresh_token"], client_id="cli-app")
    session.close()


def test_rfc6749_5_1_success_is_not_cached(oauth_server: LiveServer) -> None:
    username = register(oauth_server.client)

    response = token_form(oauth_server, grant_type="password", username=username, password=PASSWORD)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert {"access_token", "token_type", "expires_in", "refresh_token"} <= set(body)
    assert body["expires_in"] == 2


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"grant_type": "password", "username": "x"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token"}, 400, "invalid_request"),
        ({"grant_type": "authorization_code", "code": "x"}, 400, "unsupported_grant_type"),
        (
            {"grant_type": "password", "username": "nobody", "password": "wrong-pass"},
            400,
            "invalid_grant",
        ),
        ({"grant_type": "refresh_token", "refresh_token": "a.b.c"}, 400, "invalid_grant"),
        (
            {"grant_type": "password", "username": "a", "password": "b", "scope": "admin"},
            400,
            "invalid_scope",
        ),
        (
            {"grant_type": "password", "username": "a", "password": "b", "client_secret": "s"},
            401,
            "invalid_client",
        ),
    ],
)
def test_rfc6749_5_2_errors(
    server: LiveServer, form: dict[str, str], status: int, error: str
) -> None:
    response = token_form(server, **form)

    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["error_description"]
    assert response.headers["cache-control"] == "no-store"


def test_rfc6749_3_2_json_bodies_and_repeated_parameters_are_invalid_requests(
    server: LiveServer,
) -> None:
    as_json = server.client.post("/auth/token", json={"grant_type": "password"})
    repeated = server.client.post(
        "/auth/token",
        content=b"grant_type=password&grant_type=refresh_token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    assert (repeated.status_code, repeated.json()["error"]) == (400, "invalid_request")


def test_rfc6749_2_3_1_a_public_client_may_identify_itself_with_basic_and_no_secret(
    server: LiveServer,
) -> None:
    username = register(server.client)

    public = server.client.post(
        "/auth/token",
        data={"grant_type": "password", "username": username, "password": PASSWORD},
        auth=("basic-app", ""),
    )
    secret = server.client.post(
        "/auth/token",
        data={"grant_type": "password", "username": username, "password": PASSWORD},
        auth=("basic-app", "a secret"),
    )

    assert public.status_code == 200
    claims = jwt.decode(public.json()["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == "basic-app"
    assert (secret.status_code, secret.json()["error"]) == (401, "invalid_client")
    assert secret.headers["www-authenticate"].startswith("Basic")


def test_rfc7009_revocation_ends_the_session_and_accepts_unknown_tokens(server: LiveServer) -> None:
    username = register(server.client)
    pair = token_form(server, grant_type="password", username=username, password=PASSWORD).json()

    revoked = server.client.post(
        "/auth/revoke", data={"token": pair["refresh_token"], "token_type_hint": "refresh_token"}
    )
    unknown = server.client.post("/auth/revoke", data={"token": "not-a-token"})
    missing = server.client.post("/auth/revoke", data={})

    assert revoked.status_code == 200
    assert unknown.status_code == 200
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
    assert server.client.get("/users/me", headers=bearer(pair["access_token"])).status_code == 401
    again = token_form(server, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert again.json()["error"] == "invalid_grant"


def test_rfc7009_revoking_an_access_token_ends_its_session(server: LiveServer) -> None:
    username = register(server.client)
    pair = token_form(server, grant_type="password", username=username, password=PASSWORD).json()

    server.client.post("/auth/revoke", data={"token": pair["access_token"]})

    assert server.client.get("/users/me", headers=bearer(pair["access_token"])).status_code == 401


def test_rfc7662_introspection_reports_active_tokens_of_both_types(
    oauth_server: LiveServer,
) -> None:
    username = register(oauth_server.client)
    pair = token_form(
        oauth_server, grant_type="password", username=username, password=PASSWORD, client_id="svc"
    ).json()
    caller = {"Authorization": f"Bearer {INTROSPECTION_SECRET}"}

    access = oauth_server.client.post(
        "/auth/introspect", data={"token": pair["access_token"]}, headers=caller
    ).json()
    refresh = oauth_server.client.post(
        "/auth/introspect", data={"token": pair["refresh_token"]}, headers=caller
    ).json()

    access_claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    refresh_claims = jwt.decode(pair["refresh_token"], options={"verify_signature": False})
    assert access["active"] is True
    assert access["token_type"] == "access_token"
    assert access["sub"] == access_claims["sub"]
    assert access["client_id"] == "svc"
    assert (access["exp"], access["iat"], access["sid"]) == (
        access_claims["exp"],
        access_claims["iat"],
        access_claims["sid"],
    )
    assert refresh["active"] is True
    assert refresh["token_type"] == "refresh_token"
    assert (refresh["exp"], refresh["iat"]) == (refresh_claims["exp"], refresh_claims["iat"])


def test_rfc7662_inactive_for_rotated_revoked_expired_and_garbage(oauth_server: LiveServer) -> None:
    username = register(oauth_server.client)
    pair = token_form(
        oauth_server, grant_type="password", username=username, password=PASSWORD
    ).json()
    caller = {"Authorization": f"Bearer {INTROSPECTION_SECRET}"}
    child = token_form(
        oauth_server, grant_type="refresh_token", refresh_token=pair["refresh_token"]
    ).json()

    def active(token: str) -> bool:
        response = oauth_server.client.post(
            "/auth/introspect", data={"token": token}, headers=caller
        )
        assert response.status_code == 200
        return bool(response.json()["active"])

    assert active(child["refresh_token"])
    assert not active(pair["refresh_token"])  # rotated out
    assert not active("garbage")
    time.sleep(2.2)
    assert not active(child["access_token"])  # expired
    oauth_server.client.post("/auth/revoke", data={"token": child["refresh_token"]})
    assert not active(child["refresh_token"])  # revoked


def test_rfc7662_the_caller_must_present_the_introspection_secret(
    oauth_server: LiveServer, server: LiveServer
) -> None:
    anonymous = oauth_server.client.post("/auth/introspect", data={"token": "x"})
    wrong = oauth_server.client.post(
        "/auth/introspect", data={"token": "x"}, headers={"Authorization": "Bearer wrong"}
    )
    disabled = server.client.post("/auth/introspect", data={"token": "x"})

    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert disabled.status_code == 404


def test_rfc7662_introspection_off_answers_as_an_unknown_route(server: LiveServer) -> None:
    disabled = server.client.post("/auth/introspect", data={"token": "x"})
    unknown = server.client.post("/auth/no-such-route", data={"token": "x"})

    assert (disabled.status_code, disabled.json()["error"]) == (404, "not_found")
    assert disabled.json() == unknown.json()


def test_rfc8414_metadata_and_the_openapi_form_list_the_grants_the_endpoint_accepts(
    oauth_server: LiveServer,
) -> None:
    metadata = oauth_server.client.get("/.well-known/oauth-authorization-server").json()
    document = oauth_server.client.get("/openapi.json").json()
    form = document["paths"]["/auth/token"]["post"]["requestBody"]["content"][
        "application/x-www-form-urlencoded"
    ]["schema"]

    listed = metadata["grant_types_supported"]
    assert form["properties"]["grant_type"]["enum"] == listed
    for grant_type in listed:
        # Known, so refused for its missing parameters, not as an unsupported grant.
        answer = token_form(oauth_server, grant_type=grant_type)
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")
    unlisted = token_form(oauth_server, grant_type="client_credentials")
    assert unlisted.json()["error"] == "unsupported_grant_type"


def test_rfc8414_metadata_names_the_endpoints(oauth_server: LiveServer) -> None:
    response = oauth_server.client.get("/.well-known/oauth-authorization-server")
    metadata = response.json()

    # Without PUBLIC_URL and with a non-URL issuer, the locations are relative paths.
    assert metadata["issuer"] == "tokenstile"
    assert metadata["token_endpoint"] == "/auth/token"
    assert metadata["revocation_endpoint"] == "/auth/revoke"
    assert metadata["introspection_endpoint"] == "/auth/introspect"
    assert metadata["jwks_uri"] == "/.well-known/jwks.json"
    assert set(metadata["grant_types_supported"]) == {"password", "refresh_token"}
    assert metadata["token_endpoint_auth_methods_supported"] == ["none"]


@pytest.mark.parametrize("public_url", [None, "https://auth.example"])
def test_rfc8414_metadata_never_takes_urls_from_the_host_header(
    serve: Callable[..., LiveServer], public_url: str | None
) -> None:
    server = serve(public_url=public_url, introspection_secret=INTROSPECTION_SECRET)

    response = server.client.get(
        "/.well-known/oauth-authorization-server",
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
    )

    assert response.status_code == 200
    assert "evil.example" not in response.text


def test_rfc8414_metadata_urls_come_from_public_url(serve: Callable[..., LiveServer]) -> None:
    server = serve(public_url="https://auth.example/", introspection_secret=INTROSPECTION_SECRET)

    metadata = server.client.get("/.well-known/oauth-authorization-server").json()

    assert metadata["token_endpoint"] == "https://auth.example/auth/token"
    assert metadata["revocation_endpoint"] == "https://auth.example/auth/revoke"
    assert metadata["introspection_endpoint"] == "https://auth.example/auth/introspect"
    assert metadata["jwks_uri"] == "https://auth.example/.well-known/jwks.json"


def test_rfc8414_2_the_issuer_is_public_url_when_issuer_is_not_set(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve(public_url="https://auth.example/", introspection_secret=INTROSPECTION_SECRET)
    tokens = server.client.post(
        "/auth/login", json={"username": register(server.client), "password": PASSWORD}
    ).json()

    metadata = server.client.get("/.well-known/oauth-authorization-server").json()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    me = server.client.get("/users/me", headers=bearer(tokens["access_token"]))
    introspected = server.client.post(
        "/auth/introspect",
        data={"token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {INTROSPECTION_SECRET}"},
    ).json()

    assert metadata["issuer"] == "https://auth.example"
    assert claims["iss"] == "https://auth.example"
    assert me.status_code == 200
    assert introspected["iss"] == "https://auth.example"


def test_rfc8414_an_explicit_issuer_stays_beside_public_url(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve(public_url="https://auth.example", issuer="tokenstile")
    tokens = server.client.post(
        "/auth/login", json={"username": register(server.client), "password": PASSWORD}
    ).json()

    metadata = server.client.get("/.well-known/oauth-authorization-server").json()

    assert metadata["issuer"] == "tokenstile"
    assert metadata["token_endpoint"] == "https://auth.example/auth/token"
    assert jwt.decode(tokens["access_token"], options={"verify_signature": False})["iss"] == (
        "tokenstile"
    )


def test_rfc8414_metadata_urls_come_from_an_issuer_url(serve: Callable[..., LiveServer]) -> None:
    server = serve(issuer="https://issuer.example/")

    metadata = server.client.get(
        "/.well-known/oauth-authorization-server", headers={"Host": "evil.example"}
    ).json()

    assert metadata["issuer"] == "https://issuer.example/"
    assert metadata["token_endpoint"] == "https://issuer.example/auth/token"
    assert metadata["jwks_uri"] == "https://issuer.example/.well-known/jwks.json"


def test_rfc8414_metadata_may_be_cached_and_so_may_the_jwks(server: LiveServer) -> None:
    metadata = server.client.get("/.well-known/oauth-authorization-server")
    jwks = server.client.get("/.well-known/jwks.json")

    assert metadata.headers["cache-control"] == "public, max-age=300"
    assert jwks.headers["cache-control"] == "max-age=300"


@pytest.mark.parametrize(
    "value", ["auth.example", "ftp://auth.example", "https://", "https://a.example/?x=1"]
)
def test_public_url_must_be_an_http_url(value: str) -> None:
    with pytest.raises(ValidationError, match="public_url"):
        Settings(_env_file=None, public_url=value)  # type: ignore[call-arg]


def test_public_url_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSTILE_PUBLIC_URL", "https://auth.example/")

    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert settings.public_url == "https://auth.example"
    assert settings.resolved_issuer == "https://auth.example"


def test_rfc7517_jwks_is_empty_under_hs256(server: LiveServer) -> None:
    response = server.client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response.json() == {"keys": []}


def test_openapi_declares_the_password_flow_for_swagger_ui(server: LiveServer) -> None:
    document = server.client.get("/openapi.json").json()

    schemes = document["components"]["securitySchemes"]
    flow = schemes["tokenstile"]["flows"]["password"]
    assert flow["tokenUrl"] == "/auth/token"
    assert {"tokenstile": []} in document["paths"]["/users/me"]["get"]["security"]
    assert server.client.get("/docs").status_code == 200
