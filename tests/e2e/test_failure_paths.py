"""Specification of the promises under failure, through the running stack (real processes)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.domain.messages import (
    DeadLetter,
    PublishStatusChanged,
    UploadRequested,
    UrlSource,
    dlq_topic,
)
from reelay_common.domain.states import UploadState
from reelay_testing.kafka import TopicRecord, read_topic
from tiktok_sandbox.media import write_sample_mp4

from tests.e2e.flows import (
    MID_UPLOAD_VIDEO_BYTES,
    assert_published_once,
    connect_account,
    first_chunk_stored,
    post_video,
)
from tests.e2e.stack import BLOB_STORES, Stack, free_port, wait_for_upload_state

pytestmark = pytest.mark.e2e


@pytest.fixture
def file_server(video_dir: Path) -> Iterator[str]:
    """Serve `video_dir` over HTTP on loopback, as an upstream's media server would."""
    port = free_port()
    proc = subprocess.Popen(  # our own interpreter's stdlib server, on loopback
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(video_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(base, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class TestCrashes:
    @pytest.mark.parametrize("blob_store", BLOB_STORES, scope="module")
    async def test_an_uploader_killed_mid_upload_resumes_and_posts_once(
        self, store_stack: Stack, http: httpx.AsyncClient, video_dir: Path
    ) -> None:
        # The restarted uploader reads the rest of the video from the store ingest wrote it to.
        stack = store_stack
        account_id, open_id = await connect_account(http, stack)
        video = video_dir / "crash.mp4"
        write_sample_mp4(video, MID_UPLOAD_VIDEO_BYTES)
        request_id = await post_video(http, stack, account_id, video)

        # Kill the uploader (SIGKILL: no clean-up) once TikTok holds some but not all of the bytes.
        publish = await first_chunk_stored(http, stack, open_id)
        stack.kill("uploader")
        assert publish["complete"] is False, "the upload finished before the kill: nothing was tested"
        stack.start("uploader")

        # One request, one TikTok publish: the restart resumed, it did not init again.
        await assert_published_once(http, stack, request_id, open_id, video)


class TestRecordsFromUpstream:
    async def test_a_record_produced_directly_is_processed_and_a_malformed_one_is_dead_lettered(
        self,
        stack: Stack,
        http: httpx.AsyncClient,
        video_dir: Path,
        file_server: str,
        kafka_bootstrap_servers: str,
    ) -> None:
        account_id, _ = await connect_account(http, stack)
        video = video_dir / "upstream.mp4"
        write_sample_mp4(video, 12 * 1000 * 1000)
        request_id = f"upstream-{uuid.uuid4().hex[:12]}"
        command = UploadRequested(
            request_id=request_id,
            account_id=account_id,
            mode="inbox",
            source=UrlSource(url=f"{file_server}/upstream.mp4"),
        )
        requests_topic = stack.topics["REELAY_TOPIC_UPLOAD_REQUESTED"]

        async with KafkaPublisher(kafka_bootstrap_servers, client_id="e2e-upstream") as producer:
            # Same key as the good record: same partition, so the consumer must get past the bad one.
            await producer.publish_raw(requests_topic, b"{not json", key=account_id.encode())
            await producer.publish(requests_topic, command, key=account_id)

        final = await wait_for_upload_state(
            http,
            f"{stack.ingest_url}/v1/uploads/{request_id}",
            until={"inbox_delivered", "published", "failed", "unconfirmed"},
            timeout=180,
            headers=stack.headers,
        )
        assert final["state"] == "inbox_delivered", f"{final}\n{stack.logs()}"

        [dead] = await read_topic(kafka_bootstrap_servers, dlq_topic(requests_topic), until=1, timeout=30)
        letter = DeadLetter.model_validate_json(dead.value)
        assert (letter.topic, letter.value) == (requests_topic, "{not json")
        assert letter.reason

        # Upstream hears every change of its request on the outbound topic, in order, ending terminal.
        def final_announced(records: Sequence[TopicRecord]) -> bool:
            changes = (PublishStatusChanged.model_validate_json(r.value) for r in records)
            return any(c.request_id == request_id and c.state is UploadState.INBOX_DELIVERED for c in changes)

        # Until the final change is read, and a little after: a repeat announcement shows too.
        records = await read_topic(
            kafka_bootstrap_servers,
            stack.topics["REELAY_TOPIC_PUBLISH_STATUS"],
            until=final_announced,
            timeout=60,
            linger=2,
        )
        changes = [PublishStatusChanged.model_validate_json(r.value) for r in records]
        mine = [c.state for c in changes if c.request_id == request_id]
        assert mine[-1] is UploadState.INBOX_DELIVERED
        assert mine == sorted(mine, key=lambda s: s.rank), mine
        assert UploadState.UPLOADED in mine
