"""The outbox relay on real Kafka and a real Mongo-wire server: several relays (replicas) send each
owed message once in the normal case, in order, and a scheduled upload goes out once, when due."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.adapters.mongo.client import ensure_indexes
from reelay_common.adapters.mongo.uploads import MongoUploadStore
from reelay_common.domain.messages import PublishStatusChanged, UploadRequested
from reelay_common.domain.records import Change
from reelay_common.domain.states import UploadState
from reelay_common.outbox import OutboxRelay
from reelay_testing.kafka import read_topic
from reelay_testing.waiting import eventually

from tests.conftest import UniqueTopic

S = UploadState


def command(n: int, *, publish_at: datetime | None = None) -> UploadRequested:
    return UploadRequested.model_validate(
        {
            "request_id": f"req-{n}",
            "account_id": f"acct-{n % 3}",
            "mode": "inbox",
            "source": {"kind": "url", "url": "https://videos.example.com/a.mp4"},
            "publish_at": publish_at,
        }
    )


@dataclass
class World:
    """A Mongo store, a publisher and two fresh topics (2 partitions) on the session's servers."""

    uploads: MongoUploadStore
    publisher: KafkaPublisher
    bootstrap: str
    requested: str
    status: str

    def relays(self, count: int) -> list[OutboxRelay]:
        """`count` relays over the same store: what `count` replicas run."""
        return [
            OutboxRelay(
                self.uploads,
                self.publisher,
                requested_topic=self.requested,
                status_topic=self.status,
                interval_seconds=0.1,
            )
            for _ in range(count)
        ]


@pytest.fixture
async def world(
    mongo_db: AsyncDatabase[dict[str, Any]],
    kafka_publisher: KafkaPublisher,
    kafka_bootstrap_servers: str,
    unique_topic: UniqueTopic,
) -> World:
    await ensure_indexes(mongo_db)
    requested = await unique_topic("outbox.req", partitions=2)
    status = await unique_topic("outbox.status", partitions=2)
    return World(MongoUploadStore(mongo_db), kafka_publisher, kafka_bootstrap_servers, requested, status)


class TestReplicas:
    async def test_two_relays_send_what_dead_writers_left_once_each_and_in_order(self, world: World) -> None:
        uploads, requested, status, kafka_bootstrap_servers = (
            world.uploads,
            world.requested,
            world.status,
            world.bootstrap,
        )
        for n in range(12):
            await uploads.create(command(n), source="ingest", enqueue=True)
            await uploads.transition(f"req-{n}", Change(S.UPLOADING, source="uploader"))
        stop = asyncio.Event()
        workers = [asyncio.create_task(r.run(stop)) for r in world.relays(2)]
        try:
            commands = await read_topic(kafka_bootstrap_servers, requested, until=12, linger=1.0)
            changes = await read_topic(kafka_bootstrap_servers, status, until=24, linger=1.0)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        assert sorted(UploadRequested.model_validate_json(r.value).request_id for r in commands) == sorted(
            f"req-{n}" for n in range(12)
        )
        by_upload: dict[str, list[S]] = {}
        for record in changes:
            message = PublishStatusChanged.model_validate_json(record.value)
            by_upload.setdefault(message.request_id, []).append(message.state)
        assert by_upload == {f"req-{n}": [S.ACCEPTED, S.UPLOADING] for n in range(12)}
        for n in range(12):
            record = await uploads.get(f"req-{n}")
            assert record is not None
            assert record.outbox == []


class TestScheduled:
    async def test_goes_out_once_when_due_with_two_relays_and_a_cancelled_one_never(
        self, world: World
    ) -> None:
        uploads, requested, kafka_bootstrap_servers = world.uploads, world.requested, world.bootstrap
        due = datetime.now(UTC) + timedelta(seconds=3)
        for n in range(5):
            await uploads.create(command(n, publish_at=due), source="ingest", enqueue=True)
        cancelled = await uploads.transition("req-4", Change(S.CANCELLED, source="ingest"))
        assert cancelled is not None
        stop = asyncio.Event()
        workers = [asyncio.create_task(r.run(stop)) for r in world.relays(2)]
        try:
            commands = await read_topic(kafka_bootstrap_servers, requested, until=4, timeout=60, linger=2.0)
            sent_at = datetime.now(UTC)

            async def all_accepted() -> bool:
                for n in range(4):
                    released = await uploads.get(f"req-{n}")
                    if released is None or released.state is not S.ACCEPTED or released.outbox:
                        return False
                return True

            await eventually(all_accepted, timeout=30, what="scheduled uploads released")
        finally:
            stop.set()
            await asyncio.gather(*workers)
        assert sent_at >= due  # not before its time
        assert sorted(UploadRequested.model_validate_json(r.value).request_id for r in commands) == [
            f"req-{n}" for n in range(4)
        ]
        record = await uploads.get("req-4")
        assert record is not None
        assert (record.state, record.outbox) == (S.CANCELLED, [])
        for n in range(4):
            released = await uploads.get(f"req-{n}")
            assert released is not None
            assert [(h.state, h.source) for h in released.history] == [
                (S.SCHEDULED, "ingest"),
                (S.ACCEPTED, "scheduler"),
            ]
