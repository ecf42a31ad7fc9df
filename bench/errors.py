"""The benchmark's errors."""

from __future__ import annotations

import asyncio


class BenchError(Exception):
    """A failure that stops the benchmark of one server."""


class MalformedResponse(ValueError):
    """The server sent something that is not an HTTP/1.1 response."""


# Errors a single request may raise (transport, malformed HTTP or JSON, a missing field);
# the virtual user counts them and reconnects.
REQUEST_ERRORS = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ValueError,
    KeyError,
)
