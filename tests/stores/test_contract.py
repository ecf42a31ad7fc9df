"""The SessionStore contract: every store passes this one suite, unchanged.

The stores come from ``store_spec`` (tests/conftest.py: one param per store mode) and
``backend`` (tests/stores/conftest.py). Times are POSIX seconds near the real clock,
because Redis expires keys by its own clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import StoreSpec
from tests.stores.conftest import Backend
from tests.stores.session_records import (
    GRACE,
    REFRESH_TTL,
    created,
    new_jti,
    rotated,
)
from tokenstile.core.store import Rotation, RotationOutcome, SessionStore
from tokenstile.errors import StoreUnavailable


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
    assert await session_store.get_session(session.sid, now=later) == expected
    # The rotation extended the session: it works past its first expires_at.
    assert await session_store.is_active(session.sid, now=session.expires_at + 1)


async def test_rotation_never_extends_a_session_past_max_expires_at(
    session_store: SessionStore, user_id: str, now: float
) -> None:
    # Unclamped, a rotation at `later` would extend the session to later + REFRESH_TTL.
    session = await created(
        session_store, user_id, now, expires_at=int(now) + 600, max_expires_at=int(now) + 1000
    )
    later = now + 500

    after = await rotated(session_store, session, later)

    assert after.expires_at == session.max_expires_at
    assert await session_store.is_active(session.sid, now=session.max_expires_at - 1)
    assert not await session_store.is_active(session.sid, now=session.max_expires_at + 1)


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


async def test_revoking_an_expired_session_reports_nothing_revoked(
    session_store: SessionStore, user_id: str
) -> None:
    start = time.time()
    session = await created(session_store, user_id, start, expires_at=int(start) + 1)
    # Real time, not a later `now`: Redis expires keys by its own clock.
    await asyncio.sleep(session.expires_at + 0.2 - time.time())

    assert not await session_store.revoke_session(session.sid, reason="logout", now=time.time())


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

    listed_now = await session_store.list_user_sessions(user, now=now)
    listed_later = await session_store.list_user_sessions(user, now=now + 10)

    assert listed_now == [oldest, expired, newest]
    assert listed_later == [oldest, newest]


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


async def test_ping_answers_while_the_store_is_up_and_raises_while_it_is_down(
    backend: Backend, tmp_path: Path
) -> None:
    down = _store_at_nothing(backend.spec, tmp_path)
    try:
        await backend.sessions.ping()
        with pytest.raises(StoreUnavailable):
            await down.ping()
    finally:
        await down.aclose()


def _store_at_nothing(spec: StoreSpec, tmp_path: Path) -> SessionStore:
    """A store of ``spec``'s kind whose server refuses connections (port 1), or whose
    SQLite file cannot be opened."""
    if spec.kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'tokenstile.db'}"
    else:
        parts = urlsplit(spec.url)
        user = f"{parts.username}@" if parts.username else ""
        url = parts._replace(netloc=f"{user}127.0.0.1:1").geturl()
    if spec.on_redis:
        return StoreSpec(spec.kind, url, spec.redis_prefix).redis_store()
    from tokenstile.stores.sql import SqlDatabase

    return SqlDatabase.from_url(url, timeout=0.5).sessions


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
