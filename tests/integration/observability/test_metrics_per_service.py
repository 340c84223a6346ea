"""After one upload, each running service's /metrics (ingest's API port, the uploader's and the
status-poller's ops ports) shows the documented families (deploy/README.md, "Observability")
moved by exactly what that service did. The services run as real processes (tests/e2e/stack.py),
so each scrape is that process's registry alone; the sandbox's webhooks are off, so the poller
alone settles the upload and every count below is deterministic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from reelay_common.adapters.tiktok.client import PATH_CREATOR_INFO, PATH_STATUS_FETCH, PATH_VIDEO_INIT
from reelay_common.domain.chunks import plan_chunks
from reelay_testing.waiting import eventually
from tiktok_sandbox.media import write_sample_mp4

from tests.e2e.flows import assert_published_once, connect_account, post_video
from tests.e2e.stack import Stack, running_stack

VIDEO_BYTES = 3_000_000
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    response = await http.get(url)
    response.raise_for_status()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


class Scrapes:
    """/metrics of one service before and after, compared sample by sample."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before, self.after = before, after

    def delta(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return self.after.get(key, 0.0) - self.before.get(key, 0.0)

    def families(self) -> set[str]:
        return {name for name, _ in self.after}


def metrics_urls(stack: Stack) -> dict[str, str]:
    return {
        "ingest": f"{stack.ingest_url}/metrics",
        "uploader": stack.services["uploader"].health_url.replace("/healthz", "/metrics"),
        "status-poller": stack.services["status-poller"].health_url.replace("/healthz", "/metrics"),
    }


@pytest.fixture
async def stack(kafka_bootstrap_servers: str, mongodb_uri: str, tmp_path: Path) -> AsyncIterator[Stack]:
    with running_stack(
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        mongodb_uri=mongodb_uri,
        workdir=tmp_path / "stack",
        extra_env={"SANDBOX_WEBHOOK_URL": ""},  # no webhooks: the poller alone settles uploads
    ) as s:
        yield s


class TestMetricsOfEachService:
    async def test_one_upload_moves_each_services_families_by_what_it_did(
        self, stack: Stack, tmp_path: Path
    ) -> None:
        video = write_sample_mp4(tmp_path / "clip.mp4", VIDEO_BYTES)
        chunks = plan_chunks(VIDEO_BYTES).total_chunk_count
        requested = stack.topics["REELAY_TOPIC_UPLOAD_REQUESTED"]
        events = stack.topics["REELAY_TOPIC_PUBLISH_EVENTS"]
        status = stack.topics["REELAY_TOPIC_PUBLISH_STATUS"]
        urls = metrics_urls(stack)
        async with httpx.AsyncClient(timeout=60) as http:
            account_id, open_id = await connect_account(http, stack)
            before = {name: await scrape(http, url) for name, url in urls.items()}
            request_id = await post_video(http, stack, account_id, video)
            await assert_published_once(http, stack, request_id, open_id, video)

            # Counted just after the work they count: the uploader's record once its handler
            # returned, the poller's polls per publish once tracking ended.
            async def settled() -> dict[str, Samples] | None:
                now = {name: await scrape(http, url) for name, url in urls.items()}
                handled = Scrapes(before["uploader"], now["uploader"]).delta(
                    "reelay_kafka_records_total", topic=requested, outcome="handled"
                )
                tracked = Scrapes(before["status-poller"], now["status-poller"]).delta(
                    "reelay_poller_status_polls_per_publish_count"
                )
                return now if handled and tracked else None

            after = await eventually(settled, timeout=60, interval=0.5, what="the last counts")
        ingest, uploader, poller = (
            Scrapes(before[n], after[n]) for n in ("ingest", "uploader", "status-poller")
        )

        # ingest: one accepted upload, one request answered 202, its command and status published
        assert ingest.delta("reelay_ingest_uploads_accepted_total", mode="direct", source_kind="blob") == 1
        assert (
            ingest.delta(
                "reelay_ingest_http_requests_total", method="POST", route="/v1/uploads", status="202"
            )
            == 1
        )
        assert (
            ingest.delta(
                "reelay_ingest_http_request_duration_seconds_count", method="POST", route="/v1/uploads"
            )
            == 1
        )
        assert ingest.delta("reelay_ingest_rejections_total", code="validation_error") == 0
        assert ingest.delta("reelay_kafka_published_total", topic=requested) == 1
        assert ingest.delta("reelay_kafka_published_total", topic=status) == 1
        assert ingest.delta("reelay_tiktok_requests_total", endpoint=PATH_CREATOR_INFO, outcome="ok") == 1
        assert ingest.delta("reelay_tiktok_requests_total", endpoint=PATH_VIDEO_INIT, outcome="ok") == 0

        # uploader: the command handled once, one init, every chunk PUT once, all bytes acknowledged
        assert uploader.delta("reelay_kafka_records_total", topic=requested, outcome="handled") == 1
        assert (
            uploader.delta("reelay_kafka_record_duration_seconds_count", topic=requested, outcome="handled")
            == 1
        )
        assert uploader.delta("reelay_tiktok_requests_total", endpoint=PATH_VIDEO_INIT, outcome="ok") == 1
        assert uploader.delta("reelay_tiktok_requests_total", endpoint="video_upload", outcome="ok") == chunks
        assert (
            uploader.delta("reelay_tiktok_request_duration_seconds_count", endpoint="video_upload") == chunks
        )
        assert uploader.delta("reelay_tiktok_uploaded_bytes_total") == VIDEO_BYTES
        for state in ("uploading", "uploaded"):
            assert (
                uploader.delta("reelay_upload_state_transitions_total", state=state, source="uploader") == 1
            )
        assert uploader.delta("reelay_kafka_published_total", topic=events) == 1
        assert uploader.delta("reelay_kafka_published_total", topic=status) == 2  # uploading, uploaded
        assert uploader.delta("reelay_tiktok_requests_total", endpoint=PATH_STATUS_FETCH, outcome="ok") == 0

        # status-poller: VideoUploaded handled once; every status/fetch counted, and as many polls
        # observed for this one publish; settled as published, its detection delay observed once
        fetches = poller.delta("reelay_tiktok_requests_total", endpoint=PATH_STATUS_FETCH, outcome="ok")
        assert fetches >= 1
        assert poller.delta("reelay_kafka_records_total", topic=events, outcome="handled") == 1
        assert poller.delta("reelay_poller_status_polls_per_publish_count") == 1
        assert poller.delta("reelay_poller_status_polls_per_publish_sum") == fetches
        assert poller.delta("reelay_poller_polls_total", outcome="settled") == 1
        assert poller.delta("reelay_upload_state_transitions_total", state="published", source="poller") == 1
        assert (
            poller.delta("reelay_upload_detection_delay_seconds_count", state="published", source="poller")
            == 1
        )
        assert poller.delta("reelay_tiktok_uploaded_bytes_total") == 0

        # The consumer's lag, per partition it holds, is exported by the two consumers.
        assert "reelay_kafka_consumer_lag_records" in uploader.families() & poller.families()
        assert "reelay_kafka_consumer_lag_records" not in ingest.families()  # ingest consumes nothing
