"""Small steps most API tests take: register a user, log in, call with a bearer."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

PASSWORD = "correct horse battery"


def new_username() -> str:
    return f"user-{secrets.token_hex(5)}"


def register(client: httpx.Client, username: str | None = None) -> str:
    username = username or new_username()
    response = client.post("/auth/register", json={"username": username, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return username


def login(client: httpx.Client, username: str, **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/auth/login", json={"username": username, "password": PASSWORD, **extra}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def signed_in(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    """Register a fresh user and log in; returns the token response."""
    return login(client, register(client), **extra)


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def refresh(client: httpx.Client, refresh_token: str) -> httpx.Response:
    return client.post("/auth/refresh", json={"refresh_token": refresh_token})
