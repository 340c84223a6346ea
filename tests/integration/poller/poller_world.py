"""A world for the status-poller's integration tests: real Kafka and Mongo (unique topics and
database), the TikTok sandbox in-process, and helpers that make real publishes on it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.adapters.mongo.accounts import MongoAccountStore
from reelay_common.adapters.mongo.uploads import MongoUploadStore
from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.adapters.tiktok.upload import upload_chunks
from reelay_common.domain.chunks import plan_chunks
from reelay_common.domain.messages import (
    PostInfo,
    PublishStatusChanged,
    UploadRequested,
    UrlSource,
    VideoUploaded,
)
from reelay_common.domain.records import Change, UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.domain.tiktok import TokenGrant
from reelay_status_poller.main import run
from reelay_status_poller.settings import PollerSettings
from reelay_testing.kafka import read_topic
from reelay_testing.readers import BytesVideoReader
from reelay_testing.waiting import eventually
from tiktok_sandbox.media import iter_sample_mp4
from tiktok_sandbox.testing import SandboxHandle

# Consumers join and notice each other quickly in tests.
FAST_KAFKA = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "metadata_max_age_ms": 5000}
VIDEO_BYTES = 700_000


@dataclass
class World:
    kafka: str
    mongodb_uri: str
    db: AsyncDatabase[dict[str, Any]]
    sandbox: SandboxHandle
    events_topic: str
    status_topic: str
    publisher: KafkaPublisher
    group: str = field(default_factory=lambda: f"poller-test-{uuid.uuid4().hex[:8]}")
    _tokens: dict[str, str] = field(default_factory=dict)  # account -> sandbox access token

    @property
    def uploads(self) -> MongoUploadStore:
        return MongoUploadStore(self.db)

    def settings(self, **overrides: Any) -> PollerSettings:
        """Settings for an in-process poller on this world (fast schedule, ops on a free port)."""
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": self.kafka,
            "mongodb_uri": SecretStr(self.mongodb_uri),
            "mongodb_database": self.db.name,
            "topic_publish_events": self.events_topic,
            "topic_publish_status": self.status_topic,
            "topic_partitions": 2,
            "tiktok_api_base_url": self.sandbox.base_url,
            "consumer_group": self.group,
            "min_interval_seconds": 0.2,
            "max_interval_seconds": 1.0,
            "backoff_factor": 1.5,
            "lease_seconds": 10.0,
            "idle_sleep_seconds": 0.05,
            "ops_port": 0,
            "shutdown_grace_seconds": 5.0,
        }
        values.update(overrides)
        return PollerSettings.model_validate(values)

    def env(self, **overrides: str) -> dict[str, str]:
        """The same settings as environment variables, for a poller in a child process."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            "MONGODB_URI": self.mongodb_uri,
            "MONGODB_DATABASE": self.db.name,
            "REELAY_TOPIC_PUBLISH_EVENTS": self.events_topic,
            "REELAY_TOPIC_PUBLISH_STATUS": self.status_topic,
            "REELAY_TOPIC_PARTITIONS": "2",
            "TIKTOK_API_BASE_URL": self.sandbox.base_url,
            "REELAY_LOG_FORMAT": "json",
            "POLLER_CONSUMER_GROUP": self.group,
            "POLLER_MIN_INTERVAL_SECONDS": "0.2",
            "POLLER_MAX_INTERVAL_SECONDS": "1.0",
            "POLLER_IDLE_SLEEP_SECONDS": "0.05",
            "POLLER_OPS_PORT": "0",
        }
        env.update(overrides)
        return env

    @asynccontextmanager
    async def running_poller(self, **overrides: Any) -> AsyncIterator[None]:
        """An in-process poller (`main.run`), connected and serving when entered, stopped
        gracefully on exit."""
        stop = asyncio.Event()
        ports: list[int] = []
        task = asyncio.create_task(
            run(self.settings(**overrides), stop, on_ops_bound=ports.append, consumer_overrides=FAST_KAFKA)
        )

        async def started() -> bool:
            if task.done():
                task.result()  # raise the start-up failure, if any
                raise AssertionError("the poller stopped during start-up")
            return bool(ports)

        try:
            await eventually(started, timeout=60, what="the poller to start")
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    async def connected_account(self, name: str) -> str:
        """A sandbox creator whose tokens Reelay holds (encrypted) under account `name`."""
        user = self.sandbox.add_user(f"user-{name}")
        grant = self.sandbox.issue_tokens(user.open_id)
        accounts = MongoAccountStore(self.db, TokenCipher(self.settings().token_encryption_key))
        await accounts.upsert_tokens(
            name,
            TokenGrant.model_validate(grant),
        )
        self._tokens[name] = grant["access_token"]
        return name

    async def uploaded_video(self, account_id: str, *, request_id: str | None = None) -> UploadRecord:
        """What the uploader leaves behind: a real publish on the sandbox with every byte PUT, and
        the `uploads` document in `uploaded` with its publish_id."""
        request_id = request_id or f"req-{uuid.uuid4().hex[:10]}"
        post_info = PostInfo(privacy_level="SELF_ONLY", title="poller integration test")
        cmd = UploadRequested(
            request_id=request_id,
            account_id=account_id,
            mode="direct",
            source=UrlSource(url="https://videos.example.com/clip.mp4"),
            post_info=post_info,
        )
        data = b"".join(iter_sample_mp4(VIDEO_BYTES))
        plan = plan_chunks(len(data))
        async with httpx.AsyncClient(timeout=30) as http:
            client = TikTokClient(
                http,
                base_url=self.sandbox.base_url,
                client_key=self.sandbox.settings.client_key,
                client_secret=self.sandbox.settings.client_secret,
            )
            init = await client.init_direct_post(self._tokens[account_id], post_info, plan)
            assert init.upload_url is not None
            uploads = self.uploads
            # Holding the outbox as the uploader would while sending it (a running poller's relay
            # would otherwise send it), then settling it below as sent.
            await uploads.create(cmd, source="ingest", lease_seconds=3600)
            await uploads.transition(
                request_id,
                Change(UploadState.UPLOADING, source="uploader", set_fields={"publish_id": init.publish_id}),
            )
            await upload_chunks(client, init.upload_url, plan, BytesVideoReader(data))
        await uploads.transition(request_id, Change(UploadState.UPLOADED, source="uploader"))
        # The uploader's relay would have sent what it owed; this test announces nothing itself.
        owed = await uploads.get(request_id)
        assert owed is not None
        record = await uploads.settle_outbox(request_id, owed.outbox, next_try_at=datetime.now(UTC))
        assert record is not None
        return record

    async def announce_uploaded(self, record: UploadRecord) -> None:
        """Put the uploader's VideoUploaded on the events topic."""
        assert record.publish_id is not None
        event = VideoUploaded(
            request_id=record.request_id,
            account_id=record.account_id,
            publish_id=record.publish_id,
            mode=record.mode,
            video_size=VIDEO_BYTES,
        )
        await self.publisher.publish(self.events_topic, event, key=record.account_id)

    async def state_of(self, request_id: str) -> UploadState | None:
        record = await self.uploads.get(request_id)
        return record.state if record is not None else None

    async def wait_for_state(self, request_id: str, state: UploadState, *, timeout: float = 40.0) -> None:
        async def reached() -> bool:
            return await self.state_of(request_id) is state

        await eventually(reached, timeout=timeout, what=f"{request_id} in {state.value}")

    async def status_changes(self, count: int, *, timeout: float = 30.0) -> list[PublishStatusChanged]:
        """The first `count` records on the status topic, and any that follow at once (duplicates too)."""
        records = await read_topic(self.kafka, self.status_topic, until=count, timeout=timeout, linger=0.5)
        return [PublishStatusChanged.model_validate_json(r.value) for r in records]

    def status_fetch_calls(self) -> int:
        return int(self.sandbox.state.stats.calls["status_fetch"])
