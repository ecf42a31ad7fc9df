"""Memory per live session in each store: Redis, SQLite and PostgreSQL.

Usage (from the repository root)::

    .venv/bin/python bench/session_memory.py [--sessions 100000] [--stores redis,sqlite,postgres]
        [--redis-url redis://127.0.0.1:6379/12] [--layout-sessions 20000] [--out bench/results]

Creates ``--sessions`` live sessions (``bench/session_population.py``) through the stores'
own ``create_session``, then measures what they take: Redis by ``INFO memory`` before and
after and by ``MEMORY USAGE`` of every key written (sessions and user indexes); SQLite by
the file's growth (after a WAL checkpoint) and ``dbstat``; PostgreSQL by
``pg_total_relation_size('sessions')``. Then it compares leaner Redis layouts
(``bench/redis_layouts.py``) in a private ``redis-server``. Writes
``bench/results/session-memory.md`` and ``.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import `bench` from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
import redis

from bench.driver import run_async
from bench.errors import BenchError
from bench.machine import describe
from bench.redis_layouts import (
    LAYOUTS,
    current_fields,
    key_usage,
    private_redis,
    used_memory,
    write_layout,
)
from bench.servers import drop_postgres, flush_redis, recreate_postgres, require_loopback
from bench.session_memory_report import write_markdown
from bench.session_population import Population, make_population, mean_user_agent_length
from tokenstile.stores.redis import RedisSessionStore
from tokenstile.stores.sql import SqlDatabase

T = TypeVar("T")
STORES = ("redis", "sqlite", "postgres")
GOAL_REDIS_BYTES = 300
CONCURRENCY = 32
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SQLITE_SESSION_OBJECTS = (
    "sessions",
    "sqlite_autoindex_sessions_1",
    "ix_sessions_user_id",
    "ix_sessions_expires_at",
)


async def bounded(calls: Iterable[Callable[[], Awaitable[T]]], limit: int = CONCURRENCY) -> None:
    """Await every call, at most ``limit`` at a time."""
    pending = iter(calls)

    async def worker() -> None:
        for call in pending:
            await call()

    await asyncio.gather(*(worker() for _ in range(limit)))


# -- Redis ----------------------------------------------------------------------------


def measure_redis(url: str, population: Population) -> dict[str, Any]:
    require_loopback(url)
    flush_redis(url)
    client = redis.Redis.from_url(url)
    try:
        before = used_memory(client)
        started = time.monotonic()
        run_async(_create_redis(url, population))
        elapsed = time.monotonic() - started
        after = used_memory(client)
        usage = key_usage(client, "ts:*")
        stored = client.hgetall(f"ts:{{{population.sessions[0].sid}}}:session")
    finally:
        client.close()
    expected = current_fields(population.sessions[0])
    if {k.decode(): v.decode() for k, v in stored.items()} != expected:
        raise BenchError("bench/redis_layouts.current_fields no longer matches the store")
    count = len(population.sessions)
    hashes = {k: v for k, v in usage.items() if k.startswith("hash/")}
    sets = {k: v for k, v in usage.items() if k.startswith("set/")}
    session_bytes = sum(v["bytes"] for v in hashes.values())
    index_bytes = sum(v["bytes"] for v in sets.values())
    return {
        "store": "redis",
        "url": url,
        "sessions": count,
        "users": len(population.users),
        "create_seconds": round(elapsed, 1),
        "used_memory_before": before,
        "used_memory_after": after,
        "used_memory_per_session": (after - before) / count,
        "memory_usage_by_encoding": usage,
        "session_hash_bytes_per_session": session_bytes / count,
        "index_bytes_per_session": index_bytes / count,
        "memory_usage_per_session": (session_bytes + index_bytes) / count,
    }


async def _create_redis(url: str, population: Population) -> None:
    store = RedisSessionStore.from_url(url, prefix="ts:", timeout=10.0)
    try:
        await bounded(
            (lambda s=session: store.create_session(s)) for session in population.sessions
        )
    finally:
        await store.aclose()


def compare_layouts(population: Population, count: int) -> list[dict[str, Any]]:
    """Each layout of ``LAYOUTS`` on the first ``count`` sessions, in a private server."""
    records = population.sessions[:count]
    rows = []
    with private_redis() as (_url, client):
        default_config = {k: client.config_get(k)[k] for k in ("hash-max-listpack-value",)}
        for layout in LAYOUTS:
            client.flushall()
            client.config_set("hash-max-listpack-value", default_config["hash-max-listpack-value"])
            for name, value in layout.config.items():
                client.config_set(name, value)
            before = used_memory(client)
            write_layout(client, layout, records)
            after = used_memory(client)
            usage = key_usage(client)
            total = sum(v["bytes"] for v in usage.values())
            rows.append(
                {
                    "layout": layout.name,
                    "change": layout.change,
                    "sessions": len(records),
                    "used_memory_per_session": (after - before) / len(records),
                    "memory_usage_per_session": total / len(records),
                    "memory_usage_by_encoding": usage,
                    "hash_fields_bytes": _field_bytes(layout.encode(records[0])),
                }
            )
            print(
                f"  {layout.name:<58} {rows[-1]['used_memory_per_session']:7.0f} B/session"
                f" (MEMORY USAGE {rows[-1]['memory_usage_per_session']:.0f})",
                flush=True,
            )
    return rows


def _field_bytes(fields: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in fields.items())


# -- SQL ------------------------------------------------------------------------------


async def _add_users(database: SqlDatabase, population: Population) -> None:
    """The sessions' owners (a foreign key), before the size is first taken."""
    await bounded((lambda u=user: database.users.add_user(u)) for user in population.users)


async def _create_sql_sessions(database: SqlDatabase, population: Population) -> float:
    started = time.monotonic()
    await bounded(
        (lambda s=session: database.sessions.create_session(s)) for session in population.sessions
    )
    return time.monotonic() - started


def measure_sqlite(population: Population) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tokenstile-session-memory-") as tmp:
        path = Path(tmp) / "tokenstile.db"
        url = f"sqlite+aiosqlite:///{path}"

        async def fill(sessions: bool) -> float:
            database = SqlDatabase.from_url(url, timeout=30.0)
            try:
                if not sessions:
                    await database.upgrade()
                    await _add_users(database, population)
                    return 0.0
                return await _create_sql_sessions(database, population)
            finally:
                await database.aclose()

        run_async(fill(sessions=False))
        before = _sqlite_checkpointed_size(path)
        objects_before = _sqlite_objects(path)
        elapsed = run_async(fill(sessions=True))
        after = _sqlite_checkpointed_size(path)
        objects = _sqlite_objects(path)
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
            conn.execute("VACUUM")
        compact = _sqlite_objects(path)
    count = len(population.sessions)
    session_objects = {
        name: objects.get(name, 0) - objects_before.get(name, 0) for name in SQLITE_SESSION_OBJECTS
    }
    return {
        "store": "sqlite",
        "sessions": count,
        "rows": rows,
        "users": len(population.users),
        "create_seconds": round(elapsed, 1),
        "file_bytes_before": before,
        "file_bytes_after": after,
        "file_bytes_per_session": (after - before) / count,
        "dbstat_bytes": session_objects,
        "dbstat_bytes_per_session": sum(session_objects.values()) / count,
        "vacuumed_bytes_per_session": sum(compact.get(n, 0) for n in SQLITE_SESSION_OBJECTS)
        / count,
    }


def _sqlite_checkpointed_size(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _sqlite_objects(path: Path) -> dict[str, int]:
    """Bytes of pages per table and index (``dbstat``); empty if SQLite lacks it."""
    with sqlite3.connect(path) as conn:
        try:
            rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        except sqlite3.OperationalError:
            return {}
    return {str(name): int(size) for name, size in rows}


def measure_postgres(url: str, population: Population) -> dict[str, Any]:
    import asyncpg

    require_loopback(url)
    run_async(recreate_postgres(url))
    sa_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def run() -> dict[str, Any]:
        database = SqlDatabase.from_url(sa_url, timeout=30.0)
        try:
            await database.upgrade()
            await _add_users(database, population)
            conn = await asyncpg.connect(url)
            try:
                before = await _pg_sizes(conn)
                elapsed = await _create_sql_sessions(database, population)
                await conn.execute("VACUUM ANALYZE sessions")
                after = await _pg_sizes(conn)
                rows = await conn.fetchval("SELECT count(*) FROM sessions")
                width = await conn.fetchval("SELECT avg(pg_column_size(s.*)) FROM sessions s")
                await conn.execute("VACUUM FULL sessions")
                compact = await _pg_sizes(conn)
            finally:
                await conn.close()
        finally:
            await database.aclose()
        count = len(population.sessions)
        return {
            "store": "postgres",
            "url": url,
            "sessions": count,
            "rows": rows,
            "users": len(population.users),
            "create_seconds": round(elapsed, 1),
            "sizes_before": before,
            "sizes_after": after,
            "sizes_after_vacuum_full": compact,
            "average_row_bytes": float(width),
            "total_bytes_per_session": (after["total"] - before["total"]) / count,
            "heap_bytes_per_session": (after["heap"] - before["heap"]) / count,
            "index_bytes_per_session": (after["indexes"] - before["indexes"]) / count,
            "vacuum_full_bytes_per_session": (compact["total"] - before["total"]) / count,
        }

    try:
        return run_async(run())
    finally:
        run_async(drop_postgres(url))


async def _pg_sizes(conn: Any) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT pg_relation_size('sessions') AS heap, pg_indexes_size('sessions') AS indexes,"
        " pg_total_relation_size('sessions') AS total"
    )
    return {key: int(row[key]) for key in ("heap", "indexes", "total")}


def _admin_url(url: str) -> str:
    return urlsplit(url)._replace(path="/postgres").geturl()


# -- entry point ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument(
        "--postgres-url", default="postgresql://postgres@127.0.0.1:5432/tokenstile_session_memory"
    )
    parser.add_argument(
        "--layout-sessions",
        type=int,
        default=20_000,
        help="sessions per Redis layout in the private server (0: skip the comparison)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(args.stores) - set(STORES)
    if unknown:
        parser.error(f"unknown store(s): {', '.join(sorted(unknown))}")
    if args.sessions <= 0 or args.layout_sessions < 0:
        parser.error("--sessions must be > 0 and --layout-sessions >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    load_at_start = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    population = make_population(args.sessions, now=time.time())
    print(
        f"{len(population.sessions)} sessions of {len(population.users)} users"
        f" ({len(population.rotated)} rotated), user agent"
        f" {mean_user_agent_length(population.sessions):.0f} characters on average",
        flush=True,
    )
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    measures: dict[str, Callable[[], dict[str, Any]]] = {
        "redis": lambda: measure_redis(args.redis_url, population),
        "sqlite": lambda: measure_sqlite(population),
        "postgres": lambda: measure_postgres(args.postgres_url, population),
    }
    for store in args.stores:
        print(f"[{store}]", flush=True)
        try:
            results[store] = measures[store]()
        except (BenchError, OSError, redis.RedisError) as exc:
            print(f"[{store}] FAILED: {exc}", file=sys.stderr)
            failures[store] = str(exc)
            continue
        print(f"  {_headline(results[store])}", flush=True)
    layouts: list[dict[str, Any]] = []
    if args.layout_sessions and "redis" in args.stores:
        print("[redis layouts, private redis-server]", flush=True)
        try:
            layouts = compare_layouts(population, min(args.layout_sessions, args.sessions))
        except (BenchError, OSError, redis.RedisError) as exc:
            failures["redis layouts"] = str(exc)
    report = {
        "config": {
            "command": " ".join(
                ["bench/session_memory.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "sessions": len(population.sessions),
            "users": len(population.users),
            "rotated": len(population.rotated),
            "remember_me": sum(s.remember_me for s in population.sessions),
            "mean_user_agent_chars": mean_user_agent_length(population.sessions),
            "long_user_agents": sum(len(s.user_agent or "") > 64 for s in population.sessions),
            "goal_redis_bytes": GOAL_REDIS_BYTES,
            "elapsed_s": round(time.monotonic() - started),
            "load_average_at_start": load_at_start,
        },
        "machine": describe(
            args.redis_url if "redis" in args.stores else None,
            _admin_url(args.postgres_url) if "postgres" in args.stores else None,
        ),
        "stores": results,
        "redis_layouts": layouts,
        "failures": failures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = write_markdown(report, args.out / "session-memory.md")
    (args.out / "session-memory.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print()
    print(markdown)
    print(f"written: {args.out}/session-memory.md, .json")
    return 1 if failures else 0


def _headline(result: dict[str, Any]) -> str:
    if result["store"] == "redis":
        return (
            f"{result['used_memory_per_session']:.0f} B/session by INFO memory,"
            f" {result['memory_usage_per_session']:.0f} by MEMORY USAGE"
        )
    if result["store"] == "sqlite":
        return f"{result['file_bytes_per_session']:.0f} B/session of file"
    return f"{result['total_bytes_per_session']:.0f} B/session (table + indexes)"


if __name__ == "__main__":
    sys.exit(main())
