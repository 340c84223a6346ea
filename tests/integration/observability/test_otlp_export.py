"""Configured by the standard variables alone, a service exports its spans over OTLP/HTTP: a
local receiver stands in for the collector and decodes what arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pymongo.asynchronous.database import AsyncDatabase
from tiktok_sandbox.testing import running_sandbox

from tests.integration.ingest.ingest_world import API_KEY, served, unique_settings


class Collector:
    """An OTLP/HTTP traces endpoint on loopback that keeps every request it decodes."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []

    async def receive(self, request: web.Request) -> web.Response:
        self.content_types.append(request.content_type)
        self.requests.append(ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(status=200, content_type="application/x-protobuf")

    def spans(self) -> list[tuple[str, str]]:
        """(service.name, span name) of every span received."""
        found = []
        for req in self.requests:
            for rs in req.resource_spans:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                found += [(attrs.get("service.name", ""), s.name) for ss in rs.scope_spans for s in ss.spans]
        return found


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    received = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", received.receive)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield received, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class TestOtlpExport:
    async def test_an_otlp_endpoint_is_enough_to_export_the_services_spans(
        self,
        collector: tuple[Collector, str],
        monkeypatch: pytest.MonkeyPatch,
        kafka_bootstrap_servers: str,
        mongodb_uri: str,
        mongo_db: AsyncDatabase[dict[str, Any]],
    ) -> None:
        received, endpoint = collector
        for name in ("OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        async with running_sandbox() as sandbox:
            settings = unique_settings(kafka_bootstrap_servers, mongodb_uri, mongo_db.name, sandbox.base_url)
            async with served(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
                resp = await http.get(
                    "/v1/uploads/nothing-here", headers={"Authorization": f"Bearer {API_KEY}"}
                )
                assert resp.status_code == 404
                assert (await http.get("/healthz")).status_code == 200
        # Stopping the service flushed its batch to the collector.
        assert received.content_types
        assert set(received.content_types) == {"application/x-protobuf"}
        spans = received.spans()
        assert ("reelay-ingest", "GET /v1/uploads/{request_id}") in spans
        assert all(service == "reelay-ingest" for service, _ in spans)
        assert not [name for _, name in spans if "healthz" in name], "probes are not traced"
        assert not [name for _, name in spans if name.endswith(("http send", "http receive"))], (
            "one per request"
        )
        [resource] = {
            (a.key, a.value.string_value)
            for req in received.requests
            for rs in req.resource_spans
            for a in rs.resource.attributes
            if a.key == "deployment.environment"
        }
        assert resource == ("deployment.environment", "test")
