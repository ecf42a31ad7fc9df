"""Coalesced liveness checks on every store: fewer round trips than requests, and never
an answer from before the question (SPEC §1 invariant 5)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from sqlalchemy import event
from sqlalchemy.engine import Connection

from tests.conftest import StoreSpec
from tests.redis_server import PrivateRedis
from tests.stores.conftest import Backend
from tests.stores.session_records import created
from tokenstile.core.liveness import LivenessBatcher
from tokenstile.core.store import SessionStore
from tokenstile.errors import StoreUnavailable
from tokenstile.stores.redis import RedisSessionStore

CONCURRENT = 40


class RoundTrips:
    """Counts the round trips a store makes, on the store itself."""

    def __init__(self, spec: StoreSpec, sessions: SessionStore) -> None:
        self._spec = spec
        self._sessions = sessions
        self._statements = 0
        self._raw: redis.asyncio.Redis | redis.asyncio.RedisCluster | None = None

    async def __aenter__(self) -> RoundTrips:
        if self._spec.on_redis:
            self._raw = self._spec.raw_redis()
            await self._reset_stats(self._raw)
        else:
            engine = self._sessions._connections._engine  # type: ignore[attr-defined]
            event.listen(engine.sync_engine, "before_cursor_execute", self._count)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._raw is not None:
            await self._raw.aclose()

    def _count(self, _conn: Connection, *_args: object) -> None:
        self._statements += 1

    async def reads(self) -> int:
        """Lookups so far: HGET commands Redis ran (``INFO commandstats``, summed over
        every master of a cluster), or statements the SQL engine sent."""
        if self._raw is None:
            return self._statements
        if isinstance(self._raw, redis.asyncio.RedisCluster):
            per_node = await self._raw.info(
                "commandstats", target_nodes=redis.asyncio.RedisCluster.PRIMARIES
            )
            return sum(_hget_calls(stats) for stats in per_node.values())
        return _hget_calls(await self._raw.info("commandstats"))

    @staticmethod
    async def _reset_stats(raw: redis.asyncio.Redis | redis.asyncio.RedisCluster) -> None:
        if isinstance(raw, redis.asyncio.RedisCluster):
            await raw.config_resetstat(target_nodes=redis.asyncio.RedisCluster.PRIMARIES)
        else:
            await raw.config_resetstat()


def _hget_calls(stats: dict[str, Any]) -> int:
    return int(stats.get("cmdstat_hget", {}).get("calls", 0))


async def test_concurrent_checks_share_one_round_trip(
    backend: Backend,
    store_spec: StoreSpec,
    user_id: str,
) -> None:
    now = time.time()
    live = [await created(backend.sessions, user_id, now) for _ in range(4)]
    asked = [live[i % 4].sid for i in range(CONCURRENT)] + ["no-such-session"]
    batcher = LivenessBatcher(backend.sessions, clock=time.time)

    async with RoundTrips(store_spec, backend.sessions) as trips:
        before = await trips.reads()
        answers = await asyncio.gather(*(batcher.is_active(sid) for sid in asked))
        used = await trips.reads() - before

    assert answers == [True] * CONCURRENT + [False]
    if store_spec.on_redis:
        # One pipeline (split by node on a cluster): one HGET per distinct session.
        assert used == len({*asked})
    elif store_spec.kind == "sqlite":
        assert used == 0  # read on the event loop, beside the engine
    else:
        assert used == 1


async def test_a_logout_that_answered_before_a_check_is_always_seen(
    backend: Backend,
    user_id: str,
) -> None:
    batcher = LivenessBatcher(backend.sessions, clock=time.time)
    for _ in range(20):
        session = await created(backend.sessions, user_id, time.time())
        # Checks are in flight for the session when it ends...
        early = [asyncio.ensure_future(batcher.is_active(session.sid)) for _ in range(5)]
        await backend.sessions.revoke_session(session.sid, reason="logout", now=time.time())
        # ...and every check asked after the logout answered says it is over.
        late = await asyncio.gather(*(batcher.is_active(session.sid) for _ in range(5)))
        await asyncio.gather(*early)

        assert late == [False] * 5


async def test_a_store_failure_reaches_every_waiter_as_store_unavailable(
    private_redis: PrivateRedis,
) -> None:
    store = RedisSessionStore.from_url(private_redis.url, timeout=0.3)
    batcher = LivenessBatcher(store, clock=time.time)
    try:
        assert await batcher.is_active("warm-up") is False
        private_redis.freeze()
        try:
            results = await asyncio.gather(
                *(batcher.is_active(f"sid-{i}") for i in range(10)), return_exceptions=True
            )
        finally:
            private_redis.thaw()

        assert all(isinstance(result, StoreUnavailable) for result in results), results
        assert await batcher.is_active("after") is False  # recovers by itself
    finally:
        await store.aclose()


@pytest.fixture
async def sqlite_file(tmp_path: Path) -> str:
    from tokenstile.stores.sql import SqlDatabase

    url = f"sqlite+aiosqlite:///{tmp_path / 'tokenstile.db'}"
    database = SqlDatabase.from_url(url)
    await database.upgrade()
    await database.aclose()
    return url


async def test_sqlite_loop_reads_see_commits_of_another_process_at_once(
    sqlite_file: str,
) -> None:
    # Two databases on one file stand for two worker processes.
    from tokenstile.core.store import UserRecord
    from tokenstile.stores.sql import SqlDatabase

    reader, writer = SqlDatabase.from_url(sqlite_file), SqlDatabase.from_url(sqlite_file)
    try:
        await writer.users.add_user(UserRecord("u1", "someone", "x", created_at=time.time()))
        for _ in range(20):
            session = await created(writer.sessions, "u1", time.time())
            assert await reader.sessions.are_active([session.sid], now=time.time()) == {session.sid}
            await writer.sessions.revoke_session(session.sid, reason="logout", now=time.time())
            assert await reader.sessions.are_active([session.sid], now=time.time()) == set()
    finally:
        await reader.aclose()
        await writer.aclose()
