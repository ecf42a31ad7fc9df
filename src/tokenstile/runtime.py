"""Builds a running tokenstile from :class:`Settings`: keys, stores and services."""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar, cast

import argon2

from tokenstile.backends import Stores, backend_name, open_stores
from tokenstile.core.accounts import AccountService
from tokenstile.core.audit import AuditLog, AuditLogs, JsonAuditLog
from tokenstile.core.clock import Clock, system_clock
from tokenstile.core.codec import TokenCodec
from tokenstile.core.keys import KeyRing
from tokenstile.core.passwords import PasswordHasher
from tokenstile.core.ratelimit import RateLimiter, RatePolicy
from tokenstile.core.sessions import SessionPolicy, SessionService
from tokenstile.errors import ConfigurationError, StoreUnavailable
from tokenstile.keyfiles import KeySetFile, load_or_create_keys, load_or_create_secret
from tokenstile.settings import Settings


@dataclass
class Runtime:
    """Everything a request or a command needs, opened once per process."""

    settings: Settings
    stores: Stores
    accounts: AccountService
    sessions: SessionService
    keys: KeyRing
    clock: Clock
    audit_file: TextIO | None = None
    """The ``AUDIT_LOG`` file, when it is one; closed with the runtime."""

    async def purge(self) -> int:
        """Drop expired state the stores do not expire by themselves; how many went."""
        return await self.stores.purge(now=self.clock())

    async def aclose(self) -> None:
        try:
            await self.stores.aclose()
        finally:
            if self.audit_file is not None:
                self.audit_file.close()


def key_ring(settings: Settings, *, clock: Clock = system_clock) -> KeyRing:
    """The configured key ring; raises ``ConfigurationError`` for an unusable key.

    HS256 uses ``SECRET_KEY`` (or the secret generated into ``DATA_DIR``). The asymmetric
    algorithms use ``KEYS_FILE`` (read only) or ``DATA_DIR/keys.json`` (generated on first
    use); either file is re-read when it changes, so a rotation reaches running processes.
    """
    if settings.algorithm == "HS256":
        if settings.keys_file is not None:
            raise ConfigurationError(
                "KEYS_FILE is for RS256, ES256 and EdDSA; set ALGORITHM to one of them "
                "or unset KEYS_FILE"
            )
        if settings.secret_key is not None:
            secret = settings.secret_key.get_secret_value().encode()
        else:
            secret = load_or_create_secret(settings.data_dir)
        return KeyRing.symmetric(secret)
    if settings.keys_file is not None:
        keys = KeySetFile(settings.keys_file)
    else:
        keys = load_or_create_keys(settings.data_dir, settings.algorithm, now=clock())
    jwks = keys.read()
    try:
        return KeyRing.from_jwks(settings.algorithm, jwks, clock=clock, reload=keys.read_if_changed)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{keys.path}: {exc.detail}") from None


def open_runtime(
    settings: Settings,
    *,
    clock: Clock = system_clock,
    audit: AuditLog | None = None,
    on_store_error: Callable[[str], None] | None = None,
) -> Runtime:
    """Wire the runtime on the stores ``settings`` name; nothing connects until first use.

    Security events go to ``audit`` as well as to ``AUDIT_LOG``: one JSON object a line
    on the ``tokenstile.audit`` logger (``stderr``: its handlers decide where it shows),
    appended to a file, or nowhere (``off``). ``on_store_error`` is called with the
    store's kind (``sqlite``, ``postgresql``, ``redis``, ``redis-cluster``) each time a
    store call the services make fails. Raises ``OSError`` for a file it cannot open.
    """
    stores = open_stores(settings)
    users, sessions, rates = stores.database.users, stores.sessions, stores.rates
    if on_store_error is not None:
        database_kind = stores.database.name.split(" ", 1)[0]
        users = _counting_failures(users, database_kind, on_store_error)
        sessions = _counting_failures(sessions, backend_name(settings), on_store_error)
        rates = _counting_failures(rates, backend_name(settings), on_store_error)
    audit_file = _open_audit_file(settings)
    logs: list[AuditLog] = [] if audit is None else [audit]
    if audit_file is not None:
        logs.append(JsonAuditLog(_line_writer(audit_file), clock=clock))
    elif settings.audit_log == "stderr":
        logs.append(JsonAuditLog(_audit_logger.warning, clock=clock))
    audit_logs = AuditLogs(*logs)
    limiter = RateLimiter(rates, clock=clock, enabled=settings.rate_limit_enabled, audit=audit_logs)
    limits = RatePolicy.parse(
        login=settings.login_rate_limit,
        register=settings.register_rate_limit,
        refresh=settings.refresh_rate_limit,
    )
    keys = key_ring(settings, clock=clock)
    codec = TokenCodec(
        keys,
        issuer=settings.resolved_issuer,
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
        stale_after=settings.store_timeout,
    )
    return Runtime(
        settings=settings,
        keys=keys,
        stores=stores,
        accounts=AccountService(
            users,
            PasswordHasher(
                argon2.PasswordHasher(
                    time_cost=settings.argon2_time_cost,
                    memory_cost=settings.argon2_memory_kib,
                    parallelism=settings.argon2_parallelism,
                )
            ),
            clock=clock,
            allow_registration=settings.allow_registration,
            limiter=limiter,
            rates=limits,
            audit=audit_logs,
        ),
        sessions=SessionService(
            sessions,
            codec,
            policy,
            clock=clock,
            audit=audit_logs,
            limiter=limiter,
            rates=limits,
        ),
        clock=clock,
        audit_file=audit_file,
    )


_audit_logger = logging.getLogger("tokenstile.audit")

_Store = TypeVar("_Store")


def _counting_failures(store: _Store, kind: str, count: Callable[[str], None]) -> _Store:
    """``store``, whose coroutine methods call ``count(kind)`` when they raise
    ``StoreUnavailable`` (for the store-error metric); everything else passes through."""
    return cast(_Store, _FailureCounter(store, kind, count))


class _FailureCounter:
    def __init__(self, store: object, kind: str, count: Callable[[str], None]) -> None:
        self._store = store
        self._kind = kind
        self._count = count

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not inspect.iscoroutinefunction(value):
            return value

        @functools.wraps(value)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return await value(*args, **kwargs)
            except StoreUnavailable:
                self._count(self._kind)
                raise

        setattr(self, name, counted)  # resolved once: later calls skip __getattr__
        return counted


def _open_audit_file(settings: Settings) -> TextIO | None:
    """The ``AUDIT_LOG`` file, opened to append (created private), unless it names
    ``stderr`` or ``off``."""
    if settings.audit_log in ("stderr", "off"):
        return None
    return open(settings.audit_log, "a", encoding="utf-8", opener=_private)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _line_writer(file: TextIO) -> Callable[[str], None]:
    """Write one line and flush it: workers append to the same file, a line at a time."""

    def write(line: str) -> None:
        file.write(line + "\n")
        file.flush()

    return write
