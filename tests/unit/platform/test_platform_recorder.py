"""StateRecorder and OutboxRelay: a guarded transition writes its announcement into the upload's
outbox in the same update; the relay sends it, in order, at least once, and never loses it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel
from reelay_common.domain.errors import RetryableError
from reelay_common.domain.messages import PublishStatusChanged, UploadRequested
from reelay_common.domain.records import Change
from reelay_common.domain.states import UploadState
from reelay_common.outbox import OutboxRelay
from reelay_common.recorder import StateRecorder
from reelay_testing.publisher import FakePublisher
from reelay_testing.stores import FakeUploadStore
from reelay_testing.waiting import eventually

S = UploadState
TOPIC = "reelay.publish.status"
REQUESTED = "reelay.upload.requested"
CMD = UploadRequested.model_validate(
    {
        "request_id": "req-1",
        "account_id": "acct-1",
        "mode": "inbox",
        "source": {"kind": "url", "url": "https://videos.example.com/a.mp4"},
    }
)


def relay_over(uploads: FakeUploadStore, publisher: object, **kwargs: float) -> OutboxRelay:
    return OutboxRelay(
        uploads,
        publisher,  # type: ignore[arg-type]  # any object with publish()
        requested_topic=REQUESTED,
        status_topic=TOPIC,
        interval_seconds=0.01,
        **kwargs,
    )


@pytest.fixture
def uploads() -> FakeUploadStore:
    return FakeUploadStore()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def outbox(uploads: FakeUploadStore, publisher: FakePublisher) -> OutboxRelay:
    return relay_over(uploads, publisher)


@pytest.fixture
async def recorder(uploads: FakeUploadStore, outbox: OutboxRelay) -> StateRecorder:
    record, _ = await uploads.create(CMD, source="ingest")
    # Ingest sent its own outbox (the `accepted` announcement) already.
    await uploads.settle_outbox("req-1", record.outbox, next_try_at=datetime.now(UTC))
    return StateRecorder(uploads, outbox)


def announced(publisher: FakePublisher) -> list[PublishStatusChanged]:
    return publisher.messages(TOPIC, PublishStatusChanged)


class TestRecord:
    async def test_moves_the_upload_and_announces_it_keyed_by_account(
        self, recorder: StateRecorder, publisher: FakePublisher, uploads: FakeUploadStore
    ) -> None:
        record = await recorder.record(
            "req-1",
            Change(S.UPLOADED, source="uploader", detail={"log_id": "L"}, set_fields={"publish_id": "p-1"}),
        )
        assert record is not None
        assert record.state is S.UPLOADED
        ((topic, message, key),) = publisher.sent
        assert (topic, key) == (TOPIC, "acct-1")
        assert isinstance(message, PublishStatusChanged)
        assert (message.request_id, message.state, message.previous_state, message.source) == (
            "req-1",
            S.UPLOADED,
            S.ACCEPTED,
            "uploader",
        )
        assert (message.publish_id, message.detail) == ("p-1", {"log_id": "L"})
        assert message.at == record.history[-1].at
        after = await uploads.get("req-1")
        assert after is not None
        assert (after.outbox, after.outbox_due_at, after.outbox_lease_until) == ([], None, None)

    async def test_refused_transitions_announce_nothing(
        self, recorder: StateRecorder, publisher: FakePublisher
    ) -> None:
        await recorder.record("req-1", Change(S.PROCESSING, source="poller"))
        assert await recorder.record("req-1", Change(S.UPLOADED, source="uploader")) is None
        assert await recorder.record("req-1", Change(S.PROCESSING, source="webhook")) is None
        assert [m.state for m in announced(publisher)] == [S.PROCESSING]

    async def test_an_unknown_upload_is_refused_quietly(
        self, recorder: StateRecorder, publisher: FakePublisher
    ) -> None:
        assert await recorder.record("nope", Change(S.UPLOADED, source="uploader")) is None
        assert publisher.sent == []

    async def test_kafka_down_delays_the_announcement_without_failing_the_transition(
        self, recorder: StateRecorder, publisher: FakePublisher, uploads: FakeUploadStore
    ) -> None:
        publisher.fail_with.append(RetryableError("Kafka is down"))
        moved = await recorder.record("req-1", Change(S.UPLOADED, source="uploader"))
        assert moved is not None
        assert moved.state is S.UPLOADED
        current = await uploads.get("req-1")
        assert current is not None
        assert [(e.kind, e.state) for e in current.outbox] == [("status", S.UPLOADED)]
        assert current.outbox_due_at is not None  # waiting for the relay, backed off
        assert current.outbox_lease_until is None
        assert announced(publisher) == []
        # The consumer loop redelivers: the transition is refused, and what is owed is sent now.
        current = await uploads.settle_outbox("req-1", [], next_try_at=datetime.now(UTC))  # due again
        assert await recorder.record("req-1", Change(S.UPLOADED, source="uploader")) is None
        assert [m.state for m in announced(publisher)] == [S.UPLOADED]
        # A third delivery announces nothing more.
        await recorder.record("req-1", Change(S.UPLOADED, source="uploader"))
        assert len(announced(publisher)) == 1

    async def test_concurrent_callers_of_one_transition_announce_it_once(
        self, uploads: FakeUploadStore, publisher: FakePublisher, recorder: StateRecorder
    ) -> None:
        release = asyncio.Event()

        class SlowPublisher:
            async def publish(self, topic: str, message: BaseModel, *, key: str) -> None:
                await release.wait()  # the winner's publish is still in flight
                await publisher.publish(topic, message, key=key)

        slow = StateRecorder(uploads, relay_over(uploads, SlowPublisher()))
        winner = asyncio.create_task(slow.record("req-1", Change(S.PUBLISHED, source="webhook")))
        await asyncio.sleep(0.05)
        loser = asyncio.create_task(slow.record("req-1", Change(S.PUBLISHED, source="poller")))
        await asyncio.sleep(0.05)
        assert loser.done()  # the winner holds the outbox: nothing to wait for
        release.set()
        assert await winner is not None
        assert await loser is None
        assert [(m.state, m.source) for m in announced(publisher)] == [(S.PUBLISHED, "webhook")]


class TestOutboxRelay:
    async def test_accept_sends_the_announcement_then_the_command(
        self, uploads: FakeUploadStore, publisher: FakePublisher, outbox: OutboxRelay
    ) -> None:
        record, created = await uploads.create(CMD, source="ingest", enqueue=True, lease_seconds=30)
        assert created
        assert await outbox.drain("req-1", leased=record)
        assert [t for t, _, _ in publisher.sent] == [TOPIC, REQUESTED]
        status, command = (m for _, m, _ in publisher.sent)
        assert isinstance(status, PublishStatusChanged)
        assert (status.state, status.previous_state, status.source) == (S.ACCEPTED, None, "ingest")
        assert isinstance(command, UploadRequested)
        assert (command.request_id, command.account_id, command.source) == ("req-1", "acct-1", CMD.source)
        assert {k for _, _, k in publisher.sent} == {"acct-1"}

    async def test_the_relay_loop_sends_what_a_dead_writer_left_in_order(
        self, uploads: FakeUploadStore, publisher: FakePublisher, outbox: OutboxRelay
    ) -> None:
        await uploads.create(CMD, source="ingest", enqueue=True)
        # Moved on by writers that died before they sent anything.
        for target in (S.UPLOADING, S.UPLOADED, S.PROCESSING):
            await uploads.transition("req-1", Change(target, source="uploader"))
        stop = asyncio.Event()
        loop = asyncio.create_task(outbox.run(stop))
        await eventually(lambda: len(publisher.sent) == 5, timeout=5)
        stop.set()
        await asyncio.wait_for(loop, timeout=5)
        states = [m.state for m in announced(publisher)]
        assert states == [S.ACCEPTED, S.UPLOADING, S.UPLOADED, S.PROCESSING]
        assert [t for t, _, _ in publisher.sent].index(REQUESTED) == 1  # in the order written
        current = await uploads.get("req-1")
        assert current is not None
        assert (current.outbox, current.outbox_due_at) == ([], None)

    async def test_an_outbox_another_process_is_sending_is_left_to_it(
        self, uploads: FakeUploadStore, publisher: FakePublisher, outbox: OutboxRelay
    ) -> None:
        await uploads.create(CMD, source="ingest", lease_seconds=30)  # held by its creator
        assert not await outbox.drain("req-1")
        assert publisher.sent == []

    async def test_a_send_kafka_does_not_answer_is_handed_back_to_the_relay(
        self, uploads: FakeUploadStore, publisher: FakePublisher
    ) -> None:
        class HangingPublisher:
            async def publish(self, topic: str, message: BaseModel, *, key: str) -> None:
                await asyncio.sleep(3600)

        record, _ = await uploads.create(CMD, source="ingest", enqueue=True, lease_seconds=30)
        hanging = relay_over(uploads, HangingPublisher())
        async with asyncio.timeout(5):
            assert not await hanging.drain("req-1", leased=record, within_seconds=0.05)
        after = await uploads.get("req-1")
        assert after is not None
        assert len(after.outbox) == 2  # nothing lost
        assert after.outbox_lease_until is None  # released: the relay may take it (after a backoff)

    async def test_a_failed_send_keeps_the_unsent_rest_and_drops_what_was_sent(
        self, uploads: FakeUploadStore, publisher: FakePublisher, outbox: OutboxRelay
    ) -> None:
        record, _ = await uploads.create(CMD, source="ingest", enqueue=True, lease_seconds=30)

        class SecondFails:
            calls = 0

            async def publish(self, topic: str, message: BaseModel, *, key: str) -> None:
                self.calls += 1
                if self.calls == 2:
                    raise RetryableError("Kafka is down")
                await publisher.publish(topic, message, key=key)

        assert not await relay_over(uploads, SecondFails()).drain("req-1", leased=record)
        after = await uploads.get("req-1")
        assert after is not None
        assert [e.kind for e in after.outbox] == ["upload_requested"]
        assert after.outbox_due_at is not None
        assert after.outbox_due_at > datetime.now(UTC)  # backed off
        assert [t for t, _, _ in publisher.sent] == [TOPIC]
