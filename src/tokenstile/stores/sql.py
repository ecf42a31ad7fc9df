"""SQL stores (SQLite through aiosqlite, PostgreSQL through asyncpg) on SQLAlchemy Core.

Every store method is one statement in autocommit mode, so each is atomic on its own,
except rotation: a conditional ``UPDATE … WHERE current_jti = :presented RETURNING …``,
then (when the token was not current) a conditional revoke for reuse, then a read for
the grace window — each step atomic and conditional, so a racing rotation is never
misread as reuse.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from sqlalchemy import (
    Connection,
    RowMapping,
    and_,
    case,
    delete,
    event,
    extract,
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
from tokenstile.stores.sql_tables import sessions, users
from tokenstile.stores.sqlite_reader import SqliteLoopReader

_MIGRATIONS = Path(__file__).parent / "migrations"
_SESSION_FIELDS = tuple(field.name for field in fields(SessionRecord))
_BUMPED = users.c.credential_version + 1
# The pg_advisory_xact_lock key that serializes schema upgrades ("tokensti", a bigint).
_UPGRADE_LOCK = int.from_bytes(b"tokensti", "big")


def _live(now: float) -> Any:
    """The condition of a session that still works: neither revoked nor expired."""
    return and_(sessions.c.revoked_at.is_(None), sessions.c.expires_at > now)


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
            engine = create_async_engine(url, connect_args={"timeout": timeout})
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
    def url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

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

    async def ping(self) -> None:
        with store_errors(self.name):
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        self.sessions.close_loop_reader()
        await self._engine.dispose()


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
        issued_at = math.floor(now)
        extended = issued_at + sessions.c.refresh_ttl
        live = and_(sessions.c.sid == sid, _live(now))
        if user_id is not None:
            live = and_(live, sessions.c.user_id == user_id)
        fresh = self._fresh(now, max_delay)
        rotate = (
            update(sessions)
            .where(live, fresh, sessions.c.current_jti == presented_jti)
            .values(
                previous_jti=sessions.c.current_jti,
                current_jti=new_jti,
                current_iat=issued_at,
                rotated_at=now,
                last_used_at=now,
                expires_at=case(
                    (extended > sessions.c.max_expires_at, sessions.c.max_expires_at),
                    else_=extended,
                ),
            )
            .returning(*sessions.c)
        )
        async with self._connections.write() as connection:
            row = (await connection.execute(rotate)).mappings().first()
            if row is not None:
                return Rotation(RotationOutcome.ROTATED, _session_from_row(row))
            # Not current: revoke the session unless the token is the parent
            # still inside its grace window. One conditional statement, so a
            # rotation racing this one cannot be misread as reuse.
            reuse = (
                update(sessions)
                .where(live, fresh, sessions.c.current_jti != presented_jti)
                .where(~self._in_grace(presented_jti, now, grace))
                .values(revoked_at=now, revoke_reason="reuse")
                .returning(sessions.c.sid)
            )
            if (await connection.execute(reuse)).first() is not None:
                return Rotation(RotationOutcome.REUSED, None)
            found = await connection.execute(select(sessions, fresh.label("fresh")).where(live))
            row = found.mappings().first()
            if row is None:
                return Rotation(RotationOutcome.GONE, None)
            if not row["fresh"]:
                return Rotation(RotationOutcome.STALE, None)
            session = _session_from_row(row)
            if session.previous_jti == presented_jti:
                return Rotation(RotationOutcome.GRACE, session)
            # Rotated again since the statement above: now a grandparent.
            await connection.execute(
                update(sessions).where(live).values(revoked_at=now, revoke_reason="reuse")
            )
            return Rotation(RotationOutcome.REUSED, None)

    def _fresh(self, now: float, max_delay: float | None) -> Any:
        """True while the database's own clock is at most ``max_delay`` past ``now``."""
        if max_delay is None:
            return true()
        if self._connections.dialect == "postgresql":
            # clock_timestamp(), not now(): the time the statement got its row lock.
            database_now: Any = extract("epoch", func.clock_timestamp())
        else:
            database_now = (func.julianday("now") - 2440587.5) * 86400.0
        return database_now - now <= max_delay

    @staticmethod
    def _in_grace(presented_jti: str, now: float, grace: float) -> Any:
        if grace <= 0:
            return sessions.c.sid.is_(None)  # never true: grace is off
        return and_(
            sessions.c.previous_jti.is_not(None),
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
        statement = select(sessions.c.sid).where(sessions.c.sid.in_(sids), _live(now))
        async with self._connections.read() as connection:
            return {row[0] for row in await connection.execute(statement)}

    async def get_session(self, sid: str, *, now: float) -> SessionRecord | None:
        statement = select(sessions).where(sessions.c.sid == sid, _live(now))
        async with self._connections.read() as connection:
            row = (await connection.execute(statement)).mappings().first()
        return None if row is None else _session_from_row(row)

    async def revoke_session(self, sid: str, *, reason: str, now: float) -> bool:
        statement = (
            update(sessions)
            .where(sessions.c.sid == sid, sessions.c.revoked_at.is_(None))
            .values(revoked_at=now, revoke_reason=reason)
        )
        async with self._connections.write() as connection:
            return (await connection.execute(statement)).rowcount > 0

    async def revoke_user_sessions(
        self, user_id: str, *, reason: str, now: float, keep_sid: str | None = None
    ) -> int:
        statement = (
            update(sessions)
            .where(sessions.c.user_id == user_id, _live(now))
            .values(revoked_at=now, revoke_reason=reason)
        )
        if keep_sid is not None:
            statement = statement.where(sessions.c.sid != keep_sid)
        async with self._connections.write() as connection:
            return (await connection.execute(statement)).rowcount

    async def list_user_sessions(self, user_id: str, *, now: float) -> list[SessionRecord]:
        statement = (
            select(sessions)
            .where(sessions.c.user_id == user_id, _live(now))
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

    def close_loop_reader(self) -> None:
        if self._loop_reader is not None:
            self._loop_reader.close()

    async def aclose(self) -> None:
        self.close_loop_reader()
        await self._connections.dispose()
