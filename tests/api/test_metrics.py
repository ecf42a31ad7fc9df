"""``GET /metrics``: Prometheus metrics of request latency per route, issued tokens, error
answers, store failures and audit events."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.accounts import PASSWORD, bearer, refresh, register, signed_in
from tests.redis_server import PrivateRedis
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
    assert sample(server, 'tokenstile_audit_events_total{event="token.reuse_detected"}') == 1
    assert sample(server, 'tokenstile_audit_events_total{event="login.succeeded"}') == 2
    assert "process_cpu_seconds_total" in server.client.get("/metrics").text
    assert pair["refresh_token"] not in server.client.get("/metrics").text


def test_request_latency_is_a_histogram_per_route_template(server: LiveServer) -> None:
    pair = signed_in(server.client)
    for _ in range(3):
        assert server.client.get("/users/me", headers=bearer(pair["access_token"])).is_success
    sessions = server.client.get("/auth/sessions", headers=bearer(pair["access_token"])).json()
    for sid in (sessions[0]["id"], "no-such-session-a", "no-such-session-b"):
        server.client.delete(f"/auth/sessions/{sid}", headers=bearer(pair["access_token"]))
    for path in ("/no/such/page", "/another/unknown/path"):
        assert server.client.get(path).status_code == 404
    assert server.client.get("/static/tokenstile.js").is_success

    duration = "tokenstile_request_duration_seconds"
    assert sample(server, f'{duration}_count{{route="/users/me"}}') == 3
    assert sample(server, f'{duration}_bucket{{le="+Inf",route="/users/me"}}') == 3
    assert sample(server, f'{duration}_count{{route="/auth/login"}}') == 1
    # The template, never the raw path: one series for every session id.
    assert sample(server, f'{duration}_count{{route="/auth/sessions/{{sid}}"}}') == 3
    assert sample(server, f'{duration}_count{{route="unmatched"}}') == 2
    assert sample(server, f'{duration}_count{{route="/static/{{path}}"}}') == 1
    page = server.client.get("/metrics").text
    assert sessions[0]["id"] not in page
    assert "/no/such/page" not in page
    assert sample(server, f'{duration}_sum{{route="/users/me"}}') > 0


def test_a_store_outage_counts_store_errors_by_store_kind(
    serve: Callable[..., LiveServer], private_redis: PrivateRedis
) -> None:
    server = serve(redis_url=private_redis.url, store_timeout=0.5)
    pair = signed_in(server.client)
    errors = 'tokenstile_store_errors_total{store="redis"}'
    assert sample(server, errors) == 0

    private_redis.stop()
    answers = [
        server.client.get("/users/me", headers=bearer(pair["access_token"])) for _ in range(2)
    ]

    assert [answer.status_code for answer in answers] == [503, 503]
    assert sample(server, errors) == 2
    assert sample(server, 'tokenstile_store_errors_total{store="sqlite"}') == 0
    assert sample(server, 'tokenstile_errors_total{code="store_unavailable"}') == 2
