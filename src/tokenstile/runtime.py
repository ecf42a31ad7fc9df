"""Builds a running tokenstile from :class:`Settings`: keys, stores and services."""

from __future__ import annotations

from dataclasses import dataclass

import argon2

from tokenstile.core.accounts import AccountService
from tokenstile.core.audit import LoggingAuditLog
from tokenstile.core.clock import Clock, system_clock
from tokenstile.core.codec import TokenCodec
from tokenstile.core.keys import KeyRing
from tokenstile.core.passwords import PasswordHasher
from tokenstile.core.sessions import SessionPolicy, SessionService
from tokenstile.core.store import SessionStore
from tokenstile.keyfiles import load_or_create_secret
from tokenstile.settings import Settings
from tokenstile.stores.sql import SqlDatabase


@dataclass
class Runtime:
    """Everything a request or a command needs, opened once per process."""

    settings: Settings
    database: SqlDatabase
    session_store: SessionStore
    accounts: AccountService
    sessions: SessionService

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database and the session store answer."""
        await self.database.ping()
        await self.session_store.ping()

    async def aclose(self) -> None:
        if self.session_store is not self.database.sessions:
            await self.session_store.aclose()
        await self.database.aclose()


def key_ring(settings: Settings) -> KeyRing:
    """The configured key ring; raises ``ConfigurationError`` for an unusable key."""
    if settings.secret_key is not None:
        secret = settings.secret_key.get_secret_value().encode()
    else:
        secret = load_or_create_secret(settings.data_dir)
    return KeyRing.symmetric(secret)


def uses_embedded_database(settings: Settings) -> bool:
    return settings.resolved_database_url.startswith("sqlite")


def open_runtime(settings: Settings, *, clock: Clock = system_clock) -> Runtime:
    """Wire the runtime; nothing connects until first use."""
    if uses_embedded_database(settings):
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    database = SqlDatabase.from_url(settings.resolved_database_url, timeout=settings.store_timeout)
    session_store: SessionStore = database.sessions
    if settings.redis_url is not None:
        from tokenstile.stores.redis import RedisSessionStore

        session_store = RedisSessionStore.from_url(
            settings.redis_url.get_secret_value(),
            prefix=settings.redis_prefix,
            timeout=settings.store_timeout,
        )
    codec = TokenCodec(
        key_ring(settings),
        issuer=settings.issuer,
        audience=settings.audience,
        leeway=settings.leeway,
        clock=clock,
    )
    policy = SessionPolicy(
        access_ttl=settings.access_ttl,
        refresh_ttl=settings.refresh_ttl,
        remember_me_ttl=settings.remember_me_ttl,
        session_max_age=settings.session_max_age,
        refresh_grace=settings.refresh_grace,
    )
    return Runtime(
        settings=settings,
        database=database,
        session_store=session_store,
        accounts=AccountService(
            database.users,
            PasswordHasher(
                argon2.PasswordHasher(
                    time_cost=settings.argon2_time_cost,
                    memory_cost=settings.argon2_memory_kib,
                    parallelism=settings.argon2_parallelism,
                )
            ),
            clock=clock,
            allow_registration=settings.allow_registration,
        ),
        sessions=SessionService(session_store, codec, policy, clock=clock, audit=LoggingAuditLog()),
    )
