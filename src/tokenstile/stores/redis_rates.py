"""Rate-limit logs on Redis (a ``core.ratelimit.RateCounter``)."""

from __future__ import annotations

import math

from tokenstile.core.ratelimit import storage_key
from tokenstile.stores.redis import RedisClient, _store_errors

__all__ = ["RedisRateCounter"]

# KEYS[1] the log: a sorted set of event ids scored by their time. ARGV: now, the
# window's exclusive lower bound (now - period, formatted by Python so no precision is
# lost in Lua), limit, event id, period in ms. One key, so it runs on Redis Cluster
# (in that key's slot).
_ACQUIRE = """
local key, limit = KEYS[1], tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, ARGV[1], ARGV[4])
  redis.call('PEXPIRE', key, ARGV[5])
  return {1}
end
return {0, redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')[2]}
"""


class RedisRateCounter:
    """Sliding logs ``{prefix}rate:<storage key>``, each expiring a period after its
    newest event."""

    def __init__(self, client: RedisClient, *, prefix: str = "ts:", store: str = "redis") -> None:
        self._client = client
        self._prefix = prefix
        self._store = store  # the server's description, in errors
        self._acquire = client.register_script(_ACQUIRE)

    async def acquire(
        self, key: str, *, limit: int, period: float, now: float, event_id: str
    ) -> tuple[bool, float]:
        arguments: list[str | int] = [
            repr(now),
            repr(now - period),
            limit,
            event_id,
            math.ceil(period * 1000),
        ]
        with _store_errors(self._store):
            # Called on its own, never inside a pipeline or MULTI: it is the atomic step.
            reply = await self._acquire(keys=[self._name(key)], args=arguments)
        if int(reply[0]) == 1:
            return True, 0.0
        # Room comes when the event that fills the limit leaves the window.
        return False, float(reply[1]) + period - now

    async def release(self, key: str, event_id: str) -> None:
        with _store_errors(self._store):
            await self._client.zrem(self._name(key), event_id)

    def _name(self, key: str) -> str:
        return f"{self._prefix}rate:{storage_key(key)}"
