"""``GET /metrics``: Prometheus counters of tokens issued, errors answered and audit events.

Counters are per process (each worker keeps its own); scrape every worker, or sum them
behind one address. Nothing here is on the token-verification path of a request that
succeeds.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    ProcessCollector,
    generate_latest,
)

from tokenstile.core.audit import AuditValue


class Metrics:
    """The service's counters, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
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
        self.audit_events = Counter(
            "tokenstile_audit_events",
            "Security events (reuse detected, sessions ended), by event.",
            ["event"],
            registry=self.registry,
        )

    def record(self, event: str, **fields: AuditValue) -> None:
        """An audit log (``core.audit.AuditLog``) that counts events."""
        self.audit_events.labels(event).inc()

    def router(self) -> APIRouter:
        router = APIRouter(tags=["health"])

        @router.get("/metrics", response_class=Response)
        async def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return router
