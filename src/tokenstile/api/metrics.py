"""``GET /metrics``: Prometheus metrics of requests, issued tokens, errors, store failures
and audit events.

Metrics are per process (each worker keeps its own); scrape every worker, or sum them
behind one address. Every label has a bounded set of values: routes by their path
template, never the raw path.

There is no gauge of live sessions: no store can count them cheaply (SQL would count
rows on every scrape, Redis would scan every key), and a count per worker would be
wrong anyway. ``GET /auth/sessions`` and ``tokenstile sessions list`` answer per user.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenstile.core.audit import AuditValue

UNMATCHED = "unmatched"
"""The ``route`` label of requests that no route matched."""

# From a cached token check (well under a millisecond) to a slow password hash or store.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    """The service's metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.request_duration = Histogram(
            "tokenstile_request_duration_seconds",
            "Time from a request's arrival to its answer's last byte, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens_issued = Counter(
            "tokenstile_tokens_issued",
            "Token pairs issued, by how they were obtained.",
            ["grant"],
            registry=self.registry,
        )
        self.errors = Counter(
            "tokenstile_errors",
            "Error answers, by their stable error code.",
            ["code"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "tokenstile_store_errors",
            "Store calls that failed (unreachable, timed out, misconfigured), by store kind.",
            ["store"],
            registry=self.registry,
        )
        self.audit_events = Counter(
            "tokenstile_audit_events",
            "Security events (logins, refreshes, reuse, logouts, limits), by event.",
            ["event"],
            registry=self.registry,
        )

    def record(self, event: str, **fields: AuditValue) -> None:
        """An audit log (``core.audit.AuditLog``) that counts events."""
        self.audit_events.labels(event).inc()

    def store_failed(self, kind: str) -> None:
        """Count one failed call to a store of ``kind`` (``sqlite``, ``redis``, …)."""
        self.store_errors.labels(kind).inc()

    def router(self) -> APIRouter:
        router = APIRouter(tags=["health"])

        @router.get("/metrics", response_class=Response, summary="Prometheus metrics")
        async def metrics() -> Response:
            """This process's metrics in the Prometheus text format."""
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return router


class RequestTimer:
    """ASGI middleware observing each HTTP request's duration in ``metrics``, labelled
    with the path template of the route that served it (``/auth/sessions/{sid}``).

    The router leaves the matched route in the scope; its label's series is resolved
    once per route object, so a request costs two clock reads, a dictionary lookup and
    one observation (a few microseconds). ``routes`` (the app's, mounts included) name
    what a mount or a plain Starlette route served.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self._histogram = metrics.request_duration
        self._routes = routes
        self._unmatched = self._histogram.labels(UNMATCHED)
        self._children: dict[int, Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            elapsed = time.perf_counter() - started
            # A route's endpoint for FastAPI routes, the mounted app for mounts.
            served_by = scope.get("route") or scope.get("endpoint")
            if served_by is None:
                self._unmatched.observe(elapsed)
            else:
                child = self._children.get(id(served_by))
                if child is None:
                    child = self._child(served_by)
                child.observe(elapsed)

    def _child(self, served_by: object) -> Histogram:
        template = getattr(served_by, "path_format", None)
        if not isinstance(template, str):
            route = next((r for r in self._routes if _serves(r, served_by)), None)
            template = getattr(route, "path_format", None)
        child = self._histogram.labels(template if isinstance(template, str) else UNMATCHED)
        # Routes and mounted apps live as long as the app: their ids stay theirs.
        self._children[id(served_by)] = child
        return child


def _serves(route: BaseRoute, endpoint: object) -> bool:
    if isinstance(route, Mount):
        return route.app is endpoint
    return getattr(route, "endpoint", None) is endpoint
