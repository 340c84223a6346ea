"""The uploader service as it runs (`main.run`): real Kafka, real FerretDB, the in-process TikTok
sandbox, and a local HTTP server as the video source. Topics, database and group are unique per test."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.blobs import open_blob_store
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.adapters.mongo.accounts import MongoAccountStore
from reelay_common.adapters.mongo.uploads import MongoUploadStore
from reelay_common.adapters.tiktok.client import PATH_VIDEO_INIT
from reelay_common.domain.messages import DeadLetter, UploadRequested, VideoUploaded, dlq_topic
from reelay_common.domain.records import UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.domain.tiktok import TokenGrant
from reelay_testing.kafka import read_topic
from reelay_testing.readers import aiter_bytes
from reelay_testing.waiting import eventually
from reelay_uploader.main import run
from reelay_uploader.settings import UploaderSettings
from tiktok_sandbox.media import write_sample_mp4
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

from tests.conftest import UniqueTopic
from tests.support import sha256_of

MB = 1_000_000


# -- helpers -----------------------------------------------------------------------------------


class VideoServer:
    """Serves files over HTTP with Range support; `delay_per_mb` slows it (to catch an upload mid-way)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.delay_per_mb = 0.0
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = self.root / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound
        size = path.stat().st_size
        headers = {"Content-Type": "video/mp4", "Accept-Ranges": "bytes"}
        start, stop, status = 0, size, 200
        if "Range" in request.headers:
            rng = request.http_range
            start, stop, status = rng.start or 0, min(rng.stop or size, size), 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        headers["Content-Length"] = str(stop - start)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        with path.open("rb") as f:
            f.seek(start)
            left = stop - start
            while left > 0:
                piece = f.read(min(left, MB))
                left -= len(piece)
                await response.write(piece)
                if self.delay_per_mb:
                    await asyncio.sleep(self.delay_per_mb * len(piece) / MB)
        await response.write_eof()
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{name}", self._serve)
        app.router.add_route("HEAD", "/{name}", self._serve)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Env:
    settings: UploaderSettings
    sandbox: SandboxHandle
    videos: VideoServer
    uploads: MongoUploadStore
    publisher: KafkaPublisher
    account_id: str
    open_id: str
    tmp: Path
    accounts: MongoAccountStore

    async def connect_account(self, name: str) -> str:
        """Another creator in the sandbox, connected in Reelay: its account_id."""
        return (await _connect(self.sandbox, self.accounts, name))[0]

    def video(self, size: int, *, seed: int = 0) -> tuple[str, Path]:
        path = write_sample_mp4(self.tmp / f"sample-{size}-{seed}.mp4", size, seed=seed)
        return f"{self.videos.base_url}/{path.name}", path

    def request(
        self, url: str, *, request_id: str | None = None, account_id: str | None = None
    ) -> UploadRequested:
        return UploadRequested.model_validate(
            {
                "request_id": request_id or f"req-{uuid.uuid4().hex[:12]}",
                "account_id": account_id or self.account_id,
                "mode": "direct",
                "source": {"kind": "url", "url": url},
                "post_info": {"privacy_level": "SELF_ONLY", "title": "integration #reelay"},
            }
        )

    async def send(self, cmd: UploadRequested) -> None:
        await self.publisher.publish(self.settings.topic_upload_requested, cmd, key=cmd.account_id)

    async def record(self, request_id: str) -> UploadRecord | None:
        return await self.uploads.get(request_id)

    async def wait_state(self, request_id: str, state: UploadState, *, timeout: float = 90.0) -> UploadRecord:
        async def probe() -> UploadRecord | None:
            record = await self.uploads.get(request_id)
            return record if record is not None and record.state is state else None

        result = await eventually(probe, timeout=timeout, what=f"{request_id} to be {state}")
        assert result is not None
        return result

    def publishes(self) -> list[Any]:
        return [p for p in self.sandbox.state.publishes.values() if p.open_id == self.open_id]


@pytest.fixture
async def env(
    kafka_bootstrap_servers: str,
    mongodb_uri: str,
    mongo_db: AsyncDatabase[dict[str, Any]],
    unique_topic: UniqueTopic,
    kafka_publisher: KafkaPublisher,
    tmp_path: Path,
) -> AsyncIterator[Env]:
    requested = await unique_topic("reelay.test.upload.requested")
    events = await unique_topic("reelay.test.publish.events")
    status = await unique_topic("reelay.test.publish.status")
    settings = UploaderSettings.model_validate(
        {
            "kafka_bootstrap_servers": kafka_bootstrap_servers,
            "mongodb_uri": mongodb_uri,
            "mongodb_database": mongo_db.name,
            "topic_upload_requested": requested,
            "topic_publish_events": events,
            "topic_publish_status": status,
            "topic_partitions": 1,
            "consumer_group": f"test-uploader-{uuid.uuid4().hex[:10]}",
            "allow_private_urls": True,  # the video server listens on loopback
            "ops_port": 0,
            "shutdown_grace_seconds": 2.0,
        }
    )
    videos = VideoServer(tmp_path)
    await videos.start()
    try:
        async with running_sandbox(processing_delay_seconds=0.2) as sandbox:
            settings = settings.model_copy(update={"tiktok_api_base_url": sandbox.base_url})
            accounts = MongoAccountStore(mongo_db, TokenCipher(settings.token_encryption_key))
            account_id, open_id = await _connect(sandbox, accounts, "creator")
            yield Env(
                settings=settings,
                sandbox=sandbox,
                videos=videos,
                uploads=MongoUploadStore(mongo_db),
                publisher=kafka_publisher,
                account_id=account_id,
                open_id=open_id,
                tmp=tmp_path,
                accounts=accounts,
            )
    finally:
        await videos.stop()


async def _connect(sandbox: SandboxHandle, accounts: MongoAccountStore, name: str) -> tuple[str, str]:
    """A sandbox creator whose tokens Reelay stores: (account_id, open_id)."""
    user = sandbox.add_user(f"{name}-{uuid.uuid4().hex[:6]}")
    grant = sandbox.issue_tokens(user.open_id)
    account_id = f"acct-{uuid.uuid4().hex[:10]}"
    await accounts.upsert_tokens(account_id, TokenGrant.model_validate(grant))
    return account_id, user.open_id


@dataclass
class Running:
    task: asyncio.Task[None]
    stop: asyncio.Event
    ops_port: list[int]


@asynccontextmanager
async def uploader(settings: UploaderSettings) -> AsyncIterator[Running]:
    """The service, started as `python -m reelay_uploader` would run it, stopped gracefully after."""
    stop = asyncio.Event()
    ports: list[int] = []
    task = asyncio.create_task(run(settings, stop, on_ops_bound=ports.append))
    try:
        yield Running(task, stop, ports)
    finally:
        stop.set()
        if not task.done():
            await asyncio.wait_for(task, timeout=60)


# -- the specification -------------------------------------------------------------------------


class TestUploaderService:
    async def test_uploads_a_video_end_to_end_and_announces_it(self, env: Env) -> None:
        url, path = env.video(20 * MB)
        cmd = env.request(url)
        async with uploader(env.settings) as svc:
            await env.send(cmd)
            record = await env.wait_state(cmd.request_id, UploadState.UPLOADED)

            # Ready while running: Mongo and Kafka both answer.
            async def ready() -> bool:
                if not svc.ops_port:
                    return False
                async with httpx.AsyncClient() as http:
                    response = await http.get(f"http://127.0.0.1:{svc.ops_port[0]}/readyz")
                return response.status_code == 200

            await eventually(ready, timeout=30, what="/readyz to answer 200")

        [publish] = env.publishes()
        assert publish.publish_id == record.publish_id
        assert publish.complete
        assert publish.sha256 == sha256_of(path)
        assert record.uploaded_bytes == 20 * MB

        records = await read_topic(
            env.settings.kafka_bootstrap_servers,
            env.settings.topic_publish_events,
            until=lambda rs: any(cmd.request_id.encode() in r.value for r in rs),
        )
        events = [VideoUploaded.model_validate_json(r.value) for r in records]
        assert [(e.request_id, e.publish_id, e.video_size) for e in events] == [
            (cmd.request_id, record.publish_id, 20 * MB)
        ]

    async def test_a_killed_uploader_resumes_on_restart_with_exactly_one_publish(self, env: Env) -> None:
        url, path = env.video(70 * MB, seed=7)  # 7 chunks of 10,000,000 bytes
        cmd = env.request(url)
        env.videos.delay_per_mb = 0.05  # slow enough to be caught mid-upload

        async def some_chunks_confirmed() -> UploadRecord | None:
            record = await env.record(cmd.request_id)
            return record if record is not None and record.uploaded_bytes >= 10 * MB else None

        async with uploader(env.settings) as first:
            await env.send(cmd)
            await eventually(some_chunks_confirmed, timeout=60, what="the first chunk to be confirmed")
            first.task.cancel()  # killed: no grace, nothing committed
            with pytest.raises(asyncio.CancelledError):
                await first.task

        killed = await env.record(cmd.request_id)
        assert killed is not None
        assert killed.state is UploadState.UPLOADING
        [publish] = env.publishes()
        assert not publish.complete
        received_before = publish.uploaded_bytes

        env.videos.delay_per_mb = 0.0
        async with uploader(env.settings):
            record = await env.wait_state(cmd.request_id, UploadState.UPLOADED, timeout=120)

        [publish] = env.publishes()  # still exactly one publish: resumed, never initialised again
        assert publish.publish_id == record.publish_id == killed.publish_id
        assert publish.complete
        assert publish.sha256 == sha256_of(path)
        assert received_before < 70 * MB
        accepted = [c for c in publish.chunks if c.status_code in (201, 206)]
        assert len(accepted) == 7  # each chunk landed once
        assert record.init_attempts == 1

    async def test_an_account_waiting_for_its_init_quota_holds_up_no_other_account_on_its_partition(
        self, env: Env
    ) -> None:
        # One partition for both accounts. TikTok allows 6 inits a minute per token (API reference
        # §7): the busy account's 7th upload waits for its window while the other's goes through.
        other = await env.connect_account("other")
        url, _ = env.video(1 * MB)
        busy = [env.request(url) for _ in range(7)]
        theirs = env.request(url, account_id=other)
        async with uploader(env.settings):
            for cmd in busy:
                await env.send(cmd)
            await env.send(theirs)
            await env.wait_state(theirs.request_id, UploadState.UPLOADED)
            seventh = await env.record(busy[-1].request_id)
            inits_so_far = len(env.publishes())
        # The other account's upload, behind all seven on the partition, finished while the busy
        # account's 7th had not reached TikTok yet (its window still closed): one at a time, it would
        # have waited for all seven.
        assert seventh is None or seventh.publish_id is None
        assert inits_so_far <= 6

    async def test_a_source_refusing_connections_fails_at_the_retry_deadline_and_the_next_goes_on(
        self, env: Env
    ) -> None:
        # Nothing listens on port 1: every attempt is refused. The account's next upload, behind it
        # in order, would wait forever if retries had no end.
        refused = env.request("http://127.0.0.1:1/gone.mp4")
        url, _ = env.video(2 * MB)
        after = env.request(url)
        settings = env.settings.model_copy(update={"retry_deadline_seconds": 1.0})
        async with uploader(settings):
            await env.send(refused)
            await env.send(after)
            failed = await env.wait_state(refused.request_id, UploadState.FAILED)
            await env.wait_state(after.request_id, UploadState.UPLOADED)
        detail = failed.history[-1].detail
        assert (detail["code"], detail["last_error_code"]) == ("retries_exhausted", "source_unavailable")
        assert failed.retrying_since is not None
        assert len(env.publishes()) == 1  # only the second upload reached TikTok

    async def test_dead_letters_a_malformed_record_and_keeps_going(self, env: Env) -> None:
        # An upload that ingest accepted, whose record on Kafka turns out malformed.
        doomed = env.request(
            "https://videos.example/never.mp4", request_id=f"req-doomed-{uuid.uuid4().hex[:8]}"
        )
        await env.uploads.create(doomed, source="ingest")
        broken = json.loads(doomed.model_dump_json())
        broken["mode"] = "sideways"
        topic = env.settings.topic_upload_requested
        await env.publisher.publish_raw(topic, b"{this is not json", key=env.account_id.encode())
        await env.publisher.publish_raw(topic, json.dumps(broken).encode(), key=env.account_id.encode())
        url, path = env.video(6 * MB, seed=3)
        good = env.request(url)
        await env.send(good)

        async with uploader(env.settings):
            record = await env.wait_state(good.request_id, UploadState.UPLOADED)
            failed = await env.wait_state(doomed.request_id, UploadState.FAILED, timeout=30)

        letters = [
            DeadLetter.model_validate_json(r.value)
            for r in await read_topic(env.settings.kafka_bootstrap_servers, dlq_topic(topic), until=2)
        ]
        assert [(dl.offset, dl.request_id) for dl in letters] == [(0, None), (1, doomed.request_id)]
        assert all(dl.topic == topic for dl in letters)
        assert failed.history[-1].detail["dead_letter_topic"] == dlq_topic(topic)
        assert failed.history[-1].detail["offset"] == 1
        [publish] = env.publishes()
        assert publish.publish_id == record.publish_id
        assert publish.sha256 == sha256_of(path)


# -- /metrics after one upload (the registry is process-wide, so deltas are compared) -----------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class TestUploaderMetrics:
    async def test_one_upload_moves_each_family_by_what_it_did(self, env: Env) -> None:
        url, _ = env.video(12 * MB)
        cmd = env.request(url)
        topic = env.settings.topic_upload_requested
        async with uploader(env.settings) as svc:

            async def bound() -> bool:
                return bool(svc.ops_port)

            await eventually(bound, what="the ops server bound")
            before = await scrape(svc.ops_port[0])
            await env.send(cmd)
            await env.wait_state(cmd.request_id, UploadState.UPLOADED)

            async def committed() -> bool:
                now = await scrape(svc.ops_port[0])
                return value(now, "reelay_kafka_records_total", topic=topic, outcome="handled") > value(
                    before, "reelay_kafka_records_total", topic=topic, outcome="handled"
                )

            await eventually(committed, timeout=30, what="the record counted as handled")
            after = await scrape(svc.ops_port[0])

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta("reelay_tiktok_uploaded_bytes_total") == 12 * MB
        assert delta("reelay_tiktok_requests_total", endpoint=PATH_VIDEO_INIT, outcome="ok") == 1
        assert delta("reelay_tiktok_request_duration_seconds_count", endpoint=PATH_VIDEO_INIT) == 1
        assert delta("reelay_tiktok_requests_total", endpoint="video_upload", outcome="ok") >= 1
        for state in ("uploading", "uploaded"):
            assert delta("reelay_upload_state_transitions_total", state=state, source="uploader") == 1, state
        assert delta("reelay_kafka_records_total", topic=topic, outcome="handled") == 1
        assert delta("reelay_kafka_records_total", topic=topic, outcome="dead_lettered") == 0
        lags = [
            v
            for (name, labels), v in after.items()
            if name == "reelay_kafka_consumer_lag_records" and ("topic", topic) in labels
        ]
        assert lags
        assert all(v == 0 for v in lags)


class TestBlobSources:
    @pytest.mark.parametrize("kind", ["local", "s3", "gridfs"])
    async def test_a_file_streamed_into_the_configured_store_is_sent_whole_then_deleted(
        self, env: Env, kind: str, request: pytest.FixtureRequest, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        overrides: dict[str, Any] = {"blob_store": kind, "blob_dir": env.tmp / "blobs"}
        if kind == "s3":
            s3: dict[str, str] = request.getfixturevalue("s3_settings")
            overrides |= {
                "s3_endpoint_url": s3["endpoint_url"],
                "s3_bucket": s3["bucket"],
                "s3_prefix": f"it-uploader/{uuid.uuid4().hex[:10]}/",
                "s3_access_key_id": s3["access_key_id"] or None,
                "s3_secret_access_key": s3["secret_access_key"] or None,
            }
        settings = UploaderSettings.model_validate({**env.settings.model_dump(), **overrides})
        _, path = env.video(12 * MB, seed=7)
        async with AsyncExitStack() as stack:
            blobs = await open_blob_store(settings, stack, db=mongo_db)
            source = await blobs.save(
                aiter_bytes(path.read_bytes()), filename="clip.mp4", content_type="video/mp4", max_bytes=10**9
            )
            cmd = UploadRequested.model_validate(
                {**env.request("https://unused.example/x.mp4").model_dump(), "source": source.model_dump()}
            )
            async with uploader(settings):
                await env.send(cmd)
                record = await env.wait_state(cmd.request_id, UploadState.UPLOADED)
                await eventually(
                    lambda: _gone(blobs.stat(source.blob_id)), timeout=30, what="the blob to be deleted"
                )
        [publish] = env.publishes()
        assert publish.publish_id == record.publish_id
        assert publish.sha256 == sha256_of(path) == source.sha256


async def _gone(stat: Awaitable[object | None]) -> bool:
    return await stat is None
