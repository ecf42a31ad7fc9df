"""The store interfaces the core talks through, and the records they exchange."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One login on one device: the family of refresh tokens descending from it.

    Holds ids only, never a usable token. Times are POSIX seconds.
    """

    sid: str
    user_id: str
    username: str
    current_jti: str
    current_iat: int
    previous_jti: str | None
    rotated_at: float | None
    refresh_ttl: int
    expires_at: int
    max_expires_at: int
    created_at: float
    last_used_at: float
    user_agent: str | None = None
    ip: str | None = None
    client_id: str | None = None
    remember_me: bool = False
    """A "remember me" login: its browser cookie outlives the browser session."""


class RotationOutcome(enum.Enum):
    ROTATED = "rotated"
    """The presented token was current; the session now has a new current token."""
    GRACE = "grace"
    """The presented token is the parent rotated out within the grace window."""
    REUSED = "reused"
    """A rotated-out token was replayed; the store has revoked the session."""
    GONE = "gone"
    """The session no longer exists (revoked, expired or never known)."""
    STALE = "stale"
    """The request reached the store too late (``max_delay``); nothing changed."""


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: RotationOutcome
    session: SessionRecord | None
    """The session after the step (for ROTATED and GRACE), else ``None``."""


class SessionStore(Protocol):
    """Where sessions live. Every method is one atomic step; none reads then writes.

    A session is *live* while it exists, is not revoked and ``now < expires_at``; only
    live sessions are active, found, listed, rotated or revoked.

    Implementations raise :class:`tokenstile.errors.StoreUnavailable` when the
    backing service cannot be reached. A failed call is safe to retry: single-session
    steps either happened whole or not at all.
    """

    async def create_session(self, session: SessionRecord) -> None: ...

    async def rotate(
        self,
        sid: str,
        presented_jti: str,
        new_jti: str,
        *,
        now: float,
        grace: float,
        user_id: str | None = None,
        max_delay: float | None = None,
    ) -> Rotation:
        """Compare-and-set the session's current refresh token id.

        With ``max_delay``, a request that reaches the store more than ``max_delay``
        seconds after ``now`` by the store's own clock is STALE and changes nothing: its
        caller has given up (a 503), and must be able to retry with the same token.

        A session that is missing, revoked, expired (``expires_at <= now``) or, when
        ``user_id`` is given, owned by someone else is GONE and left unchanged.
        If ``presented_jti`` is current: make ``new_jti`` current (issued at
        ``floor(now)``), keep the presented one as previous and extend ``expires_at``
        to ``min(floor(now) + refresh_ttl, max_expires_at)``. If it is the previous
        one, ``grace > 0`` and ``now - rotated_at <= grace``: change nothing (GRACE).
        Otherwise revoke the session (REUSED).
        """
        ...

    async def is_active(self, sid: str, *, now: float) -> bool:
        """Whether the session is live."""
        ...

    async def are_active(self, sids: list[str], *, now: float) -> set[str]:
        """Those of ``sids`` that are live, in one round trip to the store."""
        ...

    async def get_session(self, sid: str, *, now: float) -> SessionRecord | None: ...

    async def revoke_session(self, sid: str, *, reason: str, now: float) -> bool:
        """Revoke one session; ``True`` if it was live."""
        ...

    async def revoke_user_sessions(
        self, user_id: str, *, reason: str, now: float, keep_sid: str | None = None
    ) -> int:
        """Revoke every live session of a user except ``keep_sid``; returns how many."""
        ...

    async def list_user_sessions(self, user_id: str, *, now: float) -> list[SessionRecord]: ...

    async def purge(self, *, now: float) -> int:
        """Drop state that can no longer matter (expired or revoked sessions)."""
        ...

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    username: str
    password_hash: str
    created_at: float
    disabled_at: float | None = None
    password_changed_at: float | None = None
    credential_version: int = 0
    """Bumped by every change that must end the user's sessions (SPEC §1 invariant 11)."""


class UserStore(Protocol):
    """Where accounts live (always the SQL database)."""

    async def add_user(self, user: UserRecord) -> None:
        """Insert a user; raise :class:`UsernameTaken` if the name exists."""
        ...

    async def get_user(self, user_id: str) -> UserRecord | None: ...

    async def get_user_by_name(self, username: str) -> UserRecord | None: ...

    async def list_users(self) -> list[UserRecord]:
        """Every account, by username."""
        ...

    async def set_password_hash(self, user_id: str, password_hash: str, *, now: float) -> None:
        """Replace the password and bump the credential version, in one statement."""
        ...

    async def upgrade_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> None:
        """Store a stronger hash of the same password, if ``old_hash`` is still current.

        The credential version stays: the password did not change.
        """
        ...

    async def disable_user(self, user_id: str, *, now: float) -> None:
        """Mark the user disabled and bump the credential version, in one statement."""
        ...

    async def enable_user(self, user_id: str) -> None: ...

    async def bump_credential_version(self, user_id: str) -> None:
        """Invalidate the user's credential state, so no login in flight may keep a session."""
        ...
