"""One upload, followed through ingest, the uploader and the status-poller: one trace, its spans
nested as the work was (HTTP request -> Kafka publish -> consume -> TikTok calls -> publish ->
consume -> each later poll -> status/fetch), and the request_id (and trace_id) on each service's
log lines."""

from __future__ import annotations

import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from reelay_common.adapters.tiktok.client import PATH_STATUS_FETCH, PATH_VIDEO_INIT
from reelay_testing.waiting import eventually

from tests.integration.observability.inprocess import INGEST, POLLER, UPLOADER, Services, service_of_span

VIDEO_BYTES = 2_000_000  # one chunk


def _url(span: ReadableSpan) -> str:
    attrs = span.attributes or {}
    return str(attrs.get("url.full") or attrs.get("http.url") or "")


def _one(spans: Sequence[ReadableSpan], what: str, service: str, kind: SpanKind, name: str) -> ReadableSpan:
    found = [s for s in spans if service_of_span(s) == service and s.kind is kind and s.name == name]
    assert len(found) == 1, f"{what}: {len(found)} spans named {name!r} from {service}"
    return found[0]


def _child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return span.parent is not None and span.parent.span_id == parent.context.span_id


def print_tree(spans: Sequence[ReadableSpan], by_id: dict[int, ReadableSpan]) -> None:
    def depth(span: ReadableSpan) -> int:
        n = 0
        while span.parent is not None and span.parent.span_id in by_id:
            span, n = by_id[span.parent.span_id], n + 1
        return n

    for span in sorted(spans, key=lambda s: s.start_time or 0):
        print(f"{'  ' * depth(span)}{span.name} [{span.kind.name}, {service_of_span(span)}] {_url(span)}")


def _descends(span: ReadableSpan, ancestor: ReadableSpan, by_id: dict[int, ReadableSpan]) -> bool:
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if current.parent.span_id == ancestor.context.span_id:
            return True
        current = by_id.get(current.parent.span_id)
    return False


class TestOneUploadOneTrace:
    async def test_spans_of_all_three_services_share_the_trace_of_the_request(
        self, services: Services
    ) -> None:
        account_id, _ = await services.connect_account()
        url = services.video(VIDEO_BYTES)
        request_id = await services.upload_url(account_id, url)
        await services.wait_state(request_id, "published")
        topics = services.topics
        requested, events = topics["topic_upload_requested"], topics["topic_publish_events"]

        def poller_done() -> bool:
            # Spans end just after their work: the consume, and the poll that saw the outcome.
            names = {s.name for s in services.spans.get_finished_spans()}
            return {f"{events} process", "poll publish status"} <= names

        await eventually(poller_done, timeout=30, what="the poller's consume and poll spans to end")
        everything = services.spans.get_finished_spans()
        [server] = [
            s
            for s in everything
            if s.kind is SpanKind.SERVER
            and s.name == "POST /v1/uploads"
            and (s.attributes or {}).get(
                "http.status_code", (s.attributes or {}).get("http.response.status_code")
            )
            == 202
        ]
        assert service_of_span(server) == INGEST
        trace_id = server.context.trace_id
        spans = [s for s in everything if s.context.trace_id == trace_id]
        by_id = {s.context.span_id: s for s in spans}
        assert {service_of_span(s) for s in spans} == {INGEST, UPLOADER, POLLER}
        if os.environ.get("REELAY_PRINT_TRACE"):  # to read the trace: pytest -s with it set
            print_tree(spans, by_id)

        # ingest: the request -> its publish of UploadRequested (the record's traceparent)
        published = _one(spans, "ingest's publish", INGEST, SpanKind.PRODUCER, f"{requested} publish")
        assert _descends(published, server, by_id)
        # ingest asked TikTok for the creator's info inside the request
        assert any(
            service_of_span(s) == INGEST and s.kind is SpanKind.CLIENT and "/creator_info/" in _url(s)
            for s in spans
            if _descends(s, server, by_id)
        )

        # uploader: consumes that very record, downloads the video, calls TikTok, announces it
        consumed = _one(spans, "uploader's consume", UPLOADER, SpanKind.CONSUMER, f"{requested} process")
        assert _child_of(consumed, published)
        clients = [s for s in spans if s.kind is SpanKind.CLIENT and service_of_span(s) == UPLOADER]
        assert all(_descends(s, consumed, by_id) for s in clients), "the uploader calls inside its consume"
        assert any(_url(s) == url for s in clients), "the download of the video"
        [init] = [s for s in clients if _url(s).endswith(PATH_VIDEO_INIT)]
        [put] = [s for s in clients if s.name.startswith("PUT")]
        assert "upload_token" not in _url(put), "the upload URL's token stays out of the trace"
        assert init.end_time is not None
        assert put.start_time is not None
        assert init.end_time <= put.start_time, "init before the chunk PUT"
        announced = _one(spans, "uploader's VideoUploaded", UPLOADER, SpanKind.PRODUCER, f"{events} publish")
        assert _descends(announced, consumed, by_id)
        assert any(
            s.name == f"{topics['topic_publish_status']} publish" and _descends(s, consumed, by_id)
            for s in spans
        ), "the uploader's status records"

        # status-poller: consumes VideoUploaded in the same trace, child of the uploader's publish
        tracked = _one(spans, "poller's consume", POLLER, SpanKind.CONSUMER, f"{events} process")
        assert _child_of(tracked, announced)
        # ... and each later poll continues the trace tracking started in: a status/fetch inside
        polls = [s for s in spans if s.name == "poll publish status" and _child_of(s, tracked)]
        assert polls, "no poll continued the trace of tracking"
        assert {service_of_span(s) for s in polls} == {POLLER}
        fetches = [s for s in spans if s.kind is SpanKind.CLIENT and _url(s).endswith(PATH_STATUS_FETCH)]
        assert fetches, "no status/fetch in the trace"
        assert all(service_of_span(s) == POLLER for s in fetches)
        in_polls = [s for s in fetches if any(_child_of(s, p) for p in polls)]
        assert in_polls, "no status/fetch inside a poll"
        # The others are inside a poll still running (its span not ended yet): in no finished span.
        assert all(
            s.parent is not None and s.parent.span_id not in by_id for s in fetches if s not in in_polls
        )

        # The request_id is on each service's log lines of this upload, with this trace's id.
        hex_id = format(trace_id, "032x")
        for service in (INGEST, UPLOADER, POLLER):
            lines = [
                e for e in services.logs if e.get("service") == service and e.get("request_id") == request_id
            ]
            assert lines, f"no {service} log line carries request_id {request_id}"
            assert any(e.get("trace_id") == hex_id for e in lines), f"{service}: {lines[:3]}"
