"""What the Redis store promises beyond the contract: key layout, TTLs, failing fast."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis.asyncio

from tests.redis_server import PrivateRedis
from tests.stores.session_records import created, new_jti, rotated
from tokenstile.errors import StoreUnavailable
from tokenstile.stores.redis import RedisSessionStore

pytestmark = pytest.mark.redis

Operation = Callable[[RedisSessionStore], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "rotate": lambda s: s.rotate("sid", "old", "new", now=time.time(), grace=10),
    "is_active": lambda s: s.is_active("sid", now=time.time()),
    "get_session": lambda s: s.get_session("sid", now=time.time()),
    "revoke_session": lambda s: s.revoke_session("sid", reason="logout", now=time.time()),
    "revoke_user_sessions": lambda s: s.revoke_user_sessions("u", reason="x", now=time.time()),
    "list_user_sessions": lambda s: s.list_user_sessions("u", now=time.time()),
    "purge": lambda s: s.purge(now=time.time()),
    "ping": lambda s: s.ping(),
}


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisSessionStore]:
    store = RedisSessionStore.from_url(redis_url, prefix=redis_prefix)
    yield store
    await store.aclose()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
async def test_unreachable_redis_raises_store_unavailable_at_once(operation: Operation) -> None:
    store = RedisSessionStore.from_url("redis://127.0.0.1:1/0", timeout=1.0)
    started = time.monotonic()

    with pytest.raises(StoreUnavailable):
        await operation(store)

    assert time.monotonic() - started < 1.0
    await store.aclose()


async def test_silent_redis_times_out_once_without_retrying(silent_server: int) -> None:
    store = RedisSessionStore.from_url(f"redis://127.0.0.1:{silent_server}/0", timeout=0.3)
    started = time.monotonic()

    with pytest.raises(StoreUnavailable):
        await store.is_active("sid", now=time.time())

    # One attempt takes `timeout`; a retry would take at least twice that.
    assert 0.25 < time.monotonic() - started < 0.6
    await store.aclose()


async def test_store_fails_closed_while_redis_is_down_and_recovers_by_itself(
    private_redis: PrivateRedis,
) -> None:
    store = RedisSessionStore.from_url(private_redis.url, timeout=1.0)
    now = time.time()
    session = await created(store, "user-1", now)

    private_redis.stop()
    with pytest.raises(StoreUnavailable):
        await store.rotate(session.sid, session.current_jti, new_jti(), now=now, grace=10)
    with pytest.raises(StoreUnavailable):
        await store.is_active(session.sid, now=now)

    private_redis.start()
    await store.ping()
    # The server kept no data, so the session is gone — but the same store works again.
    assert not await store.is_active(session.sid, now=now)
    again = await created(store, "user-1", now)
    assert (await rotated(store, again, now + 1)).previous_jti == again.current_jti
    await store.aclose()


async def test_session_key_expires_when_the_session_does(
    store: RedisSessionStore, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    now = time.time()
    session = await created(store, "user-1", now, max_expires_at=int(now) + 5000)
    key = f"{redis_prefix}{{{session.sid}}}:session"
    assert await raw.expiretime(key) == session.expires_at

    after = await rotated(store, session, now + 2000)

    assert after.expires_at == session.max_expires_at
    assert await raw.expiretime(key) == session.max_expires_at


async def test_user_index_outlives_the_longest_session_it_holds(
    store: RedisSessionStore, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    now = time.time()
    index = f"{redis_prefix}user:{{user-1}}:sessions"
    long_lived = await created(store, "user-1", now, max_expires_at=int(now) + 9000)
    await created(store, "user-1", now, max_expires_at=int(now) + 8000)

    assert await raw.expiretime(index) == long_lived.max_expires_at


async def test_none_fields_are_left_out_of_the_hash(
    store: RedisSessionStore, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    session = await created(store, "user-1", time.time())

    stored = await raw.hgetall(f"{redis_prefix}{{{session.sid}}}:session")

    assert stored["sid"] == session.sid
    assert {"previous_jti", "rotated_at", "user_agent", "ip", "client_id"}.isdisjoint(stored)


async def test_stale_index_members_are_dropped_when_listed(
    store: RedisSessionStore, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    now = time.time()
    live = await created(store, "user-1", now)
    vanished = await created(store, "user-1", now)
    await raw.delete(f"{redis_prefix}{{{vanished.sid}}}:session")  # as if its TTL ran out

    assert await store.list_user_sessions("user-1", now=now) == [live]
    assert await raw.smembers(f"{redis_prefix}user:{{user-1}}:sessions") == {live.sid}


async def test_purge_drops_stale_index_members_and_counts_them(
    store: RedisSessionStore, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    now = time.time()
    live = await created(store, "user-1", now)
    for _ in range(2):
        vanished = await created(store, "user-2", now)
        await raw.delete(f"{redis_prefix}{{{vanished.sid}}}:session")

    assert await store.purge(now=now) == 2
    assert await raw.smembers(f"{redis_prefix}user:{{user-1}}:sessions") == {live.sid}
    assert not await raw.exists(f"{redis_prefix}user:{{user-2}}:sessions")


async def test_reuse_removes_the_session_from_its_user_index(
    store: RedisSessionStore, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    now = time.time()
    session = await created(store, "user-1", now)

    result = await store.rotate(session.sid, new_jti(), new_jti(), now=now, grace=10)

    assert result.session is None
    assert not await raw.exists(f"{redis_prefix}user:{{user-1}}:sessions")


async def test_client_returning_bytes_is_refused(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)

    with pytest.raises(ValueError, match="decode_responses"):
        RedisSessionStore(client)
    await client.aclose()


async def test_revoke_user_sessions_does_not_count_stale_index_members(
    store: RedisSessionStore, raw: redis.asyncio.Redis, redis_prefix: str
) -> None:
    now = time.time()
    await created(store, "user-1", now)
    vanished = await created(store, "user-1", now)
    await raw.delete(f"{redis_prefix}{{{vanished.sid}}}:session")

    assert await store.revoke_user_sessions("user-1", reason="logout_all", now=now) == 1
    assert not await raw.exists(f"{redis_prefix}user:{{user-1}}:sessions")
