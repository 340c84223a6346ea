"""A harness for the ingest app over the fakes of reelay_testing (no I/O)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from pydantic import BaseModel
from reelay_common.domain.errors import ReelayError, RetryableError
from reelay_common.domain.messages import (
    PrivacyLevel,
    PublishStatusChanged,
    TikTokWebhookReceived,
    UploadRequested,
)
from reelay_common.domain.tiktok import CreatorInfo
from reelay_common.outbox import OutboxRelay
from reelay_ingest.app import create_app
from reelay_ingest.deps import IngestDeps, Topics
from reelay_ingest.main import policy_of
from reelay_ingest.settings import IngestSettings
from reelay_ingest.webhooks import sign
from reelay_testing.blobs import FakeBlobStore
from reelay_testing.publisher import FakePublisher
from reelay_testing.stores import FakeAccountStore, FakeUploadStore
from reelay_testing.tenants import FakeTenantStore

from tests.recording import recording

API_KEY = "unit-test-key"
ACCOUNT = "acme-main"
CLIENT_SECRET = "unit-client-secret"
PUBLIC_URL = "https://151.101.1.1/launch.mp4"  # an IP literal: the SSRF guard resolves it without I/O
TOPICS = Topics(
    upload_requested="t.upload.requested",
    publish_events="t.publish.events",
    publish_status="t.publish.status",
)
PUBLIC_LEVELS: list[PrivacyLevel] = ["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]


def mp4_bytes(size: int) -> bytes:
    """`size` bytes that open like an MP4 (an ftyp box), enough for ingest's magic-number check."""
    head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    body = bytes(i % 251 for i in range(max(0, size - len(head))))
    return (head + body)[:size]


class FakeTikTok:
    """ports.TikTokApi for ingest: only creator_info is called; offered levels or an error per account."""

    def __init__(self) -> None:
        self.levels: dict[str, list[PrivacyLevel]] = {}
        self.errors: dict[str, ReelayError] = {}
        self.calls: list[str] = []
        self.cancels: list[str] = []
        self.cancel_errors: dict[str, ReelayError] = {}

    async def creator_info(self, account_id: str) -> CreatorInfo:
        self.calls.append(account_id)
        if account_id in self.errors:
            raise self.errors[account_id]
        return CreatorInfo(
            creator_nickname="Acme", privacy_level_options=self.levels.get(account_id, PUBLIC_LEVELS)
        )

    async def init_upload(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ingest never initialises uploads")

    async def fetch_status(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ingest never fetches status")

    async def cancel_publish(self, account_id: str, publish_id: str) -> None:
        self.cancels.append(publish_id)
        if publish_id in self.cancel_errors:
            raise self.cancel_errors[publish_id]

    async def upload_chunks(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("ingest never uploads chunks")


class CountingBlobStore(FakeBlobStore):
    """An FakeBlobStore that counts save calls (to show a refusal came before any byte was stored)."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    async def save(self, chunks: Any, **kwargs: Any) -> Any:
        self.saves += 1
        return await super().save(chunks, **kwargs)


class TopicFailingPublisher(FakePublisher):
    """A FakePublisher whose publishes to `failing_topics` raise what KafkaPublisher raises
    when Kafka does not acknowledge (RetryableError)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing_topics: set[str] = set()

    async def publish(self, topic: str, message: BaseModel, *, key: str) -> None:
        if topic in self.failing_topics:
            raise RetryableError(f"no ack on {topic}")
        await super().publish(topic, message, key=key)


@dataclass
class IngestApp:
    """The app under test, its fakes, and an httpx client speaking to it in-process."""

    client: httpx.AsyncClient
    uploads: FakeUploadStore
    accounts: FakeAccountStore
    publisher: TopicFailingPublisher
    blobs: CountingBlobStore
    tiktok: FakeTikTok
    settings: IngestSettings
    ready: dict[str, bool] = field(default_factory=dict)
    outbox: OutboxRelay | None = None
    tenants: FakeTenantStore = field(default_factory=FakeTenantStore)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    def requested(self) -> list[tuple[UploadRequested, str]]:
        """(message, key) of every UploadRequested published."""
        return [
            (m, k)
            for t, m, k in self.publisher.sent
            if t == TOPICS.upload_requested and isinstance(m, UploadRequested)
        ]

    def announced(self) -> list[PublishStatusChanged]:
        """Every PublishStatusChanged published."""
        return self.publisher.messages(TOPICS.publish_status, PublishStatusChanged)

    async def relay_round(self) -> None:
        """One round of the outbox relay loop, with every backoff run out."""
        for record in self.uploads.records.values():
            if record.outbox:
                await self.uploads.settle_outbox(record.request_id, [], next_try_at=datetime.now(UTC))
        while (due := await self.uploads.claim_due_outbox(datetime.now(UTC), 30)) is not None:
            assert self.outbox is not None
            await self.outbox.drain(due.request_id, leased=due)

    def webhooks(self) -> list[tuple[TikTokWebhookReceived, str]]:
        return [
            (m, k)
            for t, m, k in self.publisher.sent
            if t == TOPICS.publish_events and isinstance(m, TikTokWebhookReceived)
        ]

    def assert_nothing_changed(self) -> None:
        """Bad input changes nothing: nothing stored, nothing published."""
        assert self.uploads.records == {}
        assert self.publisher.sent == []
        assert self.blobs.blobs == {}

    async def post_json(self, body: Any, **headers: str) -> httpx.Response:
        return await self.client.post("/v1/uploads", json=body, headers={**self.auth, **headers})

    async def post_file(
        self,
        data: bytes,
        *,
        fields: dict[str, str] | None = None,
        filename: str = "clip.mp4",
        content_type: str | None = "video/mp4",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        file: tuple[str, io.BytesIO] | tuple[str, io.BytesIO, str] = (
            (filename, io.BytesIO(data), content_type)
            if content_type is not None
            else (filename, io.BytesIO(data))
        )
        return await self.client.post(
            "/v1/uploads",
            data=fields if fields is not None else inbox_fields(),
            files={"file": file},
            headers={**self.auth, **(headers or {})},
        )

    async def post_webhook(
        self,
        payload: dict[str, Any] | bytes,
        *,
        signature: str | None = "auto",
        at: int | None = None,
        secret: str = CLIENT_SECRET,
    ) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if signature == "auto":
            headers["TikTok-Signature"] = sign(secret, at if at is not None else int(time.time()), body)
        elif signature is not None:
            headers["TikTok-Signature"] = signature
        return await self.client.post("/v1/webhooks/tiktok", content=body, headers=headers)


def inbox_fields(**extra: str) -> dict[str, str]:
    return {"account_id": ACCOUNT, "mode": "inbox", **extra}


def direct_fields(privacy: str = "SELF_ONLY", **extra: str) -> dict[str, str]:
    return {
        "account_id": ACCOUNT,
        "mode": "direct",
        "post_info": json.dumps({"privacy_level": privacy}),
        **extra,
    }


def url_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account_id": ACCOUNT,
        "mode": "direct",
        "video_url": PUBLIC_URL,
        "post_info": {"privacy_level": "SELF_ONLY", "title": "Launch #acme"},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def make_settings(**overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "api_keys": API_KEY,
        "tiktok_client_secret": CLIENT_SECRET,
        "public_base_url": "https://reelay.example.com",
    }
    values.update(overrides)
    return IngestSettings(**values)


@asynccontextmanager
async def running(
    settings: IngestSettings | None = None, *, raise_app_exceptions: bool = True
) -> AsyncIterator[IngestApp]:
    """Start the app over fresh fakes (one connected account, ACCOUNT) and yield its harness.
    With `raise_app_exceptions=False` the client sees a bug's 500 answer instead of the bug."""
    settings = settings or make_settings()
    uploads, accounts = FakeUploadStore(), FakeAccountStore()
    publisher, blobs, tiktok = TopicFailingPublisher(), CountingBlobStore(), FakeTikTok()
    tenants = FakeTenantStore()
    accounts.add_connected(ACCOUNT)
    ready = {"mongo": True, "kafka": True}

    def check(name: str) -> Any:
        async def probe() -> bool:
            return ready[name]

        return probe

    rec = recording(
        uploads, publisher, status_topic=TOPICS.publish_status, requested_topic=TOPICS.upload_requested
    )
    deps = IngestDeps(
        uploads=uploads,
        accounts=accounts,
        publisher=publisher,
        recorder=rec.recorder,
        outbox=rec.outbox,
        blobs=blobs,
        tiktok=tiktok,
        topics=TOPICS,
        policy=policy_of(settings),
        tenants=tenants,
    )
    app = create_app(settings, deps, ready_checks={name: check(name) for name in ready})
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test") as client:
            yield IngestApp(
                client, uploads, accounts, publisher, blobs, tiktok, settings, ready, rec.outbox, tenants
            )
