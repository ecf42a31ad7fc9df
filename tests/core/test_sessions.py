"""SessionService on a real SQLite store: rotation, grace, reuse detection, logout, expiry.

Time is a clock the tests move by hand; the codec and the store both read it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.core.clocks import FakeClock
from tokenstile.core.audit import AuditValue
from tokenstile.core.codec import TokenCodec
from tokenstile.core.keys import KeyRing
from tokenstile.core.sessions import SessionPolicy, SessionService, TokenPair
from tokenstile.core.store import SessionRecord, UserRecord
from tokenstile.errors import (
    InvalidToken,
    MissingToken,
    NotFound,
    TokenExpired,
    TokenReused,
    TokenRevoked,
)
from tokenstile.stores.sql import SqlDatabase

SECRET = b"a session-test secret of at least thirty-two bytes"
ISSUER = "tokenstile-test"
AUDIENCE = "tokenstile-test-api"
LEEWAY = 5
START = 1_700_000_000
POLICY = SessionPolicy(
    access_ttl=60,
    refresh_ttl=600,
    remember_me_ttl=3_600,
    session_max_age=7_200,
    refresh_grace=10.0,
)


class RecordingAuditLog:
    """Keeps every audit event, for the test to read."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, AuditValue]]] = []

    def record(self, event: str, **fields: AuditValue) -> None:
        self.events.append((event, fields))

    def named(self, event: str) -> list[dict[str, AuditValue]]:
        return [fields for name, fields in self.events if name == event]


@dataclass
class World:
    db: SqlDatabase
    url: str
    clock: FakeClock
    audit: RecordingAuditLog
    codec: TokenCodec

    def service(self, policy: SessionPolicy = POLICY) -> SessionService:
        return SessionService(
            self.db.sessions, self.codec, policy, clock=self.clock, audit=self.audit
        )

    async def user(self, name: str) -> UserRecord:
        user = UserRecord(str(uuid.uuid4()), name, "not-a-real-hash", created_at=self.clock())
        await self.db.users.add_user(user)
        return user

    async def session_rows(self) -> int:
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(text("SELECT count(*) FROM sessions"))
                return int(result.scalar_one())
        finally:
            await engine.dispose()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    db = SqlDatabase.from_url(url)
    await db.upgrade()
    clock = FakeClock(START)
    codec = TokenCodec(
        KeyRing.symmetric(SECRET), issuer=ISSUER, audience=AUDIENCE, leeway=LEEWAY, clock=clock
    )
    yield World(db, url, clock, RecordingAuditLog(), codec)
    await db.aclose()


@pytest.fixture
def clock(world: World) -> FakeClock:
    return world.clock


@pytest.fixture
def audit(world: World) -> RecordingAuditLog:
    return world.audit


@pytest.fixture
def codec(world: World) -> TokenCodec:
    return world.codec


@pytest.fixture
def sessions(world: World) -> SessionService:
    return world.service()


@pytest.fixture
async def alice(world: World) -> UserRecord:
    return await world.user("alice")


@pytest.fixture
async def bob(world: World) -> UserRecord:
    return await world.user("bob")


async def assert_session_dead(sessions: SessionService, pair: TokenPair) -> None:
    with pytest.raises(TokenRevoked):
        await sessions.authenticate(pair.access_token)
    with pytest.raises((TokenRevoked, TokenReused)):
        await sessions.refresh(pair.refresh_token)


# -- login -------------------------------------------------------------------------------


async def test_login_issues_a_pair_whose_claims_match_the_session(
    sessions: SessionService, codec: TokenCodec, alice: UserRecord
) -> None:
    pair = await sessions.start(alice, user_agent="Firefox", ip="192.0.2.1", client_id="web")

    access = codec.decode_access(pair.access_token)
    refresh = codec.decode_refresh(pair.refresh_token)
    session = pair.session
    assert (session.user_id, session.username) == (alice.id, "alice")
    assert (session.user_agent, session.ip, session.client_id) == ("Firefox", "192.0.2.1", "web")
    assert (access.sub, access.sid, access.client_id, access.username) == (
        alice.id,
        session.sid,
        "web",
        "alice",
    )
    assert (access.iat, access.exp) == (START, START + POLICY.access_ttl)
    assert (refresh.sub, refresh.sid, refresh.jti) == (alice.id, session.sid, session.current_jti)
    assert (refresh.iat, refresh.exp) == (START, START + POLICY.refresh_ttl)
    assert access.jti != refresh.jti
    assert (pair.expires_in, pair.refresh_expires_in) == (POLICY.access_ttl, POLICY.refresh_ttl)
    assert await sessions.authenticate(pair.access_token) == access


async def test_every_login_is_a_new_session_with_its_own_ids(
    sessions: SessionService, alice: UserRecord
) -> None:
    first = await sessions.start(alice)
    second = await sessions.start(alice)

    assert first.session.sid != second.session.sid
    assert first.session.current_jti != second.session.current_jti
    assert first.access_token != second.access_token


async def test_remember_me_uses_remember_me_ttl(
    sessions: SessionService, codec: TokenCodec, clock: FakeClock, alice: UserRecord
) -> None:
    pair = await sessions.start(alice, remember_me=True)
    clock.advance(100)
    rotated = await sessions.refresh(pair.refresh_token)

    assert pair.refresh_expires_in == POLICY.remember_me_ttl
    assert codec.decode_refresh(pair.refresh_token).exp == START + POLICY.remember_me_ttl
    # Each rotation extends by the remember-me lifetime too, not the short one.
    assert codec.decode_refresh(rotated.refresh_token).exp == START + 100 + POLICY.remember_me_ttl
    assert codec.decode_access(rotated.access_token).exp == START + 100 + POLICY.access_ttl


# -- rotation, grace and reuse (invariants 1, 3 and 4) ---------------------------------


async def test_refresh_rotates_to_a_new_jti_in_the_same_session(
    sessions: SessionService, codec: TokenCodec, clock: FakeClock, alice: UserRecord
) -> None:
    login = await sessions.start(alice)
    clock.advance(30)

    rotated = await sessions.refresh(login.refresh_token)

    old, new = (
        codec.decode_refresh(login.refresh_token),
        codec.decode_refresh(rotated.refresh_token),
    )
    assert new.sid == old.sid
    assert new.jti != old.jti
    assert new.exp == START + 30 + POLICY.refresh_ttl
    assert (await sessions.authenticate(rotated.access_token)).sid == old.sid


async def test_the_rotated_out_token_is_refused_after_the_grace_window(
    sessions: SessionService, clock: FakeClock, alice: UserRecord
) -> None:
    login = await sessions.start(alice)
    rotated = await sessions.refresh(login.refresh_token)
    clock.advance(POLICY.refresh_grace + 1)

    with pytest.raises(TokenReused):
        await sessions.refresh(login.refresh_token)
    await assert_session_dead(sessions, rotated)


async def test_grace_window_returns_the_identical_refresh_token(
    sessions: SessionService,
    codec: TokenCodec,
    clock: FakeClock,
    audit: RecordingAuditLog,
    alice: UserRecord,
) -> None:
    login = await sessions.start(alice)
    clock.advance(30)
    first = await sessions.refresh(login.refresh_token)
    clock.advance(POLICY.refresh_grace - 1)

    retried = await sessions.refresh(login.refresh_token)

    assert retried.refresh_token == first.refresh_token
    assert (await sessions.authenticate(retried.access_token)).sid == login.session.sid
    # The grace answer is a benign race, not reuse: the child still rotates normally.
    clock.advance(1)
    following = await sessions.refresh(first.refresh_token)
    assert codec.decode_refresh(following.refresh_token).jti != (
        codec.decode_refresh(first.refresh_token).jti
    )
    assert audit.named("token.reuse_detected") == []
    assert [e["reason"] for e in audit.named("token.refreshed")] == ["rotated", "grace", "rotated"]


async def test_grandparent_token_is_reuse_that_ends_the_session(
    sessions: SessionService, audit: RecordingAuditLog, clock: FakeClock, alice: UserRecord
) -> None:
    login = await sessions.start(alice)
    clock.advance(1)
    child = await sessions.refresh(login.refresh_token)
    clock.advance(1)
    grandchild = await sessions.refresh(child.refresh_token)
    clock.advance(1)

    # Still inside the grace window of the last rotation, but two generations back.
    with pytest.raises(TokenReused):
        await sessions.refresh(login.refresh_token)

    reused = audit.named("token.reuse_detected")
    assert len(reused) == 1
    assert reused[0]["sid"] == login.session.sid
    assert reused[0]["user_id"] == alice.id
    await assert_session_dead(sessions, grandchild)
    with pytest.raises(TokenRevoked):
        await sessions.authenticate(child.access_token)


async def test_reuse_ends_only_the_session_it_happened_in(
    sessions: SessionService, clock: FakeClock, alice: UserRecord
) -> None:
    stolen = await sessions.start(alice)
    other_device = await sessions.start(alice)
    await sessions.refresh(stolen.refresh_token)
    clock.advance(POLICY.refresh_grace + 1)

    with pytest.raises(TokenReused):
        await sessions.refresh(stolen.refresh_token)

    assert (await sessions.authenticate(other_device.access_token)).sid == other_device.session.sid


def claimed_by(codec: TokenCodec, session: SessionRecord, user: UserRecord) -> str:
    """A well-signed refresh token naming ``session``'s current jti, but ``user`` as sub."""
    return codec.encode_refresh(
        sub=user.id,
        sid=session.sid,
        jti=session.current_jti,
        iat=session.current_iat,
        exp=session.expires_at,
    )


async def test_refresh_token_with_the_session_id_but_another_sub_is_refused(
    sessions: SessionService, codec: TokenCodec, alice: UserRecord, bob: UserRecord
) -> None:
    login = await sessions.start(alice)
    session = login.session
    bobs_claim = claimed_by(codec, session, bob)

    with pytest.raises(TokenRevoked):
        await sessions.refresh(bobs_claim)


async def test_a_refused_refresh_with_another_sub_leaves_the_owners_token_valid(
    sessions: SessionService,
    codec: TokenCodec,
    clock: FakeClock,
    alice: UserRecord,
    bob: UserRecord,
) -> None:
    login = await sessions.start(alice)
    session = login.session
    bobs_claim = claimed_by(codec, session, bob)
    with pytest.raises(TokenRevoked):
        await sessions.refresh(bobs_claim)
    clock.advance(POLICY.refresh_grace + 1)

    rotated = await sessions.refresh(login.refresh_token)

    assert rotated.session.sid == session.sid


async def test_a_garbage_refresh_token_is_invalid(sessions: SessionService) -> None:
    with pytest.raises(InvalidToken):
        await sessions.refresh("not-a-token")


# -- absolute session lifetime -------------------------------------------------------------


async def test_the_session_never_outlives_session_max_age(
    world: World, codec: TokenCodec, clock: FakeClock, alice: UserRecord
) -> None:
    policy = SessionPolicy(
        access_ttl=60, refresh_ttl=100, remember_me_ttl=100, session_max_age=250, refresh_grace=0
    )
    sessions = world.service(policy)
    deadline = START + policy.session_max_age
    pair = await sessions.start(alice)
    refresh_expiries = [codec.decode_refresh(pair.refresh_token).exp]
    access_expiries = [codec.decode_access(pair.access_token).exp]

    while clock.now + 40 < deadline:
        clock.advance(40)
        pair = await sessions.refresh(pair.refresh_token)
        refresh_expiries.append(codec.decode_refresh(pair.refresh_token).exp)
        access_expiries.append(codec.decode_access(pair.access_token).exp)
        assert pair.refresh_expires_in == refresh_expiries[-1] - int(clock.now)
        assert pair.expires_in == access_expiries[-1] - int(clock.now)

    assert max(refresh_expiries) == deadline
    assert max(access_expiries) == deadline
    assert refresh_expiries[0] < deadline  # the cap is what stopped the growth
    assert access_expiries[-1] < int(clock.now) + policy.access_ttl

    clock.now = deadline
    with pytest.raises(TokenRevoked):
        await sessions.authenticate(pair.access_token)
    with pytest.raises((TokenExpired, TokenRevoked)):
        await sessions.refresh(pair.refresh_token)
    clock.now = deadline + LEEWAY + 1
    with pytest.raises(TokenExpired):
        await sessions.refresh(pair.refresh_token)


async def test_a_remember_me_login_is_capped_at_session_max_age(
    world: World, codec: TokenCodec, alice: UserRecord
) -> None:
    policy = SessionPolicy(
        access_ttl=60, refresh_ttl=100, remember_me_ttl=1_000, session_max_age=250
    )
    sessions = world.service(policy)

    pair = await sessions.start(alice, remember_me=True)

    assert codec.decode_refresh(pair.refresh_token).exp == START + policy.session_max_age
    assert pair.refresh_expires_in == policy.session_max_age


async def test_an_unused_session_ends_when_its_refresh_token_expires(
    sessions: SessionService, clock: FakeClock, alice: UserRecord
) -> None:
    pair = await sessions.start(alice)
    clock.advance(POLICY.refresh_ttl - 1)
    assert await sessions.list_sessions(alice.id) != []

    clock.advance(1)

    assert await sessions.list_sessions(alice.id) == []
    with pytest.raises((TokenExpired, TokenRevoked)):
        await sessions.refresh(pair.refresh_token)


# -- logout (invariant 5) --------------------------------------------------------------


async def test_logout_with_only_a_refresh_token_ends_that_session(
    sessions: SessionService, alice: UserRecord
) -> None:
    leaving = await sessions.start(alice)
    staying = await sessions.start(alice)

    await sessions.logout(access=None, refresh_token=leaving.refresh_token)

    await assert_session_dead(sessions, leaving)
    assert (await sessions.authenticate(staying.access_token)).sid == staying.session.sid


async def test_logout_with_an_access_token_ends_its_session(
    sessions: SessionService, audit: RecordingAuditLog, alice: UserRecord
) -> None:
    pair = await sessions.start(alice)
    claims = await sessions.authenticate(pair.access_token)

    await sessions.logout(access=claims, refresh_token=None)

    await assert_session_dead(sessions, pair)
    assert audit.named("logout") == [
        {
            "outcome": "ok",
            "reason": "logout",
            "user_id": alice.id,
            "sid": pair.session.sid,
            "ip": None,
            "user_agent": None,
        }
    ]


async def test_logout_ignores_a_refresh_token_of_another_user(
    sessions: SessionService, alice: UserRecord, bob: UserRecord
) -> None:
    alices = await sessions.start(alice)
    bobs = await sessions.start(bob)
    alice_claims = await sessions.authenticate(alices.access_token)

    await sessions.logout(access=alice_claims, refresh_token=bobs.refresh_token)

    await assert_session_dead(sessions, alices)
    assert (await sessions.authenticate(bobs.access_token)).sub == bob.id
    assert (await sessions.refresh(bobs.refresh_token)).session.sid == bobs.session.sid


async def test_logout_without_any_token_is_refused(sessions: SessionService) -> None:
    with pytest.raises(MissingToken):
        await sessions.logout(access=None, refresh_token=None)


async def test_end_own_ends_the_users_own_session(
    sessions: SessionService, alice: UserRecord
) -> None:
    pair = await sessions.start(alice)

    await sessions.end_own(alice.id, pair.session.sid)

    await assert_session_dead(sessions, pair)


async def test_end_own_raises_not_found_for_someone_elses_session(
    sessions: SessionService, alice: UserRecord, bob: UserRecord
) -> None:
    bobs = await sessions.start(bob)

    with pytest.raises(NotFound):
        await sessions.end_own(alice.id, bobs.session.sid)
    with pytest.raises(NotFound):
        await sessions.end_own(alice.id, "no-such-session")

    assert (await sessions.authenticate(bobs.access_token)).sub == bob.id


async def test_end_all_with_keep_sid_keeps_exactly_that_session(
    sessions: SessionService, audit: RecordingAuditLog, alice: UserRecord, bob: UserRecord
) -> None:
    first, kept, third = [await sessions.start(alice) for _ in range(3)]
    bobs = await sessions.start(bob)

    ended = await sessions.end_all(alice.id, reason="password_changed", keep_sid=kept.session.sid)

    assert ended == 2
    await assert_session_dead(sessions, first)
    await assert_session_dead(sessions, third)
    assert [s.sid for s in await sessions.list_sessions(alice.id)] == [kept.session.sid]
    assert (await sessions.authenticate(kept.access_token)).sid == kept.session.sid
    assert (await sessions.authenticate(bobs.access_token)).sub == bob.id
    assert audit.named("session.revoked") == [
        {
            "outcome": "ok",
            "reason": "password_changed",
            "user_id": alice.id,
            "sid": kept.session.sid,
            "ip": None,
            "user_agent": None,
            "count": 2,
        }
    ]


async def test_end_all_without_keep_sid_ends_every_session_of_the_user(
    sessions: SessionService, alice: UserRecord
) -> None:
    pairs = [await sessions.start(alice) for _ in range(2)]

    assert await sessions.end_all(alice.id) == 2

    for pair in pairs:
        await assert_session_dead(sessions, pair)


# -- introspection (RFC 7662) -------------------------------------------------------------


async def test_introspection_reports_an_access_token_under_the_rfc7662_names(
    sessions: SessionService, codec: TokenCodec, alice: UserRecord
) -> None:
    pair = await sessions.start(alice, client_id="web")
    access = codec.decode_access(pair.access_token)

    info = await sessions.introspect(pair.access_token)

    assert info is not None
    assert info.introspection() == {
        "active": True,
        "token_type": "access_token",
        "sub": alice.id,
        "sid": pair.session.sid,
        "jti": access.jti,
        "iat": START,
        "exp": START + POLICY.access_ttl,
        "client_id": "web",
        "username": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
    }


async def test_introspection_reports_a_refresh_token_with_its_own_times_and_no_audience(
    sessions: SessionService, clock: FakeClock, alice: UserRecord
) -> None:
    login = await sessions.start(alice, client_id="web")
    clock.advance(30)
    rotated = await sessions.refresh(login.refresh_token)

    info = await sessions.introspect(rotated.refresh_token)

    assert info is not None
    assert info.introspection() == {
        "active": True,
        "token_type": "refresh_token",
        "sub": alice.id,
        "sid": login.session.sid,
        "jti": rotated.session.current_jti,
        "iat": START + 30,
        "exp": START + 30 + POLICY.refresh_ttl,
        "client_id": "web",
        "username": "alice",
        "iss": ISSUER,
    }


async def test_introspection_reports_nothing_for_an_ended_or_rotated_out_token(
    sessions: SessionService, clock: FakeClock, alice: UserRecord
) -> None:
    login = await sessions.start(alice)
    rotated = await sessions.refresh(login.refresh_token)
    clock.advance(POLICY.refresh_grace + 1)

    assert await sessions.introspect(login.refresh_token) is None
    await sessions.end(rotated.session.sid)
    assert await sessions.introspect(rotated.access_token) is None
    assert await sessions.introspect(rotated.refresh_token) is None
    assert await sessions.introspect("not-a-token") is None


# -- housekeeping ------------------------------------------------------------------------


async def test_purge_removes_revoked_and_expired_sessions(
    world: World, sessions: SessionService, clock: FakeClock, alice: UserRecord
) -> None:
    revoked = await sessions.start(alice)
    await sessions.start(alice)  # expires: the short refresh lifetime
    live = await sessions.start(alice, remember_me=True)
    await sessions.end(revoked.session.sid)
    clock.advance(POLICY.refresh_ttl + 1)
    assert await world.session_rows() == 3

    assert await sessions.purge() == 2

    assert await world.session_rows() == 1
    assert [s.sid for s in await sessions.list_sessions(alice.id)] == [live.session.sid]
    assert await sessions.purge() == 0


async def test_tokens_never_appear_in_the_audit_log(
    sessions: SessionService, audit: RecordingAuditLog, clock: FakeClock, alice: UserRecord
) -> None:
    issued: list[TokenPair] = []
    login = await sessions.start(alice)
    issued.append(login)
    issued.append(await sessions.refresh(login.refresh_token))
    clock.advance(POLICY.refresh_grace + 1)
    with pytest.raises(TokenReused):
        await sessions.refresh(login.refresh_token)
    other = await sessions.start(alice)
    issued.append(other)
    await sessions.logout(access=None, refresh_token=other.refresh_token)
    issued.append(await sessions.start(alice))
    await sessions.end_all(alice.id)

    logged = " ".join(f"{name} {fields!r}" for name, fields in audit.events)
    assert {name for name, _ in audit.events} == {
        "login.succeeded",
        "token.refreshed",
        "token.reuse_detected",
        "logout",
        "logout_all",
    }
    for pair in issued:
        for secret in (pair.access_token, pair.refresh_token, pair.session.current_jti):
            assert secret not in logged
        # Payloads and signatures; the header is the same for every token.
        for part in pair.refresh_token.split(".")[1:] + pair.access_token.split(".")[1:]:
            assert part not in logged
