"""RFC 6749's formats as tokenstile speaks them: form bodies (§3.2), public clients
(§2.3), token answers (§5.1) and error answers (§5.2)."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qsl, unquote_plus

from fastapi import Request
from fastapi.responses import JSONResponse

from tokenstile.api.errors import NO_STORE
from tokenstile.core.sessions import TokenPair
from tokenstile.errors import (
    AuthenticationError,
    InvalidCredentials,
    RateLimited,
    StoreUnavailable,
    TokenstileError,
)

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


def oauth_error(exc: TokenstileError) -> OAuthError:
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


def token_answer(pair: TokenPair) -> JSONResponse:
    """A successful answer (RFC 6749 §5.1), not to be cached."""
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
