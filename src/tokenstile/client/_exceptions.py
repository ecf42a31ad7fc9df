"""What TokenAuth raises on purpose; transport and 5xx failures stay httpx's own errors."""

from __future__ import annotations


class TokenAuthError(Exception):
    """Root of the client's errors. ``code`` is the server's stable error code (SPEC §2)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SessionEnded(TokenAuthError):
    """The server refused the refresh token for good (reused, revoked, expired or invalid).

    The session is over: log in again. ``code`` says why, e.g. ``"token_reused"``.
    """

    def __init__(self, code: str) -> None:
        super().__init__(code, f"the session has ended ({code}); log in again")


class LoginFailed(TokenAuthError):
    """The server refused the login: ``code`` is e.g. ``"invalid_credentials"``."""

    def __init__(self, code: str, status_code: int) -> None:
        super().__init__(code, f"login refused with HTTP {status_code} ({code})")
        self.status_code = status_code
