"""Tracing set up from OTEL_* (off unless configured), trace context in Kafka headers and trace
ids in logs: off (and empty) without a recording span."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from reelay_common.logging import add_trace_id
from reelay_common.tracing import (
    TracingConfigError,
    current_provider,
    current_trace_id,
    exporter_names,
    exporting_to,
    extract_context,
    inject_headers,
    load_exporters,
    producer_span,
    service_resource,
    service_tracing,
    tracer_provider_from_env,
)

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331


def test_nothing_is_injected_or_logged_when_tracing_is_off() -> None:
    assert inject_headers() == []
    assert current_trace_id() is None
    assert add_trace_id(None, "info", {"event": "x"}) == {"event": "x"}


def test_a_traceparent_travels_through_headers_and_shows_in_logs() -> None:
    parent = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with trace.use_span(NonRecordingSpan(parent)):
        headers = inject_headers()
        logged = add_trace_id(None, "info", {"event": "x"})
    assert dict(headers)["traceparent"] == b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert logged["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    extracted = trace.get_current_span(extract_context(headers)).get_span_context()
    assert (extracted.trace_id, extracted.span_id, extracted.is_remote) == (TRACE_ID, SPAN_ID, True)


# -- set-up from OTEL_* ------------------------------------------------------------------------


def test_nothing_is_exported_unless_an_exporter_or_endpoint_is_configured() -> None:
    assert exporter_names({}) == []
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracer_provider_from_env("reelay-test", environ={}) is None


def test_an_otlp_endpoint_alone_turns_otlp_over_http_on() -> None:
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp_proto_http"]
    assert exporter_names({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}) == [
        "otlp_proto_http"
    ]


def test_the_exporter_and_protocol_variables_choose_the_exporter() -> None:
    assert exporter_names({"OTEL_TRACES_EXPORTER": "otlp"}) == ["otlp_proto_http"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == [
        "otlp_proto_grpc"
    ]
    both = {"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    assert exporter_names(both) == ["otlp_proto_http", "console"]
    # An explicit `none` beats an endpoint, and OTEL_SDK_DISABLED beats everything.
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}) == []
    assert exporter_names({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) == []


def test_an_unknown_protocol_or_exporter_is_a_clear_error() -> None:
    with pytest.raises(TracingConfigError, match="OTLP protocol 'http/json'"):
        exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    with pytest.raises(TracingConfigError, match="no span exporter 'zipkin'"):
        tracer_provider_from_env("reelay-test", environ={"OTEL_TRACES_EXPORTER": "zipkin"})


def test_the_otlp_http_exporter_reads_its_endpoint_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.example:4318")
    [exporter] = load_exporters(exporter_names())
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://collector.example:4318/v1/traces"


def test_the_service_name_defaults_per_service_and_otel_service_name_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert service_resource("reelay-uploader").attributes["service.name"] == "reelay-uploader"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    resource = service_resource("reelay-uploader")
    assert resource.attributes["deployment.environment"] == "staging"
    assert resource.attributes["service.name"] == "reelay-uploader"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "uploader-eu")
    assert service_resource("reelay-uploader").attributes["service.name"] == "uploader-eu"


def test_the_sampler_comes_from_otel_traces_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    provider = tracer_provider_from_env("reelay-test", environ={}, exporters=[InMemorySpanExporter()])
    assert provider is not None
    assert isinstance(provider.sampler, TraceIdRatioBased)
    assert provider.sampler.rate == 0.25
    provider.shutdown()


async def test_a_service_records_spans_of_its_own_while_inside_and_none_after() -> None:
    exporter = InMemorySpanExporter()
    with exporting_to(exporter):
        async with service_tracing("reelay-test") as provider:
            assert provider is not None
            assert current_provider() is provider
            with producer_span("reelay.test.topic") as headers:
                inside = current_trace_id()
    assert current_provider() is None
    [span] = exporter.get_finished_spans()
    assert span.name == "reelay.test.topic publish"
    assert span.kind is trace.SpanKind.PRODUCER
    assert span.resource.attributes["service.name"] == "reelay-test"
    assert dict(headers)["traceparent"].decode().split("-")[1] == inside
    async with service_tracing("reelay-test") as off:  # no exporter configured: off
        assert off is None
        with producer_span("reelay.test.topic") as headers:
            assert headers == []


def test_tracing_off_a_publish_passes_the_incoming_trace_context_on_unchanged() -> None:
    parent = SpanContext(TRACE_ID, SPAN_ID, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with trace.use_span(NonRecordingSpan(parent)), producer_span("reelay.test.topic") as headers:
        pass
    assert dict(headers)["traceparent"] == b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
