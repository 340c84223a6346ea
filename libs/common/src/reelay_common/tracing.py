"""OpenTelemetry tracing: set up from the standard `OTEL_*` variables, W3C trace context across
Kafka (the publisher's PRODUCER span injects `traceparent` into the record's headers, the consumer
loop's CONSUMER span continues it), so one upload is one trace (runtime.instrument_http_client
and ingest's instrument_app add the HTTP spans).

Off unless configured (README.md, "Tracing"; what a trace holds: deploy/README.md,
"Observability"): without `OTEL_TRACES_EXPORTER` or an OTLP endpoint no SDK provider is built,
nothing is instrumented and the spans are the API's non-recording ones (a `traceparent` that came
in still passes through). Each service's provider is held in a context variable, set by
`service_tracing` (entered by runtime.Infrastructure.connect), so services sharing one process
(the tests) keep their own `service.name`; no global is set.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.metadata import entry_points

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

SCOPE = "reelay"

KafkaHeaders = list[tuple[str, bytes]]

# OTLP's protocols and the exporter (entry point of `opentelemetry_traces_exporter`) each needs.
# http/protobuf is the default (the OpenTelemetry specification's; only its exporter is installed).
_OTLP_EXPORTERS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_DEFAULT_OTLP_PROTOCOL = "http/protobuf"


class TracingConfigError(ValueError):
    """The OTEL_* variables ask for an exporter or protocol this installation does not have."""


@dataclass(frozen=True)
class _ServiceTracer:
    provider: TracerProvider
    tracer: trace.Tracer


_current: ContextVar[_ServiceTracer | None] = ContextVar("reelay_service_tracer", default=None)
# Tests hand every service they start in-process an exporter of theirs (spans kept in memory).
_test_exporter: ContextVar[SpanExporter | None] = ContextVar("reelay_test_span_exporter", default=None)


# -- set-up ------------------------------------------------------------------------------------


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The span exporters the environment asks for, as entry point names (none: tracing off).

    `OTEL_TRACES_EXPORTER` (comma-separated; `none` = off) wins; else an OTLP endpoint
    (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`) means `otlp`.
    `otlp` follows `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`.
    `OTEL_SDK_DISABLED=true` turns everything off."""
    if environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return []
    configured = environ.get(OTEL_TRACES_EXPORTER, "").strip()
    if not configured:
        has_endpoint = environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or environ.get(
            OTEL_EXPORTER_OTLP_ENDPOINT
        )
        configured = "otlp" if has_endpoint else "none"
    names = [n.strip().lower() for n in configured.split(",") if n.strip()]
    if names == ["none"]:
        return []
    protocol = (
        environ.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) or environ.get(OTEL_EXPORTER_OTLP_PROTOCOL) or ""
    ).strip() or _DEFAULT_OTLP_PROTOCOL
    if "otlp" in names and protocol not in _OTLP_EXPORTERS:
        raise TracingConfigError(
            f"OTLP protocol {protocol!r} is not one of {sorted(_OTLP_EXPORTERS)} "
            "(OTEL_EXPORTER_OTLP_PROTOCOL / OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)"
        )
    return [_OTLP_EXPORTERS[protocol] if n == "otlp" else n for n in names if n != "none"]


def load_exporters(names: Iterable[str]) -> list[SpanExporter]:
    """One exporter per name, from the installed `opentelemetry_traces_exporter` entry points;
    each reads its own settings (endpoint, headers, timeout, compression) from `OTEL_EXPORTER_*`."""
    exporters: list[SpanExporter] = []
    for name in names:
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise TracingConfigError(
                f"no span exporter {name!r} is installed (OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_PROTOCOL)"
            )
        exporters.append(next(iter(found)).load()())
    return exporters


def service_resource(default_service_name: str) -> Resource:
    """The SDK's resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME), `service.name`
    defaulting to the service's own name rather than `unknown_service`."""
    from_env = OTELResourceDetector().detect()
    return Resource.create(
        {} if from_env.attributes.get(SERVICE_NAME) else {SERVICE_NAME: default_service_name}
    )


def tracer_provider_from_env(
    default_service_name: str,
    *,
    environ: Mapping[str, str] = os.environ,
    exporters: Iterable[SpanExporter] = (),
) -> TracerProvider | None:
    """A provider exporting (batched) to what the environment configures, plus `exporters`
    (synchronously: tests); None when there is nowhere to export (tracing off). The sampler comes
    from OTEL_TRACES_SAMPLER / _ARG and the batching from OTEL_BSP_*, read by the SDK itself."""
    configured = load_exporters(exporter_names(environ))
    extra = list(exporters)
    if not configured and not extra:
        return None
    provider = TracerProvider(resource=service_resource(default_service_name))
    for exporter in configured:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    for exporter in extra:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@asynccontextmanager
async def service_tracing(service_name: str) -> AsyncIterator[TracerProvider | None]:
    """While inside, this service's spans go to its provider (from OTEL_*; None when off).
    Leaving flushes and shuts it down, in a thread: the exporter's HTTP calls block."""
    test_exporter = _test_exporter.get()
    provider = tracer_provider_from_env(service_name, exporters=[test_exporter] if test_exporter else ())
    token = _current.set(None if provider is None else _ServiceTracer(provider, provider.get_tracer(SCOPE)))
    try:
        yield provider
    finally:
        _current.reset(token)
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)


@contextmanager
def exporting_to(exporter: SpanExporter) -> Iterator[None]:
    """Tests: services started (their tasks created) inside export their spans to `exporter` too."""
    token = _test_exporter.set(exporter)
    try:
        yield
    finally:
        _test_exporter.reset(token)


def current_provider() -> TracerProvider | None:
    """The running service's tracer provider, None when tracing is off."""
    current = _current.get()
    return None if current is None else current.provider


def _tracer() -> trace.Tracer:
    current = _current.get()
    # No service set-up here (a library use, a test): the global API tracer (no-op unless set).
    return current.tracer if current is not None else trace.get_tracer(SCOPE)


def _off() -> bool:
    # Neither this service's provider nor a global one: no span could record.
    return _current.get() is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


# -- Kafka -------------------------------------------------------------------------------------


def inject_headers() -> KafkaHeaders:
    """The current trace context as Kafka headers (`traceparent`, `tracestate`); empty when off."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(name, value.encode("ascii")) for name, value in carrier.items()]


def extract_context(headers: Iterable[tuple[str, bytes | None]] | None) -> Context:
    """The trace context a record carried in its headers (an empty context when none)."""
    carrier = {
        name.lower(): value.decode("ascii", "replace") for name, value in headers or () if value is not None
    }
    return propagate.extract(carrier)


@contextmanager
def producer_span(topic: str) -> Iterator[KafkaHeaders]:
    """A PRODUCER span for publishing one record to `topic`; yields the headers carrying it
    (tracing off: the context that came in, if any, unchanged)."""
    if _off():
        yield inject_headers()
        return
    with _tracer().start_as_current_span(
        f"{topic} publish",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.operation.type": "send",
        },
    ):
        yield inject_headers()


@contextmanager
def consumer_span(
    topic: str, partition: int, offset: int, headers: Iterable[tuple[str, bytes | None]] | None
) -> Iterator[trace.Span]:
    """A CONSUMER span for handling one record, child of the producer's trace when it carried one."""
    with _tracer().start_as_current_span(
        f"{topic} process",
        context=extract_context(headers),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.operation.type": "process",
            "messaging.kafka.destination.partition": partition,
            "messaging.kafka.message.offset": offset,
        },
    ) as span:
        yield span


def trace_carrier() -> dict[str, str] | None:
    """The current trace context as a W3C carrier (`traceparent`, `tracestate`) to store with
    work done later (a poll); None when there is none (tracing off)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


@contextmanager
def continued_span(name: str, carrier: Mapping[str, str] | None, **attributes: str) -> Iterator[trace.Span]:
    """An INTERNAL span for later work (a status poll), child of the stored `carrier`'s trace,
    else a root of its own."""
    with _tracer().start_as_current_span(
        name, context=propagate.extract(dict(carrier or {})), attributes=attributes
    ) as span:
        yield span


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, or None when no span records (tracing off)."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
