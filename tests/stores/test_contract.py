"""The SessionStore contract: every store passes this one suite, unchanged.

Times are POSIX seconds near the real clock, because Redis expires keys by its own clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
import redis.asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.redis_server import PrivateRedisCluster
from tests.stores.session_records import (
    GRACE,
    REFRESH_TTL,
    created,
    new_jti,
    rotated,
    username_of,
)
from tokenstile.core.store import (
    Rotation,
    RotationOutcome,
    SessionStore,
    UserRecord,
)
from tokenstile.stores.redis import RedisSessionStore


class StoreSpec(NamedTuple):
    kind: str
    url: str
    redis_prefix: str = ""

    @property
    def on_redis(self) -> bool:
        """Whether the store is the Redis one (on one server or on a cluster)."""
        return self.kind in ("redis", "redis-cluster")

    def redis_store(self) -> RedisSessionStore:
        """A new Redis store for this spec."""
        return RedisSessionStore.from_url(
            self.url, prefix=self.redis_prefix, cluster=self.kind == "redis-cluster"
        )

    def raw_redis(self) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
        """A plain client (bytes replies) to look behind the store."""
        if self.kind == "redis-cluster":
            return redis.asyncio.RedisCluster.from_url(self.url)
        return redis.asyncio.Redis.from_url(self.url)


@dataclass
class Backend:
    """A store under test, plus what the suite needs to look behind it."""

    sessions: SessionStore
    add_user: Callable[[UserRecord], Awaitable[None]] | None
    holds_state: Callable[[str], Awaitable[bool]]
    """Whether anything about session ``sid`` is still stored, revoked or not."""


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    # Sync, so that service fixtures are resolved (and skipped) outside the event loop.
    kind: str = request.param
    if kind == "sqlite":
        return StoreSpec(kind, f"sqlite+aiosqlite:///{tmp_path / 'tokenstile.db'}")
    if kind == "postgres":
        return StoreSpec(kind, request.getfixturevalue("postgres_database_url"))
    if kind == "redis-cluster":
        cluster: PrivateRedisCluster = request.getfixturevalue("redis_cluster")
        return StoreSpec(kind, cluster.url, request.getfixturevalue("redis_cluster_prefix"))
    return StoreSpec(
        kind, request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    )


@pytest.fixture
async def backend(store_spec: StoreSpec) -> AsyncIterator[Backend]:
    if store_spec.on_redis:
        store = store_spec.redis_store()
        raw = store_spec.raw_redis()

        async def redis_holds_state(sid: str) -> bool:
            return await raw.exists(f"{store_spec.redis_prefix}{{{sid}}}:session") > 0

        yield Backend(store, None, redis_holds_state)
        await raw.aclose()
        await store.aclose()
        return

    # Imported here so that the Redis runs of this suite need no SQL store.
    from tokenstile.stores.sql import SqlDatabase

    db = SqlDatabase.from_url(store_spec.url)
    await db.upgrade()
    engine = create_async_engine(store_spec.url)

    async def sql_holds_state(sid: str) -> bool:
        async with engine.connect() as connection:
            query = text("SELECT count(*) FROM sessions WHERE sid = :sid")
            return bool((await connection.execute(query, {"sid": sid})).scalar_one())

    yield Backend(db.sessions, db.users.add_user, sql_holds_state)
    await engine.dispose()
    await db.aclose()


@pytest.fixture
def session_store(backend: Backend) -> SessionStore:
    return backend.sessions


@pytest.fixture
def make_user(backend: Backend) -> Callable[[], Awaitable[str]]:
    """Create a user the store can own sessions for; returns its id."""

    async def make() -> str:
        user_id = str(uuid.uuid4())
        if backend.add_user is not None:
            user = UserRecord(user_id, username_of(user_id), "x", created_at=time.time())
            await backend.add_user(user)
        return user_id

    return make


@pytest.fixture
async def user_id(make_user: Callable[[], Awaitable[str]]) -> str:
    return await make_user()


@pytest.fixture
def now() -> float:
    return time.time()


# -- create and read -----------------------------------------------------------------


@pytest.mark.parametrize(
    "details",
    [
        pytest.param({}, id="optional-fields-none"),
        pytest.param(
            {"user_agent": "Mozilla/5.0 (X11) 한국어", "ip": "2001:db8::1", "client_id": "web"},
            id="optional-fields-set",
        ),
    ],
)
async def test_created_session_reads_back_field_for_field(
    session_store: SessionStore, user_id: str, now: float, details: dict[str, str]
) -> None:
    # A created_at with every float digit in use, to catch lossy storage.
    session = await created(session_store, user_id, now, created_at=now - 0.123456789, **details)

    assert await session_store.get_session(session.sid, now=now) == session
    assert await session_store.is_active(session.sid, now=now)


async def test_unknown_session_is_neither_found_nor_active(
    session_store: SessionStore, now: float
) -> None:
    assert await session_store.get_session("no-such-sid", now=now) is None
    assert not await session_store.is_active("no-such-sid", now=now)


# -- rotation --------------------------------------------------------------------------


async def test_rotating_the_current_token_makes_the_new_one_current(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    session = await created(session_store, user_id, now)
    later, child = now + 100.25, new_jti()

    result = await session_store.rotate(
        session.sid, session.current_jti, child, now=later, grace=GRACE
    )

    expected = dataclasses.replace(
        session,
        current_jti=child,
        previous_jti=session.current_jti,
        current_iat=int(later),
        rotated_at=later,
        last_used_at=later,
        expires_at=int(later) + REFRESH_TTL,
    )
    assert result == Rotation(RotationOutcome.ROTATED, expected)
    assert expected.expires_at > session.expires_at
    assert await session_store.get_session(session.sid, now=later) == expected


async def test_rotation_never_extends_a_session_past_max_expires_at(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    session = await created(session_store, user_id, now, max_expires_at=int(now) + 1000)
    later = now + 500

    after = await rotated(session_store, session, later)

    assert int(later) + REFRESH_TTL > session.max_expires_at
    assert after.expires_at == session.max_expires_at


# Exact binary fractions, so that "exactly at the end of the window" is exact.
@pytest.mark.parametrize("delay", [0.0, 9.5, GRACE])
async def test_presenting_the_parent_within_grace_returns_the_same_child_and_changes_nothing(
    session_store: SessionStore, user_id: str, now: float, delay: float
) -> None:
    rotated_at = int(now) + 0.5
    session = await created(session_store, user_id, now)
    after = await rotated(session_store, session, rotated_at)

    result = await session_store.rotate(
        session.sid, session.current_jti, new_jti(), now=rotated_at + delay, grace=GRACE
    )

    assert result == Rotation(RotationOutcome.GRACE, after)
    assert await session_store.get_session(session.sid, now=rotated_at + delay) == after


async def test_presenting_the_parent_after_grace_is_reuse_and_ends_the_session(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    rotated_at = int(now) + 0.5
    session = await created(session_store, user_id, now)
    after = await rotated(session_store, session, rotated_at)
    late = rotated_at + GRACE + 0.5

    result = await session_store.rotate(
        session.sid, session.current_jti, new_jti(), now=late, grace=GRACE
    )

    assert result == Rotation(RotationOutcome.REUSED, None)
    assert not await session_store.is_active(session.sid, now=late)
    assert await session_store.get_session(session.sid, now=late) is None
    # The child issued before the theft was noticed dies with the session.
    child = await session_store.rotate(
        session.sid, after.current_jti, new_jti(), now=late, grace=GRACE
    )
    assert child.outcome is RotationOutcome.GONE


async def test_presenting_a_grandparent_within_grace_is_reuse(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    grandparent = await created(session_store, user_id, now)
    parent = await rotated(session_store, grandparent, now + 1)
    await rotated(session_store, parent, now + 2)

    result = await session_store.rotate(
        grandparent.sid, grandparent.current_jti, new_jti(), now=now + 3, grace=GRACE
    )

    assert result.outcome is RotationOutcome.REUSED
    assert not await session_store.is_active(grandparent.sid, now=now + 3)


async def test_grace_zero_makes_presenting_the_parent_reuse_even_at_once(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    session = await created(session_store, user_id, now)
    await rotated(session_store, session, now)

    result = await session_store.rotate(
        session.sid, session.current_jti, new_jti(), now=now, grace=0
    )

    assert result.outcome is RotationOutcome.REUSED
    assert not await session_store.is_active(session.sid, now=now)


async def test_presenting_a_jti_the_session_never_had_is_reuse(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    session = await created(session_store, user_id, now)

    result = await session_store.rotate(session.sid, new_jti(), new_jti(), now=now, grace=GRACE)

    assert result.outcome is RotationOutcome.REUSED
    assert not await session_store.is_active(session.sid, now=now)


async def test_rotating_an_unknown_session_is_gone(session_store: SessionStore, now: float) -> None:
    result = await session_store.rotate("no-such-sid", new_jti(), new_jti(), now=now, grace=GRACE)

    assert result == Rotation(RotationOutcome.GONE, None)


async def test_rotating_a_revoked_session_is_gone_and_does_not_bring_it_back(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    session = await created(session_store, user_id, now)
    await session_store.revoke_session(session.sid, reason="logout", now=now)

    result = await session_store.rotate(
        session.sid, session.current_jti, new_jti(), now=now + 1, grace=GRACE
    )

    assert result == Rotation(RotationOutcome.GONE, None)
    assert not await session_store.is_active(session.sid, now=now + 1)


async def test_rotating_a_session_past_its_expires_at_is_gone(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    session = await created(session_store, user_id, now)

    result = await session_store.rotate(
        session.sid, session.current_jti, new_jti(), now=session.expires_at + 1, grace=GRACE
    )

    assert result == Rotation(RotationOutcome.GONE, None)


async def test_invariant_2_at_most_one_live_refresh_token_under_concurrency(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    session = await created(session_store, user_id, now)
    children = [new_jti() for _ in range(20)]

    results = await asyncio.gather(
        *(
            session_store.rotate(session.sid, session.current_jti, child, now=now, grace=GRACE)
            for child in children
        )
    )

    winners = [r for r in results if r.outcome is RotationOutcome.ROTATED]
    assert len(winners) == 1
    winner = winners[0].session
    assert winner is not None
    assert winner.current_jti in children
    assert [r.outcome for r in results].count(RotationOutcome.GRACE) == len(children) - 1
    assert {r.session.current_jti for r in results if r.session} == {winner.current_jti}
    stored = await session_store.get_session(session.sid, now=now)
    assert stored is not None
    assert stored.current_jti == winner.current_jti


# -- liveness and revocation -----------------------------------------------------------


async def test_revoking_a_session_ends_it_once(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    session = await created(session_store, user_id, now)

    assert await session_store.revoke_session(session.sid, reason="logout", now=now)
    assert not await session_store.is_active(session.sid, now=now)
    assert await session_store.get_session(session.sid, now=now) is None
    assert not await session_store.revoke_session(session.sid, reason="logout", now=now)


async def test_revoking_an_unknown_session_reports_nothing_revoked(
    session_store: SessionStore, now: float
) -> None:
    assert not await session_store.revoke_session("no-such-sid", reason="logout", now=now)


async def test_session_is_active_until_its_expires_at(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    session = await created(session_store, user_id, now)

    assert await session_store.is_active(session.sid, now=session.expires_at - 1)
    assert not await session_store.is_active(session.sid, now=session.expires_at + 1)
    assert await session_store.get_session(session.sid, now=session.expires_at + 1) is None


async def test_revoke_user_sessions_ends_every_session_but_the_kept_one(
    session_store: SessionStore, make_user: Callable[[], Awaitable[str]], now: float
) -> None:
    user, other_user = await make_user(), await make_user()
    kept, *ended = [await created(session_store, user, now) for _ in range(3)]
    bystander = await created(session_store, other_user, now)

    count = await session_store.revoke_user_sessions(
        user, reason="password_changed", now=now, keep_sid=kept.sid
    )

    assert count == 2
    assert await session_store.is_active(kept.sid, now=now)
    for session in ended:
        assert not await session_store.is_active(session.sid, now=now)
    assert await session_store.is_active(bystander.sid, now=now)


async def test_revoke_user_sessions_counts_only_sessions_that_were_live(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    await created(session_store, user_id, now)
    revoked = await created(session_store, user_id, now)
    await session_store.revoke_session(revoked.sid, reason="logout", now=now)

    assert await session_store.revoke_user_sessions(user_id, reason="logout_all", now=now) == 1
    assert await session_store.revoke_user_sessions(user_id, reason="logout_all", now=now) == 0


async def test_list_user_sessions_shows_only_live_sessions_of_that_user_oldest_first(
    session_store: SessionStore, make_user: Callable[[], Awaitable[str]], now: float
) -> None:
    user, other_user = await make_user(), await make_user()
    newest = await created(session_store, user, now, created_at=now - 1)
    oldest = await created(session_store, user, now, created_at=now - 300, ip="192.0.2.1")
    revoked = await created(session_store, user, now, created_at=now - 200)
    expired = await created(session_store, user, now, created_at=now - 100, expires_at=int(now) + 5)
    await created(session_store, other_user, now)
    await session_store.revoke_session(revoked.sid, reason="logout", now=now)

    listed = await session_store.list_user_sessions(user, now=now + 10)

    assert listed == [oldest, newest]
    assert expired.expires_at < now + 10


async def test_list_user_sessions_of_a_user_without_sessions_is_empty(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    assert await session_store.list_user_sessions(user_id, now=now) == []


# -- bounded state ---------------------------------------------------------------------


async def test_invariant_6_revocation_state_expires_by_itself(
    session_store: SessionStore, backend: Backend, user_id: str
) -> None:
    start = time.time()
    expiring = await created(session_store, user_id, start, expires_at=int(start) + 1)
    revoked = await created(session_store, user_id, start)
    await session_store.revoke_session(revoked.sid, reason="logout", now=start)
    assert await backend.holds_state(expiring.sid)

    # Real time, not a later `now`: Redis expires keys by its own clock.
    await asyncio.sleep(expiring.expires_at + 0.2 - time.time())
    await session_store.purge(now=time.time())

    assert not await backend.holds_state(expiring.sid)
    assert not await backend.holds_state(revoked.sid)
    assert not await session_store.is_active(expiring.sid, now=time.time())


async def test_purge_keeps_live_sessions(
    session_store: SessionStore, backend: Backend, user_id: str, now: float
) -> None:
    session = await created(session_store, user_id, now)

    await session_store.purge(now=now)

    assert await backend.holds_state(session.sid)
    assert await session_store.get_session(session.sid, now=now) == session


async def test_ping_answers_while_the_store_is_up(session_store: SessionStore) -> None:
    await session_store.ping()


async def test_rotate_for_another_owner_is_gone_and_changes_nothing(
    session_store: SessionStore, user_id: str
) -> None:
    now = time.time()
    session = await created(session_store, user_id, now)

    result = await session_store.rotate(
        session.sid, session.current_jti, new_jti(), now=now, grace=GRACE, user_id="someone-else"
    )

    assert result == Rotation(RotationOutcome.GONE, None)
    assert await session_store.get_session(session.sid, now=now) == session
    owned = await session_store.rotate(
        session.sid, session.current_jti, new_jti(), now=now, grace=GRACE, user_id=user_id
    )
    assert owned.outcome is RotationOutcome.ROTATED


# -- stale requests ----------------------------------------------------------------------


async def test_invariant_9_a_rotation_reaching_the_store_too_late_changes_nothing(
    session_store: SessionStore, user_id: str
) -> None:
    # `now` is when the caller started; the store's own clock says it waited 5 s.
    started = time.time() - 5
    session = await created(session_store, user_id, started)

    late = await session_store.rotate(
        session.sid, session.current_jti, new_jti(), now=started, grace=GRACE, max_delay=2.0
    )
    reused_late = await session_store.rotate(
        session.sid, "a-jti-never-issued", new_jti(), now=started, grace=GRACE, max_delay=2.0
    )

    assert late == Rotation(RotationOutcome.STALE, None)
    assert reused_late == Rotation(RotationOutcome.STALE, None)
    assert await session_store.get_session(session.sid, now=time.time()) == session


async def test_a_rotation_within_max_delay_rotates(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    session = await created(session_store, user_id, now)

    result = await session_store.rotate(
        session.sid, session.current_jti, new_jti(), now=time.time(), grace=GRACE, max_delay=2.0
    )

    assert result.outcome is RotationOutcome.ROTATED
