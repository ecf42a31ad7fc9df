"""The Redis Cluster client the Redis store runs on: redis-py's, made to fail promptly
and only with Redis errors.

redis-py's asyncio :class:`RedisCluster` (8.1) discovers the cluster lazily, inside
whichever command comes first after a start or a failure, and resets itself after
errors. Four of its habits would reach tokenstile's callers as a stall, a 500 or a
storm of errors on a healthy cluster; this client works around each:

- A command that starts while discovery is under way (every concurrent first call of
  a new client, every call during a refresh) is routed to a random master, because the
  client picks the route before it waits for discovery. The MOVED replies that follow
  count towards ``reinitialize_steps``, and every fifth one closes all connections,
  including those other tasks are using. So each command here waits for discovery
  before redis-py routes it, and the store also turns MOVED-driven refreshes off
  (``reinitialize_steps=0``: a MOVED patches that one slot); either alone stops the
  storm (``test_concurrent_first_calls_of_a_new_store_all_succeed``).
- A failed discovery (no node answers ``CLUSTER SLOTS``, or slots are left uncovered)
  raises :class:`RedisClusterException`, which is not a :class:`RedisError`; the same
  class also means "this command cannot be routed", a bug of ours. They are told apart
  here, where discovery happens, rather than by message text.
- After an error it disconnects connections that other tasks may be using (``aclose()``
  on CLUSTERDOWN, ``disconnect_free_connections()`` on a connection error). A task
  caught between connecting and writing then fails with :class:`AttributeError` on a
  writer that is now ``None``, or, under uvloop, with :class:`RuntimeError` from a
  transport closed under it ("the handler is closed"). That is a lost connection, and
  is reported as one.
- A command after a timeout first rediscovers the cluster, asking the nodes in random
  order; a frozen node costs a full socket timeout there before the command itself
  waits another. Each command (or pipeline) therefore has one deadline in all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["ClusterClient"]

# uvloop's words for a write on a transport that was closed under the writer.
_CLOSED_TRANSPORT = "the handler is closed"


@asynccontextmanager
async def _within(deadline: float) -> AsyncIterator[None]:
    """Give up after ``deadline`` seconds; report redis-py's internal races as a lost
    connection (see the module docstring)."""
    try:
        async with asyncio.timeout(deadline):
            yield
    except TimeoutError as exc:
        raise RedisTimeoutError(f"no answer from the Redis Cluster in {deadline} s") from exc
    except (AttributeError, SlotNotCoveredError) as exc:
        raise RedisConnectionError(f"Redis Cluster connection lost: {exc!r}") from exc
    except RuntimeError as exc:
        if _CLOSED_TRANSPORT not in str(exc):
            raise
        raise RedisConnectionError(f"Redis Cluster connection lost: {exc!r}") from exc


class ClusterClient(RedisCluster):
    """A :class:`RedisCluster` whose every command and pipeline answers or raises a
    :class:`RedisError` within ``deadline`` seconds."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        async with _within(self._deadline):
            try:
                return await super().initialize(
                    additional_startup_nodes_info, last_failed_node_name
                )
            except RedisClusterException as exc:
                raise RedisConnectionError(f"Redis Cluster discovery failed: {exc}") from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with _within(self._deadline):
            await self.initialize()  # a no-op once the cluster is known
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        # mypy counts a Protocol attribute of redis-py's typing that ClusterPipeline
        # never needs (_event_dispatcher) as abstract.
        return _Pipeline(self, transaction)  # type: ignore[abstract]


class _Pipeline(ClusterPipeline):
    """A cluster pipeline under its client's deadline."""

    cluster_client: ClusterClient

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        async with _within(self.cluster_client._deadline):
            return await super().execute(raise_on_error, allow_redirections)
