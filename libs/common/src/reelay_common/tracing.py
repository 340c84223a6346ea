"""W3C trace context across Kafka: the publisher injects `traceparent` into each record's
headers, the consumer loop continues that trace around the handler, so one upload is one trace.

Only the OpenTelemetry API is used here: without a configured SDK tracer provider the spans are
non-recording and nothing is injected (tracing off, and free)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.context import Context

tracer = trace.get_tracer("reelay")

KafkaHeaders = list[tuple[str, bytes]]


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
def consumer_span(
    topic: str, partition: int, offset: int, headers: Iterable[tuple[str, bytes | None]] | None
) -> Iterator[trace.Span]:
    """A CONSUMER span for handling one record, child of the producer's trace when it carried one."""
    with tracer.start_as_current_span(
        f"{topic} process",
        context=extract_context(headers),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.kafka.destination.partition": partition,
            "messaging.kafka.message.offset": offset,
        },
    ) as span:
        yield span


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, or None when no span records (tracing off)."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
