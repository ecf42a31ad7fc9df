"""`TRUSTED_PROXIES`: who the client is, as real `tokenstile serve` processes see it.

Every test talks to the service from 127.0.0.1 — exactly where a same-host reverse proxy
sits, and where uvicorn's own default trusts `X-Forwarded-For`. A proxy that passes the
client's header through would then let the client choose its recorded address and its
rate-limit bucket.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.accounts import PASSWORD, bearer, new_username
from tests.api.conftest import FAST_HASHING
from tests.servers import ServiceProcess

FORGED = "203.0.113.9"

StartService = Callable[..., ServiceProcess]


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[StartService]:
    services: list[ServiceProcess] = []

    def start(**settings: str) -> ServiceProcess:
        service = ServiceProcess(
            {
                "data_dir": str(tmp_path / "data"),
                "secret_key": secrets.token_urlsafe(32),
                "rate_limit_enabled": "false",
                **FAST_HASHING,
                **settings,
            },
            cwd=tmp_path,
        ).start()
        services.append(service)
        return service

    yield start
    for service in services:
        service.stop()


def session_ip(service: ServiceProcess, forwarded_for: str) -> str:
    """The IP recorded for a login sent with ``X-Forwarded-For: forwarded_for``."""
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        username = new_username()
        registered = client.post(
            "/auth/register", json={"username": username, "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        login = client.post(
            "/auth/login",
            json={"username": username, "password": PASSWORD},
            headers={"X-Forwarded-For": forwarded_for},
        )
        assert login.status_code == 200, login.text
        sessions = client.get("/auth/sessions", headers=bearer(login.json()["access_token"]))
        assert sessions.status_code == 200, sessions.text
        [session] = sessions.json()
        return str(session["ip"])


def registrations(service: ServiceProcess, count: int) -> list[int]:
    """Statuses of ``count`` registrations, each claiming another forwarded address."""
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        return [
            client.post(
                "/auth/register",
                json={"username": new_username(), "password": PASSWORD},
                headers={"X-Forwarded-For": f"203.0.113.{n + 1}"},
            ).status_code
            for n in range(count)
        ]


def test_forwarded_for_from_loopback_is_ignored_by_default(
    start_service: StartService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn's own variable must not bring trust back behind tokenstile's back.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    service = start_service()

    assert session_ip(service, FORGED) == "127.0.0.1"


def test_the_register_limit_is_not_dodged_by_a_forwarded_for_header(
    start_service: StartService,
) -> None:
    service = start_service(rate_limit_enabled="true", register_rate_limit="3/minute")

    assert registrations(service, 4) == [201, 201, 201, 429]


def test_forwarded_for_is_believed_from_a_trusted_proxy(start_service: StartService) -> None:
    service = start_service(
        trusted_proxies="127.0.0.1",
        rate_limit_enabled="true",
        register_rate_limit="3/minute",
    )

    assert session_ip(service, FORGED) == FORGED
    # Each forwarded client has a limit of its own.
    assert registrations(service, 4) == [201, 201, 201, 201]


def test_trusted_proxies_accepts_networks(start_service: StartService) -> None:
    # 127.0.0.1/8 has host bits set: uvicorn alone would silently trust nobody with it.
    service = start_service(trusted_proxies="10.0.0.0/8, 127.0.0.1/8")

    assert session_ip(service, f"{FORGED}, 10.1.2.3") == FORGED


def test_max_connections_answers_503_beyond_the_limit(start_service: StartService) -> None:
    service = start_service(max_connections="2")
    with (
        httpx.Client(base_url=service.base_url, timeout=10) as first,
        httpx.Client(base_url=service.base_url, timeout=10) as second,
        httpx.Client(base_url=service.base_url, timeout=10) as third,
    ):
        # Keep-alive holds each client's connection open.
        assert first.get("/healthz").status_code == 200
        assert second.get("/healthz").status_code == 200
        assert third.get("/healthz").status_code == 503  # and closes that connection
        second.close()
        # The server notices the closed connection a moment later.
        deadline = time.monotonic() + 5
        while third.get("/healthz").status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert third.get("/healthz").status_code == 200
