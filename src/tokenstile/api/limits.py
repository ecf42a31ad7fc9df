"""Bounded request bodies: at most ``MAX_BODY_BYTES``, arriving within ``BODY_TIMEOUT``.

A pure ASGI middleware, so nothing is buffered before the check: a declared
``Content-Length`` above the limit is refused before the body is read, and an
undeclared (chunked) body is counted as the app reads it and cut off the moment it
passes the limit. Both answers close the connection, so the rest is never read.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenstile.api.errors import error_response

_CLOSE = {"Connection": "close"}
_TOO_LARGE = "The request body is larger than {limit} bytes."
_TOO_SLOW = "The request body did not arrive within {timeout:g} seconds."


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (413) or slower than ``timeout`` (408).

    ``timeout`` bounds the whole body, from the app's first read to its last byte.
    With ``routes``, only requests those routes match are bounded (the library's
    routes inside someone else's app); without, every request is.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        timeout: float,
        routes: Sequence[BaseRoute] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._applies(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            response = error_response(
                Request(scope),
                413,
                "invalid_request",
                _TOO_LARGE.format(limit=self.max_bytes),
                _CLOSE,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, _BoundedReceive(receive, self.max_bytes, self.timeout), send)

    def _applies(self, scope: Scope) -> bool:
        if self.routes is None:
            return True
        return any(route.matches(scope)[0] is not Match.NONE for route in self.routes)


class _BoundedReceive:
    """``receive`` that counts body bytes and gives up on a body that stalls.

    Errors are Starlette ``HTTPException``s: FastAPI re-raises those from body parsing
    (any other error there becomes a 400), and the app's handler renders them.
    """

    def __init__(self, receive: Receive, max_bytes: int, timeout: float) -> None:
        self._receive = receive
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._received = 0
        self._deadline: float | None = None
        self._complete = False

    async def __call__(self) -> Message:
        if self._complete:
            # After the body only http.disconnect is left, which may rightly wait long.
            return await self._receive()
        now = anyio.current_time()
        if self._deadline is None:
            self._deadline = now + self._timeout
        try:
            with anyio.fail_after(max(self._deadline - now, 0)):
                message = await self._receive()
        except TimeoutError:
            raise HTTPException(
                408, _TOO_SLOW.format(timeout=self._timeout), headers=_CLOSE
            ) from None
        if message["type"] != "http.request":
            self._complete = True
            return message
        self._received += len(message.get("body", b""))
        if self._received > self._max_bytes:
            raise HTTPException(413, _TOO_LARGE.format(limit=self._max_bytes), headers=_CLOSE)
        self._complete = not message.get("more_body", False)
        return message


def _content_length(scope: Scope) -> int | None:
    # The server has already refused a malformed length; anything odd here is ignored.
    value = Headers(scope=scope).get("content-length")
    if value is None or not value.isdigit():
        return None
    return int(value)
