"""The HTTP routes: parse, call a service, serialize — nothing more."""

# No `from __future__ import annotations` here: FastAPI must resolve the route
# annotations, which name dependencies local to the router factories.

from collections.abc import Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Depends, Request, Response, status

from tokenstile.api.cookies import REFRESH_COOKIE, CookieTransport, wants_cookie
from tokenstile.api.errors import NO_STORE
from tokenstile.api.metrics import Metrics
from tokenstile.api.schemas import (
    Credentials,
    Health,
    LoginRequest,
    PasswordChange,
    RefreshRequest,
    SessionOut,
    TokenResponse,
    UserOut,
)
from tokenstile.api.security import CurrentUser, OptionalUser, client_ip
from tokenstile.core.codec import AccessClaims
from tokenstile.core.sessions import TokenPair
from tokenstile.core.signin import sign_in
from tokenstile.errors import AuthenticationError, InvalidRequest
from tokenstile.runtime import Runtime


def _no_store(response: Response) -> None:
    response.headers.update(NO_STORE)


def auth_router(
    runtime: Callable[[], Runtime],
    cookies: CookieTransport,
    metrics: Metrics,
    *,
    current_user: CurrentUser,
    optional_user: OptionalUser,
) -> APIRouter:
    """The ``/auth/*`` routes and ``/users/me``, bound to a runtime provider.

    The routes use the given dependencies, so an app's ``dependency_overrides`` of
    them apply here as well as on its own routes.
    """
    router = APIRouter()
    User = Annotated[AccessClaims, Depends(current_user)]

    @router.post("/auth/register", status_code=status.HTTP_201_CREATED, tags=["auth"])
    async def register(body: Credentials, request: Request) -> UserOut:
        user = await runtime().accounts.register(
            body.username, body.password, client_ip=client_ip(request)
        )
        return UserOut(id=user.id, username=user.username)

    def answer(
        request: Request, response: Response, pair: TokenPair, *, grant: str, by_cookie: bool
    ) -> TokenResponse:
        metrics.tokens_issued.labels(grant).inc()
        _no_store(response)
        if by_cookie:
            cookies.issue(request, response, pair, new_csrf=grant == "login")
            return TokenResponse.of(pair, include_refresh_token=False)
        return TokenResponse.of(pair)

    @router.post("/auth/login", tags=["auth"], response_model_exclude_none=True)
    async def login(body: LoginRequest, request: Request, response: Response) -> TokenResponse:
        rt = runtime()
        pair = await sign_in(
            rt.accounts,
            rt.sessions,
            body.username,
            body.password,
            client_ip=client_ip(request),
            user_agent=request.headers.get("user-agent"),
            remember_me=body.remember_me,
        )
        return answer(request, response, pair, grant="login", by_cookie=wants_cookie(request))

    @router.post("/auth/refresh", tags=["auth"], response_model_exclude_none=True)
    async def refresh(
        request: Request,
        response: Response,
        body: Annotated[RefreshRequest | None, Body()] = None,
    ) -> TokenResponse:
        token = body.refresh_token if body else None
        by_cookie = token is None and REFRESH_COOKIE in request.cookies
        if by_cookie:
            token = cookies.refresh_token(request)
        if not token:
            raise InvalidRequest("refresh_token is required.")
        try:
            pair = await runtime().sessions.refresh(token, client_ip=client_ip(request))
        except AuthenticationError as exc:
            # The server rejected this token for good: drop the dead cookie. Any
            # other failure (503) leaves it, so the client can retry.
            if by_cookie:
                exc.headers.extend(cookies.clearing_headers())
            raise
        by_cookie = by_cookie or wants_cookie(request)
        return answer(request, response, pair, grant="refresh", by_cookie=by_cookie)

    @router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
    async def logout(
        request: Request,
        response: Response,
        user: Annotated[AccessClaims | None, Depends(optional_user)],
        body: Annotated[RefreshRequest | None, Body()] = None,
    ) -> None:
        refresh_token = body.refresh_token if body else None
        if refresh_token is None:
            refresh_token = cookies.refresh_token(request)
        await runtime().sessions.logout(access=user, refresh_token=refresh_token)
        cookies.clear(response)

    @router.post("/auth/logout-all", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
    async def logout_all(user: User) -> None:
        await runtime().sessions.end_all(user.sub)

    @router.get("/auth/sessions", tags=["sessions"])
    async def list_sessions(user: User, response: Response) -> list[SessionOut]:
        sessions = await runtime().sessions.list_sessions(user.sub)
        _no_store(response)
        return [SessionOut.of(session, current_sid=user.sid) for session in sessions]

    @router.delete(
        "/auth/sessions/{sid}", status_code=status.HTTP_204_NO_CONTENT, tags=["sessions"]
    )
    async def end_session(sid: str, user: User) -> None:
        await runtime().sessions.end_own(user.sub, sid)

    @router.post("/auth/password", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
    async def change_password(body: PasswordChange, user: User) -> None:
        rt = runtime()
        # The change bumps the credential version before the sessions end (invariant 11).
        await rt.accounts.change_password(user.sub, body.current_password, body.new_password)
        await rt.sessions.end_all(user.sub, reason="password_changed", keep_sid=user.sid)

    @router.get("/users/me", tags=["users"], response_model=UserOut)
    async def me(user: User) -> Response:
        # The example protected route, on every request: encoded directly, since
        # validating our own two strings through the response model costs more than
        # the rest of the route.
        body = orjson.dumps({"id": user.sub, "username": user.username})
        return Response(body, media_type="application/json")

    return router


def health_router(runtime: Callable[[], Runtime]) -> APIRouter:
    """``/healthz`` (the process runs) and ``/readyz`` (the stores answer)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get("/readyz")
    async def readyz() -> Health:
        await runtime().stores.ping()
        return Health(status="ready")

    return router
