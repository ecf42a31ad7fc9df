"""What the soak samples: the server's processes (from /proc) and the size of its store."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import redis

from bench.redis_layouts import key_usage

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def group_processes(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (the server and any workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def process_sample(pgid: int) -> dict[str, int]:
    """RSS bytes and open file descriptors, summed over the group, and its size."""
    rss = fds = 0
    pids = group_processes(pgid)
    for pid in pids:
        try:
            rss += int((Path(f"/proc/{pid}/statm")).read_text().split()[1]) * PAGE_SIZE
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return {"rss_bytes": rss, "open_fds": fds, "processes": len(pids)}


class RedisProbe:
    """``used_memory`` of the server, and the keys under the prefix: how many of each
    kind and their ``MEMORY USAGE``."""

    def __init__(self, url: str, prefix: str = "ts:") -> None:
        self._client = redis.Redis.from_url(url)
        self._prefix = prefix

    def sample(self) -> dict[str, Any]:
        usage = key_usage(self._client, f"{self._prefix}*")
        keys = {"session": 0, "user_index": 0, "other": 0}
        for key in self._client.scan_iter(match=f"{self._prefix}*", count=1000):
            name = key.decode()
            if name.endswith(":session"):
                keys["session"] += 1
            elif name.startswith(f"{self._prefix}user:"):
                keys["user_index"] += 1
            else:
                keys["other"] += 1
        return {
            "used_memory": int(self._client.info("memory")["used_memory"]),
            "keys": sum(keys.values()),
            "session_keys": keys["session"],
            "user_index_keys": keys["user_index"],
            "other_keys": keys["other"],
            "key_bytes": sum(entry["bytes"] for entry in usage.values()),
        }

    def stale_index_members(self) -> int:
        """Index members whose session key is gone (the purge should drop them)."""
        stale = 0
        for user_key in self._client.scan_iter(match=f"{self._prefix}user:*", _type="set"):
            for sid in self._client.smembers(user_key):
                if not self._client.exists(f"{self._prefix}{{{sid.decode()}}}:session"):
                    stale += 1
        return stale

    def close(self) -> None:
        self._client.close()


class SqliteProbe:
    """Row counts of ``sessions`` and ``rate_events`` and the size of the file + WAL."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def sample(self) -> dict[str, Any]:
        now = time.time()
        uri = f"file:{self._path}?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=5) as conn:
            sessions, live, expired = conn.execute(
                "SELECT count(*),"
                " coalesce(sum(revoked_at IS NULL AND expires_at > ?), 0),"
                " coalesce(sum(expires_at <= ?), 0) FROM sessions",
                (now, now),
            ).fetchone()
            rate_events = conn.execute("SELECT count(*) FROM rate_events").fetchone()[0]
        wal = self._path.with_name(self._path.name + "-wal")
        size = self._path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        return {
            "sessions_rows": sessions,
            "live_sessions": live,
            "expired_rows": expired,
            "rate_events_rows": rate_events,
            "file_bytes": size,
        }


class PostgresProbe:
    """Row counts of ``sessions`` and ``rate_events`` and their total relation sizes."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: Any = None

    async def sample(self) -> dict[str, Any]:
        import asyncpg

        if self._conn is None:
            self._conn = await asyncpg.connect(self._url)
        now = time.time()
        row = await self._conn.fetchrow(
            "SELECT count(*) AS sessions,"
            " count(*) FILTER (WHERE revoked_at IS NULL AND expires_at > $1::float8) AS live,"
            " count(*) FILTER (WHERE expires_at <= $1::float8) AS expired,"
            " (SELECT count(*) FROM rate_events) AS rate_events,"
            " pg_total_relation_size('sessions') + pg_total_relation_size('rate_events')"
            " AS bytes FROM sessions",
            now,
        )
        return {
            "sessions_rows": int(row["sessions"]),
            "live_sessions": int(row["live"]),
            "expired_rows": int(row["expired"]),
            "rate_events_rows": int(row["rate_events"]),
            "relation_bytes": int(row["bytes"]),
        }

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
