"""The ingest FastAPI app. `create_app(settings, deps, ready_checks)` builds it over ports
connected elsewhere (`main`, or a test's fakes); the app itself connects nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from reelay_common.readiness import Check
from reelay_common.tracing import current_provider

from reelay_ingest.account_routes import accounts, oauth_callback
from reelay_ingest.context import AppContext
from reelay_ingest.deps import IngestDeps
from reelay_ingest.observe import ObserveRequests
from reelay_ingest.problems import install_error_handlers
from reelay_ingest.routes import api, hooks, ops
from reelay_ingest.schemas import UploadByUrl
from reelay_ingest.settings import IngestSettings

DESCRIPTION = """\
Reelay publishes videos to TikTok through the official Content Posting API.

Submit an upload with `POST /v1/uploads` (a video URL as JSON, or the file as multipart), then
follow it at `GET /v1/uploads/{request_id}`. Every `/v1` route but the TikTok webhook needs
`Authorization: Bearer <API key>`. Errors always have the body
`{"error": {"code": "...", "message": "...", "detail": ...}}`.
"""


def create_app(
    settings: IngestSettings, deps: IngestDeps, *, ready_checks: Mapping[str, Check] | None = None
) -> FastAPI:
    """The ingest app over `deps`; /readyz runs `ready_checks` (none: always ready)."""
    context = AppContext.of(settings, deps, ready_checks or {})
    app = FastAPI(title="Reelay ingest API", version="1.0.0", description=DESCRIPTION)
    app.state.context = context
    install_error_handlers(app, context.metrics)
    app.add_middleware(ObserveRequests, metrics=context.metrics)
    app.include_router(api)
    app.include_router(accounts)
    app.include_router(oauth_callback)
    app.include_router(hooks)
    app.include_router(ops)
    _document_upload_body(app)
    return app


def instrument_app(app: FastAPI) -> FastAPI:
    """Give `app` a SERVER span per request (continuing a caller's `traceparent`) when the
    service's tracing is on (OTEL_*); probes and scrapes get none."""
    provider = current_provider()
    if provider is not None:
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=provider,
            excluded_urls=_UNTRACED_URLS,
            exclude_spans=["receive", "send"],  # one span per request, not one per ASGI message
        )
    return app


# Regular expressions of OpenTelemetry's excluded_urls (searched in the full URL).
_UNTRACED_URLS = "/healthz$,/readyz$,/metrics$"


def _document_upload_body(app: FastAPI) -> None:
    # POST /v1/uploads parses its body itself (JSON or a multipart stream), so FastAPI does not
    # see UploadByUrl; add it and its sub-models to the components the route's schema refers to.
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            body = UploadByUrl.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components["UploadByUrl"] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
