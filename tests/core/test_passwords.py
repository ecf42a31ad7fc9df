"""The Argon2 pool: bounded, and below the event loop's priority."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import argon2
import pytest

from tokenstile.core.passwords import PasswordHasher


class RecordingArgon2(argon2.PasswordHasher):
    """Real Argon2id (cheap costs) that notes the thread and concurrency of each hash."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8192, parallelism=1)
        self._lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.niceness: list[int] = []

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            if sys.platform == "linux":
                thread = threading.get_native_id()
                self.niceness.append(os.getpriority(os.PRIO_PROCESS, thread))
        try:
            time.sleep(0.02)  # long enough for every caller to be waiting at once
            return super().hash(password, salt=salt)
        finally:
            with self._lock:
                self.running -= 1


async def test_no_more_hashes_run_at_once_than_the_pool_allows() -> None:
    argon = RecordingArgon2()
    hasher = PasswordHasher(argon, concurrency=2)

    hashes = await asyncio.gather(*(hasher.hash(f"password {n}") for n in range(8)))

    assert argon.most_at_once == 2
    assert all([await hasher.verify(h, f"password {n}") for n, h in enumerate(hashes)])


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_hashing_threads_run_below_the_event_loops_priority() -> None:
    argon = RecordingArgon2()
    hasher = PasswordHasher(argon, concurrency=2)
    loop_niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    await asyncio.gather(*(hasher.hash("correct horse battery") for _ in range(4)))

    assert argon.niceness, "no hash ran"
    assert all(niceness > loop_niceness for niceness in argon.niceness)
    # The loop's own thread keeps its priority.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_niceness


async def test_the_pool_defaults_to_one_hash_per_core() -> None:
    assert PasswordHasher().concurrency == (os.cpu_count() or 1)
