"""Password hashing with Argon2id, on worker threads that never starve the event loop.

Argon2id is meant to be expensive: one login at the default cost keeps a core busy for
tens of milliseconds and holds 64 MiB. Run on the default executor, a burst of logins
takes every core from the thread that answers token checks, and the p99 of every other
request follows. So hashing runs on a pool of its own: at most one hash per core at a
time (the rest wait their turn, which also bounds the memory a burst of logins can
claim), on threads whose scheduling priority is lowered, so the event loop's thread
always goes first and a login waits rather than an API call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

logger = logging.getLogger("tokenstile")

T = TypeVar("T")

# Added to the nice value of the hashing threads (and of the lane threads Argon2 starts
# from them, which inherit it). 10 leaves the loop ~10x the CPU share of a hash when both
# want a core, yet never starves logins entirely.
HASHING_NICENESS = 10


def _lower_priority() -> None:
    # On Linux the nice value belongs to the thread; elsewhere setpriority would lower
    # the whole process, so the pool keeps normal priority there.
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        niceness = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness + HASHING_NICENESS, 19))
    except OSError as exc:
        logger.debug("could not lower the hashing thread's priority: %s", exc)


class PasswordHasher:
    """Hashes and verifies passwords off the event loop, at most ``concurrency`` at once
    (default: one per core)."""

    def __init__(
        self, hasher: argon2.PasswordHasher | None = None, *, concurrency: int | None = None
    ) -> None:
        self._hasher = hasher or argon2.PasswordHasher()  # RFC 9106 low-memory profile
        self._dummy_hash: str | None = None
        self.concurrency = concurrency or os.cpu_count() or 1
        # Threads start on first use and idle cheaply; the pool lives as long as the process.
        self._pool = ThreadPoolExecutor(
            max_workers=self.concurrency,
            thread_name_prefix="tokenstile-argon2",
            initializer=_lower_priority,
        )

    async def hash(self, password: str) -> str:
        return await self._off_loop(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches; never raises for a wrong password."""
        return await self._off_loop(self._verify, password_hash, password)

    async def verify_nobody(self, password: str) -> None:
        """Spend the time a real verification would, for an unknown user."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("tokenstile-dummy-password")
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    async def _off_loop(self, function: Callable[..., T], *args: str) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
