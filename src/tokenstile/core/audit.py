"""Security events (reuse detected, sessions ended), written without any token."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from tokenstile.core.clock import Clock

AuditValue = str | int | float | None

# Names no event field may have: an audit line must never carry a credential.
_SECRET_WORDS = ("token", "password", "hash", "secret")


class AuditLog(Protocol):
    def record(self, event: str, **fields: AuditValue) -> None: ...


class JsonAuditLog:
    """Writes each event as one JSON object on one line, through ``write``:
    ``{"time": "2025-01-02T03:04:05.678Z", "event": "session_ended", "sid": ..., ...}``.

    Raises ``ValueError`` for a field whose name says it holds a credential (a token,
    password, hash or secret), so that no caller can log one by mistake.
    """

    def __init__(self, write: Callable[[str], None], *, clock: Clock) -> None:
        self._write = write
        self._clock = clock

    def record(self, event: str, **fields: AuditValue) -> None:
        for name in fields:
            if any(word in name.lower() for word in _SECRET_WORDS):
                raise ValueError(f"audit field {name!r} would log a credential")
        moment = datetime.fromtimestamp(self._clock(), UTC)
        line = {"time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        self._write(json.dumps({**line, "event": event, **fields}, separators=(",", ":")))


class AuditLogs:
    """Several audit logs as one: each event is recorded in every one of them."""

    def __init__(self, *logs: AuditLog) -> None:
        self._logs = logs

    def record(self, event: str, **fields: AuditValue) -> None:
        for log in self._logs:
            log.record(event, **fields)
