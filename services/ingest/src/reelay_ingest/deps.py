"""What the ingest handlers need, as ports: built once by `main`, or by a test with fakes."""

from __future__ import annotations

from dataclasses import dataclass, field

from reelay_common.domain.messages import MAX_VIDEO_BYTES
from reelay_common.ports import (
    AccountStore,
    BlobStore,
    CreatorInfoCache,
    Outbox,
    Publisher,
    Recorder,
    TenantStore,
    TikTokApi,
    UploadStore,
)

from reelay_ingest.lifecycle import Lifecycle


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
    accept_wait_seconds: float = 0.5
    schedule_horizon_seconds: float = 30 * 24 * 3600.0
    enqueue_timeout_seconds: float = 15.0
    webhook_tolerance_seconds: float = 300.0


@dataclass(frozen=True)
class IngestDeps:
    """The ports one ingest process works with, and the policy its settings set."""

    uploads: UploadStore
    accounts: AccountStore
    publisher: Publisher
    recorder: Recorder
    outbox: Outbox
    blobs: BlobStore
    tiktok: TikTokApi
    topics: Topics
    policy: Policy = field(default_factory=Policy)
    # creator_info kept a short while across replicas; None asks TikTok on every direct post.
    creator_infos: CreatorInfoCache | None = None
    # Connecting and disconnecting accounts (OAuth, authorization.removed); None: not served.
    lifecycle: Lifecycle | None = None
    # Tenants' API keys (reelay-admin keys create); None lets in INGEST_API_KEYS only.
    tenants: TenantStore | None = None
