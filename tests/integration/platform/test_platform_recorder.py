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
from reelay_testing.kafka import read_topic

from tests.conftest import UniqueTopic
from tests.recording import recording


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
        recorder = recording(uploads, kafka_publisher, status_topic=topic).recorder
        moved = await recorder.record(
            "req-1", Change(UploadState.UPLOADED, source="uploader", set_fields={"publish_id": "p"})
        )
        assert moved is not None
        assert await recorder.record("req-1", Change(UploadState.UPLOADING, source="uploader")) is None

        stored = await uploads.get("req-1")
        assert stored is not None
        assert (stored.state, stored.outbox, stored.publish_id) == (UploadState.UPLOADED, [], "p")
        # Both owed announcements (ingest's `accepted` was never sent here), in order, and whatever
        # follows within half a second: the refused transition's, if any.
        records = await read_topic(kafka_bootstrap_servers, topic, until=2, linger=0.5)
        seen = [(r.key, PublishStatusChanged.model_validate_json(r.value)) for r in records]
        # Exactly these two: the refused transition announced nothing.
        assert [(key, m.state, m.previous_state, m.publish_id) for key, m in seen] == [
            (b"acct-1", UploadState.ACCEPTED, None, "p"),
            (b"acct-1", UploadState.UPLOADED, UploadState.ACCEPTED, "p"),
        ]
