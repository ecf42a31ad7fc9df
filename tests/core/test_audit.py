"""The JSON audit log: one object a line, with the time, and never a credential."""

from __future__ import annotations

import json

import pytest

from tokenstile.core.audit import AuditLogs, JsonAuditLog


def test_each_event_is_one_json_object_with_its_time() -> None:
    lines: list[str] = []
    log = JsonAuditLog(lines.append, clock=lambda: 1_700_000_000.25)
    log.record("session_ended", sid="s-1", reason="logout", count=2)
    (line,) = lines
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.250Z",
        "event": "session_ended",
        "sid": "s-1",
        "reason": "logout",
        "count": 2,
    }


@pytest.mark.parametrize("field", ["refresh_token", "password", "password_hash", "client_secret"])
def test_a_field_named_like_a_credential_is_refused(field: str) -> None:
    lines: list[str] = []
    log = JsonAuditLog(lines.append, clock=lambda: 0.0)
    with pytest.raises(ValueError, match=field):
        log.record("login", **{field: "value"})
    assert lines == []


def test_several_logs_each_get_every_event() -> None:
    first: list[str] = []
    second: list[str] = []
    logs = AuditLogs(
        JsonAuditLog(first.append, clock=lambda: 0.0),
        JsonAuditLog(second.append, clock=lambda: 0.0),
    )
    logs.record("sessions_ended", user_id="u-1")
    assert first == second
    assert json.loads(first[0])["user_id"] == "u-1"
