"""SQL stores (SQLite through aiosqlite, PostgreSQL through asyncpg) on SQLAlchemy Core.

Every store method that changes state is one statement in autocommit mode, so each is
atomic on its own. Rotation too: one ``UPDATE … RETURNING`` whose ``CASE`` expressions
rotate, keep (grace) or revoke (reuse), decided on the very row version it writes; only
when it matched no row does a read tell a gone session from a stale request.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import fields
from pathlib import Path
from threading import Thread
from typing import Any

import aiosqlite
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    and_,
    case,
    delete,
    event,
    extract,
    false,
    func,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tokenstile.core.store import Rotation, RotationOutcome, SessionRecord, UserRecord
from tokenstile.errors import ConfigurationError, UsernameTaken
from tokenstile.stores.failures import store_failure
from tokenstile.stores.sql_connections import Connections, store_errors
from tokenstile.stores.sql_rates import SqlRateCounter
from tokenstile.stores.sql_tables import session_is_live, sessions, users
from tokenstile.stores.sqlite_reader import SqliteLoopReader

_MIGRATIONS = Path(__file__).parent / "migrations"
_SESSION_FIELDS = tuple(field.name for field in fields(SessionRecord))
_BUMPED = users.c.credential_version + 1
# The pg_advisory_xact_lock key that serializes schema upgrades ("tokensti", a bigint).
_UPGRADE_LOCK = int.from_bytes(b"tokensti", "big")
# How long a failed SQLite open waits for aiosqlite's worker thread to stop.
_WORKER_STOP_WAIT = 5.0


def _session_from_row(row: RowMapping) -> SessionRecord:
    return SessionRecord(**{name: row[name] for name in _SESSION_FIELDS})


def _user_from_row(row: RowMapping) -> UserRecord:
    return UserRecord(
        id=row["id"],
        username=row["username"],
        password_hash=row["password_hash"],
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
        password_changed_at=row["password_changed_at"],
        credential_version=row["credential_version"],
    )


class SqlDatabase:
    """One SQL database holding users (and sessions, when Redis is not used)."""

    def __init__(self, engine: AsyncEngine, *, timeout: float = 5.0) -> None:
        self._engine = engine
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        connections = Connections(
            engine,
            name=self.name,
            serialize_writes=engine.dialect.name == "sqlite",
            timeout=timeout,
        )
        self.users = SqlUserStore(connections)
        self.sessions = SqlSessionStore(
            connections,
            loop_reader=SqliteLoopReader(database) if database and database != ":memory:" else None,
        )
        self.rate_limits = SqlRateCounter(connections)

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 5.0) -> SqlDatabase:
        """Open (lazily) the database at ``url``; nothing is connected until first use.

        Raises ``ConfigurationError`` when the URL's driver is not installed.
        """
        if url.startswith("sqlite"):
            # sqlite3's own ``timeout`` is its busy timeout: writers queue that long.
            engine = create_async_engine(
                url, connect_args={"timeout": timeout, "async_creator_fn": _open_sqlite}
            )
            event.listen(engine.sync_engine, "connect", _configure_sqlite)
            return cls(engine, timeout=timeout)
        try:
            engine = create_async_engine(
                url,
                pool_size=10,
                max_overflow=20,
                pool_timeout=timeout,
                connect_args={"timeout": timeout, "command_timeout": timeout},
            )
        except ModuleNotFoundError as exc:
            if exc.name != "asyncpg":
                raise
            raise ConfigurationError(
                "DATABASE_URL is a PostgreSQL database, but its driver asyncpg is not "
                "installed: pip install 'tokenstile[postgres]'"
            ) from None
        return cls(engine, timeout=timeout)

    @property
    def name(self) -> str:
        """``sqlite /path/file.db`` or ``postgresql host:port/name``: never a password."""
        url = self._engine.url
        if url.get_backend_name() == "sqlite":
            return f"sqlite {url.database}"
        return f"{url.get_backend_name()} {url.host}:{url.port or 5432}/{url.database}"

    async def upgrade(self) -> list[str]:
        """Bring the schema to the newest migration (idempotent); returns the revisions
        it applied, oldest first (none when the schema was at the newest already).

        Safe to run from several processes at once (workers starting, deploy jobs): on
        PostgreSQL each upgrade first takes a transaction-scoped advisory lock, so the
        others wait and then find the schema already at head; SQLite's write lock
        serializes them by itself.
        """
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        script = ScriptDirectory.from_config(config)

        def run(connection: Connection) -> list[str]:
            current = MigrationContext.configure(connection).get_current_revision()
            pending = self._pending(script, current)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            return pending

        with store_errors(self.name):
            async with self._engine.begin() as connection:
                if self._engine.dialect.name == "postgresql":
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK}
                    )
                return await connection.run_sync(run)

    async def schema_revision(self) -> str:
        """The schema's revision, which is the newest one this version knows.

        Raises ``StoreMisconfigured`` naming ``tokenstile db upgrade`` when migrations
        are pending (or the schema is missing), or when the revision is unknown here
        (a newer tokenstile migrated it).
        """
        script = ScriptDirectory(str(_MIGRATIONS))

        def current(connection: Connection) -> str | None:
            return MigrationContext.configure(connection).get_current_revision()

        with store_errors(self.name):
            async with self._engine.connect() as connection:
                revision = await connection.run_sync(current)
        head = script.get_current_head()
        assert head is not None, "the package ships its migrations"
        if revision == head:
            return head
        self._pending(script, revision)  # raises for a revision this version does not know
        at = "no schema" if revision is None else f"schema at {revision}"
        raise store_failure(
            self.name,
            f"{at}, {head} is the newest; run `tokenstile db upgrade`",
            misconfigured=True,
        )

    def _pending(self, script: ScriptDirectory, current: str | None) -> list[str]:
        """The revisions after ``current`` up to head, oldest first."""
        try:
            newer = script.iterate_revisions("head", current or "base")
            return [revision.revision for revision in reversed(list(newer))]
        except ResolutionError:
            raise store_failure(
                self.name,
                f"schema revision {current} is unknown to this version of tokenstile; "
                "a newer one migrated this database",
                misconfigured=True,
            ) from None

    # Users, sessions and rate limits share one engine: the session store's ping and
    # close serve the whole database.

    async def ping(self) -> None:
        await self.sessions.ping()

    async def aclose(self) -> None:
        await self.sessions.aclose()


async def _open_sqlite(*args: Any, **kwargs: Any) -> aiosqlite.Connection:
    """``aiosqlite.connect(*args, **kwargs)``, the SQLAlchemy dialect's default, except
    that a failed open waits for aiosqlite's worker thread to stop.

    aiosqlite stops that thread without waiting for it, and the thread then calls back
    into the event loop: if the loop has closed meanwhile (a command that fails on an
    unusable database file and exits), it dies printing a traceback after the error.
    """
    connection = aiosqlite.connect(*args, **kwargs)
    # Before aiosqlite 0.22 the connection was the thread itself.
    worker: Thread = connection if isinstance(connection, Thread) else connection._thread
    worker.daemon = True  # as SQLAlchemy does for the connections it opens: never hold up exit
    try:
        return await connection
    except Exception:
        await asyncio.to_thread(worker.join, _WORKER_STOP_WAIT)
        raise


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer, so several worker processes can
    # share the file.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class SqlUserStore:
    """Accounts in the ``users`` table."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    async def add_user(self, user: UserRecord) -> None:
        statement = users.insert().values(
            id=user.id,
            username=user.username,
            password_hash=user.password_hash,
            created_at=user.created_at,
            disabled_at=user.disabled_at,
            password_changed_at=user.password_changed_at,
        )
        try:
            async with self._connections.write() as connection:
                await connection.execute(statement)
        except IntegrityError as exc:
            raise UsernameTaken() from exc

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self._one(select(users).where(users.c.id == user_id))

    async def get_user_by_name(self, username: str) -> UserRecord | None:
        return await self._one(select(users).where(users.c.username == username))

    async def list_users(self) -> list[UserRecord]:
        async with self._connections.read() as connection:
            rows = (await connection.execute(select(users).order_by(users.c.username))).mappings()
            return [_user_from_row(row) for row in rows]

    async def set_password_hash(self, user_id: str, password_hash: str, *, now: float) -> None:
        await self._update(
            users.c.id == user_id,
            password_hash=password_hash,
            password_changed_at=now,
            credential_version=_BUMPED,
        )

    async def upgrade_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> None:
        await self._update(
            users.c.id == user_id, users.c.password_hash == old_hash, password_hash=new_hash
        )

    async def disable_user(self, user_id: str, *, now: float) -> None:
        await self._update(
            users.c.id == user_id,
            users.c.disabled_at.is_(None),
            disabled_at=now,
            credential_version=_BUMPED,
        )

    async def enable_user(self, user_id: str) -> None:
        await self._update(users.c.id == user_id, disabled_at=None)

    async def bump_credential_version(self, user_id: str) -> None:
        await self._update(users.c.id == user_id, credential_version=_BUMPED)

    async def _update(self, *where: Any, **values: Any) -> None:
        async with self._connections.write() as connection:
            await connection.execute(update(users).where(*where).values(**values))

    async def _one(self, statement: Any) -> UserRecord | None:
        async with self._connections.read() as connection:
            row = (await connection.execute(statement)).mappings().first()
        return None if row is None else _user_from_row(row)


class SqlSessionStore:
    """Sessions in the ``sessions`` table; see :class:`tokenstile.core.store.SessionStore`.

    With a ``loop_reader`` (SQLite), liveness checks read the file from the event loop
    instead of paying a thread hop each.
    """

    def __init__(
        self, connections: Connections, *, loop_reader: SqliteLoopReader | None = None
    ) -> None:
        self._connections = connections
        self._loop_reader = loop_reader

    async def create_session(self, session: SessionRecord) -> None:
        values = {name: getattr(session, name) for name in _SESSION_FIELDS}
        async with self._connections.write() as connection:
            await connection.execute(sessions.insert().values(**values))

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
        """One ``UPDATE … RETURNING`` on the live, fresh session row decides and applies
        the outcome: ``CASE`` rotates when ``presented_jti`` is current, keeps the row
        for the parent within ``grace`` and revokes it otherwise. Every ``CASE`` reads
        the row version the update locked (PostgreSQL re-reads it after waiting for a
        racing writer; SQLite has one writer), so racing rotations yield one ROTATED and
        GRACE for the rest, never a reuse. When no row matched, nothing changed, and a
        read tells GONE (not live, or not the owner's) from STALE (live but too late).
        """
        live = and_(sessions.c.sid == sid, session_is_live(now))
        if user_id is not None:
            live = and_(live, sessions.c.user_id == user_id)
        issued_at = math.floor(now)
        extended = issued_at + sessions.c.refresh_ttl
        set_by_rotation = {
            "previous_jti": sessions.c.current_jti,
            "current_jti": new_jti,
            "current_iat": issued_at,
            "rotated_at": now,
            "last_used_at": now,
            "expires_at": case(
                (extended > sessions.c.max_expires_at, sessions.c.max_expires_at),
                else_=extended,
            ),
        }
        set_by_reuse = {"revoked_at": now, "revoke_reason": "reuse"}
        rotating = sessions.c.current_jti == presented_jti
        # NULL (a session never rotated) is not "keeping": in doubt, it is reuse.
        keeping = or_(rotating, self._in_grace(presented_jti, now, grace))
        values = {
            column: case((rotating, value), else_=sessions.c[column])
            for column, value in set_by_rotation.items()
        } | {
            column: case((keeping, sessions.c[column]), else_=value)
            for column, value in set_by_reuse.items()
        }
        statement = (
            update(sessions)
            .where(live, self._fresh(now, max_delay))
            .values(values)
            .returning(*sessions.c)
        )
        async with self._connections.write() as connection:
            row = (await connection.execute(statement)).mappings().first()
            if row is None:
                found = (await connection.execute(select(sessions.c.sid).where(live))).first()
                outcome = RotationOutcome.GONE if found is None else RotationOutcome.STALE
                return Rotation(outcome, None)
        if row["revoked_at"] is not None:  # the update saw it live: this call revoked it
            return Rotation(RotationOutcome.REUSED, None)
        session = _session_from_row(row)
        if session.current_jti == new_jti:
            return Rotation(RotationOutcome.ROTATED, session)
        return Rotation(RotationOutcome.GRACE, session)

    def _fresh(self, now: float, max_delay: float | None) -> ColumnElement[bool]:
        """True while the database's own clock is at most ``max_delay`` past ``now``."""
        if max_delay is None:
            return true()
        if self._connections.dialect == "postgresql":
            # clock_timestamp(), not now(): the time the statement got its row lock.
            database_now: ColumnElement[Any] = extract("epoch", func.clock_timestamp())
        else:
            database_now = (func.julianday("now") - 2440587.5) * 86400.0
        return database_now - now <= max_delay

    @staticmethod
    def _in_grace(presented_jti: str, now: float, grace: float) -> ColumnElement[bool]:
        """Whether ``presented_jti`` is the parent, rotated out at most ``grace`` ago."""
        if grace <= 0:
            return false()
        return and_(
            sessions.c.previous_jti == presented_jti,
            sessions.c.rotated_at >= now - grace,
        )

    async def is_active(self, sid: str, *, now: float) -> bool:
        return sid in await self.are_active([sid], now=now)

    async def are_active(self, sids: list[str], *, now: float) -> set[str]:
        if self._loop_reader is not None:
            live = self._loop_reader.live(sids, now=now)
            if live is not None:
                return live
        statement = select(sessions.c.sid).where(sessions.c.sid.in_(sids), session_is_live(now))
        async with self._connections.read() as connection:
            return {row[0] for row in await connection.execute(statement)}

    async def get_session(self, sid: str, *, now: float) -> SessionRecord | None:
        statement = select(sessions).where(sessions.c.sid == sid, session_is_live(now))
        async with self._connections.read() as connection:
            row = (await connection.execute(statement)).mappings().first()
        return None if row is None else _session_from_row(row)

    async def revoke_session(self, sid: str, *, reason: str, now: float) -> bool:
        statement = (
            update(sessions)
            .where(sessions.c.sid == sid, session_is_live(now))
            .values(revoked_at=now, revoke_reason=reason)
        )
        async with self._connections.write() as connection:
            return (await connection.execute(statement)).rowcount > 0

    async def revoke_user_sessions(
        self, user_id: str, *, reason: str, now: float, keep_sid: str | None = None
    ) -> int:
        statement = (
            update(sessions)
            .where(sessions.c.user_id == user_id, session_is_live(now))
            .values(revoked_at=now, revoke_reason=reason)
        )
        if keep_sid is not None:
            statement = statement.where(sessions.c.sid != keep_sid)
        async with self._connections.write() as connection:
            return (await connection.execute(statement)).rowcount

    async def list_user_sessions(self, user_id: str, *, now: float) -> list[SessionRecord]:
        statement = (
            select(sessions)
            .where(sessions.c.user_id == user_id, session_is_live(now))
            .order_by(sessions.c.created_at)
        )
        async with self._connections.read() as connection:
            rows = (await connection.execute(statement)).mappings().all()
        return [_session_from_row(row) for row in rows]

    async def purge(self, *, now: float) -> int:
        # A missing row refuses tokens exactly like a revoked one, so revoked
        # sessions can go at once; the audit log keeps the why.
        statement = delete(sessions).where(
            or_(sessions.c.expires_at <= now, sessions.c.revoked_at.is_not(None))
        )
        async with self._connections.write() as connection:
            return (await connection.execute(statement)).rowcount

    async def ping(self) -> None:
        async with self._connections.read() as connection:
            await connection.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        if self._loop_reader is not None:
            self._loop_reader.close()
        await self._connections.dispose()
