"""The JSON audit log: one object a line, with the time and the core fields, and never
a credential."""

from __future__ import annotations

import json

import pytest

from tokenstile.core.audit import NO_AUDIT, AuditLogs, JsonAuditLog


def test_each_event_is_one_json_object_with_its_time_and_every_core_field() -> None:
    lines: list[str] = []
    log = JsonAuditLog(lines.append, clock=lambda: 1_700_000_000.25)
    log.record("logout_all", outcome="ok", reason="logout_all", user_id="u-1", count=2)
    (line,) = lines
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.250Z",
        "event": "logout_all",
        "outcome": "ok",
        "reason": "logout_all",
        "user_id": "u-1",
        "sid": None,
        "ip": None,
        "user_agent": None,
        "count": 2,
    }
    assert list(json.loads(line))[:8] == [
        "time",
        "event",
        "outcome",
        "reason",
        "user_id",
        "sid",
        "ip",
        "user_agent",
    ]


@pytest.mark.parametrize("field", ["refresh_token", "password", "password_hash", "client_secret"])
def test_a_field_named_like_a_credential_is_refused(field: str) -> None:
    lines: list[str] = []
    log = JsonAuditLog(lines.append, clock=lambda: 0.0)
    with pytest.raises(ValueError, match=field):
        log.record("login.failed", **{field: "value"})
    assert lines == []


def test_a_hostile_user_agent_stays_one_short_line() -> None:
    lines: list[str] = []
    log = JsonAuditLog(lines.append, clock=lambda: 0.0)
    log.record("login.failed", user_agent='x\n{"event": "forged"}\r' + "A" * 10_000)
    (line,) = lines
    assert "\n" not in line
    assert "\r" not in line
    assert json.loads(line)["event"] == "login.failed"
    assert len(json.loads(line)["user_agent"]) == 512


def test_several_logs_each_get_every_event() -> None:
    first: list[str] = []
    second: list[str] = []
    logs = AuditLogs(
        JsonAuditLog(first.append, clock=lambda: 0.0),
        JsonAuditLog(second.append, clock=lambda: 0.0),
        NO_AUDIT,
    )
    logs.record("session.revoked", user_id="u-1")
    assert first == second
    assert json.loads(first[0])["user_id"] == "u-1"
