"""What the ingest handlers need, as ports: built once by the lifespan, or by a test with fakes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from reelay_common.domain.messages import MAX_VIDEO_BYTES
from reelay_common.ports import AccountStore, BlobStore, Publisher, Recorder, TikTokApi, UploadStore

from reelay_ingest.settings import IngestSettings

ReadyCheck = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Topics:
    """The Kafka topics ingest produces to (configurable, so tests can use their own)."""

    upload_requested: str
    publish_events: str
    publish_status: str

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> Topics:
        """The topic names configured in `settings`."""
        return cls(
            upload_requested=settings.topic_upload_requested,
            publish_events=settings.topic_publish_events,
            publish_status=settings.topic_publish_status,
        )


@dataclass(frozen=True)
class Policy:
    """The decisions settings make for the handlers."""

    allow_private_urls: bool = False
    check_creator_info: bool = True
    max_upload_bytes: int = MAX_VIDEO_BYTES
    enqueue_timeout_seconds: float = 15.0
    webhook_tolerance_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> Policy:
        """The policy `settings` describe."""
        return cls(
            allow_private_urls=settings.allow_private_urls,
            check_creator_info=settings.check_creator_info,
            max_upload_bytes=settings.max_upload_bytes,
            enqueue_timeout_seconds=settings.enqueue_timeout_seconds,
            webhook_tolerance_seconds=settings.webhook_tolerance_seconds,
        )


@dataclass(frozen=True)
class IngestDeps:
    """The ports one ingest process works with."""

    uploads: UploadStore
    accounts: AccountStore
    publisher: Publisher
    recorder: Recorder
    blobs: BlobStore
    tiktok: TikTokApi
    topics: Topics
    # name -> check; /readyz answers 200 only while every one returns True.
    ready_checks: Mapping[str, ReadyCheck] = field(default_factory=dict)
