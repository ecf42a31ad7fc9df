"""What the Redis store promises on a Redis Cluster beyond the contract: sessions spread
over the masters and found on all of them, redirections followed, outages of one master
reported promptly, and recovery without a new store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable

import pytest
import redis
import redis.asyncio
from pydantic import ValidationError

from tests.redis_server import PrivateRedisCluster
from tests.stores.session_records import GRACE, created, new_jti, rotated
from tokenstile.core.store import RotationOutcome, SessionRecord
from tokenstile.errors import StoreUnavailable
from tokenstile.settings import Settings
from tokenstile.stores.redis import RedisSessionStore

pytestmark = pytest.mark.redis

TIMEOUT = 1.0


@pytest.fixture
async def store(
    redis_cluster: PrivateRedisCluster, redis_cluster_prefix: str
) -> AsyncIterator[RedisSessionStore]:
    store = RedisSessionStore.from_url(redis_cluster.url, prefix=redis_cluster_prefix, cluster=True)
    yield store
    await store.aclose()


def node(cluster: PrivateRedisCluster, index: int) -> redis.Redis:
    """A plain client of one node: it sees only that node's keys and never redirects."""
    return redis.Redis(port=cluster.ports[index], decode_responses=True)


def holder(cluster: PrivateRedisCluster, key: str) -> int:
    """The index of the node that stores ``key`` (asked of every node, by slot)."""
    holders = []
    for index in range(len(cluster.ports)):
        with node(cluster, index) as client:
            slot = keyslot(client, key)
            if key in client.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000):
                holders.append(index)
    assert len(holders) == 1, (key, holders)
    return holders[0]


def keyslot(client: redis.Redis, key: str) -> int:
    """The hash slot of ``key``, by the server's own CLUSTER KEYSLOT."""
    return int(client.execute_command("CLUSTER KEYSLOT", key))


def session_key(prefix: str, sid: str) -> str:
    return f"{prefix}{{{sid}}}:session"


async def session_on_node(
    store: RedisSessionStore, cluster: PrivateRedisCluster, prefix: str, index: int
) -> SessionRecord:
    """A new session whose key lives on node ``index``."""
    while True:
        session = await created(store, "user-1", time.time())
        if holder(cluster, session_key(prefix, session.sid)) == index:
            return session


async def elapsed(awaitable: Awaitable[object]) -> float:
    """Seconds until ``awaitable`` raises StoreUnavailable (failing if it does not)."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await awaitable
    return time.monotonic() - started


# -- layout over the masters ----------------------------------------------------------


async def test_sessions_of_many_users_spread_over_the_masters_each_in_its_sid_slot(
    store: RedisSessionStore, redis_cluster: PrivateRedisCluster, redis_cluster_prefix: str
) -> None:
    now = time.time()
    sessions = [await created(store, f"user-{i}", now) for i in range(24)]

    holders = {holder(redis_cluster, session_key(redis_cluster_prefix, s.sid)) for s in sessions}

    assert len(holders) > 1
    with node(redis_cluster, 0) as client:
        for session in sessions:
            key = session_key(redis_cluster_prefix, session.sid)
            assert keyslot(client, key) == keyslot(client, session.sid)
    for session in sessions:
        assert await store.list_user_sessions(session.user_id, now=now) == [session]


async def test_logout_all_ends_the_users_sessions_on_every_master(
    store: RedisSessionStore, redis_cluster: PrivateRedisCluster, redis_cluster_prefix: str
) -> None:
    now = time.time()
    sessions = [await created(store, "user-1", now) for _ in range(12)]
    keys = [session_key(redis_cluster_prefix, s.sid) for s in sessions]
    assert len({holder(redis_cluster, key) for key in keys}) > 1

    assert await store.revoke_user_sessions("user-1", reason="logout_all", now=now) == 12

    assert await store.are_active([s.sid for s in sessions], now=now) == set()
    for index in range(len(redis_cluster.ports)):
        with node(redis_cluster, index) as client:
            assert not list(client.scan_iter(match=f"{redis_cluster_prefix}*"))


async def test_purge_finds_stale_index_members_on_every_master(
    store: RedisSessionStore, redis_cluster: PrivateRedisCluster, redis_cluster_prefix: str
) -> None:
    now = time.time()
    users = [f"user-{i}" for i in range(12)]
    raw = redis.asyncio.RedisCluster.from_url(redis_cluster.url)
    try:
        for user in users:
            vanished = await created(store, user, now)
            await raw.delete(session_key(redis_cluster_prefix, vanished.sid))
    finally:
        await raw.aclose()
    index_keys = [f"{redis_cluster_prefix}user:{{{user}}}:sessions" for user in users]
    assert len({holder(redis_cluster, key) for key in index_keys}) > 1

    assert await store.purge(now=now) == len(users)


async def test_twenty_concurrent_rotations_on_a_new_store_rotate_exactly_once(
    store: RedisSessionStore, redis_cluster: PrivateRedisCluster, redis_cluster_prefix: str
) -> None:
    session = await created(store, "user-1", time.time())
    # A new store: all twenty are its first calls, racing the cluster discovery.
    fresh = RedisSessionStore.from_url(redis_cluster.url, prefix=redis_cluster_prefix, cluster=True)
    try:
        results = await asyncio.gather(
            *(
                fresh.rotate(
                    session.sid, session.current_jti, new_jti(), now=time.time(), grace=GRACE
                )
                for _ in range(20)
            )
        )
    finally:
        await fresh.aclose()

    outcomes = [result.outcome for result in results]
    assert outcomes.count(RotationOutcome.ROTATED) == 1
    assert outcomes.count(RotationOutcome.GRACE) == 19


async def test_concurrent_first_calls_of_a_new_store_all_succeed(
    store: RedisSessionStore, redis_cluster: PrivateRedisCluster, redis_cluster_prefix: str
) -> None:
    # redis-py routes calls made while it discovers the cluster to a random master; the
    # MOVED replies then made it close every connection, failing calls in flight.
    now = time.time()
    sessions = [await created(store, f"user-{i}", now) for i in range(10)]
    fresh = RedisSessionStore.from_url(redis_cluster.url, prefix=redis_cluster_prefix, cluster=True)
    try:
        found = await asyncio.gather(
            *(fresh.get_session(sessions[i % 10].sid, now=now) for i in range(60))
        )
    finally:
        await fresh.aclose()

    assert found == [sessions[i % 10] for i in range(60)]


async def test_a_slot_moving_to_another_master_is_followed_by_the_same_store(
    store: RedisSessionStore, redis_cluster: PrivateRedisCluster, redis_cluster_prefix: str
) -> None:
    session = await created(store, "user-1", time.time())
    key = session_key(redis_cluster_prefix, session.sid)
    source = holder(redis_cluster, key)
    target = (source + 1) % len(redis_cluster.ports)
    with node(redis_cluster, source) as src, node(redis_cluster, target) as dst:
        slot = keyslot(src, key)
        src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000)
        src.execute_command(
            "MIGRATE", "127.0.0.1", redis_cluster.ports[target], "", 0, 5000, "KEYS", *keys
        )

        # Mid-migration the old owner answers ASK for the key it no longer has.
        assert await store.get_session(session.sid, now=time.time()) == session

        for index in range(len(redis_cluster.ports)):
            with node(redis_cluster, index) as client:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    # Now the old owner answers MOVED.
    assert holder(redis_cluster, key) == target
    after = await rotated(store, session, time.time())
    assert await store.get_session(session.sid, now=time.time()) == after


async def test_a_cluster_client_returning_bytes_is_refused(
    redis_cluster: PrivateRedisCluster,
) -> None:
    client = redis.asyncio.RedisCluster.from_url(redis_cluster.url)

    with pytest.raises(ValueError, match="decode_responses"):
        RedisSessionStore(client)
    await client.aclose()


async def test_a_full_connection_pool_is_store_unavailable(
    redis_cluster: PrivateRedisCluster, redis_cluster_prefix: str
) -> None:
    client = redis.asyncio.RedisCluster.from_url(
        redis_cluster.url, decode_responses=True, max_connections=1
    )
    store = RedisSessionStore(client, prefix=redis_cluster_prefix)
    try:
        await store.ping()
        results = await asyncio.gather(
            *(store.get_session(f"sid-{i}", now=time.time()) for i in range(20)),
            return_exceptions=True,
        )
    finally:
        await store.aclose()

    assert any(isinstance(result, StoreUnavailable) for result in results)
    assert all(result is None or isinstance(result, StoreUnavailable) for result in results)


# -- one master down ------------------------------------------------------------------


async def test_a_stopped_master_fails_fast_and_the_same_store_recovers(
    private_redis_cluster: PrivateRedisCluster,
) -> None:
    cluster = private_redis_cluster
    store = RedisSessionStore.from_url(cluster.url, timeout=TIMEOUT, cluster=True)
    try:
        # On the node the URL names, so a store made now cannot even discover the cluster.
        session = await session_on_node(store, cluster, "ts:", 0)

        cluster.stop_node(0)
        late = RedisSessionStore.from_url(cluster.url, timeout=TIMEOUT, cluster=True)
        try:
            rotate = store.rotate(
                session.sid, session.current_jti, new_jti(), now=time.time(), grace=GRACE
            )
            assert await elapsed(rotate) < TIMEOUT + 1
            assert await elapsed(store.get_session(session.sid, now=time.time())) < TIMEOUT + 1
            assert await elapsed(store.ping()) < TIMEOUT + 1
            assert await elapsed(late.ping()) < TIMEOUT + 1

            cluster.start_node(0)
            # The node kept its data (append-only file); the same stores serve it.
            assert await store.get_session(session.sid, now=time.time()) == session
            await rotated(store, session, time.time())
            await late.ping()
            assert await late.is_active(session.sid, now=time.time())
        finally:
            await late.aclose()
    finally:
        await store.aclose()


async def test_a_frozen_master_fails_within_the_timeout_and_is_used_again_when_thawed(
    private_redis_cluster: PrivateRedisCluster,
) -> None:
    cluster, timeout = private_redis_cluster, 0.5
    store = RedisSessionStore.from_url(cluster.url, timeout=timeout, cluster=True)
    try:
        session = await session_on_node(store, cluster, "ts:", 1)
        elsewhere = await session_on_node(store, cluster, "ts:", 2)

        cluster.freeze_node(1)
        try:
            assert await elapsed(store.is_active(session.sid, now=time.time())) < timeout + 0.5
            # The next call rediscovers the cluster first; the frozen node may be asked.
            assert await elapsed(store.get_session(session.sid, now=time.time())) < timeout + 0.5
            assert await elapsed(store.ping()) < timeout + 0.5
        finally:
            cluster.thaw_node(1)
        cluster.wait_until_ok()

        assert await store.get_session(session.sid, now=time.time()) == session
        assert await store.get_session(elsewhere.sid, now=time.time()) == elsewhere
        await store.ping()
    finally:
        await store.aclose()


# -- settings -------------------------------------------------------------------------


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("TOKENSTILE_REDIS_URL", "TOKENSTILE_REDIS_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_redis_cluster_is_read_from_the_environment(environment: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).redis_cluster is False  # type: ignore[call-arg]
    environment.setenv("TOKENSTILE_REDIS_URL", "redis://10.0.0.5:7000")
    environment.setenv("TOKENSTILE_REDIS_CLUSTER", "true")

    assert Settings(_env_file=None).redis_cluster is True  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://:hunter2-secret@10.0.0.5:7000/3", "only database 0"),
        ("redis://:hunter2-secret@10.0.0.5:7000/0?db=2", "only database 0"),
        ("unix://:hunter2-secret@/run/redis.sock", "redis:// or rediss://"),
    ],
)
def test_a_cluster_url_that_cannot_work_is_refused_without_echoing_its_password(
    environment: pytest.MonkeyPatch, url: str, message: str
) -> None:
    environment.setenv("TOKENSTILE_REDIS_URL", url)
    environment.setenv("TOKENSTILE_REDIS_CLUSTER", "true")

    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)  # type: ignore[call-arg]

    assert message in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_the_same_urls_are_accepted_without_cluster_or_on_database_0(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("TOKENSTILE_REDIS_URL", "redis://:pw@10.0.0.5:7000/3")
    assert Settings(_env_file=None).redis_cluster is False  # type: ignore[call-arg]
    environment.setenv("TOKENSTILE_REDIS_CLUSTER", "1")
    environment.setenv("TOKENSTILE_REDIS_URL", "rediss://:pw@10.0.0.5:7000/0")
    assert Settings(_env_file=None).redis_cluster is True  # type: ignore[call-arg]


def test_a_bad_redis_url_is_refused_without_echoing_its_password(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("TOKENSTILE_REDIS_URL", "http://:hunter2-secret@10.0.0.5:7000")

    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)  # type: ignore[call-arg]

    assert "redis://" in str(refused.value)
    assert "hunter2" not in str(refused.value)
