"""SPEC §1 invariants under any sequence of steps, on every store (issue 11 item 2).

A hypothesis state machine drives :class:`SessionService` on a real store with a fake
clock, through logins, refreshes (current token, parent inside and after the grace
window, grandparent), logouts, logout-all, ending one session, password changes,
purges and jumps of the clock past the access, refresh and absolute lifetimes. Beside it
runs a plain model of every session and every token it ever issued. After each step,
every token the model knows is checked against the service without changing anything
(``authenticate`` for access tokens, ``introspect`` for refresh tokens, and the user's
session list), and each refresh and logout is checked for its exact answer: a new pair,
the same child inside the grace window, or ``TokenReused``/``TokenRevoked``/
``TokenExpired``.

Hypothesis state machines are synchronous: each machine owns one event loop, creates
its store inside it (SQLite's loop-side reader and Redis clients bind to the loop they
are first used on) and closes both at teardown.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import StoreSpec, run_async
from tests.core.clocks import FakeClock
from tests.core.test_sessions import RecordingAuditLog
from tokenstile.core.codec import TokenCodec
from tokenstile.core.keys import KeyRing
from tokenstile.core.sessions import SessionPolicy, SessionService, TokenPair
from tokenstile.core.store import SessionStore, UserRecord
from tokenstile.errors import NotFound, TokenExpired, TokenReused, TokenRevoked

T = TypeVar("T")

SECRET = b"a state-machine secret of at least thirty-two bytes"
LEEWAY = 5
POLICY = SessionPolicy(
    access_ttl=60,
    refresh_ttl=600,
    remember_me_ttl=1_200,
    session_max_age=1_500,
    refresh_grace=10.0,
)
USERS = 3
# Clock jumps: inside the grace window (1 and 3 reach its edge exactly, 10 s), past it,
# past the access lifetime plus leeway, half a refresh lifetime, past the refresh
# lifetime, past the absolute maximum age.
STEPS = (1, 3, 3, 3, 11, 11, 66, 66, 300, 601, 1_501)
CHECKED_PER_STEP = 16
"""Tokens checked after each step (the newest first); teardown checks every one."""
SETTINGS = settings(
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
EXAMPLES = {"sqlite": 30, "postgres": 30, "redis": 80, "redis-cluster": 60}
"""Runs per store, for about 10-15 s each on two cores: a SQL write costs a few times
a Redis script."""

Outcome = type[Exception] | str
"""What a call must answer: an exception class, or ``"ok"``/``"rotated"``/``"grace"``."""


@dataclass
class Refresh:
    token: str
    jti: str
    exp: int


@dataclass
class Access:
    token: str
    exp: int


@dataclass
class ModelSession:
    """What the store must hold about one session, in the model's own terms."""

    sid: str
    user: int
    refresh_ttl: int
    max_expires_at: int
    expires_at: int
    chain: list[Refresh]
    access: list[Access] = field(default_factory=list)
    rotated_at: float | None = None
    ended: bool = False
    """Revoked: logout, logout-all, password change, reuse."""

    def live(self, now: float) -> bool:
        return not self.ended and self.expires_at > now

    @property
    def current(self) -> Refresh:
        return self.chain[-1]


def refresh_outcome(session: ModelSession, index: int, now: float) -> Outcome:
    """What presenting ``session.chain[index]`` to ``refresh`` must answer at ``now``."""
    token = session.chain[index]
    if now >= token.exp + LEEWAY:
        return TokenExpired  # refused by the codec: the store is not asked
    if not session.live(now):
        return TokenRevoked
    if index == len(session.chain) - 1:
        return "rotated"
    in_grace = session.rotated_at is not None and now - session.rotated_at <= POLICY.refresh_grace
    if index == len(session.chain) - 2 and POLICY.refresh_grace > 0 and in_grace:
        return "grace"
    return TokenReused


def access_outcome(session: ModelSession, token: Access, now: float) -> Outcome:
    if now >= token.exp + LEEWAY:
        return TokenExpired
    return "ok" if session.live(now) else TokenRevoked


def refresh_active(session: ModelSession, index: int, now: float) -> bool:
    """Whether introspection must call ``session.chain[index]`` active (invariant 2)."""
    return refresh_outcome(session, index, now) == "rotated"


class SessionMachine(RuleBasedStateMachine):
    """One run: a fresh event loop, store, clock and users; the model starts empty."""

    spec: StoreSpec

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        # Ahead of the real clock: Redis expires keys by its own clock, and must never
        # drop a session the fake clock still considers live.
        self.clock = FakeClock(math.floor(time.time()) + 3_600 + 0.25)
        self.audit = RecordingAuditLog()
        self.codec = TokenCodec(
            KeyRing.symmetric(SECRET),
            issuer="tokenstile-test",
            audience="tokenstile-test-api",
            leeway=LEEWAY,
            clock=self.clock,
        )
        self.closers: list[Callable[[], Awaitable[None]]] = []
        store = self.run(self.open_store)
        self.service = SessionService(store, self.codec, POLICY, clock=self.clock, audit=self.audit)
        self.sessions: list[ModelSession] = []
        self.checked = 0

    # -- plumbing ----------------------------------------------------------------------

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            return await make()

        return self.loop.run_until_complete(main())

    async def open_store(self) -> SessionStore:
        if self.spec.on_redis:
            redis_store = self.spec.redis_store()
            self.closers.append(redis_store.aclose)
            self.users = [self.new_user(n) for n in range(USERS)]
            return redis_store
        from tokenstile.stores.sql import SqlDatabase

        db = SqlDatabase.from_url(self.spec.url)  # the schema is already there
        self.closers.append(db.aclose)
        self.users = [self.new_user(n) for n in range(USERS)]
        for user in self.users:
            await db.users.add_user(user)
        return db.sessions

    def new_user(self, n: int) -> UserRecord:
        user_id = str(uuid.uuid4())
        return UserRecord(user_id, f"u{n}-{user_id[:8]}", "x", created_at=self.clock())

    def outcome(self, make: Callable[[], Awaitable[T]]) -> T | type[Exception]:
        try:
            return self.run(make)
        except (TokenExpired, TokenRevoked, TokenReused, NotFound) as exc:
            return type(exc)

    def pick(self, candidates: list[ModelSession], index: int) -> ModelSession:
        return candidates[index % len(candidates)]

    def with_parent(self, *, in_grace: bool) -> list[ModelSession]:
        now = self.clock()
        return [
            s
            for s in self.sessions
            if s.rotated_at is not None and (now - s.rotated_at <= POLICY.refresh_grace) == in_grace
        ]

    def record_access(self, session: ModelSession, pair: TokenPair, now: float) -> None:
        issued = math.floor(now)
        claims = self.codec.decode_access(pair.access_token)
        expected_exp = min(issued + POLICY.access_ttl, session.expires_at)
        assert (claims.sid, claims.sub, claims.exp) == (
            session.sid,
            self.users[session.user].id,
            expected_exp,
        )
        assert pair.expires_in == expected_exp - issued
        assert pair.refresh_expires_in == session.expires_at - issued
        session.access.append(Access(pair.access_token, claims.exp))

    # -- rules -------------------------------------------------------------------------

    @rule(user=st.integers(0, USERS - 1), remember_me=st.booleans())
    def login(self, user: int, remember_me: bool) -> None:
        now = self.clock()
        pair = self.run(lambda: self.service.start(self.users[user], remember_me=remember_me))
        issued = math.floor(now)
        ttl = POLICY.remember_me_ttl if remember_me else POLICY.refresh_ttl
        max_expires_at = issued + POLICY.session_max_age
        claims = self.codec.decode_refresh(pair.refresh_token)
        assert claims.exp == min(issued + ttl, max_expires_at)
        assert all(claims.sid != s.sid for s in self.sessions)
        session = ModelSession(
            sid=claims.sid,
            user=user,
            refresh_ttl=ttl,
            max_expires_at=max_expires_at,
            expires_at=claims.exp,
            chain=[Refresh(pair.refresh_token, claims.jti, claims.exp)],
        )
        self.sessions.append(session)
        self.record_access(session, pair, now)

    def present(self, session: ModelSession, index: int) -> None:
        """Refresh with ``session.chain[index]`` and hold the answer against the model."""
        now = self.clock()
        expected = refresh_outcome(session, index, now)
        presented = session.chain[index]
        audited = len(self.audit.events)
        answer = self.outcome(lambda: self.service.refresh(presented.token))
        if not isinstance(answer, TokenPair):
            assert answer is expected, (answer, expected)
            if answer is TokenReused:
                session.ended = True  # invariant 4: the whole session goes, audited
                assert any(
                    fields.get("sid") == session.sid and "reuse" in f"{name} {fields}"
                    for name, fields in self.audit.events[audited:]
                ), self.audit.events[audited:]
            return
        claims = self.codec.decode_refresh(answer.refresh_token)
        assert answer.session.sid == claims.sid == session.sid
        if expected == "grace":
            # Invariant 3: the very same child, token for token.
            assert answer.refresh_token == session.current.token
        else:
            assert expected == "rotated", expected
            # Invariant 1: a new refresh token; the presented one is now the parent.
            assert claims.jti not in {token.jti for token in session.chain}
            expires_at = min(math.floor(now) + session.refresh_ttl, session.max_expires_at)
            assert claims.exp == expires_at
            session.chain.append(Refresh(answer.refresh_token, claims.jti, claims.exp))
            session.expires_at = expires_at
            session.rotated_at = now
        self.record_access(session, answer, now)

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 1_000))
    def refresh_current(self, index: int) -> None:
        # Live sessions first: a dead one's current token is presented by the other rules.
        live = [s for s in self.sessions if s.live(self.clock())]
        session = self.pick(live or self.sessions, index)
        self.present(session, len(session.chain) - 1)

    @precondition(lambda self: self.with_parent(in_grace=True))
    @rule(index=st.integers(0, 1_000))
    def refresh_parent_inside_grace(self, index: int) -> None:
        session = self.pick(self.with_parent(in_grace=True), index)
        self.present(session, len(session.chain) - 2)

    @precondition(lambda self: self.with_parent(in_grace=False))
    @rule(index=st.integers(0, 1_000))
    def refresh_parent_after_grace(self, index: int) -> None:
        session = self.pick(self.with_parent(in_grace=False), index)
        self.present(session, len(session.chain) - 2)

    @precondition(lambda self: any(len(s.chain) >= 3 for s in self.sessions))
    @rule(index=st.integers(0, 1_000), back=st.integers(0, 1_000))
    def refresh_grandparent(self, index: int, back: int) -> None:
        session = self.pick([s for s in self.sessions if len(s.chain) >= 3], index)
        self.present(session, back % (len(session.chain) - 2))

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 1_000), newest=st.booleans())
    def logout_with_refresh_token(self, index: int, newest: bool) -> None:
        """Any refresh token of the session ends it, unless the token has expired."""
        session = self.pick(self.sessions, index)
        token = session.current if newest else session.chain[0]
        now = self.clock()
        self.run(lambda: self.service.logout(access=None, refresh_token=token.token))
        if now < token.exp + LEEWAY:
            session.ended = True

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 1_000))
    def logout_with_access_token(self, index: int) -> None:
        session = self.pick(self.sessions, index)
        token = session.access[-1]
        expected = access_outcome(session, token, self.clock())
        claims = self.outcome(lambda: self.service.authenticate(token.token))
        if isinstance(claims, type):
            assert claims is expected
            return
        assert expected == "ok"
        self.run(lambda: self.service.logout(access=claims, refresh_token=None))
        session.ended = True

    @rule(user=st.integers(0, USERS - 1))
    def logout_all(self, user: int) -> None:
        self.run(lambda: self.service.end_all(self.users[user].id))
        for session in self.sessions:
            if session.user == user:
                session.ended = True

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 1_000), as_owner=st.booleans())
    def end_one_session(self, index: int, as_owner: bool) -> None:
        session = self.pick(self.sessions, index)
        user = session.user if as_owner else (session.user + 1) % USERS
        live = session.live(self.clock())
        answer = self.outcome(lambda: self.service.end_own(self.users[user].id, session.sid))
        if as_owner and live:
            assert answer is None
            session.ended = True
        else:
            assert answer is NotFound  # someone else's, or already over: left as it is

    @rule(user=st.integers(0, USERS - 1), index=st.integers(0, 1_000))
    def change_password(self, user: int, index: int) -> None:
        """Every session of the user ends but the one that made the change."""
        own = [s for s in self.sessions if s.user == user]
        keep = self.pick(own, index).sid if own else None
        self.run(
            lambda: self.service.end_all(
                self.users[user].id, reason="password_changed", keep_sid=keep
            )
        )
        for session in own:
            if session.sid != keep:
                session.ended = True

    @rule(seconds=st.sampled_from(STEPS))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    # Only on SQL, where purge deletes rows: on Redis it merely tidies the user indexes
    # by scanning the whole keyspace (of a shared test server), and sessions expire by TTL.
    @precondition(lambda self: not self.spec.on_redis)
    @rule()
    def purge(self) -> None:
        """Dropping dead state refuses their tokens exactly as before (invariant 6)."""
        self.run(self.service.purge)

    # -- what must hold after every step -------------------------------------------------

    def tokens(self) -> Iterator[tuple[ModelSession, Access | int]]:
        """Every token the model knows, newest first: access tokens, and refresh tokens by
        their place in the session's chain."""
        for session in reversed(self.sessions):
            yield session, len(session.chain) - 1
            for token in reversed(session.access):
                yield session, token
            for index in range(len(session.chain) - 2, -1, -1):
                yield session, index

    def check(self, session: ModelSession, token: Access | int) -> None:
        now = self.clock()
        self.checked += 1
        if isinstance(token, Access):
            expected = access_outcome(session, token, now)
            answer = self.outcome(lambda: self.service.authenticate(token.token))
            if expected == "ok":
                assert not isinstance(answer, type), (answer, session.sid)
                assert answer.sid == session.sid
            else:
                assert answer is expected, (answer, expected, session.sid)
            return
        info = self.run(lambda: self.service.introspect(session.chain[token].token))
        assert (info is not None) == refresh_active(session, token, now), (token, session)

    @invariant()
    def every_known_token_answers_as_the_model_says(self) -> None:
        for n, (session, token) in enumerate(self.tokens()):
            if n >= CHECKED_PER_STEP:
                break
            self.check(session, token)

    @invariant()
    def each_user_lists_exactly_the_live_sessions(self) -> None:
        now = self.clock()
        for user_number, user in enumerate(self.users):
            listed = self.run(lambda user=user: self.service.list_sessions(user.id))  # type: ignore[misc]
            expected = {s.sid for s in self.sessions if s.user == user_number and s.live(now)}
            assert {s.sid for s in listed} == expected

    def teardown(self) -> None:
        try:
            for session, token in list(self.tokens()):
                self.check(session, token)
        finally:
            for close in reversed(self.closers):
                self.run(close)
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


@pytest.fixture
def prepared_spec(store_spec: StoreSpec) -> StoreSpec:
    """The store under test with its schema in place, so each machine only connects."""
    if not store_spec.on_redis:
        from tokenstile.stores.sql import SqlDatabase

        async def upgrade() -> None:
            db = SqlDatabase.from_url(store_spec.url)
            try:
                await db.upgrade()
            finally:
                await db.aclose()

        run_async(upgrade)
    return store_spec


def test_sessions_keep_the_spec_invariants_under_any_sequence_of_steps(
    prepared_spec: StoreSpec,
) -> None:
    machine: Any = type("Machine", (SessionMachine,), {"spec": prepared_spec})
    run_state_machine_as_test(
        machine, settings=settings(SETTINGS, max_examples=EXAMPLES[prepared_spec.kind])
    )
