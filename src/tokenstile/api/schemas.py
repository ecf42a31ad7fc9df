"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime

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
