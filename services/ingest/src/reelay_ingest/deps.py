"""What the ingest handlers need, as ports: built once by `main`, or by a test with fakes."""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Protocol

from reelay_common.domain.messages import MAX_VIDEO_BYTES, BlobSource
from reelay_common.ports import AccountStore, Publisher, Recorder, TikTokApi, UploadStore


class BlobStore(Protocol):
    """Where streamed video files are kept until the uploader sends them (GridFS in production)."""

    async def save(
        self, chunks: AsyncIterable[bytes], *, filename: str | None, content_type: str, max_bytes: int
    ) -> BlobSource:
        """Store the bytes; InvalidInputError(code="too_large") past `max_bytes`, nothing kept."""
        ...

    async def delete(self, blob_id: str) -> None: ...


@dataclass(frozen=True)
class Topics:
    """The Kafka topics ingest produces to (configurable, so tests can use their own)."""

    upload_requested: str
    publish_events: str
    publish_status: str


@dataclass(frozen=True)
class Policy:
    """The decisions settings make for the handlers."""

    allow_private_urls: bool = False
    check_creator_info: bool = True
    max_upload_bytes: int = MAX_VIDEO_BYTES
    enqueue_timeout_seconds: float = 15.0
    webhook_tolerance_seconds: float = 300.0


@dataclass(frozen=True)
class IngestDeps:
    """The ports one ingest process works with, and the policy its settings set."""

    uploads: UploadStore
    accounts: AccountStore
    publisher: Publisher
    recorder: Recorder
    blobs: BlobStore
    tiktok: TikTokApi
    topics: Topics
    policy: Policy = field(default_factory=Policy)
