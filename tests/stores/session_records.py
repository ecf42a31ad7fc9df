"""Session records for store tests: fresh logins and rotations with known values."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from tokenstile.core.store import RotationOutcome, SessionRecord, SessionStore

GRACE = 10.0
REFRESH_TTL = 3600
MAX_AGE = 86400


def username_of(user_id: str) -> str:
    return f"user-{user_id[:8]}"


def new_jti() -> str:
    return secrets.token_hex(16)


def new_session(user_id: str, now: float, **changes: Any) -> SessionRecord:
    """A fresh login at ``now``: no parent yet, refresh lifetime REFRESH_TTL."""
    record = SessionRecord(
        sid=secrets.token_hex(16),
        user_id=user_id,
        username=username_of(user_id),
        current_jti=new_jti(),
        current_iat=int(now),
        previous_jti=None,
        rotated_at=None,
        refresh_ttl=REFRESH_TTL,
        expires_at=int(now) + REFRESH_TTL,
        max_expires_at=int(now) + MAX_AGE,
        created_at=now,
        last_used_at=now,
    )
    return dataclasses.replace(record, **changes)


async def created(store: SessionStore, user_id: str, now: float, **changes: Any) -> SessionRecord:
    session = new_session(user_id, now, **changes)
    await store.create_session(session)
    return session


async def rotated(store: SessionStore, session: SessionRecord, now: float) -> SessionRecord:
    """Rotate ``session``'s current token at ``now``; the session afterwards."""
    result = await store.rotate(session.sid, session.current_jti, new_jti(), now=now, grace=GRACE)
    assert result.outcome is RotationOutcome.ROTATED
    assert result.session is not None
    return result.session
