"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tokenstile.core.sessions import TokenPair
from tokenstile.core.store import SessionRecord

# Generous bounds: the policies give the precise messages, these only stop abuse.
_NAME = Field(min_length=1, max_length=256)
_PASSWORD = Field(min_length=1, max_length=4096)


class Credentials(BaseModel):
    model_config = ConfigDict(extra="ignore")
    username: str = _NAME
    password: str = _PASSWORD


class LoginRequest(Credentials):
    remember_me: bool = False


class RefreshRequest(BaseModel):
    refresh_token: str | None = Field(default=None, max_length=16_384)


class PasswordChange(BaseModel):
    current_password: str = _PASSWORD
    new_password: str = _PASSWORD


class UserOut(BaseModel):
    id: str
    username: str


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str | None = None
    refresh_expires_in: int

    @classmethod
    def of(cls, pair: TokenPair, *, include_refresh_token: bool = True) -> TokenResponse:
        return cls(
            access_token=pair.access_token,
            expires_in=pair.expires_in,
            refresh_token=pair.refresh_token if include_refresh_token else None,
            refresh_expires_in=pair.refresh_expires_in,
        )


class SessionOut(BaseModel):
    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip: str | None
    current: bool

    @classmethod
    def of(cls, session: SessionRecord, *, current_sid: str) -> SessionOut:
        return cls(
            id=session.sid,
            created_at=datetime.fromtimestamp(session.created_at, UTC),
            last_used_at=datetime.fromtimestamp(session.last_used_at, UTC),
            expires_at=datetime.fromtimestamp(session.expires_at, UTC),
            user_agent=session.user_agent,
            ip=session.ip,
            current=session.sid == current_sid,
        )


class Health(BaseModel):
    status: str


class ErrorBody(BaseModel):
    """The body of every error answer outside the OAuth 2.0 endpoints.

    ``error`` is a stable machine-readable code (the codes each answer can carry are
    listed with it); ``detail`` is a sentence for people, in English, or in Korean when
    ``Accept-Language`` prefers ``ko``. The code never changes with the language.
    """

    error: str
    detail: str


class OAuthErrorBody(BaseModel):
    """An error of the OAuth 2.0 endpoints, in the format of RFC 6749 §5.2."""

    error: str
    error_description: str


class OAuthTokenResponse(BaseModel):
    """A successful token endpoint answer (RFC 6749 §5.1)."""

    access_token: str
    token_type: str = Field(description="Always `Bearer`.")
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class Introspection(BaseModel):
    """An RFC 7662 introspection answer: only ``active`` for a token that is not usable
    now (unknown, expired, revoked, rotated out), the token's claims otherwise."""

    active: bool
    token_type: str | None = Field(default=None, description="`access_token` or `refresh_token`.")
    sub: str | None = None
    username: str | None = None
    client_id: str | None = None
    exp: int | None = None
    iat: int | None = None
    jti: str | None = None
    sid: str | None = None
    iss: str | None = None
    aud: str | None = Field(default=None, description="Access tokens only.")


class JwkSet(BaseModel):
    """The public verification keys (RFC 7517); empty under HS256."""

    keys: list[dict[str, Any]]


class ServerMetadata(BaseModel):
    """RFC 8414 authorization server metadata; the introspection fields only when
    ``INTROSPECTION_SECRET`` is set."""

    issuer: str
    token_endpoint: str
    jwks_uri: str
    grant_types_supported: list[str]
    response_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    revocation_endpoint: str
    revocation_endpoint_auth_methods_supported: list[str]
    scopes_supported: list[str]
    introspection_endpoint: str | None = None
    introspection_endpoint_auth_methods_supported: list[str] | None = None
