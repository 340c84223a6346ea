"""StateRecorder: a guarded transition, then one announcement on the status topic (never lost)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel
from reelay_common.domain.errors import RetryableError
from reelay_common.domain.messages import PublishStatusChanged, UploadRequested
from reelay_common.domain.records import Change
from reelay_common.domain.states import UploadState
from reelay_common.recorder import StateRecorder
from reelay_testing.publisher import FakePublisher
from reelay_testing.stores import FakeUploadStore

S = UploadState
TOPIC = "reelay.publish.status"


@pytest.fixture
def uploads() -> FakeUploadStore:
    return FakeUploadStore()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def recorder(uploads: FakeUploadStore, publisher: FakePublisher) -> StateRecorder:
    cmd = UploadRequested.model_validate(
        {
            "request_id": "req-1",
            "account_id": "acct-1",
            "mode": "inbox",
            "source": {"kind": "url", "url": "https://videos.example.com/a.mp4"},
        }
    )
    await uploads.create(cmd, source="ingest")
    return StateRecorder(uploads, publisher, status_topic=TOPIC, announce_wait_seconds=0.2)


def announced(publisher: FakePublisher) -> list[PublishStatusChanged]:
    return publisher.messages(TOPIC, PublishStatusChanged)


class TestRecord:
    async def test_moves_the_upload_and_announces_it_keyed_by_account(
        self, recorder: StateRecorder, publisher: FakePublisher
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

    async def test_a_failed_announcement_is_sent_when_the_handler_retries(
        self, recorder: StateRecorder, publisher: FakePublisher, uploads: FakeUploadStore
    ) -> None:
        publisher.fail_with.append(RetryableError("Kafka is down"))
        with pytest.raises(RetryableError):
            await recorder.record("req-1", Change(S.UPLOADED, source="uploader"))
        current = await uploads.get("req-1")
        assert current is not None
        assert current.state is S.UPLOADED  # the state moved before the announcement failed
        # The consumer loop retries the handler: the transition is refused, the announcement is not lost.
        assert await recorder.record("req-1", Change(S.UPLOADED, source="uploader")) is None
        assert [m.state for m in announced(publisher)] == [S.UPLOADED]
        # A third delivery announces nothing more.
        await recorder.record("req-1", Change(S.UPLOADED, source="uploader"))
        assert len(announced(publisher)) == 1

    async def test_announce_publishes_the_current_state(
        self, recorder: StateRecorder, publisher: FakePublisher, uploads: FakeUploadStore
    ) -> None:
        record = await uploads.get("req-1")
        assert record is not None
        await recorder.announce(record, source="ingest")
        (message,) = announced(publisher)
        assert (message.state, message.previous_state, message.source) == (S.ACCEPTED, None, "ingest")
        after = await uploads.get("req-1")
        assert after is not None
        assert after.announced_state is S.ACCEPTED

    async def test_a_concurrent_refused_caller_leaves_the_announcement_to_the_winner(
        self, recorder: StateRecorder, uploads: FakeUploadStore, publisher: FakePublisher
    ) -> None:
        release = asyncio.Event()

        class SlowPublisher:
            async def publish(self, topic: str, message: BaseModel, *, key: str) -> None:
                await release.wait()  # the winner's publish is still in flight
                await publisher.publish(topic, message, key=key)

        slow = StateRecorder(uploads, SlowPublisher(), status_topic=TOPIC, announce_wait_seconds=5)
        winner = asyncio.create_task(slow.record("req-1", Change(S.PUBLISHED, source="webhook")))
        await asyncio.sleep(0.05)
        loser = asyncio.create_task(slow.record("req-1", Change(S.PUBLISHED, source="poller")))
        await asyncio.sleep(0.1)
        release.set()
        assert await winner is not None
        assert await loser is None
        assert [(m.state, m.source) for m in announced(publisher)] == [(S.PUBLISHED, "webhook")]

    async def test_a_refused_caller_announces_at_once_when_no_winner_is_announcing(
        self, recorder: StateRecorder, uploads: FakeUploadStore, publisher: FakePublisher
    ) -> None:
        patient = StateRecorder(uploads, publisher, status_topic=TOPIC, announce_wait_seconds=30)
        publisher.fail_with.append(RetryableError("Kafka is down"))
        with pytest.raises(RetryableError):
            await patient.record("req-1", Change(S.UPLOADED, source="uploader"))
        async with asyncio.timeout(1):  # nothing to wait for: the winner's publish is over
            assert await patient.record("req-1", Change(S.UPLOADED, source="uploader")) is None
        assert [m.state for m in announced(publisher)] == [S.UPLOADED]

    async def test_a_refused_caller_announces_when_the_winners_publish_fails(
        self, recorder: StateRecorder, uploads: FakeUploadStore, publisher: FakePublisher
    ) -> None:
        release = asyncio.Event()

        class FailingOncePublisher:
            calls = 0

            async def publish(self, topic: str, message: BaseModel, *, key: str) -> None:
                self.calls += 1
                if self.calls == 1:
                    await release.wait()
                    raise RetryableError("Kafka is down")
                await publisher.publish(topic, message, key=key)

        flaky = StateRecorder(uploads, FailingOncePublisher(), status_topic=TOPIC, announce_wait_seconds=5)
        winner = asyncio.create_task(flaky.record("req-1", Change(S.PUBLISHED, source="webhook")))
        await asyncio.sleep(0.05)
        loser = asyncio.create_task(flaky.record("req-1", Change(S.PUBLISHED, source="poller")))
        await asyncio.sleep(0.05)
        release.set()
        with pytest.raises(RetryableError):
            await winner
        assert await loser is None
        assert [(m.state, m.source) for m in announced(publisher)] == [(S.PUBLISHED, "poller")]
        current = await uploads.get("req-1")
        assert current is not None
        assert current.announced_state is S.PUBLISHED
