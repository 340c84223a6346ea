"""TikTok delivers webhooks at least once: a redelivery (same publish_id, event and create_time)
reaching the real poller over Kafka changes nothing in FerretDB and announces nothing."""

from __future__ import annotations

from reelay_common.domain.messages import PublishStatusChanged, TikTokWebhookReceived
from reelay_common.domain.states import UploadState
from reelay_testing.kafka import read_topic
from reelay_testing.waiting import eventually

from tests.integration.poller.poller_world import World


async def test_a_redelivered_webhook_changes_nothing_and_announces_nothing(world: World) -> None:
    account = await world.connected_account("acct-redelivery")
    record = await world.uploaded_video(account)

    def webhook(event: str, create_time: int) -> TikTokWebhookReceived:
        return TikTokWebhookReceived(
            event=event,
            create_time=create_time,
            publish_id=record.publish_id,
            publish_type="DIRECT_PUBLISH",
            account_id=account,
        )

    complete = webhook("post.publish.complete", 1_700_000_000)
    gone = webhook("post.publish.no_longer_publicaly_available", 1_700_000_001)
    # An event the poller ignores (but notes), as a marker that everything before it was consumed.
    marker = webhook("video.comment.created", 1_700_000_900)

    async def noted(count: int) -> bool:
        return await world.db["webhook_events"].count_documents({}) == count

    async with world.running_poller():
        for event in (complete, gone):
            await world.publisher.publish(world.events_topic, event, key=account)
        await eventually(lambda: noted(2), timeout=40, what="two webhooks applied")
        applied = await world.uploads.get(record.request_id)

        # Redelivered (TikTok retrying, twice), then the marker; one key, so one partition, in order.
        for event in (complete, gone, complete, gone, marker):
            await world.publisher.publish(world.events_topic, event, key=account)
        await eventually(lambda: noted(3), timeout=40, what="the marker consumed")
        settled = await world.uploads.get(record.request_id)
        changes = await read_topic(world.kafka, world.status_topic, until=1, timeout=20, linger=1.0)

    assert applied is not None
    assert settled is not None
    assert applied.state is UploadState.PUBLISHED
    assert applied.no_longer_public_at is not None
    assert settled == applied  # not a field rewritten (a fact noted again would carry a new time)
    announced = [PublishStatusChanged.model_validate_json(r.value) for r in changes]
    assert [(a.request_id, a.state) for a in announced] == [(record.request_id, UploadState.PUBLISHED)]
