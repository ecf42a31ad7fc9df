"""Rate limits: fixed-window counters kept in the shared store, so every process agrees."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol

from tokenstile.core.clock import Clock
from tokenstile.errors import ConfigurationError, RateLimited

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$")


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


class RateCounter(Protocol):
    """Counts events per key in fixed windows; implemented by the session stores."""

    async def hit(self, key: str, *, period: int, now: float) -> tuple[int, float]:
        """Count one event; returns the count in the current window and when it ends."""
        ...

    async def peek(self, key: str, *, period: int, now: float) -> tuple[int, float]:
        """The count in the current window and when it ends, without counting."""
        ...

    async def clear(self, key: str) -> None: ...


class RateLimiter:
    """Checks and counts events against rates; a disabled limiter lets everything pass."""

    def __init__(self, counter: RateCounter, *, clock: Clock, enabled: bool = True) -> None:
        self._counter = counter
        self._clock = clock
        self.enabled = enabled

    async def check(self, key: str, rate: Rate) -> None:
        """Raise ``RateLimited`` if ``key`` has already used up ``rate``."""
        if self.enabled:
            count, ends = await self._counter.peek(key, period=rate.period, now=self._clock())
            self._refuse_over(count, ends, rate.limit)

    async def hit(self, key: str, rate: Rate) -> None:
        """Count one event for ``key``; raise ``RateLimited`` once it exceeds ``rate``."""
        if self.enabled:
            count, ends = await self._counter.hit(key, period=rate.period, now=self._clock())
            self._refuse_over(count, ends, rate.limit + 1)

    async def count(self, key: str, rate: Rate) -> None:
        """Count one event for ``key`` without refusing it (e.g. a failure just seen)."""
        if self.enabled:
            await self._counter.hit(key, period=rate.period, now=self._clock())

    async def clear(self, key: str) -> None:
        if self.enabled:
            await self._counter.clear(key)

    def _refuse_over(self, count: int, ends: float, allowed_below: int) -> None:
        if count >= allowed_below:
            raise RateLimited(retry_after=max(1, math.ceil(ends - self._clock())))


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
