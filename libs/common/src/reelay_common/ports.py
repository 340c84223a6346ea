"""The small ports handlers talk to. Handlers import these, never aiokafka, httpx or pymongo.

Real adapters live in `reelay_common.adapters` (kafka/, mongo/, blobs/, tiktok/); in-memory fakes
live in the dev-only `reelay_testing`, checked against the real ones by the same contract tests.
"""

from __future__ import annotations

from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from reelay_common.domain.api_keys import ApiKeyRecord, NewApiKey, TenantRecord
from reelay_common.domain.messages import (
    BlobSource,
    BlobStoreKind,
    PostInfo,
    StateSource,
    UploadMode,
    UploadRequested,
)
from reelay_common.domain.oauth import PendingConnect
from reelay_common.domain.profiles import ProcessingProfile
from reelay_common.domain.records import AccountRecord, CallbackDelivery, Change, OutboxEntry, UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.domain.tiktok import (
    CreatorInfo,
    FileUploadSourceInfo,
    InitResult,
    PublishStatus,
    SourceInfo,
    TokenGrant,
)

RateBucket = Literal["init", "status", "creator_info"]
ProgressCallback = Callable[[int], Awaitable[None]]  # called with the bytes TikTok has confirmed


class Publisher(Protocol):
    """Puts messages on Kafka (JSON, keyed), waiting for the broker's acknowledgement."""

    async def publish(self, topic: str, message: BaseModel, *, key: str) -> None: ...


class UploadStore(Protocol):
    """The `uploads` collection, with guarded forward-only transitions and each upload's outbox.

    Every change that is to be announced (creation, each transition, new post ids) appends its
    outbox entry in the same single-document update; the OutboxRelay sends and settles them.
    """

    async def create(
        self, cmd: UploadRequested, *, source: StateSource, enqueue: bool = False, lease_seconds: float = 0.0
    ) -> tuple[UploadRecord, bool]:
        """Insert the `accepted` document if the request_id was never seen. Returns (record, created).

        Its outbox announces `accepted` and, with `enqueue`, queues the command; with
        `lease_seconds` the creator holds the outbox lease (it sends at once).
        """
        ...

    async def get(self, request_id: str) -> UploadRecord | None: ...

    async def find_in_flight(self, request_id: str) -> UploadRecord | None:
        """The upload if it is still in flight; None if unknown or settled into history."""
        ...

    async def transition(self, request_id: str, change: Change) -> UploadRecord | None:
        """Move to `change.target` if that is forward from the current state (atomic, guarded),
        append the history entry and its announcement to the outbox (due now, or
        `change.announce_after` from now) and apply `change.set_fields`. Returns the new record, or
        None if the guard refused (already there or beyond)."""
        ...

    async def checkpoint(
        self, request_id: str, fields: Mapping[str, Any], *, expect_state: UploadState | None = None
    ) -> UploadRecord | None:
        """Set `fields` (publish_id, upload_url, uploaded_bytes...) without a state change.
        With `expect_state`, only while the document is in that state."""
        ...

    async def list(
        self,
        *,
        tenant_id: str | None = None,
        account_id: str | None = None,
        state: UploadState | None = None,
        limit: int = 100,
    ) -> list[UploadRecord]:
        """Newest first; `tenant_id` keeps one tenant's (the API always gives it), `account_id` is
        the account's stored key."""
        ...

    async def find_by_publish_id(self, publish_id: str) -> UploadRecord | None: ...

    async def claim_due_poll(self, now: datetime, lease_seconds: float) -> UploadRecord | None:
        """Atomically lease one tracked upload whose `poll_next_at` has come (status-poller)."""
        ...

    async def schedule_poll(
        self, request_id: str, next_at: datetime, *, attempts: int, polled_at: datetime | None = None
    ) -> None:
        """Set when to poll next and release the lease; `polled_at`: when TikTok answered this poll
        without a terminal status (kept as `poll_last_at`)."""
        ...

    async def archive_settled(self, now: datetime, *, grace_seconds: float, limit: int = 100) -> int:
        """Move uploads settled (terminal, no longer watched, nothing left to send) and quiet for
        `grace_seconds` out of the in-flight work into history, where every read still finds them;
        how many moved."""
        ...

    async def add_post_ids(
        self, request_id: str, post_ids: Sequence[str], *, source: StateSource
    ) -> UploadRecord | None:
        """Merge `post_ids` into the upload atomically (no id lost to a racing writer) and append
        their announcement; the record after, or None when none was new."""
        ...

    async def claim_due_outbox(self, now: datetime, lease_seconds: float) -> UploadRecord | None:
        """Lease one upload whose outbox is due (entries waiting) and not leased by another process."""
        ...

    async def lease_outbox(self, request_id: str, now: datetime, lease_seconds: float) -> UploadRecord | None:
        """Lease this upload's outbox if it has entries and is not leased by another; else None."""
        ...

    async def settle_outbox(
        self, request_id: str, sent: Sequence[OutboxEntry], *, next_try_at: datetime
    ) -> UploadRecord | None:
        """Remove exactly the entries `sent`, release the lease; entries left are due at `next_try_at`."""
        ...

    async def count_owing(self) -> int:
        """How many uploads still owe Kafka a message (the outbox's depth)."""
        ...

    async def record_callback(self, request_id: str, delivery: CallbackDelivery) -> UploadRecord | None:
        """Set the callback of `delivery.state` (atomic, in flight or archived) unless that one is
        finished already (delivered or failed). The record after, or None (unknown, or finished)."""
        ...


class Outbox(Protocol):
    """Sends what an upload owes Kafka (OutboxRelay)."""

    # How long a writer that creates an upload holds its outbox lease while it sends it.
    lease_seconds: float

    async def drain(
        self, request_id: str, *, leased: UploadRecord | None = None, within_seconds: float | None = None
    ) -> bool:
        """Send the upload's outbox now (taking its lease unless `leased`); True when nothing is
        left. Never raises for Kafka: what could not be sent waits for the relay loop."""
        ...


class Recorder(Protocol):
    """Records state changes, each announced on `reelay.publish.status` through the outbox (StateRecorder)."""

    def created(self, record: UploadRecord) -> None:
        """Count a new upload's first state (`accepted` or `scheduled`), as `record` counts a change."""
        ...

    async def record(self, request_id: str, change: Change, *, send: bool = True) -> UploadRecord | None:
        """A guarded transition (its announcement written with it), then sent (unless `send` is
        False: then the caller drains the outbox, or the relay does). None when the guard refused."""
        ...


class TenantStore(Protocol):
    """The `tenants` and `api_keys` collections (docs/architecture.md, "Tenants").

    The default tenant always exists (it owns INGEST_API_KEYS and every id stored before tenants);
    others are created. A key is stored as its digest only: `create_key` returns the one copy of it.
    """

    async def create_tenant(self, tenant_id: str, *, name: str | None = None) -> TenantRecord:
        """A new tenant; ValueError for a bad id, TenantExistsError for one taken."""
        ...

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None: ...

    async def list_tenants(self) -> list[TenantRecord]:
        """Every tenant, the default one first, then by id."""
        ...

    async def create_key(self, tenant_id: str, *, label: str | None = None) -> tuple[ApiKeyRecord, NewApiKey]:
        """A new key of the tenant (UnknownTenantError if there is none): its record and the key."""
        ...

    async def list_keys(self, tenant_id: str) -> list[ApiKeyRecord]:
        """The tenant's keys, revoked ones too, oldest first (UnknownTenantError if no tenant)."""
        ...

    async def get_key(self, key_id: str) -> ApiKeyRecord | None: ...

    async def revoke_key(self, key_id: str) -> ApiKeyRecord:
        """Revoke the key (idempotent: a revoked key stays revoked at its first time);
        UnknownApiKeyError if there is none."""
        ...


class AccountStore(Protocol):
    """The `accounts` collection. Tokens go in and out in clear; at rest they are encrypted."""

    async def upsert_tokens(self, account_id: str, grant: TokenGrant) -> AccountRecord:
        """Store a fresh grant (OAuth connect), creating the account if needed; bumps token_version."""
        ...

    async def get(self, account_id: str) -> AccountRecord | None: ...


class AccountDirectory(Protocol):
    """The accounts collection as the account lifecycle sees it: connect, look up, disconnect
    (docs/architecture.md, "The account lifecycle"). Keys are tenant-scoped account ids."""

    async def upsert_tokens(
        self, account_id: str, grant: TokenGrant, *, requested_scopes: list[str] | None = None
    ) -> AccountRecord: ...

    async def get(self, account_id: str) -> AccountRecord | None: ...

    async def access_token_of(self, account_id: str) -> str | None:
        """The account's access token in clear (to revoke it), or None."""
        ...

    async def mark_disconnected(self, account_id: str, *, reason: str = "disconnected") -> None:
        """Status `disconnected`, tokens deleted, the reason kept."""
        ...

    async def list_keys(self, *, prefix: str | None, limit: int = 500) -> list[AccountRecord]:
        """Accounts whose key starts with `prefix`; None: the keys with no tenant prefix."""
        ...

    async def find_by_open_id(self, open_id: str) -> list[AccountRecord]: ...


class OAuthStateStore(Protocol):
    """Connects started and not completed, by their `state` (stored hashed, used once)."""

    async def put(self, state: str, pending: PendingConnect) -> None: ...

    async def take(
        self, state: str, *, tenant_id: str | None = None, account_id: str | None = None
    ) -> PendingConnect | None:
        """The pending connect of `state`, consumed atomically; None if unknown, used or expired,
        or (when given) of another tenant or account: then it is left for its owner."""
        ...


class TikTokOAuth(Protocol):
    """TikTok's OAuth endpoints, and creator_info with a token just granted."""

    async def exchange_code(
        self, code: str, *, redirect_uri: str, code_verifier: str | None = None
    ) -> TokenGrant: ...

    async def revoke(self, access_token: str) -> None: ...

    async def creator_info(self, access_token: str) -> CreatorInfo: ...


class TokenProvider(Protocol):
    """Hands out a valid access token for an account, refreshing single-flight when needed."""

    async def access_token(self, account_id: str) -> str: ...

    async def force_refresh(self, account_id: str, stale_token: str) -> str:
        """The token `stale_token` was refused: refresh (once, across replicas) and return the new one."""
        ...


class RateLimiter(Protocol):
    """Paces calls per account and bucket, shared by every replica."""

    async def acquire(self, account_id: str, bucket: RateBucket) -> None: ...


def check_read_range(offset: int, length: int, size: int) -> None:
    """The VideoReader contract for `stream(offset, length)`: a range inside the video, or ValueError."""
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"range [{offset}, {offset + length}) is outside a file of {size} bytes")


class SizedVideo:
    """What every VideoReader shares, as a base: the video's size and media type (known before
    the first byte, or learnt late as a URL's are) and `stream`'s contract (the range checked,
    nothing read for an empty one). Each reader adds its own `_pieces`."""

    def __init__(self, *, size: int, content_type: str) -> None:
        self._size = size
        self._content_type = content_type

    @property
    def size(self) -> int:
        """Bytes in the video."""
        return self._size

    @property
    def content_type(self) -> str:
        """Its media type (video/mp4, video/quicktime or video/webm for a real source)."""
        return self._content_type

    async def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """Yield exactly `length` bytes from `offset` in bounded pieces; ValueError outside the video."""
        check_read_range(offset, length, self._size)
        if length == 0:
            return
        async with aclosing(self._pieces(offset, length)) as pieces:
            async for piece in pieces:
                yield piece

    def _pieces(self, offset: int, length: int) -> AsyncGenerator[bytes, None]:
        """The reader's own reading of a checked, non-empty range."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the reader keeps open between streams (nothing, unless a reader says so)."""
        return None


class VideoReader(Protocol):
    """A video's bytes, readable as a stream from any offset (to resume after a failure)."""

    @property
    def size(self) -> int: ...

    @property
    def content_type(self) -> str: ...

    def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """Yield exactly `length` bytes starting at `offset`, in pieces of bounded size."""
        ...


@dataclass(frozen=True)
class BlobInfo:
    """What a blob store knows of one stored file."""

    blob_id: str
    size: int


class BlobStore(Protocol):
    """Where files streamed into ingest wait for the uploader: written once, read by range, deleted.

    Errors: `save` raises InvalidInputError code "too_large" past `max_bytes` (also "empty",
    "unsupported_media_type") and StorageFullError when the store's own budget is used up; after
    any failure (the source raising mid-way or the task cancelled included) nothing is kept.
    `open` raises InvalidInputError code "blob_not_found" for a missing blob (and
    "blob_size_mismatch", "blob_store_mismatch", "invalid_blob_id"). Database, disk or network
    trouble is a RetryableError.
    """

    @property
    def kind(self) -> BlobStoreKind:
        """Which store this is (recorded in every BlobSource it returns)."""
        ...

    async def save(
        self, chunks: AsyncIterable[bytes], *, filename: str | None, content_type: str, max_bytes: int
    ) -> BlobSource:
        """Stream `chunks` into a new blob under a generated id; returns its id, size and sha256."""
        ...

    async def open(self, source: BlobSource) -> VideoReader:
        """A ranged streaming reader of a stored blob (checked to exist with the recorded size)."""
        ...

    async def stat(self, blob_id: str) -> BlobInfo | None:
        """The stored blob's size, or None when there is no such blob."""
        ...

    async def delete(self, blob_id: str) -> None:
        """Delete a blob; deleting one that is already gone is fine."""
        ...


@dataclass(frozen=True)
class ChunkedUpload:
    """One FILE_UPLOAD to send: the upload_url and chunk plan init gave, the video's bytes, and the
    offset to start from (a resumed upload). With `account_id` and `publish_id`, a lost response
    is resynchronised from status/fetch `uploaded_bytes`."""

    upload_url: str
    plan: FileUploadSourceInfo
    reader: VideoReader
    start_offset: int = 0
    account_id: str | None = None
    publish_id: str | None = None


class TikTokApi(Protocol):
    """TikTok, per account: tokens, pacing, 401-refresh and 429 backoff are handled inside."""

    async def creator_info(self, account_id: str) -> CreatorInfo: ...

    async def init_upload(
        self, account_id: str, *, mode: UploadMode, post_info: PostInfo | None, source_info: SourceInfo
    ) -> InitResult:
        """video/init (mode 'direct', with post_info) or inbox/video/init (mode 'inbox')."""
        ...

    async def fetch_status(self, account_id: str, publish_id: str) -> PublishStatus: ...

    async def cancel_publish(self, account_id: str, publish_id: str) -> None:
        """Ask TikTok to cancel a PULL_FROM_URL download in progress (best effort: TikTok answers
        `publish_not_cancellable` when it is too late, raised as TikTokRejectedError)."""
        ...

    async def upload_chunks(
        self, upload: ChunkedUpload, *, on_progress: ProgressCallback | None = None
    ) -> None:
        """PUT every chunk from `upload.start_offset` on, sequentially, streaming, resuming after
        416/lost responses. Raises UploadUrlExpiredError on 403. `on_progress(confirmed_bytes)`
        runs after each chunk the server accepted."""
        ...


class CreatorInfoCache(Protocol):
    """creator_info per account, kept a short while and shared by every replica: TikTok allows an
    account 20 creator_info calls a minute, and every direct post is checked against it."""

    async def get_or_fetch(self, account_id: str, fetch: Callable[[], Awaitable[CreatorInfo]]) -> CreatorInfo:
        """The account's creator_info if one was fetched recently enough, else `fetch()`'s, kept
        for the next callers. Errors of `fetch` pass through, and nothing is kept then."""
        ...


class WebhookLedger(Protocol):
    """The TikTok webhooks already applied, by their identity (`webhook_key`): TikTok delivers at
    least once and retries for up to 72 hours, and Kafka may redeliver too."""

    async def seen(self, key: str) -> bool:
        """Whether the webhook `key` was applied already."""
        ...

    async def remember(self, key: str) -> None:
        """Note the webhook `key` as applied (idempotent)."""
        ...


class PollProfiles(Protocol):
    """The processing times the status-poller has learnt, one ProcessingProfile per (account,
    size class), shared by every replica and kept across restarts (docs/design.md, "A poll schedule
    that learns")."""

    async def get(self, account_id: str, size_class: str) -> ProcessingProfile | None:
        """The profile of `account_id` (or `ALL_ACCOUNTS`) and `size_class`; None before any observation."""
        ...

    async def observe(self, account_id: str, size_class: str, low: float, high: float) -> ProcessingProfile:
        """Add one processing time known to lie in [low, high] seconds, atomically (concurrent
        observations of several replicas are all kept); returns the profile after."""
        ...
