"""How a token pair travels: the JSON-body transport, and the protocol that it and the
cookie transport (``api/cookies.py``) share.

A request's transport is chosen once, by :func:`transport_for_login` or
:func:`transport_for_token`; the routes then read the presented refresh token, answer with
a pair, or refuse the token through it, and never ask which transport it is.
"""

from __future__ import annotations

from typing import Protocol

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from tokenstile.api.cookies import REFRESH_COOKIE, CookieTransport, wants_cookie
from tokenstile.api.errors import error_answer
from tokenstile.api.schemas import TokenResponse
from tokenstile.core.sessions import TokenPair
from tokenstile.errors import AuthenticationError


class Transport(Protocol):
    """Where a request's refresh token comes from and where its new pair goes."""

    def refresh_token(self, request: Request, body_token: str | None) -> str | None:
        """The refresh token the request presents (``body_token`` is the one in its JSON
        body), after this transport's checks; ``None`` when it presents none. Raises
        ``CsrfFailed`` when a check fails."""
        ...

    def issue(
        self, request: Request, response: Response, pair: TokenPair, *, login: bool
    ) -> TokenResponse:
        """The body answering with ``pair``; anything else it needs goes on ``response``.
        ``login`` is true for the first pair of a session."""
        ...

    def refused(self, request: Request, error: AuthenticationError, token: str) -> JSONResponse:
        """The answer when the server refused the presented ``token`` for good."""
        ...


class BodyTransport:
    """Both tokens in the JSON bodies, for apps and services (the default)."""

    def refresh_token(self, request: Request, body_token: str | None) -> str | None:
        return body_token

    def issue(
        self, request: Request, response: Response, pair: TokenPair, *, login: bool
    ) -> TokenResponse:
        return TokenResponse.of(pair)

    def refused(self, request: Request, error: AuthenticationError, token: str) -> JSONResponse:
        return error_answer(request, error)


BODY = BodyTransport()


def transport_for_login(request: Request, cookies: CookieTransport) -> Transport:
    """The cookie transport when the request asks for it (``X-Token-Transport: cookie``);
    the body transport otherwise."""
    return cookies if wants_cookie(request) else BODY


def transport_for_token(
    request: Request, cookies: CookieTransport, body_token: str | None
) -> Transport:
    """For a request presenting a refresh token (``body_token`` is the one in its JSON
    body): the cookie transport when it asks for it or presents its token only as the
    cookie; the body transport otherwise."""
    if body_token is None and REFRESH_COOKIE in request.cookies:
        return cookies
    return transport_for_login(request, cookies)
