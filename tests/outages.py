"""Make the store under test stop answering for a while, with the real service itself."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import asyncpg
import redis


def stall_sqlite(database: Path, seconds: float) -> threading.Thread:
    """Hold SQLite's write lock: writers wait (in WAL mode readers never do)."""
    locked = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(database, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE sessions SET last_used_at = last_used_at")
        locked.set()
        time.sleep(seconds)
        connection.execute("COMMIT")
        connection.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert locked.wait(5), "could not lock the SQLite database"
    return thread


def stall_postgres(database_url: str, seconds: float) -> threading.Thread:
    """Hold an ACCESS EXCLUSIVE lock on the sessions table: every query on it waits."""
    locked = threading.Event()
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def hold() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            async with connection.transaction():
                await connection.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
                locked.set()
                await asyncio.sleep(seconds)
        finally:
            await connection.close()

    thread = threading.Thread(target=asyncio.run, args=(hold(),), daemon=True)
    thread.start()
    assert locked.wait(5), "could not lock the sessions table"
    return thread


def stall_redis(url: str, seconds: float) -> None:
    """Pause every client of the Redis server at ``url`` (it resumes by itself)."""
    client = redis.Redis.from_url(url)
    client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
    client.close()
