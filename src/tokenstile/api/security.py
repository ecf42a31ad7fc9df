"""Bearer authentication as FastAPI dependencies (callable instances, FastAPI style)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import Request
from fastapi.security import OAuth2PasswordBearer

from tokenstile.core.codec import AccessClaims
from tokenstile.core.sessions import SessionService
from tokenstile.errors import InvalidToken, MissingToken, StoreUnavailable


def client_ip(request: Request) -> str | None:
    """The client's address as the server reports it: the TCP peer, or the address a
    trusted proxy forwarded. ``tokenstile serve`` trusts ``X-Forwarded-For`` only from
    ``TRUSTED_PROXIES``; in an app of your own, your server's proxy settings decide."""
    return request.client.host if request.client else None


async def refuse_if_abandoned(request: Request) -> None:
    """Raise ``StoreUnavailable`` (nothing changed) when the client has already closed
    the connection, before a token is spent on it.

    A refresh that a stalled worker runs after its client gave up must not run: the
    client has retried the token elsewhere inside the grace window and rotated on, so the
    token is a grandparent by now and spending it would end the session as reuse. One
    loop turn first lets the server note a disconnect that arrived with the request.
    """
    await asyncio.sleep(0)
    if await request.is_disconnected():
        raise StoreUnavailable(
            "The client closed the connection before the request ran; nothing changed."
        )


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, ``None`` if there is none."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidToken("The Authorization header is not a bearer token.")
    return token


class CurrentUser(OAuth2PasswordBearer):
    """Dependency returning the verified :class:`AccessClaims` of the request.

    Verifies signature and claims in process, then asks the store whether the
    session is still live (one round trip). Raises ``MissingToken`` without a token.
    As an OAuth 2.0 password-flow scheme it also tells the OpenAPI document (and so
    Swagger UI's Authorize button) where to get tokens.
    """

    def __init__(
        self, sessions: Callable[[], SessionService], *, token_url: str = "/auth/token"
    ) -> None:
        super().__init__(
            tokenUrl=token_url,
            refreshUrl=token_url,
            scheme_name="tokenstile",
            description=(
                "Sign in with a tokenstile username and password. These docs are a public "
                "client: the `client_id` is filled in, and there is no client secret."
            ),
        )
        self._sessions = sessions

    async def __call__(self, request: Request) -> AccessClaims:  # type: ignore[override]
        token = bearer_token(request)
        if token is None:
            raise MissingToken()
        return await self._sessions().authenticate(token)


class OptionalUser(CurrentUser):
    """Like :class:`CurrentUser`, but ``None`` for a request without any token."""

    async def __call__(self, request: Request) -> AccessClaims | None:  # type: ignore[override]
        if request.headers.get("authorization") is None:
            return None
        return await super().__call__(request)
