"""The browser transport: the refresh token in an HttpOnly cookie, guarded against CSRF.

A request opts in with ``X-Token-Transport: cookie`` (SPEC §2). Every request that the
refresh cookie authenticates must echo the readable ``tokenstile_csrf`` cookie in
``X-CSRF-Token`` (double submit) and come from an allowed ``Origin``. ``CookieTransport``
is one of the transports of ``api/transports.py``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from tokenstile.api.errors import error_answer
from tokenstile.api.schemas import TokenResponse
from tokenstile.core.sessions import TokenPair
from tokenstile.errors import AuthenticationError, CsrfFailed

logger = logging.getLogger("tokenstile")

REFRESH_COOKIE = "tokenstile_refresh"
CSRF_COOKIE = "tokenstile_csrf"
CSRF_HEADER = "x-csrf-token"
TRANSPORT_HEADER = "x-token-transport"
REFRESH_COOKIE_PATH = "/auth"


def wants_cookie(request: Request) -> bool:
    """Whether the client asked for the cookie transport."""
    return request.headers.get(TRANSPORT_HEADER, "").strip().lower() == "cookie"


class CookieTransport:
    """The refresh token in the HttpOnly cookie: sets, clears and checks the refresh and
    CSRF cookies."""

    def __init__(self, *, secure: bool, allowed_origins: str | None) -> None:
        self._secure = secure
        self._warned_hosts: set[str] = set()
        self._allowed = (
            frozenset(o.strip().rstrip("/") for o in allowed_origins.split(",") if o.strip())
            if allowed_origins
            else None
        )

    def refresh_token(self, request: Request, body_token: str | None) -> str | None:
        """``body_token`` when there is one, else the refresh cookie's token after the CSRF
        checks; ``None`` without either."""
        # A token in the body is no ambient credential: only the cookie needs the checks.
        if body_token is not None:
            return body_token
        token = request.cookies.get(REFRESH_COOKIE)
        if not token:
            return None
        self.check_csrf(request)
        return token

    def check_csrf(self, request: Request) -> None:
        """Raise ``CsrfFailed`` unless the double-submit token and the Origin match."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        header = request.headers.get(CSRF_HEADER, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), header.encode()):
            raise CsrfFailed("The X-CSRF-Token header does not match the CSRF cookie.")
        origin = request.headers.get("origin")
        if origin is None or origin.rstrip("/") not in self._allowed_origins(request):
            raise CsrfFailed("The request's Origin is not allowed.")

    def issue(
        self, request: Request, response: Response, pair: TokenPair, *, login: bool
    ) -> TokenResponse:
        """Put the refresh token and a CSRF token in cookies on ``response``; the body
        carries the access token only.

        A refresh keeps the browser's present CSRF token; a login always gets a new one:
        a value planted before it (a cookie set from a sibling subdomain) must not
        survive into the session.
        """
        self._warn_if_dropped(request)
        # Remember-me sessions outlive the browser; others end with it.
        max_age = pair.refresh_expires_in if pair.session.remember_me else None
        response.set_cookie(
            REFRESH_COOKIE,
            pair.refresh_token,
            max_age=max_age,
            path=REFRESH_COOKIE_PATH,
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )
        csrf = (None if login else request.cookies.get(CSRF_COOKIE)) or secrets.token_urlsafe(32)
        response.set_cookie(
            CSRF_COOKIE,
            csrf,
            max_age=max_age,
            path="/",
            secure=self._secure,
            httponly=False,
            samesite="strict",
        )
        return TokenResponse.of(pair, include_refresh_token=False)

    def refused(self, request: Request, error: AuthenticationError, token: str) -> JSONResponse:
        """The error answer, clearing the cookies when the refused token is the cookie's:
        a dead cookie would only be refused again."""
        response = error_answer(request, error)
        if request.cookies.get(REFRESH_COOKIE) == token:
            self.clear(response)
        return response

    def clear(self, response: Response) -> None:
        """Delete both cookies (logout, a refused refresh cookie)."""
        response.delete_cookie(
            REFRESH_COOKIE,
            path=REFRESH_COOKIE_PATH,
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(CSRF_COOKIE, path="/", secure=self._secure, samesite="strict")

    def _allowed_origins(self, request: Request) -> frozenset[str]:
        if self._allowed is not None:
            return self._allowed
        host = request.headers.get("host", "")
        return frozenset({f"{request.url.scheme}://{host}"})

    def _warn_if_dropped(self, request: Request) -> None:
        """Log, once per host, that browsers will drop these cookies: ``Secure`` cookies
        sent over plain http are refused everywhere but on loopback, so the user would
        be signed out at the next reload with no word anywhere."""
        host = request.url.hostname or ""
        if not self._secure or request.url.scheme != "http" or _is_loopback(host):
            return
        if host in self._warned_hosts or len(self._warned_hosts) >= 64:
            return
        self._warned_hosts.add(host)
        logger.warning(
            "cookie login over plain http to %s: browsers drop Secure cookies there, so "
            "the session will not survive a reload; serve https (behind a TLS proxy, with "
            "TRUSTED_PROXIES) or, for local development only, set COOKIE_SECURE=false",
            host,
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
