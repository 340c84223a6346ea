"""What the uploader decides for one `UploadRequested`: validate, init once, stream the chunks,
resume after any crash, and record the outcome (docs/design.md, step 2).

Pure logic against ports (UploadStore, a StateRecorder, Publisher, TikTokApi, a reader factory, a
clock): no Kafka, HTTP or Mongo here. It keeps promise 2 (docs/architecture.md, "Promises"): never two
TikTok posts for one request. Hence the order of things: the `publish_id` and `upload_url` are
checkpointed before TikTok can hold a whole chunk, and a redelivered request resumes that publish
(from TikTok's own count of the bytes it holds) or confirms it through status/fetch. A new init
happens only when the old publish can never become a post: its upload URL expired before TikTok
had every byte.
The first PUT of a new publish goes out beside the write that records it, its last piece held
until that write is durable (`_HeldBack`): TikTok cannot hold a whole chunk of a publish that is
not recorded (docs/design.md, "The first chunk goes out beside its record").

Outcomes, as the consumer loop reads them: returning commits the record (done, failed for good, or
nothing to do); RetryableError leaves it uncommitted to be retried; cancellation (shutdown,
rebalance) leaves it uncommitted too, and the checkpoint makes the redelivery resume. Retries end:
past `retry_deadline` of failing source or TikTok (not rate limits, not Mongo or Kafka away), the
upload is recorded `failed` with `retries_exhausted` and the last error, and the record committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from reelay_common.domain.chunks import plan_chunks
from reelay_common.domain.errors import (
    AuthExpiredError,
    InvalidInputError,
    PermanentError,
    RateLimitedError,
    ReelayError,
    RetryableError,
    TikTokRejectedError,
    TransientTikTokError,
    UploadOutOfSyncError,
    UploadUrlExpiredError,
)
from reelay_common.domain.messages import (
    ALLOWED_CONTENT_TYPES,
    MAX_VIDEO_BYTES,
    BlobSource,
    DeadLetter,
    PullFromUrlSource,
    StateSource,
    UploadRequested,
    UrlSource,
    VideoUploaded,
    dlq_topic,
    utcnow,
)
from reelay_common.domain.records import Change, UploadRecord
from reelay_common.domain.rules import (
    RETRIES_EXHAUSTED,
    check_privacy_level,
    retry_deadline_passed,
    uses_up_retry_deadline,
)
from reelay_common.domain.states import UploadState
from reelay_common.domain.tenancy import DEFAULT_TENANT, scoped
from reelay_common.domain.tiktok import (
    CreatorInfo,
    FileUploadSourceInfo,
    PublishStatus,
    PullFromUrlSourceInfo,
)
from reelay_common.logging import bind_learned, get_logger
from reelay_common.ports import (
    AccountStore,
    ChunkedUpload,
    CreatorInfoCache,
    Outbox,
    Publisher,
    Recorder,
    TikTokApi,
    UploadStore,
    VideoReader,
)

log = get_logger(__name__)

STATE_SOURCE: StateSource = "uploader"  # who made a change, in history; the video's is `record.source`
UPLOAD_URL_LIFETIME = timedelta(hours=1)  # TikTok: an upload_url is valid for 1 hour after init
# How stale the checkpointed upload progress may get. A resume trusts TikTok's own count (status/fetch
# `uploaded_bytes`, a 416's Content-Range), never this one, so a write per chunk (a guarded update:
# tens of ms on FerretDB, more than a chunk's transfer on a fast link) buys nothing.
PROGRESS_CHECKPOINT_INTERVAL = timedelta(seconds=5)

# The dead-letter reason of a command whose account is not one of its tenant's.
ACCOUNT_NOT_IN_TENANT = "account_not_in_tenant"

# FAILED publishes whose reason says TikTok's side broke, not our video: a new publish may succeed.
RETRYABLE_FAIL_REASONS = frozenset({"internal"})

ReaderFactory = Callable[[UrlSource | BlobSource], AbstractAsyncContextManager[VideoReader]]
BlobDiscarder = Callable[[BlobSource], Awaitable[None]]
Outcome = Literal[
    "uploaded",
    "already_uploaded",
    "already_done",
    "failed",
    "superseded",
    "scheduled",
    "request_id_conflict",
]

# How long the checkpoint of a new publish is retried before the upload is handed back (and re-inits).
INIT_CHECKPOINT_RETRY_SECONDS = 60.0

# How long the `uploading` announcement waits before it is sent beside the chunks: an upload that
# reaches its next state sooner announces both with that state's one drain (docs/design.md,
# "`uploading` starts with the bytes").
UPLOADING_ANNOUNCE_LINGER_SECONDS = 1.0


@dataclass(frozen=True)
class UploaderDeps:
    """Everything the handler talks to, built by the composition root (or a test)."""

    uploads: UploadStore
    recorder: Recorder
    outbox: Outbox
    publisher: Publisher
    tiktok: TikTokApi
    open_reader: ReaderFactory
    events_topic: str
    # Where a command's account is looked up in its tenant before anything is stored.
    accounts: AccountStore
    chunk_size: int = 10_000_000
    max_video_bytes: int = MAX_VIDEO_BYTES
    max_init_attempts: int = 3
    upload_url_margin: timedelta = timedelta(minutes=5)
    # How long an upload retries a failing source or TikTok before it ends failed (retries_exhausted).
    retry_deadline: timedelta = timedelta(hours=6)
    clock: Callable[[], datetime] = utcnow
    # Deletes a file streamed into ingest once TikTok holds its bytes or the upload failed for good:
    # without it, stored videos would pile up forever.
    discard_blob: BlobDiscarder | None = None
    # creator_info kept a short while for every replica and ingest (the same cache): a direct post
    # checked against an answer under a minute old, as ingest checks it, costs no TikTok call and
    # no rate-limit slot on the upload's critical path (bench/RESULTS.md, "Pipeline"). None: ask
    # TikTok for every direct post.
    creator_infos: CreatorInfoCache | None = None


@dataclass(frozen=True)
class _FilePublish:
    """A FILE_UPLOAD publish as checkpointed: where to PUT, until when, the plan, TikTok's progress."""

    publish_id: str
    upload_url: str
    expires_at: datetime | None
    plan: FileUploadSourceInfo
    confirmed: int

    @classmethod
    def of(cls, rec: UploadRecord) -> _FilePublish | None:
        """The checkpointed publish of `rec`, or None if no init was recorded."""
        if (
            rec.publish_id is None
            or rec.upload_url is None
            or rec.video_size is None
            or rec.chunk_size is None
            or rec.total_chunk_count is None
        ):
            return None
        plan = FileUploadSourceInfo(
            video_size=rec.video_size, chunk_size=rec.chunk_size, total_chunk_count=rec.total_chunk_count
        )
        return cls(
            publish_id=rec.publish_id,
            upload_url=rec.upload_url,
            expires_at=rec.upload_url_expires_at,
            plan=plan,
            confirmed=rec.uploaded_bytes,
        )


class _HeldBack:
    """The video's reader for the PUTs of a new publish whose record is still being written.

    Each stream hands on every piece as it comes except its last, which waits for `recorded()`
    (the record of the publish, durable; raising if it failed). Once that returned, streams pass
    straight through. So the bytes of the first chunk go out while the guarded write is in flight,
    and no chunk is whole at TikTok before the publish is recorded: a crash or a lost race in that
    window leaves a publish without a byte, which can never become a post (promise 2).
    """

    def __init__(self, reader: VideoReader, recorded: Callable[[], Awaitable[None]]) -> None:
        self._reader = reader
        self._recorded = recorded
        self._released = False

    @property
    def size(self) -> int:
        return self._reader.size

    @property
    def content_type(self) -> str:
        return self._reader.content_type

    async def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        pieces = self._reader.stream(offset, length)
        if self._released:
            async for piece in pieces:
                yield piece
            return
        held: bytes | None = None
        async for piece in pieces:
            if held is not None:
                yield held
            held = piece
        await self._recorded()  # the record's error ends the PUT a piece short of its length
        self._released = True
        if held is not None:
            yield held


class _Superseded(Exception):
    """The document left `uploading` under us (another worker finished it): stop, touch nothing."""


async def handle_upload_requested(cmd: UploadRequested, deps: UploaderDeps) -> None:
    """Take one upload request as far as `uploaded` (or `failed`); safe to call again at any time."""
    started = time.monotonic()
    attempt_started = deps.clock()
    outcome: str = "error"
    # request_id / account_id are bound by the consumer loop for the whole record.
    job: _Job | None = None
    record: UploadRecord | None = None
    try:
        await _check_account_of_tenant(cmd, deps)
        record, created = await deps.uploads.create(
            cmd, source=STATE_SOURCE, lease_seconds=deps.outbox.lease_seconds
        )
        if created:
            # Upstream producers may skip ingest: then this is the first anyone hears of it.
            deps.recorder.created(record)
            await deps.outbox.drain(record.request_id, leased=record)
        if record.account_id != scoped(cmd.tenant_id, cmd.account_id) or record.mode != cmd.mode:
            log.warning(
                "request_id_conflict",
                stored_account_id=record.account_id,
                stored_mode=record.mode,
                mode=cmd.mode,
            )
            outcome = "request_id_conflict"
            return
        async with AsyncExitStack() as resources:
            job = _Job(record, deps, resources)
            outcome = await job.run()
        # After the reader is closed: the bytes are no longer needed once TikTok has them all
        # or the upload is over. (A redelivery of a finished request lands here too: idempotent.)
        if outcome in _BYTES_NO_LONGER_NEEDED and isinstance(record.source, BlobSource):
            await _discard_blob(record.source, deps)
    except RetryableError as exc:
        current = job.rec if job is not None else record
        if current is not None and await _give_up_past_deadline(current, exc, attempt_started, deps):
            outcome = RETRIES_EXHAUSTED
            if isinstance(current.source, BlobSource):
                await _discard_blob(current.source, deps)
            return
        outcome = "retry"
        log.info("upload_will_retry", error=type(exc).__name__, **_detail_fields(exc))
        raise
    except asyncio.CancelledError:
        # Shutdown or rebalance: nothing is committed and the checkpoint makes the redelivery resume.
        outcome = "cancelled"
        raise
    finally:
        log.info(
            "upload_handled",
            outcome=outcome,
            publish_id=job.publish_id if job else None,
            bytes_sent=job.bytes_confirmed if job else 0,
            inits=job.inits if job else 0,
            duration_ms=round((time.monotonic() - started) * 1000),
        )


async def _check_account_of_tenant(cmd: UploadRequested, deps: UploaderDeps) -> None:
    """Refuse (PermanentError, so the record is dead-lettered and nothing is stored or posted) a
    command whose account is not one of its tenant's: a record produced straight onto the topic
    naming one tenant and another's account (docs/architecture.md, "Tenants")."""
    if await deps.accounts.get(scoped(cmd.tenant_id, cmd.account_id)) is None:
        raise InvalidInputError(
            f"account {cmd.account_id!r} is not an account of tenant {cmd.tenant_id!r}",
            code=ACCOUNT_NOT_IN_TENANT,
        )


_BYTES_NO_LONGER_NEEDED: frozenset[str] = frozenset(
    {"uploaded", "already_uploaded", "already_done", "failed"}
)


async def _discard_blob(source: BlobSource, deps: UploaderDeps) -> None:
    """Best effort: a blob that could not be deleted costs storage, never the upload."""
    if deps.discard_blob is None:
        return
    try:
        await deps.discard_blob(source)
    except ReelayError as exc:
        log.warning("blob_discard_failed", blob_id=source.blob_id, error=type(exc).__name__)
    else:
        log.info("blob_discarded", blob_id=source.blob_id)


async def _give_up_past_deadline(
    rec: UploadRecord, exc: RetryableError, attempt_started: datetime, deps: UploaderDeps
) -> bool:
    """Past the upload's retry deadline, record it `failed` (retries_exhausted, the last error in the
    history) and say True; before it, remember when retrying began (once) and say False."""
    if not uses_up_retry_deadline(exc) or rec.state not in (UploadState.ACCEPTED, UploadState.UPLOADING):
        return False
    since = rec.retrying_since
    if since is None:
        # The first failure: the deadline counts from the start of this attempt, stored so that a
        # restart or a redelivery to another replica does not start it again.
        since = attempt_started
        await deps.uploads.checkpoint(rec.request_id, {"retrying_since": since}, expect_state=rec.state)
    if not retry_deadline_passed(since, deps.clock(), deps.retry_deadline):
        return False
    detail: dict[str, Any] = {
        "code": RETRIES_EXHAUSTED,
        "message": f"gave up after {deps.retry_deadline.total_seconds():g} s of retries: {exc.message}"[:500],
        "last_error": type(exc).__name__,
        "retrying_since": since.isoformat(),
    }
    for key, value in _detail_fields(exc).items():
        detail["last_error_code" if key == "code" else key] = value
    if rec.publish_id is not None:
        detail["publish_id"] = rec.publish_id
    await deps.recorder.record(rec.request_id, Change(UploadState.FAILED, source=STATE_SOURCE, detail=detail))
    log.warning("upload_retries_exhausted", **{k: v for k, v in detail.items() if k != "message"})
    return True


def _detail_fields(exc: RetryableError) -> dict[str, Any]:
    return {k: v for k, v in exc.detail().items() if k in ("code", "log_id", "http_status")}


async def handle_dead_letter(letter: DeadLetter, deps: UploaderDeps) -> None:
    """Mark the upload behind a dead-lettered `UploadRequested` failed, when the record names one."""
    if letter.request_id is None or letter.reason == ACCOUNT_NOT_IN_TENANT:
        # Refused before anything was stored: the upload under that id (if any) is not its.
        return
    tenant_id = letter.tenant_id or DEFAULT_TENANT
    try:
        key = scoped(tenant_id, letter.request_id)
        account_key = scoped(tenant_id, letter.account_id) if letter.account_id is not None else None
    except ValueError:  # ids of a record too broken to name an upload
        return
    record = await deps.uploads.get(key)
    if record is None:
        return
    if account_key is not None and account_key != record.account_id:
        # A bad record borrowing someone else's request_id must not fail their upload.
        log.warning("dead_letter_request_id_conflict", request_id=letter.request_id)
        return
    if record.state not in (UploadState.ACCEPTED, UploadState.UPLOADING):
        # Already at TikTok (or settled): a poison duplicate says nothing about this upload.
        return
    detail = {
        "reason": letter.reason,
        "error": letter.error[:500],
        "dead_letter_topic": dlq_topic(letter.topic),
        "partition": letter.partition,
        "offset": letter.offset,
    }
    await deps.recorder.record(key, Change(UploadState.FAILED, source=STATE_SOURCE, detail=detail))


Verdict = Literal["complete", "partial", "dead"]


class _Job:
    """One handling of one request: the record as it stands, and a lazily opened video reader."""

    def __init__(self, record: UploadRecord, deps: UploaderDeps, resources: AsyncExitStack) -> None:
        self.rec = record
        self.deps = deps
        self.resources = resources
        self.rid = record.request_id
        self.publish_id: str | None = record.publish_id
        self._bound_publish_id: str | None = None
        self.bytes_confirmed = 0
        self.inits = 0
        self._reader: VideoReader | None = None
        self._validated = False
        # The `uploading` announcement, sent beside the first chunks (see _record_new_publish).
        self._announcing: asyncio.Task[None] | None = None
        self._announce_now = asyncio.Event()  # ends the task's linger
        self._announce_started = False  # the task is past its linger: it drains (or drained)
        # The write recording a new publish, in flight beside its first PUT (see _HeldBack);
        # None again once its record was taken.
        self._recording: asyncio.Task[UploadRecord] | None = None

    # -- the decision ------------------------------------------------------------------------

    async def run(self) -> Outcome:
        state = self.rec.state
        if state is UploadState.UPLOADED:
            await self._announce_uploaded(self.rec)
            return "already_uploaded"
        if state is UploadState.SCHEDULED:
            # Produced straight to the topic with a publish_at to come: held in Mongo, and queued
            # again by the outbox relay when its time comes. Its file is kept until then.
            log.info("upload_scheduled", publish_at=str(self.rec.publish_at))
            return "scheduled"
        if state not in (UploadState.ACCEPTED, UploadState.UPLOADING):
            log.info("upload_already_done", state=state.value)
            return "already_done"
        try:
            if state is UploadState.ACCEPTED:
                await self._validate()
            if isinstance(pull := self.rec.source, PullFromUrlSource):
                if state is UploadState.ACCEPTED:
                    # TikTok fetches the video itself: `uploading` before the init, whose attempt
                    # is marked in the document before it is sent.
                    moved = await self.deps.recorder.record(
                        self.rid, Change(UploadState.UPLOADING, source=STATE_SOURCE)
                    )
                    self.rec = moved or await self._reload()
                    if self.rec.state is not UploadState.UPLOADING:
                        raise _Superseded
                return await self._pull(pull)
            # A file upload stays `accepted` (and cancellable) through its wait for the init quota
            # and the init; it moves to `uploading` with the new publish's checkpoint, in one write.
            return await self._file_upload()
        except _Superseded:
            log.info("upload_superseded")
            return "superseded"
        except UploadOutOfSyncError as exc:
            # The upload could not find where TikTok stands; the checkpoint lets a retry resume.
            raise TransientTikTokError(
                f"the upload lost sync with TikTok: {exc.message}", code=exc.code, log_id=exc.log_id
            ) from exc
        except PermanentError as exc:
            await self._fail(exc.detail())
            return "failed"
        except asyncio.CancelledError:
            if self._recording is not None:
                self._recording.cancel()  # as a write cut short: the redelivery reads what landed
            task, self._announcing = self._announcing, None
            if task is not None:
                task.cancel()  # what it did not send, the relay loop does
            raise
        finally:
            await self._announced()

    async def _file_upload(self) -> Outcome:
        while True:
            pub = _FilePublish.of(self.rec)
            if pub is not None:
                if pub.confirmed >= pub.plan.video_size:
                    # TikTok confirmed every byte before we could record it (crash after the 201).
                    return await self._uploaded(pub.publish_id, pub.plan)
                verdict, progress = await self._tiktok_side(pub)
                if verdict == "complete":
                    return await self._uploaded(pub.publish_id, pub.plan)
                if verdict == "partial" and self._url_is_live(pub):
                    log.info("upload_resuming", offset=progress)
                    try:
                        await self._put_chunks(pub, start_offset=progress)
                    except UploadUrlExpiredError:
                        await self._expire_url()
                        continue
                    return await self._uploaded(pub.publish_id, pub.plan)
                # The URL is gone (or the publish failed) before TikTok had every byte: that publish
                # can never become a post, so a new one cannot make a second.
                log.info(
                    "publish_abandoned", abandoned_publish_id=pub.publish_id, verdict=verdict, bytes=progress
                )
            elif self.rec.init_attempts == 0:
                await self._validate()
            pub = await self._init_file_upload()
            try:
                await self._put_chunks(pub, start_offset=0)
            except UploadUrlExpiredError:
                await self._expire_url()
                continue
            return await self._uploaded(pub.publish_id, pub.plan)

    async def _pull(self, source: PullFromUrlSource) -> Outcome:
        rec = self.rec
        if rec.publish_id is not None:
            # TikTok already has the job; it downloads on its own. Tracking is the poller's.
            return await self._uploaded(rec.publish_id, None)
        if rec.init_attempts > 0:
            # An earlier init was sent and its answer never recorded: TikTok may be downloading
            # already, and a second init could post the video twice. Only a person can tell.
            raise InvalidInputError(
                "an earlier PULL_FROM_URL init has no recorded answer; TikTok may have started it, "
                "so it is not sent again",
                code="pull_init_outcome_unknown",
            )
        await self._validate()
        # Mark the attempt before sending it: a lost answer must stop a blind second init.
        await self._checkpoint({"init_attempts": 1})
        try:
            result = await self.deps.tiktok.init_upload(
                rec.account_id,
                mode=rec.mode,
                post_info=rec.post_info,
                source_info=PullFromUrlSourceInfo(video_url=source.url),
            )
        except (PermanentError, RetryableError) as exc:
            if exc.http_status is not None or isinstance(exc, RateLimitedError | AuthExpiredError):
                # TikTok answered (or the call was never sent), so it created nothing: the attempt
                # may be made again. Only a lost answer (timeout, dropped connection) stays marked.
                await self._checkpoint({"init_attempts": 0})
            raise
        self.inits += 1
        self._bind_publish(result.publish_id)
        self.rec = await self._checkpoint({"publish_id": result.publish_id})
        return await self._uploaded(result.publish_id, None)

    # -- steps -------------------------------------------------------------------------------

    async def _validate(self) -> None:
        """Refuse, before any publish exists, what TikTok would refuse or we cannot send."""
        if self._validated:
            return
        if not isinstance(self.rec.source, PullFromUrlSource):
            reader = await self._open_reader()
            if reader.size > self.deps.max_video_bytes:
                raise InvalidInputError(
                    f"the video is {reader.size} bytes; the limit is {self.deps.max_video_bytes}",
                    code="too_large",
                )
            if reader.content_type not in ALLOWED_CONTENT_TYPES:
                raise InvalidInputError(
                    f"the video's content type {reader.content_type!r} is not one of "
                    f"{', '.join(ALLOWED_CONTENT_TYPES)}",
                    code="unsupported_media_type",
                )
        if self.rec.mode == "direct" and self.rec.post_info is not None:
            info = await self._creator_info()
            check_privacy_level(self.rec.post_info.privacy_level, info.privacy_level_options)
        self._validated = True

    async def _creator_info(self) -> CreatorInfo:
        account_id, tiktok = self.rec.account_id, self.deps.tiktok

        async def fetch() -> CreatorInfo:
            return await tiktok.creator_info(account_id)

        if self.deps.creator_infos is None:
            return await fetch()
        return await self.deps.creator_infos.get_or_fetch(account_id, fetch)

    async def _init_file_upload(self) -> _FilePublish:
        """Init a FILE_UPLOAD publish and start the write that records it; `_put_chunks` sends
        the first chunk meanwhile but completes none before the write is durable."""
        rec = self.rec
        if rec.init_attempts >= self.deps.max_init_attempts:
            raise PermanentError(
                f"gave up after {rec.init_attempts} publishes whose upload URL expired before "
                "TikTok had every byte",
                code="init_attempts_exhausted",
            )
        reader = await self._open_reader()
        plan = plan_chunks(reader.size, chunk_size=self.deps.chunk_size)
        result = await self.deps.tiktok.init_upload(
            rec.account_id, mode=rec.mode, post_info=rec.post_info, source_info=plan
        )
        self.inits += 1
        self._bind_publish(result.publish_id)
        if not result.upload_url:
            raise TikTokRejectedError("TikTok's init answered without an upload_url", code="no_upload_url")
        expires = self.deps.clock() + UPLOAD_URL_LIFETIME - self.deps.upload_url_margin
        self._recording = asyncio.create_task(
            self._checkpoint_init(
                {
                    "publish_id": result.publish_id,
                    "upload_url": result.upload_url,
                    "upload_url_expires_at": expires,
                    "video_size": plan.video_size,
                    "chunk_size": plan.chunk_size,
                    "total_chunk_count": plan.total_chunk_count,
                    "uploaded_bytes": 0,
                    "init_attempts": rec.init_attempts + 1,
                }
            )
        )
        log.info(
            "upload_initialised",
            video_size=plan.video_size,
            chunk_size=plan.chunk_size,
            chunks=plan.total_chunk_count,
            attempt=rec.init_attempts + 1,
        )
        return _FilePublish(
            publish_id=result.publish_id,
            upload_url=result.upload_url,
            expires_at=expires,
            plan=plan,
            confirmed=0,
        )

    async def _put_chunks(self, pub: _FilePublish, *, start_offset: int) -> None:
        """PUT the chunks from `start_offset`, checkpointing TikTok's confirmed progress as it grows."""
        reader = await self._open_reader()
        if reader.size != pub.plan.video_size:
            await self._publish_recorded()
            raise InvalidInputError(
                f"the video changed size since the upload began ({pub.plan.video_size} -> "
                f"{reader.size} bytes)",
                code="source_changed",
            )

        written_at: datetime | None = None  # the first confirmed chunk is always written
        written = pub.confirmed
        # The progress write in flight: it runs beside the next chunk's PUT instead of holding
        # it up (a guarded update is tens of ms on FerretDB). One at a time, in order; its outcome
        # (a superseded record included) is taken before the next write and before returning.
        writing: asyncio.Task[UploadRecord] | None = None

        async def settle() -> None:
            nonlocal writing
            task, writing = writing, None
            if task is not None:
                await task

        async def progress(confirmed: int) -> None:
            nonlocal written_at, written, writing
            self.bytes_confirmed = confirmed
            if confirmed >= pub.plan.video_size:
                return  # the `uploaded` transition records the whole size itself
            now = self.deps.clock()
            if written_at is None or now - written_at >= PROGRESS_CHECKPOINT_INTERVAL:
                await settle()
                written_at, written = now, confirmed
                writing = asyncio.create_task(self._checkpoint({"uploaded_bytes": confirmed}))
                await asyncio.sleep(0)  # let it go out on the wire before the next PUT starts

        try:
            upload = ChunkedUpload(
                pub.upload_url,
                pub.plan,
                reader if self._recording is None else _HeldBack(reader, self._publish_recorded),
                start_offset=start_offset,
                account_id=self.rec.account_id,
                publish_id=pub.publish_id,
            )
            await self.deps.tiktok.upload_chunks(upload, on_progress=progress)
            await self._publish_recorded()  # done by now (no chunk completes before it)
            await settle()
        except asyncio.CancelledError:
            if writing is not None:
                writing.cancel()  # shutdown: the resume asks TikTok, not this record
            raise
        except Exception:
            # A new publish's record failing is the upload's failure, whatever the PUT then said.
            await self._publish_recorded()
            # The upload stopped short (a chunk failed, the URL expired, the source broke): leave
            # the record at what TikTok confirmed. (A kill skips this; the resume asks TikTok.)
            if writing is not None:
                await self._quietly(settle())
            if self.bytes_confirmed > written:
                await self._quietly(self._checkpoint({"uploaded_bytes": self.bytes_confirmed}))
            raise

    async def _publish_recorded(self) -> None:
        """Wait for the write recording a new publish (`_init_file_upload`), if one is in flight;
        raises its error (the same each time asked), else keeps the record it wrote."""
        task = self._recording
        if task is None:
            return
        self.rec = await asyncio.shield(task)  # the write is not cut short by a PUT's end
        self._recording = None

    async def _tiktok_side(self, pub: _FilePublish) -> tuple[Verdict, int]:
        """Where TikTok stands on the checkpointed publish, and how many bytes it holds."""
        size = pub.plan.video_size
        status: PublishStatus = await self.deps.tiktok.fetch_status(self.rec.account_id, pub.publish_id)
        held = status.uploaded_bytes if status.uploaded_bytes is not None else pub.confirmed
        has_all = held >= size
        log.info("publish_status_checked", status=status.status, uploaded_bytes=status.uploaded_bytes)
        if status.status in ("PUBLISH_COMPLETE", "SEND_TO_USER_INBOX"):
            return "complete", size
        if status.status == "FAILED":
            if has_all and status.fail_reason not in RETRYABLE_FAIL_REASONS:
                # TikTok had the whole file and refused it (format, duration, spam...): a new
                # publish of the same bytes would fail the same way.
                raise TikTokRejectedError(
                    f"TikTok failed the publish: {status.fail_reason}", code=status.fail_reason or "failed"
                )
            return "dead", held
        return ("complete" if has_all else "partial"), held

    async def _uploaded(self, publish_id: str, plan: FileUploadSourceInfo | None) -> Outcome:
        """Record `uploaded` and tell the status-poller (VideoUploaded on the publish events)."""
        self._bind_publish(publish_id)
        # `uploading` is announced before `uploaded`: by the drain beside the chunks, or by ours.
        await self._announced(next_drains=True)
        fields: dict[str, Any] = {"publish_id": publish_id}
        detail: dict[str, Any] = {"publish_id": publish_id}
        if plan is not None:
            fields["uploaded_bytes"] = plan.video_size
            detail["video_size"] = plan.video_size
            self.bytes_confirmed = plan.video_size
        moved = await self.deps.recorder.record(
            self.rid, Change(UploadState.UPLOADED, source=STATE_SOURCE, detail=detail, set_fields=fields)
        )
        current = moved or await self._reload()
        if current.state is UploadState.UPLOADED:
            await self._announce_uploaded(current)
        log.info(
            "upload_completed",
            video_size=plan.video_size if plan else None,
            chunks=plan.total_chunk_count if plan else None,
        )
        return "uploaded"

    async def _announce_uploaded(self, rec: UploadRecord) -> None:
        """Publish VideoUploaded; consumers are idempotent, so a redelivery may publish it again."""
        if rec.publish_id is None:
            log.warning("uploaded_without_publish_id")
            return
        self._bind_publish(rec.publish_id)
        event = VideoUploaded(
            request_id=rec.client_request_id,
            account_id=rec.client_account_id,
            tenant_id=rec.tenant_id,
            publish_id=rec.publish_id,
            mode=rec.mode,
            video_size=rec.video_size,
            chunk_count=rec.total_chunk_count,
        )
        await self.deps.publisher.publish(self.deps.events_topic, event, key=rec.account_id)

    async def _fail(self, detail: Mapping[str, Any]) -> None:
        await self._announced(next_drains=True)
        full = dict(detail)
        if self.publish_id is not None:
            full.setdefault("publish_id", self.publish_id)
        await self.deps.recorder.record(
            self.rid, Change(UploadState.FAILED, source=STATE_SOURCE, detail=full)
        )
        log.warning("upload_failed", **{k: v for k, v in full.items() if k != "message"})

    async def _expire_url(self) -> None:
        """The PUT said 403: never trust this upload_url again."""
        log.info("upload_url_expired", publish_id=self.rec.publish_id)
        self.rec = await self._checkpoint({"upload_url_expires_at": self.deps.clock()})

    # -- plumbing ----------------------------------------------------------------------------

    def _url_is_live(self, pub: _FilePublish) -> bool:
        return pub.expires_at is not None and pub.expires_at > self.deps.clock()

    def _bind_publish(self, publish_id: str) -> None:
        # Learnt at init (or read from the checkpoint): added to the log context once per value.
        if publish_id != self._bound_publish_id:
            self.publish_id = self._bound_publish_id = publish_id
            bind_learned(publish_id=publish_id)

    async def _open_reader(self) -> VideoReader:
        if self._reader is None:
            source = self.rec.source
            assert not isinstance(source, PullFromUrlSource)  # TikTok reads those itself
            self._reader = await self.resources.enter_async_context(self.deps.open_reader(source))
        return self._reader

    async def _checkpoint_init(self, fields: Mapping[str, Any]) -> UploadRecord:
        """Record a publish TikTok just created (with the move to `uploading` for a first init),
        retrying a database failure (bounded).

        Given up at the first Mongo failure, the publish_id was forgotten and the retry made a
        second init: an orphan publish that counts against the creator's daily post cap (found by
        `make chaos`, FerretDB restarted right after an init). A crash here still orphans it.
        """
        delay, deadline = 0.5, time.monotonic() + INIT_CHECKPOINT_RETRY_SECONDS
        while True:
            try:
                return await self._record_new_publish(fields)
            except RetryableError as exc:
                if time.monotonic() + delay >= deadline:
                    raise
                log.warning("init_checkpoint_retry", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _record_new_publish(self, fields: Mapping[str, Any]) -> UploadRecord:
        """The checkpoint of a new publish; from `accepted`, the move to `uploading` in the same write.

        One guarded update instead of two, and the `uploading` announcement is sent beside the
        first chunks instead of before them: `uploading` then means what it says, bytes on their
        way to TikTok (docs/design.md, "`uploading` starts with the bytes"). A cancel that won the
        race leaves a publish without a byte, which can never become a post.
        """
        if self.rec.state is UploadState.UPLOADING:
            return await self._checkpoint(fields)
        change = Change(
            UploadState.UPLOADING,
            source=STATE_SOURCE,
            set_fields=fields,
            # No relay loop takes the announcement while it lingers here (a crash leaves it theirs).
            announce_after=timedelta(seconds=UPLOADING_ANNOUNCE_LINGER_SECONDS),
        )
        moved = await self.deps.recorder.record(self.rid, change, send=False)
        if moved is None:
            # Refused: cancelled meanwhile, or our own write landed and its answer was lost.
            moved = await self._reload()
            if moved.state is not UploadState.UPLOADING or moved.publish_id != fields["publish_id"]:
                raise _Superseded
        self._announcing = asyncio.create_task(self._send_announcements())
        return moved

    async def _send_announcements(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._announce_now.wait(), UPLOADING_ANNOUNCE_LINGER_SECONDS)
        self._announce_started = True
        try:
            await self.deps.outbox.drain(self.rid)
        except RetryableError as exc:
            # Mongo away mid-drain: the entry stays in the outbox, for the relay loop to send.
            log.info("announcement_left_to_relay", error=type(exc).__name__, **_detail_fields(exc))

    async def _announced(self, *, next_drains: bool = False) -> None:
        """Settle the announcement sent beside the chunks before what comes next.

        With `next_drains` (a transition whose own drain follows), an announcement still in its
        linger is withdrawn: that drain sends it, first, with the new state's. Otherwise this waits
        for it (cut short, if lingering): the next drain would find its outbox lease taken and
        leave that transition's announcement to the relay.
        """
        task, self._announcing = self._announcing, None
        if task is None:
            return
        if next_drains and not self._announce_started:
            task.cancel()  # still lingering: drain was never called, the outbox entry is intact
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
        self._announce_now.set()
        await task

    async def _checkpoint(self, fields: Mapping[str, Any]) -> UploadRecord:
        updated = await self.deps.uploads.checkpoint(self.rid, fields, expect_state=UploadState.UPLOADING)
        if updated is None:
            raise _Superseded
        return updated

    async def _quietly(self, write: Awaitable[Any]) -> None:
        """Best effort, on the way out of a failed upload: the error that stopped it is the news."""
        try:
            await write
        except RetryableError as exc:
            log.info("progress_checkpoint_failed", error=type(exc).__name__, **_detail_fields(exc))

    async def _reload(self) -> UploadRecord:
        current = await self.deps.uploads.get(self.rid)
        if current is None:
            raise _Superseded
        return current
