"""``GET /metrics``: Prometheus counters of issued tokens, error answers and audit events."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.accounts import PASSWORD, bearer, refresh, register, signed_in
from tests.servers import LiveServer


@pytest.fixture(params=["sqlite"])
def store_mode(request: pytest.FixtureRequest) -> str:
    """Counting happens above the stores; one store mode proves it."""
    return str(request.param)


def sample(server: LiveServer, line_start: str) -> float:
    """The value of the first exposition line starting with ``line_start``, or 0."""
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_issued_tokens_errors_and_reuse(serve: Callable[..., LiveServer]) -> None:
    server = serve(refresh_grace=0)
    page = server.client.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")

    pair = signed_in(server.client)
    child = refresh(server.client, pair["refresh_token"]).json()
    refresh(server.client, pair["refresh_token"])  # reuse: the session ends
    server.client.get("/users/me", headers=bearer(child["access_token"]))
    server.client.post(
        "/auth/token",
        data={"grant_type": "password", "username": register(server.client), "password": PASSWORD},
    )

    assert sample(server, 'tokenstile_tokens_issued_total{grant="login"}') == 1
    assert sample(server, 'tokenstile_tokens_issued_total{grant="refresh"}') == 1
    assert sample(server, 'tokenstile_tokens_issued_total{grant="password"}') == 1
    assert sample(server, 'tokenstile_errors_total{code="token_reused"}') == 1
    assert sample(server, 'tokenstile_errors_total{code="token_revoked"}') == 1
    assert sample(server, 'tokenstile_audit_events_total{event="refresh_token_reused"}') == 1
    assert "process_cpu_seconds_total" in server.client.get("/metrics").text
    assert pair["refresh_token"] not in server.client.get("/metrics").text
