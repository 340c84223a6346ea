"""Trace context in Kafka headers and trace ids in logs: off (and empty) without a recording span."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from reelay_common.logging import add_trace_id
from reelay_common.tracing import current_trace_id, extract_context, inject_headers

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
