"""Per-request observation: Prometheus metrics, one summary log line, the log context of the request."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from reelay_common.logging import get_logger, unit_of_work
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = get_logger("reelay_ingest.http")

# Probes and scrapes come every few seconds; they are logged at debug only.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Plain Starlette routes (the docs) leave no route in the scope; their paths are fixed, so safe labels.
_FIXED_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class IngestMetrics:
    """The ingest API's metrics, in a registry of their own (one per app, so tests can build many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "reelay_ingest_http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "reelay_ingest_http_request_duration_seconds",
            "HTTP request duration by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.uploads_accepted = Counter(
            "reelay_ingest_uploads_accepted_total",
            "Uploads accepted (202, not counting replays) by mode and source kind.",
            ["mode", "source_kind"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "reelay_ingest_rejections_total",
            "Requests answered 4xx/5xx, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "reelay_ingest_webhooks_total",
            "TikTok webhooks by outcome (published, ignored, rejected).",
            ["outcome"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The text exposition of the process-wide registry (process, Kafka publisher) and ours."""
        return generate_latest(REGISTRY) + generate_latest(self.registry)


class ObserveRequests:
    """ASGI middleware: counts and times each request by route template and logs one line for it."""

    def __init__(self, app: ASGIApp, metrics: IngestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering
        method: str = scope["method"]

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        # One request, one unit of work: the routes add request_id / account_id once they read them
        # from the body (bind_learned); the summary line carries them, and they end with the request.
        with unit_of_work():
            try:
                await self.app(scope, receive, observed_send)
            finally:
                elapsed = time.perf_counter() - started
                route = _route_template(scope)
                self.metrics.requests.labels(method, route, str(status)).inc()
                self.metrics.latency.labels(method, route).observe(elapsed)
                fields: dict[str, Any] = {
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                }
                if scope.get("path") in _QUIET_PATHS:
                    log.debug("http_request", **fields)
                else:
                    log.info("http_request", **fields)


def _route_template(scope: Scope) -> str:
    # The template ("/v1/uploads/{request_id}"), never the raw path: ids would explode the labels.
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str):
        return template
    return scope["path"] if scope.get("path") in _FIXED_PATHS else "unmatched"
