"""What ingest decides: accept an upload, register an account, pass on a TikTok webhook.

Nothing here knows FastAPI, Kafka or Mongo. The routes decode HTTP into these calls and map
their outcomes, and the errors of `reelay_ingest.errors`, back into HTTP.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from reelay_common.adapters.netguard import ensure_callback_url, ensure_public_url
from reelay_common.domain.errors import InvalidInputError, PermanentError, RateLimitedError, RetryableError
from reelay_common.domain.messages import (
    BlobSource,
    PostInfo,
    PullFromUrlSource,
    TikTokWebhookReceived,
    UploadMode,
    UploadRequested,
    UrlSource,
)
from reelay_common.domain.oauth import ACCOUNT_DISCONNECTED, ACCOUNT_REAUTH_REQUIRED
from reelay_common.domain.records import AccountRecord, AccountStatus, Change, UploadRecord, account_status
from reelay_common.domain.rules import PRIVACY_LEVEL_NOT_OFFERED, check_privacy_level
from reelay_common.domain.states import CANCELLABLE_STATES, UploadState
from reelay_common.domain.tenancy import DEFAULT_TENANT, scoped, split_scoped
from reelay_common.domain.tiktok import CreatorInfo, TokenGrant
from reelay_common.logging import get_logger

from reelay_ingest.deps import IngestDeps
from reelay_ingest.errors import ConflictError, NotFoundError, RequestRejected, UnavailableError
from reelay_ingest.lifecycle import account_removed
from reelay_ingest.webhooks import WebhookEvent

log = get_logger(__name__)

# The TikTok scope each mode needs (API reference §1).
REQUIRED_SCOPE: dict[UploadMode, str] = {"direct": "video.publish", "inbox": "video.upload"}
# The code of uploads an earlier Reelay refused when Kafka did not acknowledge (before the outbox).
ENQUEUE_FAILED = "enqueue_failed"
# What a publish raises when Kafka does not acknowledge in time (the publisher translates the
# broker's errors into RetryableError; the enqueue timeout raises TimeoutError). Anything else is
# a bug, and surfaces as one (a 500), not as "Kafka did not acknowledge".
NOT_ACKNOWLEDGED = (RetryableError, TimeoutError)
AUTHORIZATION_REMOVED = "authorization.removed"
# What check_upload_target refuses with (then a settled upload may still be a replay).
REFUSALS = (RequestRejected, NotFoundError)


@dataclass(frozen=True)
class UploadTarget:
    """What can be checked before a video's bytes arrive (`account_id` is the client's own)."""

    account_id: str
    mode: UploadMode
    post_info: PostInfo | None
    url: str | None = None
    tenant_id: str = DEFAULT_TENANT

    @classmethod
    def of(cls, cmd: UploadRequested) -> UploadTarget:
        """The target of an upload command."""
        url = cmd.source.url if isinstance(cmd.source, UrlSource | PullFromUrlSource) else None
        return cls(
            account_id=cmd.account_id,
            mode=cmd.mode,
            post_info=cmd.post_info,
            url=url,
            tenant_id=cmd.tenant_id,
        )

    @property
    def account_key(self) -> str:
        """The account's stored key (scoped to the tenant)."""
        return scoped(self.tenant_id, self.account_id)


@dataclass(frozen=True)
class Accepted:
    """An upload on its way: the stored record, and whether this call was a replay."""

    record: UploadRecord
    replayed: bool


async def check_upload_target(target: UploadTarget, deps: IngestDeps) -> None:
    """Refuse (RequestRejected and friends) an upload TikTok or our own rules would refuse."""
    policy = deps.policy
    # Another tenant's account is not found here, exactly like one that does not exist.
    account = await deps.accounts.get(target.account_key)
    if account is None:
        raise NotFoundError(
            f"account {target.account_id!r} is not registered; register it with POST /v1/accounts",
            code="unknown_account",
            extra={"account_id": target.account_id},
        )
    _check_account_can_post(account, target.mode)
    if target.url is not None:
        try:
            await ensure_public_url(target.url, allow_private=policy.allow_private_urls)
        except InvalidInputError as exc:
            raise RequestRejected(exc.message, code=exc.code or "url_refused") from exc
    if target.mode == "direct" and target.post_info is not None and policy.check_creator_info:
        info = await _creator_info(target.account_key, deps)
        if info is None:
            return
        offered = list(info.privacy_level_options)
        try:
            check_privacy_level(target.post_info.privacy_level, offered)
        except InvalidInputError as exc:
            # The uploader's own refusal, made at the API and naming the levels the client may choose.
            raise RequestRejected(
                exc.message,
                code=PRIVACY_LEVEL_NOT_OFFERED,
                extra={"privacy_level": target.post_info.privacy_level, "offered": offered},
            ) from exc


async def _creator_info(account_id: str, deps: IngestDeps) -> CreatorInfo | None:
    """The account's creator_info (kept a short while for every replica), or None when TikTok's
    quota for it is spent: then the privacy level is not checked here, TikTok checks it at init
    (the uploader's refusal, privacy_level_option_mismatch), and the client is not refused.

    The gateway's other errors (auth expired, rejected, TikTok down) pass through: the route maps them.
    """

    async def fetch() -> CreatorInfo:
        # The gateway paces this call per account (20/min) and waits only briefly for a slot.
        return await deps.tiktok.creator_info(account_id)

    try:
        if deps.creator_infos is None:
            return await fetch()
        return await deps.creator_infos.get_or_fetch(account_id, fetch)
    except RateLimitedError as exc:
        log.warning("privacy_level_check_deferred", account_id=account_id, **exc.detail())
        return None


async def check_callback_url(url: str | None, deps: IngestDeps) -> None:
    """Refuse (RequestRejected, code callback_url_*) a callback URL that is not https or whose host
    is not public (http and private hosts only where private URLs are allowed)."""
    if url is None:
        return
    try:
        await ensure_callback_url(url, allow_private=deps.policy.allow_private_urls)
    except InvalidInputError as exc:
        raise RequestRejected(exc.message, code=exc.code or "callback_url_refused") from exc


# The code a new upload of an account that cannot post is refused with (409).
_REFUSED_BECAUSE = {
    AccountStatus.REAUTH_REQUIRED: ACCOUNT_REAUTH_REQUIRED,
    AccountStatus.DISCONNECTED: ACCOUNT_DISCONNECTED,
}


def _check_account_can_post(account: AccountRecord, mode: UploadMode) -> None:
    status = account_status(account.status)
    if status is not AccountStatus.CONNECTED:
        local = split_scoped(account.account_id)[1]
        raise ConflictError(
            f"account {local!r} is {status.value}; connect it again with POST /v1/accounts/{local}/connect",
            code=_REFUSED_BECAUSE.get(status, ACCOUNT_REAUTH_REQUIRED),
            extra={
                "account_id": local,
                "status": status.value,
                "reconnect": f"POST /v1/accounts/{local}/connect",
            },
        )
    scope = REQUIRED_SCOPE[mode]
    if scope not in account.scopes:
        raise RequestRejected(
            f"mode {mode!r} needs the TikTok scope {scope}, which account {account.client_account_id!r} "
            "has not granted",
            code="missing_scope",
            extra={"required_scope": scope, "scopes": list(account.scopes)},
        )


async def accept_upload(
    cmd: UploadRequested, deps: IngestDeps, *, checked: UploadTarget | None = None
) -> Accepted:
    """Store `cmd` as `accepted` with its command in the upload's outbox, then send it; or replay an
    earlier identical call.

    Accepted means stored: the command and the `accepted` announcement are written into the upload
    document with it (the outbox), so a Kafka outage or a crash right after the insert delays the
    upload but never loses it (the relay sends it once Kafka is back). The call waits up to
    `accept_wait_seconds` for Kafka to take it, then answers either way. `checked` is the target
    `check_upload_target` already passed for (a form's fields before its file); the check is made
    unless that is `cmd`'s own target.
    """
    key = scoped(cmd.tenant_id, cmd.request_id)  # the tenant's request_id, as stored
    existing = await deps.uploads.find_in_flight(key)
    if existing is not None:
        return _replay(existing, cmd)
    target = UploadTarget.of(cmd)
    if checked != target:
        try:
            await check_upload_target(target, deps)
        except REFUSALS:
            # A replay of an upload already settled into history answers as it did, even if its
            # target would be refused today (the account disconnected since, say).
            settled = await deps.uploads.get(key)
            if settled is None:
                raise
            return _replay(settled, cmd)
    await check_callback_url(cmd.callback_url, deps)
    _check_publish_at(cmd, deps)
    record, created = await deps.uploads.create(
        cmd, source="ingest", enqueue=True, lease_seconds=deps.outbox.lease_seconds
    )
    if not created:  # a concurrent or earlier call with the same request_id
        return _replay(record, cmd)
    deps.recorder.created(record)
    sent = await deps.outbox.drain(
        record.request_id, leased=record, within_seconds=deps.policy.accept_wait_seconds
    )
    log.info(
        "upload_accepted",
        request_id=cmd.request_id,
        account_id=cmd.account_id,
        tenant_id=cmd.tenant_id,
        mode=cmd.mode,
        source_kind=cmd.source.kind,
        queued=sent,  # False: Kafka did not take it in time; the relay sends it
    )
    return Accepted(record=record, replayed=False)


def _check_publish_at(cmd: UploadRequested, deps: IngestDeps) -> None:
    """A scheduled upload's time must be to come, and within the horizon (TikTok has no scheduling
    for API posts: Reelay holds the upload and starts it then)."""
    if cmd.publish_at is None:
        return
    now = datetime.now(UTC)
    horizon = timedelta(seconds=deps.policy.schedule_horizon_seconds)
    if cmd.publish_at <= now:
        raise RequestRejected(
            f"publish_at {cmd.publish_at.isoformat()} is not in the future; leave it out to publish now",
            code="invalid_publish_at",
            extra={"publish_at": cmd.publish_at.isoformat()},
        )
    if cmd.publish_at > now + horizon:
        raise RequestRejected(
            f"publish_at may be at most {horizon.days} days ahead",
            code="invalid_publish_at",
            extra={"publish_at": cmd.publish_at.isoformat(), "horizon_seconds": horizon.total_seconds()},
        )


@dataclass(frozen=True)
class Cancelling:
    """What a cancel did: the upload as it is now, and whether TikTok was asked to stop a download
    (its answer comes as a webhook: the upload then ends `failed` with `publish_cancelled`)."""

    record: UploadRecord
    asked_tiktok: bool


async def cancel_upload(key: str, deps: IngestDeps) -> Cancelling:
    """Cancel the upload stored under `key` (a tenant's request_id, scoped): ours while TikTok has
    no byte of it (scheduled, or accepted: until its publish is recorded), TikTok's for a
    PULL_FROM_URL download in progress.

    Idempotent: an upload already cancelled is answered as it is. Otherwise, once TikTok has it,
    ConflictError names its state (or TikTok's `publish_not_cancellable`).
    """
    request_id = split_scoped(key)[1]  # the client's own, for what it is told
    record = await deps.uploads.get(key)
    if record is None:
        raise NotFoundError(f"no upload with request_id {request_id!r}", code="unknown_upload")
    if record.state in CANCELLABLE_STATES:
        cancelled = await deps.recorder.record(
            key,
            Change(
                UploadState.CANCELLED,
                source="ingest",
                detail={
                    "code": "cancelled",
                    "message": f"cancelled by the client while {record.state.value}",
                },
            ),
        )
        if cancelled is not None:
            log.info("upload_cancelled", request_id=request_id, was=record.state.value)
            if isinstance(cancelled.source, BlobSource):
                await deps.blobs.delete(cancelled.source.blob_id)
            return Cancelling(cancelled, asked_tiktok=False)
        record = await deps.uploads.get(key) or record  # it moved on meanwhile
    if record.state is UploadState.CANCELLED:
        return Cancelling(record, asked_tiktok=False)
    if _tiktok_may_cancel(record):
        assert record.publish_id is not None
        try:
            await deps.tiktok.cancel_publish(record.account_id, record.publish_id)
        except PermanentError as exc:
            raise ConflictError(
                f"TikTok refused to cancel upload {request_id!r}: {exc.message}",
                code="not_cancellable",
                extra={"request_id": request_id, "state": record.state.value, "tiktok_error": exc.code},
            ) from exc
        log.info("upload_cancel_asked", request_id=request_id, publish_id=record.publish_id)
        return Cancelling(record, asked_tiktok=True)
    raise ConflictError(
        f"upload {request_id!r} is {record.state.value}: TikTok has it already, so it can no longer "
        "be cancelled",
        code="not_cancellable",
        extra={"request_id": request_id, "state": record.state.value},
    )


def _tiktok_may_cancel(record: UploadRecord) -> bool:
    """TikTok's cancel covers PULL_FROM_URL downloads in progress only (docs/architecture.md, TikTok §2)."""
    return (
        isinstance(record.source, PullFromUrlSource)
        and record.publish_id is not None
        and record.state in (UploadState.UPLOADED, UploadState.PROCESSING)
    )


def same_request(record: UploadRecord, cmd: UploadRequested) -> bool:
    """Whether `cmd` asks for what `record` already holds (a replay, not a conflict).

    A streamed file is stored anew on every call, so blobs compare by size, type and name.
    """
    asked = (scoped(cmd.tenant_id, cmd.account_id), cmd.mode, cmd.post_info)
    if (record.account_id, record.mode, record.post_info) != asked:
        return False
    if isinstance(record.source, BlobSource) and isinstance(cmd.source, BlobSource):
        return (record.source.size, record.source.content_type, record.source.filename) == (
            cmd.source.size,
            cmd.source.content_type,
            cmd.source.filename,
        )
    return record.source == cmd.source


def _enqueue_failed(record: UploadRecord) -> bool:
    return record.state is UploadState.FAILED and any(
        h.source == "ingest" and h.detail.get("code") == ENQUEUE_FAILED for h in record.history
    )


def _replay(record: UploadRecord, cmd: UploadRequested) -> Accepted:
    if not same_request(record, cmd):
        raise ConflictError(
            f"request_id {cmd.request_id!r} was already used for a different upload",
            code="request_id_conflict",
            extra={"request_id": cmd.request_id},
        )
    if _enqueue_failed(record):
        # Refused by an earlier Reelay, which answered 503 when Kafka did not acknowledge.
        raise ConflictError(
            f"request_id {cmd.request_id!r} was refused earlier because it could not be queued; "
            "send the upload again with a new request_id",
            code="request_id_spent",
            extra={"request_id": cmd.request_id, "state": record.state.value},
        )
    # Whatever the first call still owed Kafka waits in the upload's outbox: the relay sends it.
    log.info("upload_replayed", request_id=record.request_id, state=record.state.value)
    return Accepted(record=record, replayed=True)


@dataclass(frozen=True)
class RegisterAccount:
    """Register (or refresh) an account with tokens obtained from TikTok elsewhere.

    `account_id` is the stored key (`Tenant.key` of the client's id)."""

    account_id: str
    grant: TokenGrant


async def register_account(cmd: RegisterAccount, deps: IngestDeps) -> tuple[AccountRecord, bool]:
    """Store the account's tokens (encrypted by the store). Returns (account, created)."""
    existing = await deps.accounts.get(cmd.account_id)
    if existing is not None and existing.open_id is not None and existing.open_id != cmd.grant.open_id:
        # Re-pointing an account at another TikTok user would post to the wrong profile.
        account_id = existing.client_account_id
        raise ConflictError(
            f"account {account_id!r} is registered for another TikTok user (open_id)",
            code="account_open_id_mismatch",
            extra={"account_id": account_id},
        )
    record = await deps.accounts.upsert_tokens(cmd.account_id, cmd.grant)
    log.info(
        "account_registered", account_id=cmd.account_id, created=existing is None, scopes=cmd.grant.scopes
    )
    return record, existing is None


async def pass_on_webhook(event: WebhookEvent, deps: IngestDeps) -> TikTokWebhookReceived | None:
    """Publish a verified TikTok webhook on `reelay.publish.events`; None for events we ignore.

    The message is keyed by the upload's account (found by publish_id) so that it shares a
    partition, and so an order, with the other events of that account. UnavailableError when
    Kafka does not acknowledge: TikTok then retries the webhook (for up to 72 h).
    """
    if not event.known:
        log.info("webhook_ignored", tiktok_event=event.event)
        return None
    if event.event == AUTHORIZATION_REMOVED and event.user_openid and deps.lifecycle is not None:
        # Disconnected before the acknowledgement: a database failure answers 503 and TikTok retries.
        await account_removed(event.user_openid, event.reason, deps.lifecycle)
    record = await deps.uploads.find_by_publish_id(event.publish_id) if event.publish_id else None
    # The event as received, with the account it belongs to.
    owner = (
        {"account_id": record.client_account_id, "tenant_id": record.tenant_id} if record is not None else {}
    )
    message = TikTokWebhookReceived(**asdict(event), **owner)
    key = (
        (record.account_id if record is not None else None)
        or event.user_openid
        or event.publish_id
        or "unknown"
    )
    try:
        async with asyncio.timeout(deps.policy.enqueue_timeout_seconds):
            await deps.publisher.publish(deps.topics.publish_events, message, key=key)
    except NOT_ACKNOWLEDGED as exc:
        log.error("webhook_enqueue_failed", tiktok_event=event.event, error=type(exc).__name__)
        raise UnavailableError(
            "the webhook could not be queued; retry later", code=ENQUEUE_FAILED, retry_after=5.0
        ) from exc
    log.info(
        "webhook_received",
        tiktok_event=event.event,
        publish_id=event.publish_id,
        account_id=message.account_id,
        request_id=record.request_id if record is not None else None,
    )
    return message
