"""FastAPI integration: `Tokenstile` for an existing app, `create_app` for the service."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from tokenstile import __version__
from tokenstile.api.cookies import CookieTransport
from tokenstile.api.docs import install_docs
from tokenstile.api.errors import install_error_handlers
from tokenstile.api.limits import BodyLimit
from tokenstile.api.metrics import Metrics, RequestTimer
from tokenstile.api.oauth import oauth_router
from tokenstile.api.routes import auth_router, health_router
from tokenstile.api.security import CurrentUser, OptionalUser
from tokenstile.api.web import install_web
from tokenstile.errors import TokenstileError
from tokenstile.runtime import Runtime, open_runtime
from tokenstile.settings import Settings

logger = logging.getLogger("tokenstile")


class Tokenstile:
    """tokenstile inside a FastAPI app.

    ``router`` holds the auth routes, ``current_user`` is the dependency protecting
    your own routes, and ``lifespan`` opens and closes the stores::

        auth = Tokenstile(Settings())
        app = FastAPI(lifespan=auth.lifespan)
        auth.install(app)

        @app.get("/items")
        async def items(user: Annotated[AccessClaims, Depends(auth.current_user)]): ...
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._runtime: Runtime | None = None
        self.cookies = CookieTransport(
            secure=self.settings.cookie_secure, allowed_origins=self.settings.allowed_origins
        )
        self.metrics = Metrics()
        self.current_user = CurrentUser(lambda: self.runtime().sessions)
        self.optional_user = OptionalUser(lambda: self.runtime().sessions)
        self.router: APIRouter = auth_router(
            self.runtime,
            self.cookies,
            self.metrics,
            current_user=self.current_user,
            optional_user=self.optional_user,
        )

    def runtime(self) -> Runtime:
        """The open runtime; raises ``RuntimeError`` outside the lifespan."""
        if self._runtime is None:
            raise RuntimeError("tokenstile is not started: use Tokenstile.lifespan")
        return self._runtime

    def install(self, app: FastAPI) -> None:
        """Mount the auth and OAuth 2.0 routes and the JSON error handlers on ``app``.

        Request bodies of these routes (only) are bounded by ``MAX_BODY_BYTES`` and
        ``BODY_TIMEOUT``; the app's own routes keep whatever limits it sets.
        """
        routes = self._mount(app)
        app.add_middleware(
            BodyLimit,
            max_bytes=self.settings.max_body_bytes,
            timeout=self.settings.body_timeout,
            routes=routes,
        )

    def _mount(self, app: FastAPI) -> list[BaseRoute]:
        oauth = oauth_router(self.runtime, self.metrics)
        app.include_router(self.router)
        app.include_router(oauth)
        install_error_handlers(app, metrics=self.metrics)
        return [*self.router.routes, *oauth.routes]

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        runtime = open_runtime(
            self.settings, audit=self.metrics, on_store_error=self.metrics.store_failed
        )
        await runtime.stores.start()
        logger.info("stores: %s", runtime.stores.description)
        self._runtime = runtime
        purger = asyncio.create_task(self._purge_periodically(runtime))
        try:
            yield
        finally:
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            self._runtime = None
            await runtime.aclose()

    async def _purge_periodically(self, runtime: Runtime) -> None:
        # Redis expires its own state; SQL rows are deleted here (SPEC §1 invariant 6).
        while True:
            await asyncio.sleep(self.settings.purge_interval)
            try:
                removed = await runtime.purge()
            except TokenstileError as exc:
                logger.warning("purge failed: %s", exc.code)
            else:
                logger.debug("purged %d expired entries", removed)


def _freeze_startup_heap() -> None:
    """Take what startup left alive out of the garbage collector's sight.

    Startup leaves some 100,000 long-lived objects (modules, routes, models, metadata).
    Every full collection walks them all, a pause of tens of milliseconds that set the
    p99 of every route; frozen, they are never scanned again (they are never garbage),
    and collections look only at what requests create. The service does this for its
    own process; an app that embeds tokenstile decides for its own heap.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The standalone tokenstile service."""
    auth = Tokenstile(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with auth.lifespan(app):
            _freeze_startup_heap()
            yield

    app = FastAPI(
        title="tokenstile",
        summary="Refresh-token authentication: rotating refresh tokens, instant logout.",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served from the package by install_docs, not from a CDN
        redoc_url=None,
    )
    auth._mount(app)
    # The service bounds every request, whichever route it is for.
    app.add_middleware(
        BodyLimit, max_bytes=auth.settings.max_body_bytes, timeout=auth.settings.body_timeout
    )
    app.include_router(health_router(auth.runtime))
    app.include_router(auth.metrics.router())
    install_web(app)
    install_docs(app)
    # Outermost, so the latency includes the body limit and the error handlers.
    app.add_middleware(RequestTimer, metrics=auth.metrics, routes=app.router.routes)
    app.state.tokenstile = auth
    return app
