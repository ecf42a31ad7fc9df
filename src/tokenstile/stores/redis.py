"""The session store on Redis: one hash per session, rotation in one Lua script.

Layout (Cluster-safe: a script only ever touches the keys of one ``{sid}`` slot):

- ``{prefix}{<sid>}:session`` — a hash of every :class:`SessionRecord` field, expiring
  at ``expires_at``. Optional fields that are ``None`` are simply absent from the hash.
- ``{prefix}user:{<user_id>}:sessions`` — a set of the user's sids, expiring no earlier
  than the longest-lived of them. It lives in another slot, so it is updated outside the
  scripts; members whose session key is gone are dropped when read.

Expiry is judged twice: by the caller's ``now`` (every read compares ``expires_at``) and by
Redis itself (the key's TTL), which is what keeps the store from growing without bound.

On a Redis Cluster (``from_url(..., cluster=True)``) scripts are called on their own, never
in a pipeline (redis-py's cluster client refuses that); pipelines hold plain commands only,
which the cluster client splits by node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from math import floor
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    DataError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from tokenstile.core.store import Rotation, RotationOutcome, SessionRecord
from tokenstile.stores.failures import network_reason, store_failure
from tokenstile.stores.redis_cluster import ClusterClient

if TYPE_CHECKING:
    from tokenstile.stores.redis_rates import RedisRateCounter

__all__ = ["RedisSessionStore"]

RedisClient = Redis | RedisCluster
"""A client the store runs on: one server, or a Redis Cluster."""

# KEYS[1] session hash. ARGV: presented jti, new jti, now, floor(now), grace, the
# expected owner ('' for any): a session of another owner is left alone as gone, and
# the most seconds Redis's own clock may be past `now` ('' for any): a script that
# waited longer in a stalled server's queue answers 'stale' and changes nothing.
# `now` and floor(now) arrive as the exact strings Python formatted and are stored
# verbatim, so floats round-trip bit for bit and current_iat stays an integer.
_ROTATE = """
local key = KEYS[1]
local presented, new_jti = ARGV[1], ARGV[2]
local now, iat, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if ARGV[7] ~= '' then
  local time = redis.call('TIME')
  if tonumber(time[1]) + tonumber(time[2]) / 1e6 - now > tonumber(ARGV[7]) then
    return {'stale'}
  end
end
local s = redis.call('HMGET', key, 'current_jti', 'previous_jti', 'rotated_at',
                     'refresh_ttl', 'max_expires_at', 'expires_at', 'user_id')
if not s[1] or tonumber(s[6]) <= now or (ARGV[6] ~= '' and ARGV[6] ~= s[7]) then
  return {'gone'}
end
if presented == s[1] then
  local expires_at = math.min(iat + tonumber(s[4]), tonumber(s[5]))
  redis.call('HSET', key, 'previous_jti', s[1], 'current_jti', new_jti,
             'current_iat', ARGV[4], 'rotated_at', ARGV[3], 'last_used_at', ARGV[3],
             'expires_at', string.format('%d', expires_at))
  local record = redis.call('HGETALL', key)
  redis.call('EXPIREAT', key, expires_at)
  return {'rotated', record}
end
if grace > 0 and presented == s[2] and now - tonumber(s[3]) <= grace then
  return {'grace', redis.call('HGETALL', key)}
end
redis.call('DEL', key)
return {'reused', s[7]}
"""

# KEYS[1] session hash, ARGV[1] its expires_at. Write the record and its TTL together,
# so a session key never exists without an expiry.
_CREATE = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIREAT', KEYS[1], ARGV[1])
"""

# KEYS[1] session hash. Delete it and name its owner, so the caller can tidy the index.
_DELETE = """
local user_id = redis.call('HGET', KEYS[1], 'user_id')
if user_id then redis.call('DEL', KEYS[1]) end
return user_id
"""

_INTEGER_FIELDS = frozenset({"current_iat", "refresh_ttl", "expires_at", "max_expires_at"})
_FLOAT_FIELDS = frozenset({"rotated_at", "created_at", "last_used_at"})
_BOOLEAN_FIELDS = frozenset({"remember_me"})

# Replies that mean "Redis cannot serve us right now" rather than "our command is wrong".
_OUTAGE_REPLIES = (
    OutOfMemoryError,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
    NoPermissionError,
)


@contextmanager
def _store_errors(store: str = "redis", *, any_reply: bool = False) -> Iterator[None]:
    """Translate Redis failures into :class:`StoreUnavailable` naming ``store`` (its
    description) and the cause; let our own bugs through, unless ``any_reply`` (a command
    that cannot be malformed, such as PING, whose error replies are about the server)."""
    try:
        yield
    except RedisError as exc:
        # A malformed command or a failing script is a bug to see, not an outage to hide.
        bug = isinstance(exc, (ResponseError, DataError)) and not isinstance(exc, _OUTAGE_REPLIES)
        if bug and not any_reply:
            raise
        reason, misconfigured = _reason(exc)
        raise store_failure(store, reason, misconfigured=misconfigured) from exc


def _reason(exc: RedisError) -> tuple[str, bool]:
    """Why ``exc`` happened, in words, and whether an operator must act."""
    if isinstance(exc, AuthenticationError):
        return "authentication failed (check the password in REDIS_URL)", True
    if isinstance(exc, NoPermissionError):
        return "the Redis user lacks a permission tokenstile needs", True
    if isinstance(exc, (ResponseError, DataError)) and not isinstance(exc, _OUTAGE_REPLIES):
        return str(exc), True  # e.g. "DB index is out of range"
    return network_reason(exc) or str(exc) or type(exc).__name__, False


def _encode(record: SessionRecord) -> dict[str, str]:
    """Hash fields for ``record``; ``None`` fields are left out."""
    fields: dict[str, str] = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if value is not None:
            # repr() of a float is the shortest string that parses back to the same float.
            if isinstance(value, bool):
                fields[field.name] = "1" if value else "0"
            else:
                fields[field.name] = repr(value) if isinstance(value, float) else str(value)
    return fields


def _decode(fields: dict[str, str]) -> SessionRecord:
    """The record stored in ``fields`` (an HGETALL reply); absent fields are ``None``."""
    values: dict[str, Any] = {"previous_jti": None, "rotated_at": None}
    for name, text in fields.items():
        if name in _INTEGER_FIELDS:
            values[name] = int(text)
        elif name in _FLOAT_FIELDS:
            values[name] = float(text)
        elif name in _BOOLEAN_FIELDS:
            values[name] = text == "1"
        else:
            values[name] = text
    return SessionRecord(**values)


def _pairs(flat: list[str]) -> dict[str, str]:
    """A dict from a Lua HGETALL reply (``[field, value, field, value, ...]``)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisSessionStore:
    """A :class:`~tokenstile.core.store.SessionStore` on Redis.

    Each script touches the keys of one hash slot only, so the layout suits Redis Cluster.

    Every method raises :class:`~tokenstile.errors.StoreUnavailable` when Redis cannot
    be reached or refuses service.
    """

    def __init__(self, client: RedisClient, *, prefix: str = "ts:", name: str = "redis") -> None:
        """Use ``client`` (a :class:`Redis` or a :class:`RedisCluster`, made with
        ``decode_responses=True``); the store closes it. ``name`` describes the server in
        errors and logs (never with a password).

        Raises :class:`ValueError` if the client returns bytes.
        """
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisSessionStore needs a client with decode_responses=True")
        self._client = client
        self._prefix = prefix
        self.name = name
        self._rotate = client.register_script(_ROTATE)
        self._create = client.register_script(_CREATE)
        self._delete = client.register_script(_DELETE)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "ts:",
        timeout: float = 2.0,
        cluster: bool = False,
        name: str = "redis",
    ) -> RedisSessionStore:
        """A store on a new client for ``url`` (``redis://host:port/db``); with
        ``cluster``, on a Redis Cluster client that discovers every node from the one
        ``url`` names (``redis://`` or ``rediss://``, database 0).

        Connecting and every command give up after ``timeout`` seconds, without retries,
        so an outage surfaces as :class:`StoreUnavailable` promptly instead of stalling.
        The cluster client still follows MOVED and ASK redirections.
        """
        # No retries: the cluster client's default retries a failed command three times
        # with backoff and a topology refresh, several timeouts before the caller hears.
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if not cluster:
            return cls(Redis.from_url(url, **options), prefix=prefix, name=name)
        # The cluster client refuses a command outright (MaxConnectionsError) when a
        # node's pool is full, rather than wait: size it for the service's own limit
        # on concurrent requests (MAX_CONNECTIONS, 1000 by default). A MOVED patches its
        # slot and never closes every connection (see stores.redis_cluster).
        client = ClusterClient.from_url(
            url, deadline=timeout, max_connections=1000, reinitialize_steps=0, **options
        )
        return cls(client, prefix=prefix, name=name)

    def _session_key(self, sid: str) -> str:
        return f"{self._prefix}{{{sid}}}:session"

    def _user_key(self, user_id: str) -> str:
        return f"{self._prefix}user:{{{user_id}}}:sessions"

    async def create_session(self, session: SessionRecord) -> None:
        """Store a new session and index it under its user."""
        fields = [item for pair in _encode(session).items() for item in pair]
        user_key = self._user_key(session.user_id)
        with _store_errors(self.name):
            # Index first: a failure in between leaves a stale member (harmless), never
            # a session that logout-all cannot find. The index lives in another slot, and
            # a cluster client cannot pipeline a script, hence two round trips.
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.sadd(user_key, session.sid)
                # GT alone would never set an expiry on a set that has none yet.
                pipe.expireat(user_key, session.max_expires_at, nx=True)
                pipe.expireat(user_key, session.max_expires_at, gt=True)
                await pipe.execute()
            await self._create(
                keys=[self._session_key(session.sid)], args=[session.expires_at, *fields]
            )

    async def rotate(
        self,
        sid: str,
        presented_jti: str,
        new_jti: str,
        *,
        now: float,
        grace: float,
        user_id: str | None = None,
        max_delay: float | None = None,
    ) -> Rotation:
        """Compare-and-set the current refresh token id in one script run.

        Returns ROTATED or GRACE with the session, REUSED after deleting the session,
        GONE when there is no live session ``sid``, or STALE when the script ran more
        than ``max_delay`` seconds after ``now`` by Redis's clock.
        """
        with _store_errors(self.name):
            reply = await self._rotate(
                keys=[self._session_key(sid)],
                args=[
                    presented_jti,
                    new_jti,
                    repr(float(now)),
                    str(floor(now)),
                    repr(grace),
                    user_id or "",
                    "" if max_delay is None else repr(float(max_delay)),
                ],
            )
        outcome = RotationOutcome(reply[0])
        if outcome is RotationOutcome.REUSED:
            await self._forget(reply[1], [sid])
            return Rotation(outcome, None)
        if outcome in (RotationOutcome.GONE, RotationOutcome.STALE):
            return Rotation(outcome, None)
        return Rotation(outcome, _decode(_pairs(reply[1])))

    async def is_active(self, sid: str, *, now: float) -> bool:
        """Whether session ``sid`` exists and has not expired by ``now`` (one round trip)."""
        return sid in await self.are_active([sid], now=now)

    async def are_active(self, sids: list[str], *, now: float) -> set[str]:
        """Those of ``sids`` whose session exists and has not expired by ``now``: one
        ``HGET``, or one pipeline of them (which a cluster client splits by node)."""
        keys = [self._session_key(sid) for sid in sids]
        with _store_errors(self.name):
            if len(keys) == 1:
                expiries = [await self._client.hget(keys[0], "expires_at")]
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hget(key, "expires_at")
                    expiries = await pipe.execute()
        return {
            sid
            for sid, expires_at in zip(sids, expiries, strict=True)
            if expires_at is not None and int(expires_at) > now
        }

    async def get_session(self, sid: str, *, now: float) -> SessionRecord | None:
        """The live session ``sid``, or ``None``."""
        with _store_errors(self.name):
            fields = cast("dict[str, str]", await self._client.hgetall(self._session_key(sid)))
        record = _decode(fields) if fields else None
        return record if record is not None and record.expires_at > now else None

    async def revoke_session(self, sid: str, *, reason: str, now: float) -> bool:
        """Delete session ``sid``; ``True`` if it existed.

        Redis keeps no revoked state: a deleted session is simply gone.
        """
        with _store_errors(self.name):
            user_id = await self._delete(keys=[self._session_key(sid)])
        if user_id is None:
            return False
        await self._forget(user_id, [sid])
        return True

    async def revoke_user_sessions(
        self, user_id: str, *, reason: str, now: float, keep_sid: str | None = None
    ) -> int:
        """Delete every session of ``user_id`` but ``keep_sid``; returns how many existed."""
        user_key = self._user_key(user_id)
        with _store_errors(self.name):
            sids = [sid for sid in await self._members(user_key) if sid != keep_sid]
            if not sids:
                return 0
            async with self._client.pipeline(transaction=False) as pipe:
                for sid in sids:
                    pipe.delete(self._session_key(sid))
                pipe.srem(user_key, *sids)
                *deleted, _ = await pipe.execute()
        return sum(deleted)

    async def list_user_sessions(self, user_id: str, *, now: float) -> list[SessionRecord]:
        """The live sessions of ``user_id``, oldest first."""
        with _store_errors(self.name):
            sids = await self._members(self._user_key(user_id))
            async with self._client.pipeline(transaction=False) as pipe:
                for sid in sids:
                    pipe.hgetall(self._session_key(sid))
                replies: list[dict[str, str]] = await pipe.execute()
        stale = [sid for sid, fields in zip(sids, replies, strict=True) if not fields]
        await self._forget(user_id, stale)
        records = (_decode(fields) for fields in replies if fields)
        return sorted((r for r in records if r.expires_at > now), key=lambda r: r.created_at)

    async def purge(self, *, now: float) -> int:
        """Drop index entries whose session is gone; returns how many.

        Sessions themselves need no purging: their keys expire by TTL.
        """
        dropped = 0
        with _store_errors(self.name):
            pattern = f"{_escape_glob(self._prefix)}user:*"
            async for user_key in self._client.scan_iter(match=pattern, _type="set"):
                sids = await self._members(user_key)
                async with self._client.pipeline(transaction=False) as pipe:
                    for sid in sids:
                        pipe.exists(self._session_key(sid))
                    exists: list[int] = await pipe.execute()
                stale = [sid for sid, found in zip(sids, exists, strict=True) if not found]
                if stale:
                    dropped += await self._client.srem(user_key, *stale)
        return dropped

    def rate_counter(self) -> RedisRateCounter:
        """Rate-limit counters on this store's client and prefix."""
        from tokenstile.stores.redis_rates import RedisRateCounter

        return RedisRateCounter(self._client, prefix=self._prefix, store=self.name)

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless Redis answers; on a cluster, unless every
        master answers and reports ``cluster_state:ok``."""
        with _store_errors(self.name, any_reply=True):
            if not isinstance(self._client, RedisCluster):
                await self._client.ping()
                return
            # A master that is down keeps its slots, so the client still lists it here.
            replies: dict[str, Any] = await self._client.cluster_info(
                target_nodes=RedisCluster.PRIMARIES
            )
        # One reply per master ({node: info}), or the info itself when there is one master.
        infos = [replies] if "cluster_state" in replies else list(replies.values())
        states = {str(info.get("cluster_state")) for info in infos}
        if states != {"ok"}:
            raise store_failure(self.name, f"cluster state is {', '.join(sorted(states))}")

    async def aclose(self) -> None:
        """Close the client and its connections."""
        await self._client.aclose()

    async def _members(self, user_key: str) -> list[str]:
        # Members are str, not bytes: __init__ insists on decode_responses.
        return list(cast("set[str]", await self._client.smembers(user_key)))

    async def _forget(self, user_id: str, sids: Iterable[str]) -> None:
        """Remove ``sids`` from the user's index, best effort.

        Called after the session keys are already gone; if this fails the members are
        merely stale and get dropped on the next read, so the caller's answer stands.
        """
        sids = list(sids)
        if not sids:
            return
        try:
            await self._client.srem(self._user_key(user_id), *sids)
        except RedisError:
            return


def _escape_glob(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for SCAN MATCH."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
