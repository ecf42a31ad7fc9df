"""TokenAuth: an ``httpx.Auth`` that keeps a tokenstile session signed in (SPEC §5, §7)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from tokenstile.client._exceptions import LoginFailed, SessionEnded, TokenAuthError
from tokenstile.core.codec import unverified_claims
from tokenstile.errors import InvalidToken

OnTokens = Callable[[Mapping[str, Any]], object]


@dataclass(frozen=True)
class _Pair:
    """One token pair. Replaced whole, never changed, so a reader needs no lock."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float | None  # on time.monotonic(); None while the lifetime is unknown


@dataclass(frozen=True)
class _Refresh:
    """Yielded by the flow in place of a request: refresh ``stale``, unless already done."""

    stale: _Pair


class TokenAuth(httpx.Auth):
    """Sends ``Authorization: Bearer <access token>`` and keeps the token pair fresh.

    Works with ``httpx.Client`` and ``httpx.AsyncClient``::

        auth = TokenAuth.login("https://auth.example", "alice", password, on_tokens=save)
        with httpx.Client(base_url="https://api.example", auth=auth) as client:
            client.get("/users/me")

    Refreshes through ``POST {base_url}/auth/refresh`` when fewer than ``leeway``
    seconds of the access token remain, counted on the monotonic clock from when the
    pair arrived (``expires_in``; when that is None, ``exp - iat`` read from the token),
    and once on a 401, after which the request is retried once: a request refreshes
    at most once. However many requests need a refresh at the same time, one is sent;
    the others wait for it and use its result (single-flight per sync or async side).

    ``on_tokens(pair)`` receives every new pair (a mapping with at least
    ``access_token``, ``refresh_token`` and ``expires_in``) so the app can persist it.
    It is called from the thread or task whose request refreshed, while the other
    requests wait: keep it quick, and do not send requests through this auth from it.

    Raises, from the request: ``SessionEnded`` once the server refuses the refresh
    token (reuse, revocation, expiry) — then every later request raises it at once,
    without calling the server. A refresh that fails otherwise (a 5xx such as 503
    ``store_unavailable``, 429, a network error) raises httpx's own error and keeps
    the refresh token, so a later request tries again.
    """

    def __init__(
        self,
        base_url: str,
        *,
        access_token: str,
        refresh_token: str,
        expires_in: float | None = None,
        on_tokens: OnTokens | None = None,
        leeway: float = 30.0,
    ) -> None:
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        self._refresh_url = f"{base_url.rstrip('/')}/auth/refresh"
        self._on_tokens = on_tokens
        self._leeway = leeway
        lifetime = _lifetime(access_token) if expires_in is None else expires_in
        deadline = None if lifetime is None else time.monotonic() + lifetime
        self._pair = _Pair(access_token, refresh_token, deadline)
        self._ended: str | None = None
        self._sync_lock = threading.Lock()
        self._async_lock = anyio.Lock()

    @classmethod
    def login(
        cls,
        base_url: str,
        username: str,
        password: str,
        *,
        remember_me: bool = False,
        on_tokens: OnTokens | None = None,
        leeway: float = 30.0,
    ) -> TokenAuth:
        """Log in with a password (``POST /auth/login``) and return a ready TokenAuth.

        ``on_tokens`` receives the login pair too. Raises ``LoginFailed`` when the
        server refuses (``invalid_credentials``, ``rate_limited``, …) and httpx's
        errors when it cannot answer.
        """
        credentials = {"username": username, "password": password, "remember_me": remember_me}
        with httpx.Client() as client:
            response = client.post(_login_url(base_url), json=credentials)
        return cls._logged_in(base_url, response, on_tokens=on_tokens, leeway=leeway)

    @classmethod
    async def alogin(
        cls,
        base_url: str,
        username: str,
        password: str,
        *,
        remember_me: bool = False,
        on_tokens: OnTokens | None = None,
        leeway: float = 30.0,
    ) -> TokenAuth:
        """``login`` for async code: same arguments, result and errors."""
        credentials = {"username": username, "password": password, "remember_me": remember_me}
        async with httpx.AsyncClient() as client:
            response = await client.post(_login_url(base_url), json=credentials)
        return cls._logged_in(base_url, response, on_tokens=on_tokens, leeway=leeway)

    @classmethod
    def _logged_in(
        cls, base_url: str, response: httpx.Response, *, on_tokens: OnTokens | None, leeway: float
    ) -> TokenAuth:
        code = _error_code(response)
        if response.is_client_error and code is not None:
            raise LoginFailed(code, response.status_code)
        response.raise_for_status()
        pair = _token_pair(response)
        auth = cls(
            base_url,
            access_token=pair["access_token"],
            refresh_token=pair["refresh_token"],
            expires_in=pair["expires_in"],
            on_tokens=on_tokens,
            leeway=leeway,
        )
        if on_tokens is not None:
            on_tokens(pair)
        return auth

    def _flow(self, request: httpx.Request) -> Generator[httpx.Request | _Refresh, httpx.Response]:
        """The policy both drivers share: refresh early, or once on a 401 and retry.

        httpx's own drivers over one ``auth_flow`` would not do: the single-flight lock
        is held across the yield of the refresh request, and that lock differs between
        threads and tasks (a ``threading.Lock`` would stall the event loop); and only the
        refresh answer may be read before the flow goes on, whereas
        ``requires_response_body`` reads the caller's responses too, streamed ones
        included. So the flow yields a ``_Refresh`` step where the lock goes, and each
        driver adds only its lock and its way of reading a body.
        """
        pair = self._live_pair()
        if self._expiring(pair):
            yield _Refresh(pair)
            yield self._authorized(request, self._live_pair())
            return
        response = yield self._authorized(request, pair)
        if response.status_code == 401:
            yield _Refresh(pair)
            yield self._authorized(request, self._live_pair())

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        """Drive the flow for ``httpx.Client``, one refresh at a time across threads."""
        request.read()  # so that a retry can send the body again
        flow = self._flow(request)
        step = next(flow, None)
        while step is not None:
            if isinstance(step, _Refresh):
                with self._sync_lock:
                    if self._still_current(step.stale):
                        answer = yield self._refresh_request(step.stale)
                        answer.read()
                        self._accept(answer)
                step = next(flow, None)
            else:
                step = _resume(flow, (yield step))

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Drive the flow for ``httpx.AsyncClient``, one refresh at a time across tasks."""
        await request.aread()  # so that a retry can send the body again
        flow = self._flow(request)
        step = next(flow, None)
        while step is not None:
            if isinstance(step, _Refresh):
                async with self._async_lock:
                    if self._still_current(step.stale):
                        answer = yield self._refresh_request(step.stale)
                        await answer.aread()
                        self._accept(answer)
                step = next(flow, None)
            else:
                step = _resume(flow, (yield step))

    def _live_pair(self) -> _Pair:
        if self._ended is not None:
            raise SessionEnded(self._ended)
        return self._pair

    def _expiring(self, pair: _Pair) -> bool:
        return pair.expires_at is not None and pair.expires_at - time.monotonic() < self._leeway

    def _still_current(self, stale: _Pair) -> bool:
        """False when another request refreshed (or ended the session) while we waited."""
        return self._ended is None and self._pair is stale

    @staticmethod
    def _authorized(request: httpx.Request, pair: _Pair) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {pair.access_token}"
        return request

    def _refresh_request(self, pair: _Pair) -> httpx.Request:
        return httpx.Request("POST", self._refresh_url, json={"refresh_token": pair.refresh_token})

    def _accept(self, answer: httpx.Response) -> None:
        """Take the refresh answer: a new pair, or the end of the session, or an error."""
        if answer.status_code == 401:
            self._ended = _error_code(answer) or "invalid_token"
            raise SessionEnded(self._ended)
        answer.raise_for_status()  # transient (5xx, 429): the refresh token stays for a retry
        pair = _token_pair(answer)
        received = time.monotonic()
        self._pair = _Pair(
            pair["access_token"], pair["refresh_token"], received + pair["expires_in"]
        )
        if self._on_tokens is not None:
            self._on_tokens(pair)


def _resume(
    flow: Generator[httpx.Request | _Refresh, httpx.Response], response: httpx.Response
) -> httpx.Request | _Refresh | None:
    """The flow's next step once it has ``response``; ``None`` when it is done."""
    try:
        return flow.send(response)
    except StopIteration:
        return None


def _login_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/auth/login"


def _error_code(response: httpx.Response) -> str | None:
    """The ``error`` code of a tokenstile error body, if the response has one."""
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _token_pair(response: httpx.Response) -> dict[str, Any]:
    """The token pair of a successful login or refresh answer."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not (
        isinstance(body, dict)
        and isinstance(body.get("access_token"), str)
        and isinstance(body.get("refresh_token"), str)
        and isinstance(body.get("expires_in"), int | float)
    ):
        raise TokenAuthError("invalid_response", "the server's answer holds no token pair")
    return body


def _lifetime(access_token: str) -> float | None:
    """``exp - iat`` of a JWT, read without verifying it: only the length is used, no clock."""
    try:
        claims = unverified_claims(access_token)
        return float(claims["exp"]) - float(claims["iat"])
    except (InvalidToken, KeyError, TypeError, ValueError):
        return None
