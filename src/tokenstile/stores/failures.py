"""Store failures named for operators: which store, and what went wrong.

The drivers' own translators (``sql_connections.store_errors``, ``redis._store_errors``)
decide the reason; this module turns it into the error and logs it. An outage fails every
request, so the warning is written once per cause per :data:`REPEAT_AFTER` seconds, not
once per request.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable

from tokenstile.errors import StoreMisconfigured, StoreUnavailable

__all__ = ["REPEAT_AFTER", "network_reason", "store_failure"]

REPEAT_AFTER = 30.0
"""Seconds during which the same store failure is not logged again."""

logger = logging.getLogger("tokenstile.stores")

_NETWORK_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ENOENT: "no such socket",
    errno.EACCES: "permission denied",
}


class _OncePer:
    """Says whether a key is due to be logged: the first time, then once per interval."""

    _LIMIT = 256  # distinct causes remembered; beyond it the oldest are forgotten

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        self._last.pop(key, None)
        self._last[key] = now
        while len(self._last) > self._LIMIT:
            del self._last[next(iter(self._last))]
        return True


_logged = _OncePer(REPEAT_AFTER)


def store_failure(store: str, reason: str, *, misconfigured: bool = False) -> StoreUnavailable:
    """The error for ``store`` (its description, never with a password) failing for
    ``reason``; logs it unless the same failure was logged in the last ``REPEAT_AFTER`` s.

    ``misconfigured`` failures (:class:`StoreMisconfigured`) need an operator, not a retry.
    """
    cause = f"{store}: {reason}"
    if _logged.due(cause):
        logger.warning("store %s: %s", "misconfigured" if misconfigured else "unavailable", cause)
    if misconfigured:
        return StoreMisconfigured(cause=cause)
    return StoreUnavailable(cause=cause)


def network_reason(exc: BaseException) -> str | None:
    """A short reason (``connection refused``, ``host not found``, ``timed out``) for the
    first socket error in ``exc``'s chain of causes, or ``None`` if there is none."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "host not found"
        if isinstance(current, TimeoutError):
            return "timed out"
        if isinstance(current, OSError) and current.errno in _NETWORK_REASONS:
            return _NETWORK_REASONS[current.errno]
        current = current.__cause__ or current.__context__
    return None
