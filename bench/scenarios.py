"""What one virtual user does in a phase: the same request, or a refresh chain."""

from __future__ import annotations

from typing import Protocol

import orjson

from bench.connection import HttpConnection, post_json
from bench.errors import BenchError


class Scenario(Protocol):
    async def setup(self, conn: HttpConnection) -> None:
        """Untimed preparation before the phase starts."""

    async def step(self, conn: HttpConnection) -> bool:
        """One timed request; True when it succeeded."""

    async def recover(self, conn: HttpConnection) -> None:
        """Untimed repair after a failed step."""


class FixedRequest:
    """Sends the same prebuilt request again and again."""

    def __init__(self, request: bytes, expected_status: int = 200) -> None:
        self._request = request
        self._expected = expected_status

    async def setup(self, conn: HttpConnection) -> None:
        return

    async def step(self, conn: HttpConnection) -> bool:
        return (await conn.send(self._request)).status == self._expected

    async def recover(self, conn: HttpConnection) -> None:
        return


class RefreshChain:
    """Logs in once, then refreshes with the refresh token it last received.

    Every failed refresh is a broken chain: it is counted by the driver and the user
    logs in again (untimed).
    """

    def __init__(self, port: int, username: str, password: str) -> None:
        self._port = port
        self._login = post_json(port, "/auth/login", {"username": username, "password": password})
        self._refresh_token = ""

    async def setup(self, conn: HttpConnection) -> None:
        await self._log_in(conn)

    async def step(self, conn: HttpConnection) -> bool:
        request = post_json(self._port, "/auth/refresh", {"refresh_token": self._refresh_token})
        response = await conn.send(request)
        if response.status != 200:
            return False
        self._refresh_token = orjson.loads(response.body)["refresh_token"]
        return True

    async def recover(self, conn: HttpConnection) -> None:
        await self._log_in(conn)  # a broken chain starts over with a new session

    async def _log_in(self, conn: HttpConnection) -> None:
        response = await conn.send(self._login)
        if response.status != 200:
            raise BenchError(f"login failed: HTTP {response.status} {response.body[:200]!r}")
        self._refresh_token = orjson.loads(response.body)["refresh_token"]
