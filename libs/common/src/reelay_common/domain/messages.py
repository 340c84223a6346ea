"""Every message Reelay puts on Kafka: frozen pydantic models, the public contract.

Rules (docs/architecture.md, "Public contract"): messages are facts named in the past tense, keyed by
the account's stored key (`account_id` scoped to its `tenant_id`: docs/architecture.md, "Tenants"),
and only ever gain optional fields. Readers ignore unknown fields. A breaking change
is a new message on a new topic. `make schemas` exports their JSON Schema to `schemas/`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from reelay_common.domain.states import UploadState
from reelay_common.domain.tenancy import DEFAULT_TENANT, TENANT_ID_PATTERN

TOPIC_UPLOAD_REQUESTED = "reelay.upload.requested"


TOPIC_PUBLISH_EVENTS = "reelay.publish.events"


TOPIC_PUBLISH_STATUS = "reelay.publish.status"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return f"{topic}.dlq"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


# request ids travel in URLs, Kafka keys and Mongo ids: keep them boring.
RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]


AccountId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]


# The tenant (team) a message's ids belong to (docs/architecture.md, "Tenants"): an additive field,
# "default" when absent, so a deployment with one tenant and every producer written before tenants
# keep working. `request_id` and `account_id` stay the client's own ids; Reelay scopes them.
TenantId = Annotated[
    str,
    Field(
        pattern=TENANT_ID_PATTERN,
        description='The tenant the request_id and account_id belong to (absent: "default").',
    ),
]


# Where the state changes of an upload are POSTed (signed). https, or http only where the deployment
# allows private URLs (development); its host is checked to be public when given and at each delivery.
CallbackUrl = Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[^/?#\s]+")]


PrivacyLevel = Literal["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY"]


UploadMode = Literal["direct", "inbox"]


# Which service made a state change: `source` of a history entry and of PublishStatusChanged. Not to
# be confused with VideoSource (where the bytes come from), which a ports.VideoReader reads.
# "scheduler": the outbox relay, queueing a scheduled upload when its publish_at comes.
StateSource = Literal["ingest", "uploader", "poller", "webhook", "scheduler"]


# TikTok: "max file size 4 GB". Like "MB" in the chunk rules, "GB" has two readings (10^9 and 2^30);
# we take the one safe under both, so a file TikTok may refuse is refused here first, clearly.
MAX_VIDEO_BYTES = 4_000_000_000


ALLOWED_CONTENT_TYPES = ("video/mp4", "video/quicktime", "video/webm")


class Message(BaseModel):
    """Base of every Kafka message: immutable, tolerant of fields it does not know."""

    model_config = ConfigDict(frozen=True, extra="ignore")


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit TikTok counts captions in."""
    return len(text.encode("utf-16-le")) // 2


class PostInfo(Message):
    """TikTok `post_info` of a Direct Post (API reference §5.1)."""

    privacy_level: PrivacyLevel
    title: str | None = None
    disable_duet: bool = False
    disable_stitch: bool = False
    disable_comment: bool = False
    video_cover_timestamp_ms: int | None = Field(default=None, ge=0, le=2**31 - 1)
    brand_content_toggle: bool = False
    brand_organic_toggle: bool = False
    is_aigc: bool = False

    @field_validator("title")
    @classmethod
    def _title_fits(cls, v: str | None) -> str | None:
        if v is not None and utf16_len(v) > 2200:
            raise ValueError("title is longer than 2200 UTF-16 code units")
        return v

    @model_validator(mode="after")
    def _branded_not_private(self) -> PostInfo:
        if self.brand_content_toggle and self.privacy_level == "SELF_ONLY":
            raise ValueError("branded content cannot be posted with privacy_level SELF_ONLY")
        return self


class UrlSource(Message):
    """Reelay downloads the video from `url` and pushes it to TikTok in chunks (FILE_UPLOAD)."""

    kind: Literal["url"] = "url"
    url: Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[^/?#\s]+")]


class PullFromUrlSource(Message):
    """TikTok downloads the video itself (PULL_FROM_URL): the URL must be https, on a domain
    verified for the app, with no redirects."""

    kind: Literal["pull_from_url"] = "pull_from_url"
    url: Annotated[str, Field(min_length=9, max_length=2048, pattern=r"^https://[^/?#\s]+")]


BlobStoreKind = Literal["local", "s3", "gridfs"]


class BlobSource(Message):
    """A file streamed into Reelay's ingest API, kept in the configured blob store under `blob_id`.

    `store` names that store (absent in messages written before there was a choice: GridFS), so
    an uploader configured for another store refuses the message instead of reporting it missing.
    """

    kind: Literal["blob"] = "blob"
    blob_id: str
    size: int = Field(gt=0, le=MAX_VIDEO_BYTES)
    content_type: Literal["video/mp4", "video/quicktime", "video/webm"] = "video/mp4"
    filename: str | None = None
    store: BlobStoreKind | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


# Where a video's bytes come from: `UploadRequested.source` (a URL, TikTok's pull, or a stored blob).
VideoSource = Annotated[UrlSource | PullFromUrlSource | BlobSource, Field(discriminator="kind")]


class UploadRequested(Message):
    """Command-as-fact on `reelay.upload.requested`: publish this video for this account.

    Produced by the ingest API or directly by upstream services (key: the account's stored key,
    `tenancy.scoped(tenant_id, account_id)`). A record whose account is not one of `tenant_id`'s is
    dead-lettered (`account_not_in_tenant`) and posts nothing.
    """

    schema_version: Literal[1] = 1
    request_id: RequestId
    account_id: AccountId
    tenant_id: TenantId = DEFAULT_TENANT
    mode: UploadMode
    source: VideoSource
    post_info: PostInfo | None = None
    requested_at: datetime = Field(default_factory=utcnow)
    publish_at: AwareDatetime | None = Field(
        None,
        description="When to start the upload (timezone-aware). Until then it is held in state "
        "`scheduled`; a time already past starts it at once.",
    )
    callback_url: CallbackUrl | None = Field(
        None, description="Every state change of the upload is POSTed here, signed (Reelay-Signature)."
    )

    @model_validator(mode="after")
    def _post_info_matches_mode(self) -> UploadRequested:
        if self.mode == "direct" and self.post_info is None:
            raise ValueError("post_info (with privacy_level) is required when mode is 'direct'")
        if self.mode == "inbox" and self.post_info is not None:
            raise ValueError("post_info is only for mode 'direct'; inbox uploads take none")
        return self


class VideoUploaded(Message):
    """On `reelay.publish.events`: TikTok accepted every byte (or the pull) of a publish."""

    type: Literal["video_uploaded"] = "video_uploaded"
    request_id: RequestId
    account_id: AccountId
    tenant_id: TenantId = DEFAULT_TENANT
    publish_id: str = Field(min_length=1, max_length=64)
    mode: UploadMode
    video_size: int | None = None
    chunk_count: int | None = None
    at: datetime = Field(default_factory=utcnow)


class TikTokWebhookReceived(Message):
    """On `reelay.publish.events`: a verified TikTok webhook, as received (content parsed)."""

    type: Literal["tiktok_webhook"] = "tiktok_webhook"
    event: str
    user_openid: str | None = None
    create_time: int
    publish_id: str | None = None
    publish_type: str | None = None
    reason: str | None = None
    post_id: str | None = None
    account_id: str | None = None
    # The tenant of `account_id` (set with it, from the upload the webhook names).
    tenant_id: TenantId = DEFAULT_TENANT
    received_at: datetime = Field(default_factory=utcnow)


# What `reelay.publish.events` carries, told apart by `type`; the one definition, imported by its readers.
PublishEvent = Annotated[VideoUploaded | TikTokWebhookReceived, Field(discriminator="type")]


PUBLISH_EVENT_ADAPTER: TypeAdapter[PublishEvent] = TypeAdapter(PublishEvent)


class PublishStatusChanged(Message):
    """On `reelay.publish.status` (outbound, for upstream): an upload changed state."""

    request_id: RequestId
    account_id: AccountId
    tenant_id: TenantId = DEFAULT_TENANT
    publish_id: str | None = None
    state: UploadState
    previous_state: UploadState | None = None
    source: StateSource
    detail: dict[str, Any] = Field(default_factory=dict)
    post_ids: list[str] = Field(default_factory=list)
    at: datetime = Field(default_factory=utcnow)


class DeadLetter(Message):
    """On `<topic>.dlq`: a record that could not be processed, and why."""

    topic: str
    partition: int
    offset: int
    key: str | None = None
    value: str = Field(description="The original value, decoded as UTF-8 with replacement.")
    reason: str
    error: str
    request_id: str | None = None
    account_id: str | None = None
    tenant_id: str | None = None
    failed_at: datetime = Field(default_factory=utcnow)


ALL_MESSAGES: dict[str, type[BaseModel]] = {
    "UploadRequested": UploadRequested,
    "VideoUploaded": VideoUploaded,
    "TikTokWebhookReceived": TikTokWebhookReceived,
    "PublishStatusChanged": PublishStatusChanged,
    "DeadLetter": DeadLetter,
}
