"""Password hashing with Argon2id, run in a worker thread so token checks never stall."""

from __future__ import annotations

import asyncio

import argon2
from argon2.exceptions import InvalidHashError, VerificationError


class PasswordHasher:
    """Hashes and verifies passwords off the event loop."""

    def __init__(self, hasher: argon2.PasswordHasher | None = None) -> None:
        self._hasher = hasher or argon2.PasswordHasher()  # RFC 9106 low-memory profile
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches; never raises for a wrong password."""
        return await asyncio.to_thread(self._verify, password_hash, password)

    async def verify_nobody(self, password: str) -> None:
        """Spend the time a real verification would, for an unknown user."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("tokenstile-dummy-password")
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
