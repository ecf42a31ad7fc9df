"""Rate-limit counters on Redis (a ``core.ratelimit.RateCounter``)."""

from __future__ import annotations

from redis.asyncio import Redis

from tokenstile.stores.redis import _store_errors

__all__ = ["RedisRateCounter"]


class RedisRateCounter:
    """Fixed-window counters ``{prefix}rate:<key>`` expiring with their window."""

    def __init__(self, client: Redis, *, prefix: str = "ts:") -> None:
        self._client = client
        self._prefix = prefix

    async def hit(self, key: str, *, period: int, now: float) -> tuple[int, float]:
        name = f"{self._prefix}rate:{key}"
        with _store_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, period, nx=True)
                pipe.pttl(name)
                count, _, ttl_ms = await pipe.execute()
        return int(count), now + max(int(ttl_ms), 0) / 1000

    async def peek(self, key: str, *, period: int, now: float) -> tuple[int, float]:
        name = f"{self._prefix}rate:{key}"
        with _store_errors():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(name)
                pipe.pttl(name)
                count, ttl_ms = await pipe.execute()
        if count is None or int(ttl_ms) <= 0:
            return 0, now + period
        return int(count), now + int(ttl_ms) / 1000

    async def clear(self, key: str) -> None:
        with _store_errors():
            await self._client.delete(f"{self._prefix}rate:{key}")
