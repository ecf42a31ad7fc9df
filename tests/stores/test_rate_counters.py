"""The RateCounter contract, on every store, and the rate parser."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest

from tests.stores.test_contract import StoreSpec, store_spec  # noqa: F401  (fixture)
from tokenstile.core.ratelimit import Rate, RateCounter, RatePolicy, parse_rate
from tokenstile.errors import ConfigurationError


@pytest.fixture
async def counter(store_spec: StoreSpec) -> AsyncIterator[RateCounter]:  # noqa: F811
    if store_spec.kind == "redis":
        from tokenstile.stores.redis import RedisSessionStore

        store = RedisSessionStore.from_url(store_spec.url, prefix=store_spec.redis_prefix)
        yield store.rate_counter()
        await store.aclose()
        return
    from tokenstile.stores.sql import SqlDatabase

    db = SqlDatabase.from_url(store_spec.url)
    await db.upgrade()
    yield db.rate_limits
    await db.aclose()


def new_key() -> str:
    return f"test:{secrets.token_hex(6)}"


async def test_hits_count_up_within_a_window(counter: RateCounter) -> None:
    key, now = new_key(), time.time()

    counts = [(await counter.hit(key, period=60, now=now))[0] for _ in range(3)]
    peeked, ends = await counter.peek(key, period=60, now=now)

    assert counts == [1, 2, 3]
    assert peeked == 3
    assert now + 55 < ends <= now + 60.5


async def test_keys_count_apart(counter: RateCounter) -> None:
    first, second, now = new_key(), new_key(), time.time()

    await counter.hit(first, period=60, now=now)
    await counter.hit(first, period=60, now=now)

    assert (await counter.peek(second, period=60, now=now))[0] == 0
    assert (await counter.hit(second, period=60, now=now))[0] == 1


async def test_clear_forgets_a_key(counter: RateCounter) -> None:
    key, now = new_key(), time.time()
    await counter.hit(key, period=60, now=now)

    await counter.clear(key)

    assert (await counter.peek(key, period=60, now=now))[0] == 0


async def test_a_new_window_starts_from_one(counter: RateCounter) -> None:
    key = new_key()
    await counter.hit(key, period=1, now=time.time())
    await counter.hit(key, period=1, now=time.time())
    await asyncio.sleep(1.1)  # Redis expires by its own clock

    count, _ = await counter.hit(key, period=1, now=time.time())

    assert count == 1


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
