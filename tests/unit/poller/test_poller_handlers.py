"""The status-poller's decisions: starting to track, mapping TikTok's status and webhooks onto the
upload's state, the adaptive schedule, giving up, and never moving a document backwards."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from reelay_common.domain.errors import (
    AuthExpiredError,
    InvalidInputError,
    RateLimitedError,
    TikTokRejectedError,
    TransientTikTokError,
)
from reelay_common.domain.messages import TikTokWebhookReceived, VideoUploaded
from reelay_common.domain.records import Change
from reelay_common.domain.states import UploadState
from reelay_common.domain.tiktok import PublishStatus
from reelay_status_poller.handlers import PollOutcome, PollPolicy, handle_publish_event, poll_once

from tests.unit.poller.poller_fakes import ACCOUNT, HangingTikTok, PollerWorld, status

PUB = "v_pub_file~v2-1.1"
S = UploadState


def video_uploaded(
    request_id: str = "req-1", *, publish_id: str = PUB, account_id: str = ACCOUNT
) -> VideoUploaded:
    return VideoUploaded(request_id=request_id, account_id=account_id, publish_id=publish_id, mode="direct")


def webhook(event: str, *, publish_id: str | None = PUB, **content: str) -> TikTokWebhookReceived:
    return TikTokWebhookReceived.model_validate(
        {"event": event, "create_time": 1_700_000_000, "publish_id": publish_id, **content}
    )


async def tracked(poller: PollerWorld, *answers: PublishStatus | Exception, **kwargs: Any) -> None:
    """An uploaded video whose VideoUploaded event was consumed, with TikTok's answers scripted."""
    record = await poller.uploaded(**kwargs)
    assert record.publish_id is not None
    poller.tiktok.script(record.publish_id, *answers)
    await handle_publish_event(video_uploaded(record.request_id, publish_id=record.publish_id), poller.deps)


class TestStartTracking:
    async def test_makes_an_uploaded_video_due_for_polling_now(self, poller: PollerWorld) -> None:
        await poller.uploaded()

        await handle_publish_event(video_uploaded(), poller.deps)

        record = await poller.get()
        assert record.poll_next_at == poller.clock()
        assert record.tracking_started_at == poller.clock()
        assert record.publish_id == PUB
        assert record.state is S.UPLOADED
        assert poller.announced() == []

    async def test_redelivery_keeps_the_schedule_already_running(self, poller: PollerWorld) -> None:
        await tracked(poller, status("PROCESSING_UPLOAD"))
        await poller.poll_due()
        before = await poller.get()

        poller.clock.advance(1)
        await handle_publish_event(video_uploaded(), poller.deps)

        after = await poller.get()
        assert after.poll_next_at == before.poll_next_at
        assert after.tracking_started_at == before.tracking_started_at
        assert after.poll_attempts == before.poll_attempts

    async def test_does_not_track_an_upload_that_already_settled(self, poller: PollerWorld) -> None:
        await poller.uploaded()
        await handle_publish_event(webhook("post.publish.complete"), poller.deps)

        await handle_publish_event(video_uploaded(), poller.deps)

        record = await poller.get()
        assert record.state is S.PUBLISHED
        assert record.tracking_started_at is None

    async def test_unknown_request_is_refused_and_changes_nothing(self, poller: PollerWorld) -> None:
        await poller.uploaded()

        with pytest.raises(InvalidInputError) as caught:
            await handle_publish_event(video_uploaded("req-nobody"), poller.deps)

        assert caught.value.code == "unknown_request"
        assert (await poller.get()).poll_next_at is None
        assert poller.publisher.sent == []

    async def test_event_naming_another_account_is_refused_and_changes_nothing(
        self, poller: PollerWorld
    ) -> None:
        await poller.uploaded()

        with pytest.raises(InvalidInputError) as caught:
            await handle_publish_event(video_uploaded(account_id="acct-other"), poller.deps)

        assert caught.value.code == "account_mismatch"
        assert (await poller.get()).poll_next_at is None

    async def test_event_for_a_superseded_publish_is_skipped(self, poller: PollerWorld) -> None:
        await poller.uploaded(publish_id="v_pub_file~v2-1.2")

        await handle_publish_event(video_uploaded(publish_id="v_pub_file~v2-1.1"), poller.deps)

        record = await poller.get()
        assert record.poll_next_at is None
        assert record.publish_id == "v_pub_file~v2-1.2"


class TestPollMapsTikTokStatus:
    @pytest.mark.parametrize("code", ["PROCESSING_UPLOAD", "PROCESSING_DOWNLOAD"])
    async def test_processing_moves_to_processing_and_keeps_tracking(
        self, poller: PollerWorld, code: str
    ) -> None:
        await tracked(poller, status(code))

        outcome = await poller.poll_due()

        record = await poller.get()
        assert outcome is PollOutcome.PROGRESSED
        assert record.state is S.PROCESSING
        assert record.history[-1].source == "poller"
        assert record.history[-1].detail["tiktok_status"] == code
        assert record.poll_next_at is not None
        assert poller.announced_states() == [S.PROCESSING]

    async def test_publish_complete_publishes_a_direct_post_with_its_post_ids(
        self, poller: PollerWorld
    ) -> None:
        await tracked(poller, status("PUBLISH_COMPLETE", post_ids=["7300000000000000001"]))

        outcome = await poller.poll_due()

        record = await poller.get()
        assert outcome is PollOutcome.SETTLED
        assert record.state is S.PUBLISHED
        assert record.post_ids == ["7300000000000000001"]
        assert record.poll_next_at is None
        [change] = poller.announced()
        assert change.state is S.PUBLISHED
        assert change.post_ids == ["7300000000000000001"]
        assert change.source == "poller"

    async def test_send_to_user_inbox_is_inbox_success(self, poller: PollerWorld) -> None:
        await tracked(poller, status("SEND_TO_USER_INBOX"), mode="inbox")

        await poller.poll_due()

        record = await poller.get()
        assert record.state is S.INBOX_DELIVERED
        assert record.poll_next_at is None
        assert poller.announced_states() == [S.INBOX_DELIVERED]

    async def test_publish_complete_of_an_inbox_upload_is_inbox_delivered_not_published(
        self, poller: PollerWorld
    ) -> None:
        await tracked(poller, status("PUBLISH_COMPLETE"), mode="inbox")

        await poller.poll_due()

        record = await poller.get()
        assert record.state is S.INBOX_DELIVERED
        assert record.history[-1].detail["user_posted_draft"] is True
        assert record.user_posted_draft_at == poller.clock()
        assert poller.announced_states() == [S.INBOX_DELIVERED]

    async def test_failed_records_tiktoks_fail_reason(self, poller: PollerWorld) -> None:
        await tracked(poller, status("FAILED", fail_reason="duration_check_failed"))

        outcome = await poller.poll_due()

        record = await poller.get()
        assert outcome is PollOutcome.SETTLED
        assert record.state is S.FAILED
        assert record.history[-1].detail["fail_reason"] == "duration_check_failed"
        assert record.poll_next_at is None
        [change] = poller.announced()
        assert change.detail["fail_reason"] == "duration_check_failed"

    async def test_full_life_is_announced_once_per_change(self, poller: PollerWorld) -> None:
        await tracked(
            poller,
            status("PROCESSING_UPLOAD"),
            status("PROCESSING_UPLOAD"),
            status("PROCESSING_UPLOAD"),
            status("PUBLISH_COMPLETE", post_ids=["7300000000000000001"]),
        )

        for _ in range(4):
            poller.clock.advance(60)
            await poller.poll_due()

        record = await poller.get()
        assert [e.state for e in record.history] == [
            S.ACCEPTED,
            S.UPLOADING,
            S.UPLOADED,
            S.PROCESSING,
            S.PUBLISHED,
        ]
        assert poller.announced_states() == [S.PROCESSING, S.PUBLISHED]
        assert poller.tiktok.calls[PUB] == 4
        assert await poller.poll_due() is None


class TestLostAnnouncements:
    async def test_a_state_recorded_but_never_announced_is_announced_by_the_outbox_relay(
        self, poller: PollerWorld
    ) -> None:
        await tracked(poller, status("PROCESSING_UPLOAD"))
        # A poller moved it and died before its Kafka publish: the announcement waits in the outbox.
        await poller.uploads.transition(
            "req-1", Change(S.PROCESSING, source="poller", detail={"tiktok_status": "x"})
        )
        assert poller.announced() == []

        await poller.relay_round()

        [change] = poller.announced()
        assert change.state is S.PROCESSING
        assert change.previous_state is S.UPLOADED
        assert change.detail == {"tiktok_status": "x"}
        assert (await poller.get()).outbox == []


class TestAdaptiveSchedule:
    def test_interval_grows_by_the_factor_and_stops_at_the_cap(self) -> None:
        policy = PollPolicy(min_interval=2, max_interval=10, backoff_factor=2)

        assert [policy.interval(n) for n in range(6)] == [2, 4, 8, 10, 10, 10]
        assert policy.interval(10_000) == 10

    async def test_polls_come_further_apart_until_the_maximum(self, poller: PollerWorld) -> None:
        await tracked(poller, status("PROCESSING_UPLOAD"))

        gaps = []
        for _ in range(12):
            due = (await poller.get()).poll_next_at
            assert due is not None
            poller.clock.now = due  # each poll happens exactly when it is due
            assert await poller.poll_due() is not None
            next_at = (await poller.get()).poll_next_at
            assert next_at is not None
            gaps.append((next_at - poller.clock()).total_seconds())

        assert gaps[:4] == pytest.approx([2, 3, 4.5, 6.75])
        assert all(b >= a for a, b in itertools.pairwise(gaps))
        assert gaps[-1] == 60

    async def test_is_not_polled_before_it_is_due(self, poller: PollerWorld) -> None:
        await tracked(poller, status("PROCESSING_UPLOAD"))
        await poller.poll_due()

        poller.clock.advance(1.9)
        assert await poller.poll_due() is None
        poller.clock.advance(0.1)
        assert await poller.poll_due() is PollOutcome.WAITING

    async def test_gives_up_as_unconfirmed_when_tiktok_never_settles(self, poller: PollerWorld) -> None:
        await tracked(poller, status("PROCESSING_UPLOAD"))

        outcome = None
        for _ in range(1000):
            record = await poller.get()
            if record.poll_next_at is None:
                break
            poller.clock.now = max(poller.clock.now, record.poll_next_at)
            outcome = await poller.poll_due()

        record = await poller.get()
        assert outcome is PollOutcome.GAVE_UP
        assert record.state is S.UNCONFIRMED
        assert record.history[-1].detail["reason"] == "no_terminal_status"
        assert "7200" in record.history[-1].detail["message"]
        assert record.tracking_started_at is not None
        # On time: the last poll was not pushed past the deadline by the growing interval.
        assert poller.clock() - record.tracking_started_at == timedelta(seconds=7200)
        assert record.poll_next_at is None
        assert poller.announced_states() == [S.PROCESSING, S.UNCONFIRMED]

    async def test_unconfirmed_is_corrected_by_a_late_webhook(self, poller: PollerWorld) -> None:
        await tracked(poller, status("PROCESSING_UPLOAD"))
        poller.clock.advance(7200)
        await poller.poll_due()
        assert (await poller.get()).state is S.UNCONFIRMED

        await handle_publish_event(webhook("post.publish.failed", reason="spam_risk"), poller.deps)

        record = await poller.get()
        assert record.state is S.FAILED
        assert poller.announced_states() == [S.PROCESSING, S.UNCONFIRMED, S.FAILED]


class TestPollErrors:
    async def test_rate_limit_reschedules_after_retry_after_without_changing_state(
        self, poller: PollerWorld
    ) -> None:
        await tracked(poller, RateLimitedError("slow down", retry_after=25, code="rate_limit_exceeded"))

        outcome = await poller.poll_due()

        record = await poller.get()
        assert outcome is PollOutcome.RETRY
        assert record.state is S.UPLOADED
        assert record.poll_next_at == poller.clock() + timedelta(seconds=25)
        assert poller.announced() == []

    async def test_server_error_reschedules_on_the_adaptive_interval(self, poller: PollerWorld) -> None:
        await tracked(
            poller, TransientTikTokError("boom", code="internal_error", http_status=500), status("FAILED")
        )

        assert await poller.poll_due() is PollOutcome.RETRY
        record = await poller.get()
        assert record.state is S.UPLOADED
        assert record.poll_next_at == poller.clock() + timedelta(seconds=2)

        poller.clock.advance(2)
        assert await poller.poll_due() is PollOutcome.SETTLED
        assert (await poller.get()).state is S.FAILED

    async def test_retryable_errors_past_the_deadline_give_up(self, poller: PollerWorld) -> None:
        await tracked(poller, TransientTikTokError("boom", http_status=503))

        poller.clock.advance(7200)
        outcome = await poller.poll_due()

        record = await poller.get()
        assert outcome is PollOutcome.GAVE_UP
        assert record.state is S.UNCONFIRMED
        assert record.history[-1].detail["last_error"]["http_status"] == 503

    async def test_a_hanging_status_fetch_is_abandoned_and_retried(self, poller: PollerWorld) -> None:
        await tracked(poller, status("PROCESSING_UPLOAD"))
        deps = replace(poller.deps, tiktok=HangingTikTok(), policy=replace(poller.policy, fetch_timeout=0.05))

        outcome = await poller.poll_due(deps)

        record = await poller.get()
        assert outcome is PollOutcome.RETRY
        assert record.state is S.UPLOADED
        assert record.poll_next_at == poller.clock() + timedelta(seconds=2)

    async def test_unknown_publish_id_fails_the_upload(self, poller: PollerWorld) -> None:
        await tracked(poller, TikTokRejectedError("no such publish", code="invalid_publish_id", log_id="L1"))

        assert await poller.poll_due() is PollOutcome.SETTLED

        record = await poller.get()
        assert record.state is S.FAILED
        assert record.history[-1].detail["code"] == "invalid_publish_id"
        assert record.history[-1].detail["log_id"] == "L1"
        assert record.poll_next_at is None

    @pytest.mark.parametrize(
        "error",
        [
            AuthExpiredError("account must reconnect", code="access_token_invalid"),
            TikTokRejectedError("not yours", code="token_not_authorized_for_specified_publish_id"),
        ],
    )
    async def test_refusals_that_hide_the_outcome_leave_it_unconfirmed(
        self, poller: PollerWorld, error: Exception
    ) -> None:
        await tracked(poller, error)

        assert await poller.poll_due() is PollOutcome.SETTLED

        record = await poller.get()
        assert record.state is S.UNCONFIRMED
        assert record.history[-1].detail["reason"] == "status_fetch_refused"
        assert record.poll_next_at is None
        assert poller.announced_states() == [S.UNCONFIRMED]


class TestPostIdWatch:
    async def test_public_post_without_ids_is_polled_slowly_until_they_appear(
        self, poller: PollerWorld
    ) -> None:
        await tracked(
            poller,
            status("PUBLISH_COMPLETE"),
            status("PUBLISH_COMPLETE"),
            status("PUBLISH_COMPLETE", post_ids=["7300000000000000009"]),
        )

        assert await poller.poll_due() is PollOutcome.SETTLED
        record = await poller.get()
        assert record.state is S.PUBLISHED
        assert record.poll_next_at == poller.clock() + timedelta(seconds=60)

        for _ in range(2):
            assert await poller.poll_when_due() is PollOutcome.POST_IDS

        record = await poller.get()
        assert record.post_ids == ["7300000000000000009"]
        assert record.poll_next_at is None
        assert poller.announced_states() == [S.PUBLISHED, S.PUBLISHED]
        assert poller.announced()[-1].post_ids == ["7300000000000000009"]

    async def test_watch_ends_after_the_window_without_ids(self, poller: PollerWorld) -> None:
        await tracked(poller, status("PUBLISH_COMPLETE"))
        await poller.poll_due()

        for _ in range(100):
            if await poller.poll_when_due() is None:
                break

        record = await poller.get()
        assert record.poll_next_at is None
        assert record.post_ids == []
        assert record.state is S.PUBLISHED
        assert poller.tiktok.calls[PUB] <= 1 + 600 // 60 + 1
        assert poller.announced_states() == [S.PUBLISHED]

    @pytest.mark.parametrize("privacy", ["SELF_ONLY", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR"])
    async def test_non_public_post_is_not_watched(self, poller: PollerWorld, privacy: str) -> None:
        await tracked(poller, status("PUBLISH_COMPLETE"), privacy=privacy)

        await poller.poll_due()

        assert (await poller.get()).poll_next_at is None


class TestWebhooks:
    async def test_complete_publishes_a_direct_post(self, poller: PollerWorld) -> None:
        await poller.uploaded(privacy="SELF_ONLY")

        await handle_publish_event(
            webhook("post.publish.complete", publish_type="DIRECT_PUBLISH"), poller.deps
        )

        record = await poller.get()
        assert record.state is S.PUBLISHED
        assert record.history[-1].source == "webhook"
        assert record.history[-1].detail["publish_type"] == "DIRECT_PUBLISH"
        assert record.poll_next_at is None
        [change] = poller.announced()
        assert change.source == "webhook"

    async def test_complete_of_a_public_post_keeps_watching_for_post_ids(self, poller: PollerWorld) -> None:
        await tracked(poller, status("PUBLISH_COMPLETE", post_ids=["7300000000000000001"]))

        await handle_publish_event(webhook("post.publish.complete"), poller.deps)
        assert await poller.poll_when_due() is PollOutcome.POST_IDS

        record = await poller.get()
        assert record.post_ids == ["7300000000000000001"]
        assert poller.announced_states() == [S.PUBLISHED, S.PUBLISHED]

    async def test_inbox_delivered(self, poller: PollerWorld) -> None:
        await poller.uploaded(mode="inbox")

        await handle_publish_event(
            webhook("post.publish.inbox_delivered", publish_type="INBOX_SHARE"), poller.deps
        )

        assert (await poller.get()).state is S.INBOX_DELIVERED
        assert poller.announced_states() == [S.INBOX_DELIVERED]

    async def test_complete_of_an_inbox_upload_notes_the_draft_was_posted(self, poller: PollerWorld) -> None:
        await poller.uploaded(mode="inbox")
        await handle_publish_event(webhook("post.publish.inbox_delivered"), poller.deps)

        await handle_publish_event(webhook("post.publish.complete", publish_type="INBOX_SHARE"), poller.deps)

        posted_at = poller.clock()
        poller.clock.advance(30)
        await handle_publish_event(webhook("post.publish.complete", publish_type="INBOX_SHARE"), poller.deps)

        record = await poller.get()
        assert record.state is S.INBOX_DELIVERED
        assert record.user_posted_draft_at == posted_at
        assert poller.announced_states() == [S.INBOX_DELIVERED]

    async def test_failed_records_the_reason(self, poller: PollerWorld) -> None:
        await poller.uploaded()

        await handle_publish_event(
            webhook("post.publish.failed", reason="file_format_check_failed"), poller.deps
        )

        record = await poller.get()
        assert record.state is S.FAILED
        assert record.history[-1].detail["fail_reason"] == "file_format_check_failed"
        [change] = poller.announced()
        assert change.detail["fail_reason"] == "file_format_check_failed"

    async def test_publicly_available_adds_the_post_id_once(self, poller: PollerWorld) -> None:
        await poller.uploaded()
        await handle_publish_event(webhook("post.publish.complete"), poller.deps)

        event = webhook("post.publish.publicly_available", post_id="7300000000000000002")
        await handle_publish_event(event, poller.deps)
        await handle_publish_event(event, poller.deps)

        record = await poller.get()
        assert record.state is S.PUBLISHED
        assert record.post_ids == ["7300000000000000002"]
        assert [(m.state, m.post_ids) for m in poller.announced()] == [
            (S.PUBLISHED, []),
            (S.PUBLISHED, ["7300000000000000002"]),
        ]

    async def test_no_longer_public_changes_no_state(self, poller: PollerWorld) -> None:
        await poller.uploaded()
        await handle_publish_event(webhook("post.publish.complete"), poller.deps)

        await handle_publish_event(
            webhook("post.publish.no_longer_publicaly_available", post_id="7300000000000000002"), poller.deps
        )

        record = await poller.get()
        assert record.state is S.PUBLISHED
        assert record.no_longer_public_at == poller.clock()
        assert poller.announced_states() == [S.PUBLISHED]

    async def test_unknown_publish_id_is_skipped(self, poller: PollerWorld) -> None:
        await poller.uploaded()

        await handle_publish_event(
            webhook("post.publish.failed", publish_id="v_pub_file~v2-other.9"), poller.deps
        )

        record = await poller.get()
        assert record.state is S.UPLOADED
        assert poller.publisher.sent == []

    async def test_event_without_publish_id_is_skipped(self, poller: PollerWorld) -> None:
        await poller.uploaded()

        await handle_publish_event(webhook("post.publish.complete", publish_id=None), poller.deps)

        assert (await poller.get()).state is S.UPLOADED
        assert poller.publisher.sent == []

    async def test_authorization_removed_changes_no_upload(self, poller: PollerWorld) -> None:
        await poller.uploaded()

        await handle_publish_event(webhook("authorization.removed", publish_id=None, reason="1"), poller.deps)

        assert (await poller.get()).state is S.UPLOADED
        assert poller.publisher.sent == []

    async def test_unknown_event_changes_nothing(self, poller: PollerWorld) -> None:
        await poller.uploaded()

        await handle_publish_event(webhook("video.comment.created"), poller.deps)

        assert (await poller.get()).state is S.UPLOADED
        assert poller.publisher.sent == []


class TestNeverBackwards:
    async def test_failed_webhook_after_published_does_nothing(self, poller: PollerWorld) -> None:
        await poller.uploaded()
        await handle_publish_event(webhook("post.publish.complete"), poller.deps)

        await handle_publish_event(webhook("post.publish.failed", reason="internal"), poller.deps)

        record = await poller.get()
        assert record.state is S.PUBLISHED
        assert poller.announced_states() == [S.PUBLISHED]

    async def test_duplicate_webhook_is_announced_once(self, poller: PollerWorld) -> None:
        await poller.uploaded()

        for _ in range(3):
            await handle_publish_event(webhook("post.publish.complete"), poller.deps)

        assert [e.state for e in (await poller.get()).history].count(S.PUBLISHED) == 1
        assert poller.announced_states() == [S.PUBLISHED]

    async def test_processing_poll_after_published_does_nothing(self, poller: PollerWorld) -> None:
        await tracked(poller, status("PROCESSING_UPLOAD"), privacy="SELF_ONLY")
        claimed = await poller.uploads.claim_due_poll(poller.clock(), 30)
        assert claimed is not None
        # The webhook lands while the poll is on its way.
        await handle_publish_event(webhook("post.publish.complete"), poller.deps)

        await poll_once(claimed, poller.deps)

        record = await poller.get()
        assert record.state is S.PUBLISHED
        assert poller.announced_states() == [S.PUBLISHED]
        assert record.poll_next_at is None

    async def test_settled_upload_is_not_polled_again(self, poller: PollerWorld) -> None:
        await tracked(poller, status("PROCESSING_UPLOAD"))
        await handle_publish_event(webhook("post.publish.failed", reason="spam_risk"), poller.deps)
        await poller.uploads.checkpoint("req-1", {"poll_next_at": poller.clock()})

        assert await poller.poll_due() is None  # the store does not even lease it
        assert (
            await poll_once(await poller.get(), poller.deps) is PollOutcome.STOPPED
        )  # and a poll would not call

        assert poller.tiktok.calls[PUB] == 0
        assert (await poller.get()).state is S.FAILED
        assert (await poller.get()).poll_next_at is None

    async def test_redelivered_video_uploaded_after_processing_does_not_move_back(
        self, poller: PollerWorld
    ) -> None:
        await tracked(poller, status("PROCESSING_UPLOAD"))
        await poller.poll_due()

        await handle_publish_event(video_uploaded(), poller.deps)

        assert (await poller.get()).state is S.PROCESSING
        assert poller.announced_states() == [S.PROCESSING]
