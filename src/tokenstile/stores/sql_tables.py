"""The SQL schema, shared by the SQL stores and the migrations."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    false,
)
from sqlalchemy.sql.elements import BindParameter, ColumnElement

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("disabled_at", Double, nullable=True),
    Column("password_changed_at", Double, nullable=True),
    Column("credential_version", Integer, nullable=False, server_default="0"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("sid", String(64), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("username", String(64), nullable=False),
    Column("current_jti", String(64), nullable=False),
    Column("current_iat", BigInteger, nullable=False),
    Column("previous_jti", String(64), nullable=True),
    Column("rotated_at", Double, nullable=True),
    Column("refresh_ttl", Integer, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("max_expires_at", BigInteger, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double, nullable=False),
    Column("user_agent", String(512), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("client_id", String(128), nullable=True),
    Column("remember_me", Boolean, nullable=False, server_default=false()),
    Column("revoked_at", Double, nullable=True),
    Column("revoke_reason", String(32), nullable=True),
    Index("ix_sessions_user_id", "user_id"),
    Index("ix_sessions_expires_at", "expires_at"),
)


def session_is_live(now: float | BindParameter[float]) -> ColumnElement[bool]:
    """The one condition of a session that still works at ``now``: neither revoked nor
    expired. Every statement that asks whether a session is live uses it."""
    return and_(sessions.c.revoked_at.is_(None), sessions.c.expires_at > now)


rate_events = Table(
    "rate_events",
    metadata,
    # core.ratelimit.storage_key of the caller's key: a short prefix and a SHA-256.
    Column("key", String(128), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("expires_at", Double, nullable=False),
    Index("ix_rate_events_key_expires_at", "key", "expires_at"),
    Index("ix_rate_events_expires_at", "expires_at"),
)
