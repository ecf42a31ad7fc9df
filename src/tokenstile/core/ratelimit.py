"""Rate limits: sliding logs kept in the shared store, so every process agrees.

Each attempt is recorded in one atomic store operation *before* the work it guards
(a password check, a rotation), and only while fewer than ``limit`` attempts of its key
were recorded in the last ``period`` seconds. So "N per period" holds over any
period-long span and under any concurrency: there is no read-then-count gap to race.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tokenstile.core.audit import NO_AUDIT, REFUSED, AuditLog, AuditValue
from tokenstile.core.clock import Clock
from tokenstile.errors import ConfigurationError, RateLimited

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$")
_READABLE_PREFIX = re.compile(r"^(?:[a-z]{1,16}:){0,2}")

STORAGE_KEY_LENGTH = 34 + 64
"""The longest :func:`storage_key`: a readable prefix of up to 34 characters and a digest."""


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``limit`` events per ``period`` seconds."""

    limit: int
    period: int


def parse_rate(text: str) -> Rate:
    """``"5/minute"``, ``"600/minute"``, ``"100/2hours"`` → :class:`Rate`."""
    match = _RATE.match(text.lower())
    if match is None or int(match[1]) < 1:
        raise ConfigurationError(f"invalid rate {text!r}: write it like 5/minute")
    return Rate(int(match[1]), int(match[2] or 1) * _PERIODS[match[3]])


def storage_key(key: str) -> str:
    """``key`` as a store keeps it: its readable kind (``login:user:``) and a SHA-256.

    Callers' keys carry usernames and addresses of any length and any characters (NUL,
    10 KB, lone surrogates); the digest keeps every stored key short, printable and free
    of personal data, so no key can break a database.
    """
    prefix = _READABLE_PREFIX.match(key)
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix[0] if prefix else ''}{digest}"


def _kind(key: str) -> str:
    """What a key limits, without whom: ``login:user`` for ``login:user:alice``."""
    prefix = _READABLE_PREFIX.match(key)
    return prefix[0].rstrip(":") if prefix and prefix[0] else "other"


class RateCounter(Protocol):
    """Sliding logs of events per key; implemented by the session stores.

    A key may be any string: stores keep :func:`storage_key` of it.
    """

    async def acquire(
        self, key: str, *, limit: int, period: float, now: float, event_id: str
    ) -> tuple[bool, float]:
        """Record ``event_id`` for ``key`` only if fewer than ``limit`` events of ``key``
        were recorded in ``(now - period, now]``, in one atomic step.

        Returns ``(True, 0.0)`` when recorded, else ``(False, seconds)`` until one
        more would be; a refused event is not recorded.
        """
        ...

    async def release(self, key: str, event_id: str) -> None:
        """Forget one recorded event (nothing happens if it is not there)."""
        ...


@dataclass(frozen=True, slots=True)
class Admission:
    """The events one :meth:`RateLimiter.admit` recorded: ``(key, event_id)`` pairs."""

    events: tuple[tuple[str, str], ...] = field(default=())


class RateLimiter:
    """Admits attempts against rates; a disabled limiter lets everything pass."""

    def __init__(
        self,
        counter: RateCounter,
        *,
        clock: Clock,
        enabled: bool = True,
        audit: AuditLog = NO_AUDIT,
    ) -> None:
        self._counter = counter
        self._clock = clock
        self._enabled = enabled
        self._audit = audit

    async def admit(self, keys: Sequence[tuple[str, Rate]], **context: AuditValue) -> Admission:
        """Record one attempt under every key, or under none.

        Raises ``RateLimited`` (with the seconds until the first full key has room) when
        any key has used up its rate; the events this call already recorded are taken
        back, so a refused attempt counts nowhere. A refusal is audited as
        ``rate_limited``, its reason the limit's kind (``login:user``), with ``context``
        (who asked: ``ip``, ``user_agent``, ``user_id``).
        """
        if not self._enabled:
            return Admission()
        now = self._clock()
        recorded: list[tuple[str, str]] = []
        for key, rate in keys:
            event_id = secrets.token_hex(16)
            admitted, retry_after = await self._counter.acquire(
                key, limit=rate.limit, period=rate.period, now=now, event_id=event_id
            )
            if not admitted:
                for earlier in recorded:
                    await self._counter.release(*earlier)
                seconds = max(1, math.ceil(retry_after))
                self._audit.record(
                    "rate_limited",
                    outcome=REFUSED,
                    reason=_kind(key),
                    retry_after=seconds,
                    **context,
                )
                raise RateLimited(retry_after=seconds)
            recorded.append((key, event_id))
        return Admission(tuple(recorded))

    async def release(self, admission: Admission, key: str) -> None:
        """Take back the event ``admission`` recorded under ``key``, if it recorded one.

        For attempts that turned out not to be what a limit counts, such as a login
        whose password was right (the limit is on *failed* logins per account).
        """
        for event in admission.events:
            if event[0] == key:
                await self._counter.release(*event)


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """The limits of SPEC §3, parsed."""

    login_per_account: Rate = Rate(5, 60)
    login_per_ip: Rate = Rate(50, 60)
    register_per_ip: Rate = Rate(10, 60)
    refresh_per_ip: Rate = Rate(600, 60)

    @classmethod
    def parse(cls, *, login: str, register: str, refresh: str) -> RatePolicy:
        """From the settings' texts; the per-IP login limit is ten times the per-account one."""
        per_account = parse_rate(login)
        return cls(
            login_per_account=per_account,
            login_per_ip=Rate(per_account.limit * 10, per_account.period),
            register_per_ip=parse_rate(register),
            refresh_per_ip=parse_rate(refresh),
        )


DEFAULT_RATES = RatePolicy()
