"""One exception tree for tokenstile: every error knows its stable code and HTTP status."""

from __future__ import annotations

from typing import ClassVar


class TokenstileError(Exception):
    """Root of every error tokenstile raises on purpose.

    ``code`` is the stable machine-readable error code sent to clients;
    ``status_code`` the HTTP status the API answers with.
    """

    code: ClassVar[str] = "server_error"
    status_code: ClassVar[int] = 500
    default_detail: ClassVar[str] = "The request could not be processed."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class InvalidRequest(TokenstileError):
    code = "invalid_request"
    status_code = 422
    default_detail = "The request is malformed."


class NotFound(TokenstileError):
    code = "not_found"
    status_code = 404
    default_detail = "Not found."


class InvalidCredentials(TokenstileError):
    code = "invalid_credentials"
    status_code = 401
    default_detail = "Incorrect username or password."


class WrongPassword(InvalidCredentials):
    """A signed-in user's current password was wrong: 403, so that clients do not read
    it as an expired token and refresh (the bearer token itself was fine)."""

    status_code = 403
    default_detail = "The current password is incorrect."


class AuthenticationError(TokenstileError):
    """A presented token was refused; answers carry ``WWW-Authenticate``."""

    status_code = 401


class MissingToken(AuthenticationError):
    code = "invalid_token"
    default_detail = "Authentication is required."


class InvalidToken(AuthenticationError):
    code = "invalid_token"
    default_detail = "The token is invalid."


class TokenExpired(AuthenticationError):
    code = "token_expired"
    default_detail = "The token has expired."


class TokenRevoked(AuthenticationError):
    code = "token_revoked"
    default_detail = "The token has been revoked."


class TokenReused(AuthenticationError):
    code = "token_reused"
    default_detail = "The refresh token was already used; the session has been ended."


class CsrfFailed(TokenstileError):
    code = "csrf_failed"
    status_code = 403
    default_detail = "CSRF check failed."


class RateLimited(TokenstileError):
    code = "rate_limited"
    status_code = 429
    default_detail = "Too many attempts; try again later."

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(detail)


class RegistrationClosed(TokenstileError):
    code = "registration_closed"
    status_code = 403
    default_detail = "Registration is closed."


class UsernameTaken(TokenstileError):
    code = "username_taken"
    status_code = 409
    default_detail = "That username is already taken."


class WeakPassword(TokenstileError):
    code = "weak_password"
    status_code = 422
    default_detail = "The password does not meet the password policy."


class StoreUnavailable(TokenstileError):
    """A store did not answer, or refused; the request fails closed (SPEC §1 invariant 8).

    ``detail`` is what HTTP clients see and names no host; ``cause`` is for operators (the
    command line and the server log): the store and what went wrong, such as
    ``redis 127.0.0.1:6390 db 0: connection refused``.
    """

    code = "store_unavailable"
    status_code = 503
    default_detail = "The session store is unavailable; try again shortly."

    def __init__(self, detail: str | None = None, *, cause: str | None = None) -> None:
        super().__init__(detail)
        self.cause = cause or self.detail


class StoreMisconfigured(StoreUnavailable):
    """A store that will not work until an operator acts (a missing database, schema or
    file, refused credentials): retrying cannot help, and ``cause`` says what to do."""


class ConfigurationError(TokenstileError):
    """The settings cannot be used; raised at start, never per request."""

    code = "configuration_error"
