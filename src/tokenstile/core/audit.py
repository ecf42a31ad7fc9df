"""Security events (logins, refreshes, reuse, logouts, credential changes, limits),
written one JSON object a line, without any token, password or hash.

Every event has the same core fields, ``null`` when they do not apply, so that a log
pipeline can index them without knowing each event: ``time``, ``event``, ``outcome``
(``ok`` or ``refused``), ``reason`` (a short code), ``user_id``, ``sid``, ``ip`` and
``user_agent``. Some events add their own (``count``, ``actor``, ``retry_after``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, Protocol

from tokenstile.core.clock import Clock

AuditValue = str | int | float | None

OK: Final = "ok"
REFUSED: Final = "refused"

CORE_FIELDS = ("outcome", "reason", "user_id", "sid", "ip", "user_agent")
"""The fields every JSON event carries after ``time`` and ``event``, in this order."""

# Names no event field may have: an audit line must never carry a credential.
_SECRET_WORDS = ("token", "password", "hash", "secret")
# A client chooses its User-Agent: cut it, so that one request cannot write a huge line.
_MAX_TEXT = 512


class AuditLog(Protocol):
    def record(self, event: str, **fields: AuditValue) -> None: ...


class NoAuditLog:
    """An audit log that drops every event (for services built without one)."""

    def record(self, event: str, **fields: AuditValue) -> None:
        return None


NO_AUDIT: Final = NoAuditLog()


class JsonAuditLog:
    """Writes each event as one JSON object on one line, through ``write``:
    ``{"time": "2025-01-02T03:04:05.678Z", "event": "logout", "outcome": "ok", ...}``.

    The core fields (:data:`CORE_FIELDS`) are always present; texts are cut to 512
    characters. Raises ``ValueError`` for a field whose name says it holds a credential
    (a token, password, hash or secret), so that no caller can log one by mistake.
    """

    def __init__(self, write: Callable[[str], None], *, clock: Clock) -> None:
        self._write = write
        self._clock = clock

    def record(self, event: str, **fields: AuditValue) -> None:
        for name in fields:
            if any(word in name.lower() for word in _SECRET_WORDS):
                raise ValueError(f"audit field {name!r} would log a credential")
        moment = datetime.fromtimestamp(self._clock(), UTC)
        line: dict[str, AuditValue] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "event": event,
        }
        for name in CORE_FIELDS:
            line[name] = None
        for name, value in fields.items():
            line[name] = value[:_MAX_TEXT] if isinstance(value, str) else value
        self._write(json.dumps(line, separators=(",", ":")))


class AuditLogs:
    """Several audit logs as one: each event is recorded in every one of them."""

    def __init__(self, *logs: AuditLog) -> None:
        self._logs = logs

    def record(self, event: str, **fields: AuditValue) -> None:
        for log in self._logs:
            log.record(event, **fields)
