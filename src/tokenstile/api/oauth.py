"""The OAuth 2.0 surface: token endpoint (RFC 6749), revocation (RFC 7009),
introspection (RFC 7662) and server metadata (RFC 8414).

Answers follow the RFCs' own error format, ``{"error", "error_description"}``,
rather than the ``{"error", "detail"}`` body of the rest of the API; ``api/rfc6749.py``
reads the forms and writes the answers, ``api/grants.py`` holds the grant types.
"""

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from tokenstile.api.errors import (
    BODY_TOO_LARGE,
    BODY_TOO_SLOW,
    NO_STORE,
    DocumentedError,
    error_responses,
)
from tokenstile.api.grants import GRANTS, GrantRequest
from tokenstile.api.metrics import Metrics
from tokenstile.api.rfc6749 import (
    FORM,
    OAuthError,
    client_id_of,
    oauth_error,
    read_form,
    token_answer,
)
from tokenstile.api.schemas import (
    Introspection,
    JwkSet,
    OAuthErrorBody,
    OAuthTokenResponse,
    ServerMetadata,
)
from tokenstile.api.security import client_ip, refuse_if_abandoned
from tokenstile.core.sessions import DEFAULT_CLIENT_ID
from tokenstile.errors import RateLimited, StoreUnavailable, TokenstileError
from tokenstile.runtime import Runtime


def _documented(status: int, error: str, detail: str, *headers: str) -> DocumentedError:
    return DocumentedError(status, error, detail, headers, body=OAuthErrorBody)


# The answers of the OAuth endpoints, for their OpenAPI entries. Body limits
# (api/limits.py) answer before the endpoint runs, with the API's own error body.
_MALFORMED = _documented(
    400,
    "invalid_request",
    "The body is not a form, or a parameter is missing, repeated or malformed.",
)
_CLIENT_REFUSED = _documented(
    401,
    "invalid_client",
    "The client authenticated in a way tokenstile does not support (it has only "
    "public clients: no client secret).",
    "WWW-Authenticate",
)
_UNAVAILABLE = _documented(
    503, "temporarily_unavailable", StoreUnavailable.default_detail, "Retry-After"
)
_FORM_LIMITS = (BODY_TOO_SLOW, BODY_TOO_LARGE)


def _form_body(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """``openapi_extra`` declaring the form these endpoints read themselves (``read_form``)."""
    schema = {"type": "object", "properties": properties, "required": required}
    return {"requestBody": {"required": True, "content": {FORM: {"schema": schema}}}}


_TOKEN_PARAMETER = {"type": "string", "description": "An access or a refresh token."}


def _token_form() -> dict[str, Any]:
    """The token endpoint's form: ``grant_type`` and each grant's own parameters."""
    properties: dict[str, dict[str, Any]] = {"grant_type": {"type": "string", "enum": list(GRANTS)}}
    for name, grant in GRANTS.items():
        for parameter in grant.parameters:
            properties.setdefault(parameter, {"type": "string", "description": f"`{name}` grant."})
    properties["client_id"] = {
        "type": "string",
        "description": f"Optional; `{DEFAULT_CLIENT_ID}` when left out.",
    }
    return _form_body(properties, ["grant_type"])


def oauth_router(runtime: Callable[[], Runtime], metrics: Metrics) -> APIRouter:
    """``/auth/token``, ``/auth/revoke``, ``/auth/introspect`` and the metadata document."""
    router = APIRouter(tags=["oauth"])

    def rfc6749_errors(
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """Answer the errors ``endpoint`` raises in the RFC's format, counted by code."""

        @functools.wraps(endpoint)
        async def answer(request: Request) -> Response:
            try:
                return await endpoint(request)
            except (OAuthError, TokenstileError) as exc:
                error = oauth_error(exc) if isinstance(exc, TokenstileError) else exc
                metrics.errors.labels(error.error).inc()
                return error.response()

        return answer

    @router.post(
        "/auth/token",
        summary="OAuth 2.0 token endpoint (RFC 6749)",
        response_model=OAuthTokenResponse,
        responses=error_responses(
            _MALFORMED,
            _documented(400, "invalid_grant", "The credentials or the refresh token were refused."),
            _documented(400, "invalid_scope", "A scope was asked for; tokenstile has none."),
            _documented(400, "unsupported_grant_type", "The grant type is not supported."),
            _CLIENT_REFUSED,
            *_FORM_LIMITS,
            _documented(429, "slow_down", RateLimited.default_detail, "Retry-After"),
            _UNAVAILABLE,
        ),
        openapi_extra=_token_form(),
    )
    @rfc6749_errors
    async def token(request: Request) -> Response:
        """The `password` grant (RFC 6749 §4.3) signs in; the `refresh_token` grant (§6)
        rotates a refresh token as `POST /auth/refresh` does. Public clients send at most
        a `client_id`, in the form or as HTTP Basic with an empty secret; a client secret
        is refused. Errors use the RFC's `{error, error_description}` body; a refused
        token or password is `invalid_grant`, its tokenstile code at the start of the
        description."""
        form = await read_form(request)
        client_id = client_id_of(request, form)
        if "scope" in form:
            raise OAuthError("invalid_scope", "tokenstile issues tokens without scopes.")
        name = form.get("grant_type")
        if name is None:
            raise OAuthError("invalid_request", "grant_type is required.")
        grant = GRANTS.get(name)
        if grant is None:
            raise OAuthError("unsupported_grant_type", f"The grant type {name!r} is not supported.")
        await refuse_if_abandoned(request)
        pair = await grant.handle(
            GrantRequest(
                runtime=runtime(),
                form=form,
                client_id=client_id,
                client_ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
            )
        )
        metrics.tokens_issued.labels(name).inc()
        return token_answer(pair)

    @router.post(
        "/auth/revoke",
        summary="Token revocation (RFC 7009)",
        response_class=Response,
        response_description="The token's session has ended, or the token was not usable.",
        responses=error_responses(_MALFORMED, _CLIENT_REFUSED, *_FORM_LIMITS, _UNAVAILABLE),
        openapi_extra=_form_body(
            {
                "token": _TOKEN_PARAMETER,
                "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
            },
            ["token"],
        ),
    )
    @rfc6749_errors
    async def revoke(request: Request) -> Response:
        """End the session of an access or refresh token. Answers 200 for tokens that are
        unknown, forged or expired too: the caller learns nothing about them."""
        form = await read_form(request)
        client_id_of(request, form)
        if "token" not in form:
            raise OAuthError("invalid_request", "token is required.")
        await runtime().sessions.revoke_token(
            form["token"],
            client_ip=client_ip(request),
            user_agent=request.headers.get("user-agent"),
        )
        return Response(status_code=200, headers=NO_STORE)

    @router.post(
        "/auth/introspect",
        summary="Token introspection (RFC 7662)",
        response_model=Introspection,
        responses=error_responses(
            _MALFORMED,
            _documented(
                401,
                "invalid_client",
                "The `Authorization: Bearer` header is not the introspection secret.",
                "WWW-Authenticate",
            ),
            DocumentedError(
                404, "not_found", "Introspection is off: `INTROSPECTION_SECRET` is not set."
            ),
            *_FORM_LIMITS,
            _UNAVAILABLE,
        ),
        openapi_extra=_form_body({"token": _TOKEN_PARAMETER}, ["token"]),
    )
    @rfc6749_errors
    async def introspect(request: Request) -> Response:
        """What an access or refresh token says, if it is usable now. The caller
        authenticates with `Authorization: Bearer <INTROSPECTION_SECRET>`."""
        rt = runtime()
        secret = rt.settings.introspection_secret
        if secret is None:
            # Off, the route answers as if it did not exist (api/errors.py).
            raise HTTPException(404)
        presented = request.headers.get("authorization", "")
        expected = f"Bearer {secret.get_secret_value()}"
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            raise OAuthError(
                "invalid_client",
                "Introspection needs the introspection secret.",
                401,
                {"WWW-Authenticate": 'Bearer realm="tokenstile"'},
            )
        form = await read_form(request)
        if "token" not in form:
            raise OAuthError("invalid_request", "token is required.")
        info = await rt.sessions.introspect(form["token"])
        if info is None:
            return JSONResponse({"active": False}, headers=NO_STORE)
        return JSONResponse(info.introspection(), headers=NO_STORE)

    @router.get(
        "/.well-known/jwks.json", summary="Public signing keys (RFC 7517)", response_model=JwkSet
    )
    async def jwks() -> JSONResponse:
        """The keys that verify access tokens, by `kid`; empty under HS256."""
        # Public keys only; an empty set under HS256, whose key is never published.
        return JSONResponse(runtime().keys.jwks(), headers={"Cache-Control": "max-age=300"})

    @router.get(
        "/.well-known/oauth-authorization-server",
        summary="Metadata (RFC 8414)",
        response_model=ServerMetadata,
    )
    async def metadata() -> JSONResponse:
        """Where the endpoints are and what they support, from `PUBLIC_URL` and `ISSUER`."""
        settings = runtime().settings
        # From the configuration only: the request's Host is the client's to choose.
        base = settings.external_url
        document: dict[str, Any] = {
            "issuer": settings.resolved_issuer,
            "token_endpoint": f"{base}/auth/token",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "grant_types_supported": list(GRANTS),
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint": f"{base}/auth/revoke",
            "revocation_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": [],
        }
        if settings.introspection_secret is not None:
            document["introspection_endpoint"] = f"{base}/auth/introspect"
            document["introspection_endpoint_auth_methods_supported"] = ["bearer"]
        return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})

    return router
