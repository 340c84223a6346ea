"""What the status-poller decides: publish events start or settle tracking, polls map TikTok's
status onto the upload's state and schedule the next poll.

Pure logic against ports (UploadStore, a StateRecorder, TikTokApi, a clock): no Kafka, HTTP or
Mongo here. Transitions go through the recorder, whose guarded update refuses to move a document
backwards, so a late or duplicate event or poll result changes nothing.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reelay_common.domain.errors import (
    InvalidInputError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    TikTokRejectedError,
    TransientTikTokError,
)
from reelay_common.domain.messages import PublishEvent, StateSource, TikTokWebhookReceived, VideoUploaded
from reelay_common.domain.profiles import LearnedSchedule
from reelay_common.domain.records import Change, UploadRecord
from reelay_common.domain.rules import Backoff, upload_state_for
from reelay_common.domain.states import UploadState
from reelay_common.domain.tenancy import scoped
from reelay_common.domain.tiktok import PublishStatus, PublishStatusCode
from reelay_common.logging import bind_learned, get_logger
from reelay_common.metrics import STATUS_POLLS_PER_PUBLISH
from reelay_common.ports import Outbox, PollProfiles, Recorder, TikTokApi, UploadStore, WebhookLedger
from reelay_common.tracing import trace_carrier

from reelay_status_poller.learning import observe_terminal, plan_next_poll

log = get_logger(__name__)

EVENT_COMPLETE = "post.publish.complete"
EVENT_INBOX_DELIVERED = "post.publish.inbox_delivered"
EVENT_FAILED = "post.publish.failed"
EVENT_PUBLICLY_AVAILABLE = "post.publish.publicly_available"
EVENT_NO_LONGER_PUBLIC = "post.publish.no_longer_publicaly_available"  # misspelled by TikTok
EVENT_AUTHORIZATION_REMOVED = "authorization.removed"

# The publish status each webhook event announces (the same news status/fetch gives).
_WEBHOOK_STATUS: dict[str, PublishStatusCode] = {
    EVENT_COMPLETE: "PUBLISH_COMPLETE",
    EVENT_INBOX_DELIVERED: "SEND_TO_USER_INBOX",
    EVENT_FAILED: "FAILED",
}

# TikTok's answer to a publish it does not know: it will never become a post.
CODE_INVALID_PUBLISH_ID = "invalid_publish_id"


@dataclass(frozen=True)
class PollPolicy:
    """The adaptive schedule (seconds); see PollerSettings for what each knob means."""

    min_interval: float = 2.0
    max_interval: float = 60.0
    backoff_factor: float = 1.5
    give_up_after: float = 7200.0
    post_id_watch: float = 600.0
    # One status/fetch (pacing wait included) is abandoned after this long and retried later,
    # so a poll always ends well inside its lease and no other replica takes it over meanwhile.
    fetch_timeout: float = 20.0

    def interval(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th poll (0-based): grows geometrically, capped."""
        return Backoff(self.min_interval, self.max_interval, self.backoff_factor).delay(attempts)


@dataclass(frozen=True)
class PollerDeps:
    """Everything the handlers need, built by the composition root."""

    uploads: UploadStore
    recorder: Recorder
    outbox: Outbox
    tiktok: TikTokApi
    policy: PollPolicy
    clock: Callable[[], datetime]
    webhooks: WebhookLedger  # the webhooks already applied: a redelivery changes nothing
    # The learnt schedule (learning.py); without both, today's backoff alone.
    profiles: PollProfiles | None = None
    learning: LearnedSchedule | None = None


class PollOutcome(enum.StrEnum):
    """What one poll did (for logs and metrics)."""

    PROGRESSED = "progressed"  # state moved (e.g. uploaded -> processing), still tracking
    SETTLED = "settled"  # reached a terminal state
    WAITING = "waiting"  # no news, polled again later
    POST_IDS = "post_ids"  # a published post's ids were collected (or still awaited)
    RETRY = "retry"  # TikTok or our pacing said not now; no state change
    GAVE_UP = "gave_up"  # no terminal status in time: unconfirmed
    STOPPED = "stopped"  # nothing left to learn: tracking ended without calling TikTok


# ---------------------------------------------------------------------------------------------
# Publish events (Kafka `reelay.publish.events`)


async def handle_publish_event(event: PublishEvent, deps: PollerDeps) -> None:
    """Apply one publish event: start tracking an uploaded video, or apply a TikTok webhook."""
    if isinstance(event, VideoUploaded):
        await start_tracking(event, deps)
    else:
        await apply_webhook(event, deps)


async def start_tracking(event: VideoUploaded, deps: PollerDeps) -> None:
    """Make the upload due for polling now; idempotent on redelivery, a no-op once terminal."""
    # Its request_id / account_id / publish_id are bound by the consumer loop, for every line.
    # A checkpoint guarded by the state just read; if the state moved meanwhile, read again.
    key = scoped(event.tenant_id, event.request_id)  # the upload's stored key
    for _ in range(3):
        record = await deps.uploads.get(key)
        if record is None:
            raise InvalidInputError(
                f"no upload {event.request_id!r} for this VideoUploaded event", code="unknown_request"
            )
        if record.account_id != scoped(event.tenant_id, event.account_id):
            raise InvalidInputError(
                f"upload {event.request_id!r} belongs to another account than the event says",
                code="account_mismatch",
            )
        if record.publish_id is not None and record.publish_id != event.publish_id:
            # The uploader initialised again after this publish (its upload_url expired):
            # the event speaks of a publish that will never become a post.
            log.info("stale_video_uploaded_skipped", current_publish_id=record.publish_id)
            return
        if record.state.is_terminal:
            log.info("tracking_not_needed", state=record.state.value)
            return
        if record.tracking_started_at is not None and record.poll_next_at is not None:
            log.info("tracking_already_started", state=record.state.value)
            return
        now = deps.clock()
        fields: dict[str, Any] = {
            "publish_id": event.publish_id,
            "poll_next_at": now,
            "poll_lease_until": None,
        }
        if record.tracking_started_at is None:
            fields["tracking_started_at"] = now
            # The first poll where processing usually ends, if that was learnt; else at once.
            fresh = record.model_copy(update={"tracking_started_at": now, "poll_attempts": 0})
            fields["poll_next_at"] = await _learned_next_poll(fresh, now, deps) or now
            fields["poll_attempts"] = 0
            fields["trace_context"] = trace_carrier()  # each poll continues this trace
        updated = await deps.uploads.checkpoint(key, fields, expect_state=record.state)
        if updated is not None:
            log.info("tracking_started", state=updated.state.value)
            return
    # Three state changes while we looked: whoever is moving it also tracks it.
    log.warning("tracking_start_contended")


async def apply_webhook(event: TikTokWebhookReceived, deps: PollerDeps) -> None:
    """Apply a verified TikTok webhook to the upload it names (forward-only)."""
    bind_learned(webhook_event=event.event)
    if event.event == EVENT_AUTHORIZATION_REMOVED:
        # Account handling belongs to the accounts side; the poller only notes it.
        log.warning("authorization_removed_seen", reason=event.reason, user_openid=event.user_openid)
        return
    if event.publish_id is None:
        log.warning("webhook_without_publish_id_skipped")
        return
    key = webhook_key(event)
    if await deps.webhooks.seen(key):
        # TikTok delivers at least once (and Kafka may redeliver): applied already, announced already.
        log.info("webhook_redelivery_skipped", create_time=event.create_time)
        return
    record = await deps.uploads.find_by_publish_id(event.publish_id)
    if record is None:
        # Another system may post through the same TikTok app; its publishes are not ours.
        log.info("webhook_for_unknown_publish_skipped")
        return
    await _apply_webhook_to(record, event, deps)
    # Noted only once applied: a failure before this point lets the redelivery apply it.
    await deps.webhooks.remember(key)


def webhook_key(event: TikTokWebhookReceived) -> str:
    """A webhook's identity: a redelivery repeats its publish_id, event and create_time."""
    return f"{event.publish_id}|{event.event}|{event.create_time}"


async def _apply_webhook_to(record: UploadRecord, event: TikTokWebhookReceived, deps: PollerDeps) -> None:
    # Learnt from the upload the webhook names (the event itself carries no request_id).
    learned = {"request_id": record.request_id}
    if event.account_id is None or scoped(event.tenant_id, event.account_id) != record.account_id:
        learned["account_id"] = record.account_id
    bind_learned(**learned)
    detail: dict[str, Any] = {"webhook_event": event.event, "create_time": event.create_time}
    if event.publish_type is not None:
        detail["publish_type"] = event.publish_type

    status = _WEBHOOK_STATUS.get(event.event)
    if status is not None:
        meaning = upload_state_for(status, record.mode)
        if meaning.user_posted_draft:
            detail["user_posted_draft"] = True
        if status == "FAILED" and event.reason is not None:
            detail["fail_reason"] = event.reason
        moved = await _record_terminal(record, meaning.state, "webhook", detail, deps)
        if moved is not None and deps.profiles is not None:
            await _learn_from_webhook(record, event, deps.profiles, deps.clock())
        if meaning.user_posted_draft and record.user_posted_draft_at is None:  # TikTok may repeat it
            await _note_fact(record, {"user_posted_draft_at": deps.clock()}, deps)
    elif event.event == EVENT_PUBLICLY_AVAILABLE:
        if event.post_id is None:
            log.warning("publicly_available_without_post_id")
            return
        await _add_post_ids(record, [event.post_id], "webhook", deps)
    elif event.event == EVENT_NO_LONGER_PUBLIC:
        # A fact about the post, not a state of the upload: note it, change nothing else.
        await _note_fact(record, {"no_longer_public_at": deps.clock()}, deps)
    else:
        log.info("webhook_event_ignored")


# ---------------------------------------------------------------------------------------------
# Polls (driven by the scheduler on leased documents)


async def poll_once(record: UploadRecord, deps: PollerDeps) -> PollOutcome:
    """Poll TikTok once for a leased upload, record what changed and schedule (or end) tracking."""
    # Its request_id / account_id / publish_id are bound by the scheduler, for every line of the poll.
    now = deps.clock()

    if record.state.is_terminal and not _wants_post_ids(record, now, deps.policy):
        await _stop_tracking(record, deps)
        log.info("tracking_stopped", state=record.state.value)
        return PollOutcome.STOPPED
    if record.publish_id is None:
        # Tracking is only started with a publish_id; a document without one cannot be polled.
        await _stop_tracking(record, deps)
        log.error("tracking_without_publish_id_stopped", state=record.state.value)
        return PollOutcome.STOPPED

    asked_at = now
    try:
        async with asyncio.timeout(deps.policy.fetch_timeout):
            status = await deps.tiktok.fetch_status(record.account_id, record.publish_id)
    except TimeoutError:
        timeout = TransientTikTokError(
            f"status/fetch took longer than {deps.policy.fetch_timeout:g} s", code="poll_timeout"
        )
        return await _after_retryable(record, timeout, deps)
    except RetryableError as exc:
        return await _after_retryable(record, exc, deps)
    except PermanentError as exc:
        return await _after_permanent(record, exc, deps)

    if record.state.is_terminal:
        # Only here to collect the post ids of a published public post.
        return await _collect_post_ids(record, status, deps)

    updated = await _apply_status(record, status, deps)
    current = updated or await deps.uploads.get(record.request_id) or record
    if current.state is UploadState.PUBLISHED and status.publicaly_available_post_id:
        # Published meanwhile by a webhook: the ids this poll brought are still news.
        current = await _add_post_ids(current, status.publicaly_available_post_id, "poller", deps) or current
    now = deps.clock()
    if current.state.is_terminal:
        if updated is not None and updated.state.is_terminal and deps.profiles is not None:
            # This poll saw TikTok finish: some time after the previous poll that saw it working
            # (without one, any time since processing began, tracking may have started late).
            await observe_terminal(deps.profiles, record, after=record.poll_last_at, by=now)
        await _watch_post_ids_or_stop(current, now, deps)
        log.info("publish_settled", state=current.state.value, tiktok_status=status.status)
        return PollOutcome.SETTLED
    if _give_up_due(current, now, deps.policy):
        return await _give_up(current, {"last_tiktok_status": status.status}, deps)
    await _schedule(current, await _plan_next_poll(current, now, deps), deps, polled_at=asked_at)
    log.debug("publish_still_processing", state=current.state.value, tiktok_status=status.status)
    return PollOutcome.PROGRESSED if updated is not None else PollOutcome.WAITING


async def _apply_status(record: UploadRecord, status: PublishStatus, deps: PollerDeps) -> UploadRecord | None:
    meaning = upload_state_for(status.status, record.mode)
    detail: dict[str, Any] = {"tiktok_status": status.status}
    set_fields: dict[str, Any] = {}
    if meaning.state is UploadState.PROCESSING:
        if status.uploaded_bytes is not None:
            detail["uploaded_bytes"] = status.uploaded_bytes
        if status.downloaded_bytes is not None:
            detail["downloaded_bytes"] = status.downloaded_bytes
    elif meaning.user_posted_draft:
        detail["user_posted_draft"] = True
    elif meaning.state is UploadState.PUBLISHED:
        merged = _merge(record.post_ids, status.publicaly_available_post_id)
        if merged != record.post_ids:
            set_fields["post_ids"] = merged
    elif meaning.state is UploadState.FAILED and status.fail_reason is not None:
        detail["fail_reason"] = status.fail_reason
    moved = await deps.recorder.record(
        record.request_id, Change(meaning.state, source="poller", detail=detail, set_fields=set_fields)
    )
    if meaning.user_posted_draft and record.user_posted_draft_at is None:
        await _note_fact(record, {"user_posted_draft_at": deps.clock()}, deps)
    return moved


async def _collect_post_ids(record: UploadRecord, status: PublishStatus, deps: PollerDeps) -> PollOutcome:
    current = record
    if status.publicaly_available_post_id:
        current = await _add_post_ids(record, status.publicaly_available_post_id, "poller", deps) or record
    if not await _watch_post_ids_or_stop(current, deps.clock(), deps):
        log.info(
            "post_id_watch_ended",
            request_id=record.request_id,
            publish_id=record.publish_id,
            post_ids=current.post_ids,
        )
    return PollOutcome.POST_IDS


async def _after_retryable(record: UploadRecord, exc: RetryableError, deps: PollerDeps) -> PollOutcome:
    now = deps.clock()
    if not record.state.is_terminal and _give_up_due(record, now, deps.policy):
        return await _give_up(record, {"last_error": exc.detail()}, deps)
    next_at = await _plan_next_poll(record, now, deps)
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        next_at = max(next_at, now + timedelta(seconds=exc.retry_after))
    await _schedule(record, next_at, deps)
    log.warning("status_poll_deferred", **exc.detail(), next_poll_at=next_at.isoformat())
    return PollOutcome.RETRY


async def _after_permanent(record: UploadRecord, exc: PermanentError, deps: PollerDeps) -> PollOutcome:
    if record.state.is_terminal:
        # Only the post-id watch was left; it cannot go on.
        await _stop_tracking(record, deps, polled=True)
        log.warning("post_id_watch_aborted", **exc.detail())
        return PollOutcome.STOPPED
    detail: dict[str, Any] = {"reason": "status_fetch_refused", **exc.detail()}
    if isinstance(exc, TikTokRejectedError) and exc.code == CODE_INVALID_PUBLISH_ID:
        # TikTok says this publish does not exist: it will never become a post.
        target = UploadState.FAILED
    else:
        # Auth gone, or the token may not see this publish: the post may exist, we cannot tell.
        target = UploadState.UNCONFIRMED
    await deps.recorder.record(record.request_id, Change(target, source="poller", detail=detail))
    await _stop_tracking(record, deps, polled=True)
    log.warning("status_poll_refused", state=target.value, **exc.detail())
    return PollOutcome.SETTLED


async def _give_up(record: UploadRecord, extra: Mapping[str, Any], deps: PollerDeps) -> PollOutcome:
    detail = {
        "reason": "no_terminal_status",
        "message": (
            f"TikTok reported no terminal status within {deps.policy.give_up_after:g} s of tracking; "
            "the outcome is unknown"
        ),
        "give_up_after_seconds": deps.policy.give_up_after,
        **extra,
    }
    await deps.recorder.record(
        record.request_id, Change(UploadState.UNCONFIRMED, source="poller", detail=detail)
    )
    await _stop_tracking(record, deps, polled=True)
    log.warning(
        "publish_unconfirmed",
        request_id=record.request_id,
        account_id=record.account_id,
        publish_id=record.publish_id,
    )
    return PollOutcome.GAVE_UP


# ---------------------------------------------------------------------------------------------
# Helpers


async def _record_terminal(
    record: UploadRecord,
    target: UploadState,
    source: StateSource,
    detail: Mapping[str, Any],
    deps: PollerDeps,
) -> UploadRecord | None:
    """Record a terminal outcome; end tracking with it unless post ids are still to be collected."""
    set_fields: dict[str, Any] = {}
    will_watch = (
        target is UploadState.PUBLISHED and _is_public_direct(record) and not record.post_ids
    ) and deps.policy.post_id_watch > 0
    if not will_watch:
        set_fields = {"poll_next_at": None, "poll_lease_until": None}
    elif record.poll_next_at is None:
        # Not tracked any more (e.g. it was unconfirmed): track again to collect the post ids.
        set_fields = {"poll_next_at": deps.clock()}
    moved = await deps.recorder.record(
        record.request_id, Change(target, source=source, detail=detail, set_fields=set_fields)
    )
    log.info(
        "webhook_applied" if moved is not None else "webhook_changed_nothing",
        request_id=record.request_id,
        publish_id=record.publish_id,
        state=(moved.state if moved is not None else record.state).value,
        target=target.value,
    )
    return moved


async def _add_post_ids(
    record: UploadRecord, post_ids: Sequence[str], source: StateSource, deps: PollerDeps
) -> UploadRecord | None:
    """Merge new post ids into the document and announce them; returns None if none were new."""
    # One atomic add-to-set that also writes the announcement: a webhook and a poll racing here
    # cannot drop each other's ids.
    updated = await deps.uploads.add_post_ids(record.request_id, post_ids, source=source)
    if updated is None:
        return None
    await deps.outbox.drain(record.request_id)
    log.info(
        "post_ids_collected",
        request_id=record.request_id,
        account_id=record.account_id,
        publish_id=record.publish_id,
        post_ids=updated.post_ids,
    )
    return updated


async def _note_fact(record: UploadRecord, fields: Mapping[str, Any], deps: PollerDeps) -> None:
    """Keep a fact about the post (not a state) in the upload's document, and log it."""
    log.info("publish_fact", request_id=record.request_id, publish_id=record.publish_id, **fields)
    await deps.uploads.checkpoint(record.request_id, fields)


async def _schedule(
    record: UploadRecord, next_at: datetime, deps: PollerDeps, *, polled_at: datetime | None = None
) -> None:
    await deps.uploads.schedule_poll(
        record.request_id, next_at, attempts=record.poll_attempts + 1, polled_at=polled_at
    )


async def _learned_next_poll(
    record: UploadRecord, now: datetime, deps: PollerDeps, *, polled_now: bool = False
) -> datetime | None:
    """The next poll by the learnt schedule, or None without one (learning off or nothing trusted)."""
    if deps.profiles is None or deps.learning is None:
        return None
    next_at = await plan_next_poll(
        record,
        now,
        profiles=deps.profiles,
        schedule=deps.learning,
        min_interval=deps.policy.min_interval,
        max_interval=deps.policy.max_interval,
        backoff=deps.policy.interval,
        polled_now=polled_now,
    )
    return None if next_at is None else _before_deadline(record, now, next_at, deps.policy)


async def _plan_next_poll(record: UploadRecord, now: datetime, deps: PollerDeps) -> datetime:
    """After a poll: the learnt next poll where there is one, else today's backoff."""
    learned = await _learned_next_poll(record, now, deps, polled_now=True)
    return learned or _next_poll_at(record, now, deps.policy)


async def _learn_from_webhook(
    record: UploadRecord, event: TikTokWebhookReceived, profiles: PollProfiles, now: datetime
) -> None:
    """A terminal webhook says when TikTok finished (its create_time, whole seconds, TikTok's clock):
    clamped to what this side knows (not before the last poll that saw it working, not after now)."""
    told = datetime.fromtimestamp(event.create_time, UTC)
    by = min(now, told + timedelta(seconds=1))
    after = min(by, max(told, record.poll_last_at or told))
    await observe_terminal(profiles, record, after=after, by=by)


async def _watch_post_ids_or_stop(record: UploadRecord, now: datetime, deps: PollerDeps) -> bool:
    """After a poll of a settled upload: poll again later while its post ids are still wanted
    (True), else end tracking (False)."""
    if _wants_post_ids(record, now, deps.policy):
        await _schedule(record, now + timedelta(seconds=deps.policy.max_interval), deps)
        return True
    await _stop_tracking(record, deps, polled=True)
    return False


async def _stop_tracking(record: UploadRecord, deps: PollerDeps, *, polled: bool = False) -> None:
    """End tracking; when this poll made a status/fetch call (`polled`), count it."""
    fields: dict[str, Any] = {"poll_next_at": None, "poll_lease_until": None}
    if polled:
        attempts = record.poll_attempts + 1
        fields["poll_attempts"] = attempts
        STATUS_POLLS_PER_PUBLISH.observe(attempts)
    await deps.uploads.checkpoint(record.request_id, fields)


def _merge(existing: Sequence[str], new: Sequence[str]) -> list[str]:
    out = list(existing)
    for post_id in new:
        if post_id not in out:
            out.append(post_id)
    return out


def _is_public_direct(record: UploadRecord) -> bool:
    return (
        record.mode == "direct"
        and record.post_info is not None
        and record.post_info.privacy_level == "PUBLIC_TO_EVERYONE"
    )


def _published_at(record: UploadRecord) -> datetime | None:
    for entry in reversed(record.history):
        if entry.state is UploadState.PUBLISHED:
            return entry.at
    return None


def _wants_post_ids(record: UploadRecord, now: datetime, policy: PollPolicy) -> bool:
    """A published public direct post without post ids, still inside the watch window."""
    if record.state is not UploadState.PUBLISHED or record.post_ids or not _is_public_direct(record):
        return False
    published_at = _published_at(record) or record.updated_at
    return now < published_at + timedelta(seconds=policy.post_id_watch)


def _give_up_due(record: UploadRecord, now: datetime, policy: PollPolicy) -> bool:
    started = record.tracking_started_at or record.created_at
    return now >= started + timedelta(seconds=policy.give_up_after)


def _next_poll_at(record: UploadRecord, now: datetime, policy: PollPolicy) -> datetime:
    """The adaptive next poll, never later than the give-up deadline (so giving up is on time)."""
    next_at = now + timedelta(seconds=policy.interval(record.poll_attempts))
    return _before_deadline(record, now, next_at, policy)


def _before_deadline(record: UploadRecord, now: datetime, next_at: datetime, policy: PollPolicy) -> datetime:
    started = record.tracking_started_at or record.created_at
    deadline = started + timedelta(seconds=policy.give_up_after)
    return min(next_at, deadline) if deadline > now else next_at
