"""The store under test, opened on each store mode of ``store_spec``, for the store suites."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import StoreSpec
from tests.stores.session_records import username_of
from tokenstile.core.store import SessionStore, UserRecord


@dataclass
class Backend:
    """A store under test, plus what the suite needs to look behind it."""

    spec: StoreSpec
    sessions: SessionStore
    add_user: Callable[[UserRecord], Awaitable[None]] | None
    holds_state: Callable[[str], Awaitable[bool]]
    """Whether anything about session ``sid`` is still stored, revoked or not."""


@pytest.fixture
async def backend(store_spec: StoreSpec) -> AsyncIterator[Backend]:
    if store_spec.on_redis:
        store = store_spec.redis_store()
        raw = store_spec.raw_redis()

        async def redis_holds_state(sid: str) -> bool:
            return await raw.exists(f"{store_spec.redis_prefix}{{{sid}}}:session") > 0

        yield Backend(store_spec, store, None, redis_holds_state)
        await raw.aclose()
        await store.aclose()
        return

    # Imported here so that the Redis runs of the suites need no SQL store.
    from tokenstile.stores.sql import SqlDatabase

    db = SqlDatabase.from_url(store_spec.url)
    await db.upgrade()
    engine = create_async_engine(store_spec.url)

    async def sql_holds_state(sid: str) -> bool:
        async with engine.connect() as connection:
            query = text("SELECT count(*) FROM sessions WHERE sid = :sid")
            return bool((await connection.execute(query, {"sid": sid})).scalar_one())

    yield Backend(store_spec, db.sessions, db.users.add_user, sql_holds_state)
    await engine.dispose()
    await db.aclose()


@pytest.fixture
def session_store(backend: Backend) -> SessionStore:
    return backend.sessions


@pytest.fixture
def make_user(backend: Backend) -> Callable[[], Awaitable[str]]:
    """Create a user the store can own sessions for; returns its id."""

    async def make() -> str:
        user_id = str(uuid.uuid4())
        if backend.add_user is not None:
            user = UserRecord(user_id, username_of(user_id), "x", created_at=time.time())
            await backend.add_user(user)
        return user_id

    return make


@pytest.fixture
async def user_id(make_user: Callable[[], Awaitable[str]]) -> str:
    return await make_user()
