"""The OAuth 2.0 surface: token endpoint (RFC 6749), revocation (RFC 7009),
introspection (RFC 7662) and server metadata (RFC 8414).

Answers follow the RFCs' own error format, ``{"error", "error_description"}``,
rather than the ``{"error", "detail"}`` body of the rest of the API.
"""

import base64
import binascii
import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tokenstile.api.errors import (
    BODY_TOO_LARGE,
    BODY_TOO_SLOW,
    NO_STORE,
    DocumentedError,
    error_responses,
)
from tokenstile.api.metrics import Metrics
from tokenstile.api.schemas import (
    Introspection,
    JwkSet,
    OAuthErrorBody,
    OAuthTokenResponse,
    ServerMetadata,
)
from tokenstile.api.security import client_ip
from tokenstile.core.sessions import DEFAULT_CLIENT_ID, TokenPair
from tokenstile.core.signin import sign_in
from tokenstile.errors import (
    AuthenticationError,
    InvalidCredentials,
    RateLimited,
    StoreUnavailable,
    TokenstileError,
)
from tokenstile.runtime import Runtime

FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 16_384
MAX_CLIENT_ID = 128


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(
        self, error: str, description: str, status: int = 400, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.error, "error_description": self.description},
            status_code=self.status,
            headers={**NO_STORE, **self.headers},
        )


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


def _oauth_error(exc: TokenstileError) -> OAuthError:
    """Our errors in RFC 6749 terms; the original code stays in the description."""
    if isinstance(exc, (InvalidCredentials, AuthenticationError)):
        return OAuthError("invalid_grant", f"{exc.code}: {exc.detail}")
    if isinstance(exc, StoreUnavailable):
        return OAuthError("temporarily_unavailable", exc.detail, 503, {"Retry-After": "1"})
    if isinstance(exc, RateLimited):
        return OAuthError("slow_down", exc.detail, 429, {"Retry-After": str(exc.retry_after)})
    return OAuthError("invalid_request", exc.detail)


async def read_form(request: Request) -> dict[str, str]:
    """The form parameters; empty ones are dropped (RFC 6749 §3.1), repeats refused."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM:
        raise OAuthError("invalid_request", f"The request body must be {FORM}.")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", "The request body is too large.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "The request body is not a valid form.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"The parameter {name} is repeated.")
        if value:
            form[name] = value
    return form


def _client_refused(description: str) -> OAuthError:
    return OAuthError(
        "invalid_client", description, 401, {"WWW-Authenticate": 'Basic realm="tokenstile"'}
    )


def client_id_of(request: Request, form: dict[str, str]) -> str | None:
    """The public client's id (RFC 6749 §2.3): from the form, or from HTTP Basic with
    an empty secret as some client libraries send it. There are no confidential clients,
    so any presented secret is refused."""
    client_id = form.get("client_id")
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "basic":
            raise _client_refused("Unsupported client authentication.")
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise _client_refused("Malformed client credentials.") from None
        # RFC 6749 §2.3.1: both parts are form-encoded before Basic encoding.
        basic_id, _, secret = (unquote_plus(part) for part in decoded.partition(":"))
        if secret or (client_id and client_id != basic_id):
            raise _client_refused("Unknown client.")
        client_id = basic_id or client_id
    if "client_secret" in form:
        raise _client_refused("Unknown client: tokenstile has only public clients.")
    if client_id is not None and (len(client_id) > MAX_CLIENT_ID or not client_id.isprintable()):
        raise OAuthError("invalid_request", "The client_id is malformed.")
    return client_id


def _token_answer(pair: TokenPair) -> JSONResponse:
    return JSONResponse(
        {
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in,
            "refresh_token": pair.refresh_token,
            "refresh_expires_in": pair.refresh_expires_in,
        },
        headers=NO_STORE,
    )


def oauth_router(runtime: Callable[[], Runtime], metrics: Metrics) -> APIRouter:
    """``/auth/token``, ``/auth/revoke``, ``/auth/introspect`` and the metadata document."""
    router = APIRouter(tags=["oauth"])

    def fail(error: OAuthError | TokenstileError) -> JSONResponse:
        if isinstance(error, TokenstileError):
            error = _oauth_error(error)
        metrics.errors.labels(error.error).inc()
        return error.response()

    def issued(pair: TokenPair, grant: str) -> JSONResponse:
        metrics.tokens_issued.labels(grant).inc()
        return _token_answer(pair)

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
        openapi_extra=_form_body(
            {
                "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
                "username": {"type": "string", "description": "`password` grant."},
                "password": {"type": "string", "description": "`password` grant."},
                "refresh_token": {"type": "string", "description": "`refresh_token` grant."},
                "client_id": {
                    "type": "string",
                    "description": f"Optional; `{DEFAULT_CLIENT_ID}` when left out.",
                },
            },
            ["grant_type"],
        ),
    )
    async def token(request: Request) -> Response:
        """The `password` grant (RFC 6749 §4.3) signs in; the `refresh_token` grant (§6)
        rotates a refresh token as `POST /auth/refresh` does. Public clients send at most
        a `client_id`, in the form or as HTTP Basic with an empty secret; a client secret
        is refused. Errors use the RFC's `{error, error_description}` body; a refused
        token or password is `invalid_grant`, its tokenstile code at the start of the
        description."""
        try:
            form = await read_form(request)
            client_id = client_id_of(request, form)
            if "scope" in form:
                raise OAuthError("invalid_scope", "tokenstile issues tokens without scopes.")
            grant = form.get("grant_type")
            if grant is None:
                raise OAuthError("invalid_request", "grant_type is required.")
            if grant == "password":
                return issued(await _password_grant(request, form, client_id), "password")
            if grant == "refresh_token":
                if "refresh_token" not in form:
                    raise OAuthError("invalid_request", "refresh_token is required.")
                pair = await runtime().sessions.refresh(
                    form["refresh_token"],
                    client_ip=client_ip(request),
                    user_agent=request.headers.get("user-agent"),
                )
                return issued(pair, "refresh_token")
            raise OAuthError(
                "unsupported_grant_type", f"The grant type {grant!r} is not supported."
            )
        except TokenstileError as exc:
            return fail(exc)
        except OAuthError as exc:
            return fail(exc)

    async def _password_grant(
        request: Request, form: dict[str, str], client_id: str | None
    ) -> TokenPair:
        if "username" not in form or "password" not in form:
            raise OAuthError("invalid_request", "username and password are required.")
        rt = runtime()
        return await sign_in(
            rt.accounts,
            rt.sessions,
            form["username"],
            form["password"],
            client_ip=client_ip(request),
            user_agent=request.headers.get("user-agent"),
            client_id=client_id,
        )

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
    async def revoke(request: Request) -> Response:
        """End the session of an access or refresh token. Answers 200 for tokens that are
        unknown, forged or expired too: the caller learns nothing about them."""
        try:
            form = await read_form(request)
            client_id_of(request, form)
            if "token" not in form:
                raise OAuthError("invalid_request", "token is required.")
            await runtime().sessions.revoke_token(
                form["token"],
                client_ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
            )
        except OAuthError as exc:
            return fail(exc)
        except TokenstileError as exc:
            return fail(exc)
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
    async def introspect(request: Request) -> Response:
        """What an access or refresh token says, if it is usable now. The caller
        authenticates with `Authorization: Bearer <INTROSPECTION_SECRET>`."""
        rt = runtime()
        secret = rt.settings.introspection_secret
        if secret is None:
            return JSONResponse({"error": "not_found", "detail": "Not Found"}, status_code=404)
        presented = request.headers.get("authorization", "")
        expected = f"Bearer {secret.get_secret_value()}"
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            return fail(
                OAuthError(
                    "invalid_client",
                    "Introspection needs the introspection secret.",
                    401,
                    {"WWW-Authenticate": 'Bearer realm="tokenstile"'},
                )
            )
        try:
            form = await read_form(request)
            if "token" not in form:
                raise OAuthError("invalid_request", "token is required.")
            info = await rt.sessions.introspect(form["token"])
        except OAuthError as exc:
            return fail(exc)
        except TokenstileError as exc:
            return fail(exc)
        if info is None:
            return JSONResponse({"active": False}, headers=NO_STORE)
        answer: dict[str, Any] = {
            "active": True,
            "token_type": info.token_type,
            "sub": info.sub,
            "username": info.username,
            "client_id": info.client_id,
            "exp": info.exp,
            "iat": info.iat,
            "jti": info.jti,
            "sid": info.sid,
            "iss": rt.settings.resolved_issuer,
        }
        if info.token_type == "access_token":
            answer["aud"] = rt.settings.audience
        return JSONResponse(answer, headers=NO_STORE)

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
            "grant_types_supported": ["password", "refresh_token"],
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
