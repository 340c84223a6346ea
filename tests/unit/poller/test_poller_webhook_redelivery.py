"""A redelivered TikTok webhook (same publish_id, event and create_time) changes nothing and
announces nothing; one that failed half-way is applied by its redelivery; a new create_time is news."""

from __future__ import annotations

import pytest
from reelay_common.domain.errors import DatabaseUnavailableError
from reelay_common.domain.messages import TikTokWebhookReceived
from reelay_common.domain.records import Change, UploadRecord
from reelay_common.domain.states import UploadState
from reelay_status_poller.handlers import handle_publish_event, webhook_key
from reelay_testing.clocks import FakeClock
from reelay_testing.publisher import FakePublisher
from reelay_testing.stores import FakeUploadStore

from tests.unit.poller.poller_fakes import POLICY, PollerWorld, ScriptedTikTok

PUB = "v_pub_file~v2-1.1"
POST = "7300000000000000002"
S = UploadState


def webhook(event: str, *, create_time: int = 1_700_000_000, **content: str) -> TikTokWebhookReceived:
    return TikTokWebhookReceived.model_validate(
        {"event": event, "create_time": create_time, "publish_id": PUB, **content}
    )


EVENTS = [
    webhook("post.publish.complete", create_time=1_700_000_000),
    webhook("post.publish.publicly_available", create_time=1_700_000_001, post_id=POST),
    webhook("post.publish.no_longer_publicaly_available", create_time=1_700_000_002, post_id=POST),
]


async def test_redelivered_webhooks_change_nothing_and_announce_nothing(poller: PollerWorld) -> None:
    await poller.uploaded()
    for event in EVENTS:
        await handle_publish_event(event, poller.deps)
    settled = await poller.get()
    sent = list(poller.publisher.sent)

    poller.clock.advance(3600)  # a fact noted again would carry a new time
    for event in EVENTS * 2:
        await handle_publish_event(event, poller.deps)

    assert await poller.get() == settled
    assert poller.publisher.sent == sent
    assert [(m.state, m.post_ids) for m in poller.announced()] == [(S.PUBLISHED, []), (S.PUBLISHED, [POST])]
    assert poller.webhooks.keys == {webhook_key(e) for e in EVENTS}


async def test_the_same_event_at_a_new_create_time_is_applied(poller: PollerWorld) -> None:
    await poller.uploaded()
    await handle_publish_event(webhook("post.publish.complete"), poller.deps)
    gone = webhook("post.publish.no_longer_publicaly_available", create_time=1_700_000_100)
    await handle_publish_event(gone, poller.deps)
    first = (await poller.get()).no_longer_public_at

    poller.clock.advance(60)
    again = webhook("post.publish.no_longer_publicaly_available", create_time=1_700_000_200)
    await handle_publish_event(again, poller.deps)

    assert (await poller.get()).no_longer_public_at == poller.clock()
    assert first != poller.clock()


class StoreDownOnce(FakeUploadStore):
    """An upload store whose next transition fails as Mongo away would."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def transition(self, request_id: str, change: Change) -> UploadRecord | None:
        if self.down:
            self.down = False
            raise DatabaseUnavailableError("MongoDB could not update an upload: AutoReconnect")
        return await super().transition(request_id, change)


async def test_a_webhook_that_failed_half_way_is_applied_by_its_redelivery() -> None:
    store = StoreDownOnce()
    poller = PollerWorld(
        uploads=store, publisher=FakePublisher(), tiktok=ScriptedTikTok(), clock=FakeClock(), policy=POLICY
    )
    await poller.uploaded()
    complete = webhook("post.publish.complete")
    store.down = True

    with pytest.raises(DatabaseUnavailableError):  # the consumer loop retries the record
        await handle_publish_event(complete, poller.deps)
    assert poller.webhooks.keys == set()  # not noted: its redelivery must not be skipped
    assert (await poller.get()).state is S.UPLOADED

    await handle_publish_event(complete, poller.deps)

    assert (await poller.get()).state is S.PUBLISHED
    assert poller.announced_states() == [S.PUBLISHED]
    assert poller.webhooks.keys == {webhook_key(complete)}


async def test_a_webhook_for_a_foreign_publish_is_not_noted(poller: PollerWorld) -> None:
    await poller.uploaded()
    foreign = TikTokWebhookReceived.model_validate(
        {"event": "post.publish.complete", "create_time": 1, "publish_id": "v_pub_file~v2-other.9"}
    )

    await handle_publish_event(foreign, poller.deps)

    assert poller.webhooks.keys == set()
    assert poller.publisher.sent == []
