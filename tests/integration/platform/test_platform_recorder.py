"""StateRecorder over the real store and Kafka: the transition lands in Mongo, the fact on the topic."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.adapters.mongo.client import ensure_indexes
from reelay_common.adapters.mongo.uploads import MongoUploadStore
from reelay_common.domain.messages import PublishStatusChanged, UploadRequested
from reelay_common.domain.records import Change
from reelay_common.domain.states import UploadState
from reelay_common.recorder import StateRecorder
from reelay_testing.kafka import read_topic

from tests.conftest import UniqueTopic


class TestStateRecorder:
    async def test_records_in_mongo_and_announces_on_kafka(
        self,
        mongo_db: AsyncDatabase[dict[str, Any]],
        kafka_publisher: KafkaPublisher,
        kafka_bootstrap_servers: str,
        unique_topic: UniqueTopic,
    ) -> None:
        topic = await unique_topic("reelay.test.status")
        await ensure_indexes(mongo_db)
        uploads = MongoUploadStore(mongo_db)
        await uploads.create(
            UploadRequested.model_validate(
                {
                    "request_id": "req-1",
                    "account_id": "acct-1",
                    "mode": "inbox",
                    "source": {"kind": "url", "url": "https://videos.example.com/a.mp4"},
                }
            ),
            source="ingest",
        )
        recorder = StateRecorder(uploads, kafka_publisher, status_topic=topic)
        moved = await recorder.record(
            "req-1", Change(UploadState.UPLOADED, source="uploader", set_fields={"publish_id": "p"})
        )
        assert moved is not None
        assert await recorder.record("req-1", Change(UploadState.UPLOADING, source="uploader")) is None

        stored = await uploads.get("req-1")
        assert stored is not None
        assert (stored.state, stored.announced_state, stored.publish_id) == (
            UploadState.UPLOADED,
            UploadState.UPLOADED,
            "p",
        )
        # The first record, and whatever follows within half a second: the refused transition's, if any.
        [record, *extra] = await read_topic(kafka_bootstrap_servers, topic, until=1, linger=0.5)
        message = PublishStatusChanged.model_validate_json(record.value)
        assert (record.key, message.state, message.previous_state, message.publish_id) == (
            b"acct-1",
            UploadState.UPLOADED,
            UploadState.ACCEPTED,
            "p",
        )
        assert extra == []  # the refused transition announced nothing
