"""The session lifecycle: login, rotation with grace and reuse detection, logout, verification.

Every method makes at most one call to the session store on its common path, and that
call is the atomic step the invariants rest on (SPEC §1).
"""

from __future__ import annotations

import ipaddress
import math
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from tokenstile.core.audit import OK, REFUSED, AuditLog
from tokenstile.core.clock import Clock
from tokenstile.core.codec import (
    AccessClaims,
    RefreshClaims,
    TokenCodec,
    introspection_members,
)
from tokenstile.core.liveness import LivenessBatcher
from tokenstile.core.ratelimit import DEFAULT_RATES, RateLimiter, RatePolicy
from tokenstile.core.store import RotationOutcome, SessionRecord, SessionStore, UserRecord
from tokenstile.errors import (
    InvalidToken,
    MissingToken,
    NotFound,
    StoreUnavailable,
    TokenExpired,
    TokenReused,
    TokenRevoked,
)

DEFAULT_CLIENT_ID = "tokenstile"


def new_token_id() -> str:
    """A random 128-bit identifier, URL-safe."""
    return secrets.token_urlsafe(16)


_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_USER_AGENT = 512


def is_token_id(text: str) -> bool:
    """Whether ``text`` could be an id :func:`new_token_id` made (or an older, longer one)."""
    return _TOKEN_ID.fullmatch(text) is not None


def _address(ip: str | None) -> str | None:
    """A client address worth storing: a valid IP address, else ``None``."""
    if not ip:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


def _user_agent(text: str | None) -> str | None:
    """The printable part of a ``User-Agent``, cut to the column's length."""
    if not text:
        return None
    return "".join(char for char in text if char.isprintable())[:_MAX_USER_AGENT] or None


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """Lifetimes in seconds (SPEC §3)."""

    access_ttl: int = 900
    refresh_ttl: int = 604_800
    remember_me_ttl: int = 2_592_000
    session_max_age: int = 7_776_000
    refresh_grace: float = 10.0
    stale_after: float | None = None
    """Seconds after which a rotation that still reaches the store changes nothing
    (the store timeout: its caller has answered 503); ``None`` trusts any delay."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo(AccessClaims):
    """An active token as introspection reports it (RFC 7662 §2.2): the access claims —
    for a refresh token, those its session's access tokens carry, with the token's own
    ``jti``, ``iat`` and ``exp`` — and what introspection adds to them."""

    token_type: str
    iss: str
    aud: str | None
    """For access tokens only."""

    def introspection(self) -> dict[str, Any]:
        """The answer's members: ``active``, ``token_type``, every claim under its
        introspection name, ``iss`` and, for an access token, ``aud``."""
        members = {
            "active": True,
            "token_type": self.token_type,
            **introspection_members(self),
            "iss": self.iss,
        }
        if self.aud is not None:
            members["aud"] = self.aud
        return members


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session: SessionRecord


class SessionService:
    """Issues, rotates, verifies and ends sessions through a :class:`SessionStore`.

    Audits ``login.succeeded`` (a session opened), ``token.refreshed``,
    ``token.reuse_detected``, ``logout``, ``logout_all`` and ``session.revoked``
    (every other end: a revocation, an admin, a credential change).
    """

    def __init__(
        self,
        store: SessionStore,
        codec: TokenCodec,
        policy: SessionPolicy,
        *,
        clock: Clock,
        audit: AuditLog,
        limiter: RateLimiter | None = None,
        rates: RatePolicy = DEFAULT_RATES,
    ) -> None:
        self._store = store
        self._codec = codec
        self._policy = policy
        self._clock = clock
        self._audit = audit
        self._limiter = limiter
        self._rates = rates
        self._liveness = LivenessBatcher(store, clock=clock)

    async def start(
        self,
        user: UserRecord,
        *,
        remember_me: bool = False,
        user_agent: str | None = None,
        ip: str | None = None,
        client_id: str | None = None,
    ) -> TokenPair:
        """Open a new session for ``user`` and return its first token pair."""
        now = self._clock()
        issued_at = math.floor(now)
        policy = self._policy
        refresh_ttl = policy.remember_me_ttl if remember_me else policy.refresh_ttl
        max_expires_at = issued_at + policy.session_max_age
        session = SessionRecord(
            sid=new_token_id(),
            user_id=user.id,
            username=user.username,
            current_jti=new_token_id(),
            current_iat=issued_at,
            previous_jti=None,
            rotated_at=None,
            refresh_ttl=refresh_ttl,
            expires_at=min(issued_at + refresh_ttl, max_expires_at),
            max_expires_at=max_expires_at,
            created_at=now,
            last_used_at=now,
            user_agent=_user_agent(user_agent),
            ip=_address(ip),
            client_id=client_id or DEFAULT_CLIENT_ID,
            remember_me=remember_me,
        )
        await self._store.create_session(session)
        self._audit.record(
            "login.succeeded",
            outcome=OK,
            user_id=user.id,
            sid=session.sid,
            ip=session.ip,
            user_agent=session.user_agent,
        )
        return self._pair(session, now)

    async def refresh(
        self, refresh_token: str, *, client_ip: str | None = None, user_agent: str | None = None
    ) -> TokenPair:
        """Rotate ``refresh_token`` into a new pair.

        Raises ``InvalidToken``/``TokenExpired`` for a bad token (no store access),
        ``RateLimited`` past ``REFRESH_RATE_LIMIT`` for ``client_ip``, ``TokenReused``
        when a rotated-out token is replayed after the grace window (the session is
        revoked), ``TokenRevoked`` when the session has ended, and ``StoreUnavailable``
        (nothing changed; the client may retry).
        """
        claims = self._codec.decode_refresh(refresh_token)
        context = {
            "user_id": claims.sub,
            "sid": claims.sid,
            "ip": _address(client_ip),
            "user_agent": _user_agent(user_agent),
        }
        if self._limiter is not None and client_ip:
            await self._limiter.admit(
                [(f"refresh:ip:{client_ip}", self._rates.refresh_per_ip)], **context
            )
        now = self._clock()
        rotation = await self._store.rotate(
            claims.sid,
            claims.jti,
            new_token_id(),
            now=now,
            grace=self._policy.refresh_grace,
            user_id=claims.sub,
            max_delay=self._policy.stale_after,
        )
        if rotation.outcome is RotationOutcome.STALE:
            raise StoreUnavailable("The session store answered too late; nothing changed.")
        if rotation.outcome is RotationOutcome.REUSED:
            self._audit.record(
                "token.reuse_detected", outcome=REFUSED, reason="token_reused", **context
            )
            raise TokenReused()
        session = rotation.session
        if session is None:
            self._audit.record(
                "token.refreshed", outcome=REFUSED, reason="token_revoked", **context
            )
            raise TokenRevoked()
        self._audit.record("token.refreshed", outcome=OK, reason=rotation.outcome.value, **context)
        return self._pair(session, now)

    async def authenticate(self, access_token: str) -> AccessClaims:
        """Verify an access token and that its session is still live.

        Raises ``InvalidToken``, ``TokenExpired``, ``TokenRevoked`` or ``StoreUnavailable``.
        """
        claims = self._codec.decode_access(access_token)
        if not await self._liveness.is_active(claims.sid):
            raise TokenRevoked()
        return claims

    async def logout(
        self,
        *,
        access: AccessClaims | None,
        refresh_token: str | None,
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        """End the session of the bearer and of the presented refresh token.

        A refresh token of another user than the bearer's is ignored, and so is an
        expired one (its session is over, or it was rotated out long ago). Raises
        ``MissingToken`` with neither token, ``InvalidToken`` for a forged one.
        """
        if access is None and not refresh_token:
            raise MissingToken()
        sessions: dict[str, str] = {}
        if access is not None:
            sessions[access.sid] = access.sub
        if refresh_token:
            try:
                claims = self._codec.decode_refresh(refresh_token)
            except TokenExpired:
                claims = None
            if claims is not None and (access is None or claims.sub == access.sub):
                sessions[claims.sid] = claims.sub
        for sid, user_id in sessions.items():
            await self.end(
                sid,
                event="logout",
                user_id=user_id,
                client_ip=client_ip,
                user_agent=user_agent,
            )

    async def revoke_token(
        self, token: str, *, client_ip: str | None = None, user_agent: str | None = None
    ) -> None:
        """RFC 7009: end the session of an access or refresh token.

        Tokens that are malformed, forged or expired are ignored: there is nothing
        left to revoke, and the caller must not learn which case it was.
        """
        claims = self._claims_of(token)
        if claims is not None:
            await self.end(
                claims.sid,
                reason="revoked",
                user_id=claims.sub,
                client_ip=client_ip,
                user_agent=user_agent,
            )

    async def introspect(self, token: str) -> TokenInfo | None:
        """RFC 7662: what a token says, if it is usable right now; ``None`` otherwise."""
        claims = self._claims_of(token)
        if claims is None:
            return None
        if isinstance(claims, AccessClaims):
            if not await self._liveness.is_active(claims.sid):
                return None
            return TokenInfo(
                **asdict(claims),
                token_type="access_token",
                iss=self._codec.issuer,
                aud=self._codec.audience,
            )
        session = await self._store.get_session(claims.sid, now=self._clock())
        if session is None or session.current_jti != claims.jti or session.user_id != claims.sub:
            return None
        access = _access_claims(session, jti=claims.jti, iat=claims.iat, exp=claims.exp)
        return TokenInfo(
            **asdict(access), token_type="refresh_token", iss=self._codec.issuer, aud=None
        )

    def _claims_of(self, token: str) -> AccessClaims | RefreshClaims | None:
        for decode in (self._codec.decode_access, self._codec.decode_refresh):
            try:
                return decode(token)
            except (InvalidToken, TokenExpired):
                continue
        return None

    async def end(
        self,
        sid: str,
        *,
        reason: str = "logout",
        event: str = "session.revoked",
        user_id: str | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
        actor: str | None = None,
    ) -> bool:
        """End one session: its refresh token and every access token carrying its ``sid``.

        Whether it was live until now; only then is ``event`` audited (``session.revoked``,
        or ``logout`` for the user's own logout), with ``reason`` and who asked.
        """
        ended = await self._store.revoke_session(sid, reason=reason, now=self._clock())
        if ended:
            self._audit.record(
                event,
                outcome=OK,
                reason=reason,
                user_id=user_id,
                sid=sid,
                ip=_address(client_ip),
                user_agent=_user_agent(user_agent),
                **({} if actor is None else {"actor": actor}),
            )
        return ended

    async def end_own(
        self,
        user_id: str,
        sid: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        """End one of ``user_id``'s sessions; ``NotFound`` for anyone else's."""
        if not is_token_id(sid):
            raise NotFound("No such session.")
        session = await self._store.get_session(sid, now=self._clock())
        if session is None or session.user_id != user_id:
            raise NotFound("No such session.")
        await self.end(
            sid,
            reason="ended_by_user",
            user_id=user_id,
            client_ip=client_ip,
            user_agent=user_agent,
        )

    async def end_all(
        self,
        user_id: str,
        *,
        reason: str = "logout_all",
        keep_sid: str | None = None,
        sid: str | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
        actor: str | None = None,
    ) -> int:
        """End every session of a user (but ``keep_sid``); returns how many ended.

        Audited as ``logout_all`` for that ``reason``, else as ``session.revoked``, with
        the ``count`` and the session that asked (``sid``, else ``keep_sid``).
        """
        count = await self._store.revoke_user_sessions(
            user_id, reason=reason, now=self._clock(), keep_sid=keep_sid
        )
        self._audit.record(
            "logout_all" if reason == "logout_all" else "session.revoked",
            outcome=OK,
            reason=reason,
            user_id=user_id,
            sid=sid or keep_sid,
            ip=_address(client_ip),
            user_agent=_user_agent(user_agent),
            count=count,
            **({} if actor is None else {"actor": actor}),
        )
        return count

    async def list_sessions(self, user_id: str) -> list[SessionRecord]:
        return await self._store.list_user_sessions(user_id, now=self._clock())

    async def purge(self) -> int:
        return await self._store.purge(now=self._clock())

    def _pair(self, session: SessionRecord, now: float) -> TokenPair:
        issued_at = math.floor(now)
        access_expires_at = min(issued_at + self._policy.access_ttl, session.expires_at)
        access = self._codec.encode_access(
            _access_claims(session, jti=new_token_id(), iat=issued_at, exp=access_expires_at)
        )
        # Derived from the record alone, so a grace-window answer re-creates the
        # very token the first answer carried without the store holding it.
        refresh = self._codec.encode_refresh(
            sub=session.user_id,
            sid=session.sid,
            jti=session.current_jti,
            iat=session.current_iat,
            exp=session.expires_at,
        )
        return TokenPair(
            access_token=access,
            expires_in=max(access_expires_at - issued_at, 0),
            refresh_token=refresh,
            refresh_expires_in=max(session.expires_at - issued_at, 0),
            session=session,
        )


def _access_claims(session: SessionRecord, *, jti: str, iat: int, exp: int) -> AccessClaims:
    """What the access tokens of ``session`` say: where each claim gets its value."""
    return AccessClaims(
        sub=session.user_id,
        sid=session.sid,
        jti=jti,
        iat=iat,
        exp=exp,
        client_id=session.client_id or DEFAULT_CLIENT_ID,
        username=session.username,
    )
