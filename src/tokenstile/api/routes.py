"""The HTTP routes: parse, call a service, serialize — nothing more."""

# No `from __future__ import annotations` here: FastAPI must resolve the route
# annotations, which name dependencies local to the router factories.

from collections.abc import Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Depends, Request, Response, status
from fastapi.responses import JSONResponse

from tokenstile.api.cookies import CookieTransport
from tokenstile.api.errors import (
    BODY_TOO_LARGE,
    BODY_TOO_SLOW,
    NO_STORE,
    UNPARSABLE_BODY,
    error_responses,
)
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
from tokenstile.api.security import CurrentUser, OptionalUser, client_ip, refuse_if_abandoned
from tokenstile.api.transports import Transport, transport_for_login, transport_for_token
from tokenstile.core.codec import AccessClaims
from tokenstile.core.sessions import TokenPair
from tokenstile.core.signin import sign_in
from tokenstile.errors import (
    AuthenticationError,
    CsrfFailed,
    InvalidCredentials,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    NotFound,
    RateLimited,
    RegistrationClosed,
    StoreUnavailable,
    TokenExpired,
    TokenReused,
    TokenRevoked,
    UsernameTaken,
    WeakPassword,
    WrongPassword,
)
from tokenstile.runtime import Runtime

# What every route with a JSON body can answer before it runs (api/limits.py, FastAPI's
# body parsing, api/errors.py's validation handler), and every bearer-protected route.
_JSON_BODY = (UNPARSABLE_BODY, BODY_TOO_SLOW, BODY_TOO_LARGE, InvalidRequest)
_BEARER = (MissingToken, InvalidToken, TokenExpired, TokenRevoked, StoreUnavailable)


def _no_store(response: Response) -> None:
    response.headers.update(NO_STORE)


def _user_agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


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

    @router.post(
        "/auth/register",
        status_code=status.HTTP_201_CREATED,
        tags=["auth"],
        summary="Create an account",
        responses=error_responses(
            *_JSON_BODY,
            RegistrationClosed,
            UsernameTaken,
            WeakPassword,
            RateLimited,
            StoreUnavailable,
        ),
    )
    async def register(body: Credentials, request: Request) -> UserOut:
        """Self-service sign-up. The username is normalised (NFKC, case-folded, trimmed)
        and has 3 to 64 letters, digits and `. _ - @ +`; the password has 8 to 1024
        characters. Does not sign the new user in: call `POST /auth/login` next.
        Answers 403 when `ALLOW_REGISTRATION=false`."""
        user = await runtime().accounts.register(
            body.username,
            body.password,
            client_ip=client_ip(request),
            user_agent=_user_agent(request),
        )
        return UserOut(id=user.id, username=user.username)

    def answer(
        transport: Transport, request: Request, response: Response, pair: TokenPair, grant: str
    ) -> TokenResponse:
        metrics.tokens_issued.labels(grant).inc()
        _no_store(response)
        return transport.issue(request, response, pair, login=grant == "login")

    @router.post(
        "/auth/login",
        tags=["auth"],
        response_model_exclude_none=True,
        summary="Sign in with a username and password",
        responses=error_responses(*_JSON_BODY, InvalidCredentials, RateLimited, StoreUnavailable),
    )
    async def login(body: LoginRequest, request: Request, response: Response) -> TokenResponse:
        """Open a session and return its first token pair. With the header
        `X-Token-Transport: cookie` the refresh token comes only as the HttpOnly
        `tokenstile_refresh` cookie (with a `tokenstile_csrf` cookie), not in the body.
        An unknown user and a wrong password answer the same 401; repeated failures for
        one account answer 429 with `Retry-After`."""
        rt = runtime()
        pair = await sign_in(
            rt.accounts,
            rt.sessions,
            body.username,
            body.password,
            client_ip=client_ip(request),
            user_agent=_user_agent(request),
            remember_me=body.remember_me,
        )
        transport = transport_for_login(request, cookies)
        return answer(transport, request, response, pair, "login")

    @router.post(
        "/auth/refresh",
        tags=["auth"],
        response_model=TokenResponse,
        response_model_exclude_none=True,
        summary="Exchange a refresh token for a new pair",
        responses=error_responses(
            *_JSON_BODY,
            InvalidToken,
            TokenExpired,
            TokenRevoked,
            TokenReused,
            CsrfFailed,
            RateLimited,
            StoreUnavailable,
        ),
    )
    async def refresh(
        request: Request,
        response: Response,
        body: Annotated[RefreshRequest | None, Body()] = None,
    ) -> TokenResponse | JSONResponse:
        """Rotate the refresh token (from the body, or the cookie with the CSRF checks):
        the presented one stops working. Presenting it again within `REFRESH_GRACE`
        seconds returns the same new pair; later, it ends the whole session
        (`token_reused`). A 503 changes nothing, so the client may retry."""
        body_token = body.refresh_token if body else None
        transport = transport_for_token(request, cookies, body_token)
        token = transport.refresh_token(request, body_token)
        if not token:
            raise InvalidRequest("refresh_token is required.")
        await refuse_if_abandoned(request)
        try:
            pair = await runtime().sessions.refresh(
                token, client_ip=client_ip(request), user_agent=_user_agent(request)
            )
        except AuthenticationError as exc:
            # Refused for good; any other failure (a 503) raises on and changes nothing.
            return transport.refused(request, exc, token)
        return answer(transport, request, response, pair, "refresh")

    @router.post(
        "/auth/logout",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["auth"],
        summary="End this session",
        responses=error_responses(*_JSON_BODY, *_BEARER, CsrfFailed),
    )
    async def logout(
        request: Request,
        response: Response,
        user: Annotated[AccessClaims | None, Depends(optional_user)],
        body: Annotated[RefreshRequest | None, Body()] = None,
    ) -> None:
        """End the session of the bearer access token and of the refresh token (body or
        cookie), and clear the cookies; either token is enough. Every token of the
        session is refused from the next request on."""
        body_token = body.refresh_token if body else None
        transport = transport_for_token(request, cookies, body_token)
        await runtime().sessions.logout(
            access=user,
            refresh_token=transport.refresh_token(request, body_token),
            client_ip=client_ip(request),
            user_agent=_user_agent(request),
        )
        # Whichever transport presented the token, the browser's cookies go (SPEC §2).
        cookies.clear(response)

    @router.post(
        "/auth/logout-all",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["auth"],
        summary="End every session of the user",
        responses=error_responses(*_BEARER),
    )
    async def logout_all(user: User, request: Request) -> None:
        """End every session of the bearer's user, this one included."""
        await runtime().sessions.end_all(
            user.sub, sid=user.sid, client_ip=client_ip(request), user_agent=_user_agent(request)
        )

    @router.get(
        "/auth/sessions",
        tags=["sessions"],
        summary="List the user's live sessions",
        responses=error_responses(*_BEARER),
    )
    async def list_sessions(user: User, response: Response) -> list[SessionOut]:
        """The bearer's user's sessions that have not ended; `current` marks the one
        of this access token. A session's `id` is the `sid` claim of its tokens."""
        sessions = await runtime().sessions.list_sessions(user.sub)
        _no_store(response)
        return [SessionOut.of(session, current_sid=user.sid) for session in sessions]

    @router.delete(
        "/auth/sessions/{sid}",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["sessions"],
        summary="End one of the user's sessions",
        responses=error_responses(*_BEARER, NotFound),
    )
    async def end_session(sid: str, user: User, request: Request) -> None:
        """End the session `sid` of the bearer's user; 404 for a session that does not
        exist, has ended, or belongs to someone else."""
        await runtime().sessions.end_own(
            user.sub, sid, client_ip=client_ip(request), user_agent=_user_agent(request)
        )

    @router.post(
        "/auth/password",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["auth"],
        summary="Change the user's password",
        responses=error_responses(
            *_JSON_BODY, *_BEARER, InvalidCredentials, WrongPassword, WeakPassword, RateLimited
        ),
    )
    async def change_password(body: PasswordChange, user: User, request: Request) -> None:
        """Replace the password after checking the current one (403 when it is wrong,
        so that clients do not mistake it for a refused token); every other session of
        the user ends. A 401 `invalid_credentials` means the account was disabled."""
        rt = runtime()
        # The change bumps the credential version before the sessions end (invariant 11).
        asker = {"client_ip": client_ip(request), "user_agent": _user_agent(request)}
        await rt.accounts.change_password(
            user.sub, body.current_password, body.new_password, sid=user.sid, **asker
        )
        await rt.sessions.end_all(user.sub, reason="password_changed", keep_sid=user.sid, **asker)

    @router.get(
        "/users/me",
        tags=["users"],
        response_model=UserOut,
        summary="Who the bearer is",
        responses=error_responses(*_BEARER),
    )
    async def me(user: User) -> Response:
        """The example protected route: the id and username of the access token's user."""
        # The example protected route, on every request: encoded directly, since
        # validating our own two strings through the response model costs more than
        # the rest of the route.
        body = orjson.dumps({"id": user.sub, "username": user.username})
        return Response(body, media_type="application/json")

    return router


def health_router(runtime: Callable[[], Runtime]) -> APIRouter:
    """``/healthz`` (the process runs) and ``/readyz`` (the stores answer)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness")
    async def healthz() -> Health:
        """200 while the process runs, even with the stores down."""
        return Health(status="ok")

    @router.get("/readyz", summary="Readiness", responses=error_responses(StoreUnavailable))
    async def readyz() -> Health:
        """200 when every store answers and the database schema is the newest; 503
        otherwise (an un-migrated database cannot serve a request either)."""
        await runtime().stores.check()
        return Health(status="ready")

    return router
