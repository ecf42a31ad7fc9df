"""The RateCounter contract (a sliding log, acquired atomically) on every store; the
RateLimiter over it; and the rate parser.

Times are POSIX seconds near the real clock, because Redis expires keys by its own clock.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import StoreSpec
from tests.core.clocks import FakeClock
from tokenstile.core.ratelimit import (
    STORAGE_KEY_LENGTH,
    Rate,
    RateCounter,
    RateLimiter,
    RatePolicy,
    parse_rate,
    storage_key,
)
from tokenstile.errors import ConfigurationError, RateLimited

OpenCounter = Callable[[], Awaitable[RateCounter]]


@pytest.fixture
async def counters(store_spec: StoreSpec) -> AsyncIterator[OpenCounter]:
    """Opens counters on the store under test, each on its own client or engine, as two
    processes would have them; all are closed afterwards."""
    async with AsyncExitStack() as stack:

        async def open_counter() -> RateCounter:
            if store_spec.on_redis:
                store = store_spec.redis_store()
                stack.push_async_callback(store.aclose)
                return store.rate_counter()
            from tokenstile.stores.sql import SqlDatabase

            db = SqlDatabase.from_url(store_spec.url)
            stack.push_async_callback(db.aclose)
            await db.upgrade()
            return db.rate_limits

        yield open_counter


@pytest.fixture
async def counter(counters: OpenCounter) -> RateCounter:
    return await counters()


def new_key() -> str:
    return f"test:{secrets.token_hex(6)}"


def new_event() -> str:
    return secrets.token_hex(16)


async def acquire(counter: RateCounter, key: str, now: float, *, limit: int = 5) -> bool:
    admitted, _ = await counter.acquire(key, limit=limit, period=60, now=now, event_id=new_event())
    return admitted


# -- atomicity (invariant 12) ------------------------------------------------------------


async def test_invariant_12_concurrent_acquires_admit_exactly_the_limit(
    counter: RateCounter,
) -> None:
    key, now = new_key(), time.time()

    answers = await asyncio.gather(
        *(
            counter.acquire(key, limit=5, period=60, now=now, event_id=new_event())
            for _ in range(50)
        )
    )

    assert sum(admitted for admitted, _ in answers) == 5
    assert all(0 < retry <= 60 for admitted, retry in answers if not admitted)


async def test_invariant_12_acquires_through_separate_store_instances_admit_exactly_the_limit(
    counters: OpenCounter,
) -> None:
    # Separate clients or engines, each with its own pool (and, on SQLite, its own
    # write lock): what processes sharing the store look like.
    instances = [await counters() for _ in range(10)]
    key, now = new_key(), time.time()

    answers = await asyncio.gather(
        *(
            instances[i % len(instances)].acquire(
                key, limit=5, period=60, now=now, event_id=new_event()
            )
            for i in range(50)
        )
    )

    assert sum(admitted for admitted, _ in answers) == 5


# -- the sliding window ------------------------------------------------------------------


async def test_the_window_slides_with_each_event_not_in_fixed_steps(counter: RateCounter) -> None:
    key, t = new_key(), time.time()
    for _ in range(5):
        assert await acquire(counter, key, t)

    admitted, retry = await counter.acquire(
        key, limit=5, period=60, now=t + 59.9, event_id=new_event()
    )

    assert not admitted
    assert retry == pytest.approx(0.1, abs=1e-6)
    assert await acquire(counter, key, t + 60.1)


async def test_at_most_the_limit_is_admitted_in_any_period_long_span(counter: RateCounter) -> None:
    # An attempt every 7.3 s for five minutes, against 5 per 60 s.
    key, start = new_key(), time.time()
    attempts = [start + 7.3 * i for i in range(42)]

    admitted = [at for at in attempts if await acquire(counter, key, at)]

    for first in admitted:
        assert sum(first <= at < first + 60 for at in admitted) <= 5
    # and it admits whenever the last 60 s hold fewer than 5: the log is exact.
    for at in attempts:
        earlier = sum(at - 60 < other < at for other in admitted)
        assert (at in admitted) == (earlier < 5)


async def test_a_refused_attempt_is_not_recorded(counter: RateCounter) -> None:
    key, t = new_key(), time.time()
    for _ in range(5):
        assert await acquire(counter, key, t)
    for _ in range(10):
        assert not await acquire(counter, key, t + 30)

    # Had the refusals at t + 30 counted, nothing would pass before t + 90.
    assert [await acquire(counter, key, t + 60.5) for _ in range(6)] == [True] * 5 + [False]


async def test_keys_are_counted_apart(counter: RateCounter) -> None:
    first, second, now = new_key(), new_key(), time.time()

    assert await acquire(counter, first, now, limit=1)

    assert not await acquire(counter, first, now, limit=1)
    assert await acquire(counter, second, now, limit=1)


# -- release -----------------------------------------------------------------------------


async def test_release_takes_back_exactly_one_event(counter: RateCounter) -> None:
    key, now = new_key(), time.time()
    events = [new_event() for _ in range(5)]
    for event in events:
        assert (await counter.acquire(key, limit=5, period=60, now=now, event_id=event))[0]

    await counter.release(key, events[2])
    await counter.release(key, events[2])  # twice: still one
    await counter.release(key, "never-recorded")

    assert [await acquire(counter, key, now) for _ in range(2)] == [True, False]


# -- bounded state -----------------------------------------------------------------------


async def test_a_log_does_not_outlive_its_window(
    store_spec: StoreSpec,
    counter: RateCounter,
) -> None:
    old, live, now = new_key(), new_key(), time.time()
    assert await acquire(counter, old, now - 120)
    assert await acquire(counter, live, now)

    if store_spec.on_redis:
        raw = store_spec.raw_redis()
        try:
            ttl_ms = await raw.pttl(f"{store_spec.redis_prefix}rate:{storage_key(live)}")
        finally:
            await raw.aclose()
        assert 0 < ttl_ms <= 60_000
        return
    from tokenstile.stores.sql_rates import SqlRateCounter

    assert isinstance(counter, SqlRateCounter)
    assert await counter.purge(now=now) >= 1
    assert await stored_events(store_spec.url, old) == 0
    assert await stored_events(store_spec.url, live) == 1
    await counter.purge(now=now + 60)
    assert await stored_events(store_spec.url, live) == 0


async def stored_events(url: str, key: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            query = text("SELECT count(*) FROM rate_events WHERE key = :key")
            return int((await connection.execute(query, {"key": storage_key(key)})).scalar_one())
    finally:
        await engine.dispose()


# -- keys of any shape -------------------------------------------------------------------

HOSTILE_KEYS = [
    "login:user:\x00",
    "login:user:" + "a" * 10_000,
    "login:user:" + "a" * 9_999 + "b",  # differs from the one before only at the end
    "login:user:🔑🙂한국어",
    "login:user:\ud800",  # a lone surrogate, as JSON may deliver
    "login:user:' OR 1=1; --",
    "login:user:%_*?[]",
    "",
]


async def test_keys_of_any_length_and_character_are_stored_and_kept_apart(
    store_spec: StoreSpec,
    counter: RateCounter,
) -> None:
    now = time.time()
    # Each test has its own SQLite file and Redis prefix, not its own PostgreSQL database.
    salt = secrets.token_hex(4) if store_spec.kind == "postgres" else ""
    keys = [salt + key for key in HOSTILE_KEYS]

    first = [await acquire(counter, key, now, limit=1) for key in keys]
    second = [await acquire(counter, key, now, limit=1) for key in keys]

    assert first == [True] * len(keys)
    assert second == [False] * len(keys)
    if not store_spec.on_redis:
        engine = create_async_engine(store_spec.url)
        try:
            async with engine.connect() as connection:
                stored = (await connection.execute(text("SELECT key FROM rate_events"))).scalars()
                assert all(len(key) <= STORAGE_KEY_LENGTH for key in stored)
        finally:
            await engine.dispose()


def test_storage_keys_keep_only_the_readable_kind_of_a_key() -> None:
    assert storage_key("login:user:alice").startswith("login:user:")
    assert "alice" not in storage_key("login:user:alice")
    assert storage_key("refresh:ip:::1").startswith("refresh:ip:")
    assert storage_key("login:user:alice") != storage_key("login:user:Alice")
    assert len(storage_key("x" * 10_000)) <= STORAGE_KEY_LENGTH
    assert storage_key("\x00").isprintable()


# -- the RateLimiter over a real counter -------------------------------------------------


async def test_a_refusal_on_any_key_records_the_attempt_under_none(counter: RateCounter) -> None:
    clock = FakeClock(time.time())
    limiter = RateLimiter(counter, clock=clock)
    account, address = new_key(), new_key()
    await limiter.admit([(address, Rate(1, 60))])  # the address is full

    for _ in range(3):
        with pytest.raises(RateLimited) as refused:
            await limiter.admit([(account, Rate(2, 60)), (address, Rate(1, 60))])
        assert 1 <= refused.value.retry_after <= 60

    # The account's events of the refused calls were taken back.
    await limiter.admit([(account, Rate(2, 60))])
    await limiter.admit([(account, Rate(2, 60))])
    with pytest.raises(RateLimited):
        await limiter.admit([(account, Rate(2, 60))])


async def test_release_gives_back_only_the_named_keys_event(counter: RateCounter) -> None:
    limiter = RateLimiter(counter, clock=FakeClock(time.time()))
    account, address, rate = new_key(), new_key(), Rate(1, 60)

    admission = await limiter.admit([(account, rate), (address, rate)])
    await limiter.release(admission, account)  # e.g. the password was right

    await limiter.admit([(account, rate)])
    with pytest.raises(RateLimited):
        await limiter.admit([(address, rate)])


async def test_a_disabled_limiter_lets_everything_pass(counter: RateCounter) -> None:
    limiter = RateLimiter(counter, clock=FakeClock(time.time()), enabled=False)
    key = new_key()

    for _ in range(5):
        await limiter.release(await limiter.admit([(key, Rate(1, 60))]), key)
        await limiter.admit([(key, Rate(1, 60))])

    assert await acquire(counter, key, time.time(), limit=1)  # nothing was recorded


# -- rates -------------------------------------------------------------------------------


def test_rates_parse_from_the_settings_syntax() -> None:
    assert parse_rate("5/minute") == Rate(5, 60)
    assert parse_rate("600 / minutes") == Rate(600, 60)
    assert parse_rate("100/2hours") == Rate(100, 7200)
    assert RatePolicy.parse(login="5/minute", register="10/minute", refresh="1/second") == (
        RatePolicy(Rate(5, 60), Rate(50, 60), Rate(10, 60), Rate(1, 1))
    )
    for bad in ("", "five/minute", "0/minute", "5/fortnight", "5"):
        with pytest.raises(ConfigurationError):
            parse_rate(bad)
