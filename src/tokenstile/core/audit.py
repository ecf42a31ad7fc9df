"""Security events (reuse detected, sessions ended), written without any token."""

from __future__ import annotations

import logging
from typing import Protocol

AuditValue = str | int | float | None


class AuditLog(Protocol):
    def record(self, event: str, **fields: AuditValue) -> None: ...


class LoggingAuditLog:
    """Writes each event as one line on the ``tokenstile.audit`` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("tokenstile.audit")

    def record(self, event: str, **fields: AuditValue) -> None:
        details = " ".join(f"{name}={value}" for name, value in sorted(fields.items()))
        self._logger.warning("%s %s", event, details, extra={"audit_event": event, **fields})


class AuditLogs:
    """Several audit logs as one: each event is recorded in every one of them."""

    def __init__(self, *logs: AuditLog) -> None:
        self._logs = logs

    def record(self, event: str, **fields: AuditValue) -> None:
        for log in self._logs:
            log.record(event, **fields)
