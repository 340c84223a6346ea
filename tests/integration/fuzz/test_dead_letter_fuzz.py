"""Bad records fuzzed straight onto each consumed topic, against the services as they run
(`main.run`) on real Kafka and FerretDB: random bytes, truncated JSON, wrongly-typed fields and
oversized values on `reelay.upload.requested` (the uploader) and `reelay.publish.events` (the
status-poller). Each one is dead-lettered on `<topic>.dlq` with a reason, the group's committed
offset reaches the end of the topic (lag 0), and nothing else changes: no upload document, nothing
announced on the status (or events) topic.

Budget: REELAY_FUZZ_EXAMPLES batches per service (each batch up to 6 records, one service run),
small by default; e.g. `REELAY_FUZZ_EXAMPLES=50 pytest tests/integration/fuzz`.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.domain.messages import PUBLISH_EVENT_ADAPTER, DeadLetter, UploadRequested, dlq_topic
from reelay_status_poller.main import run as run_poller
from reelay_status_poller.settings import PollerSettings
from reelay_testing.kafka import read_topic, topic_size
from reelay_testing.waiting import eventually
from reelay_uploader.main import run as run_uploader
from reelay_uploader.settings import UploaderSettings

from tests.conftest import UniqueTopic

EXAMPLES = int(os.environ.get("REELAY_FUZZ_EXAMPLES", "3"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 3,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FAST_KAFKA = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "metadata_max_age_ms": 5000}

GOOD_REQUEST: dict[str, Any] = {
    "request_id": "req-fuzz",
    "account_id": "acct-fuzz",
    "mode": "direct",
    "source": {"kind": "url", "url": "https://videos.example.com/a.mp4"},
    "post_info": {"privacy_level": "SELF_ONLY", "title": "fuzz"},
}
GOOD_UPLOADED: dict[str, Any] = {
    "type": "video_uploaded",
    "request_id": "req-fuzz",
    "account_id": "acct-fuzz",
    "publish_id": "v_pub_fuzz",
    "mode": "direct",
}
WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.text(max_size=20),
)
OVERSIZED = 200_000  # characters: far past every field's limit, well within Kafka's record size


def _paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(doc, dict):
        return [prefix] if prefix else []
    found = [prefix] if prefix else []
    for key, value in doc.items():
        found += _paths(value, (*prefix, key))
    return found


def _replaced(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(doc))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def bad_records(good: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Random bytes, a valid record cut short, one field of the wrong type, one field oversized."""
    encoded = json.dumps(good).encode()
    paths = _paths(good)
    random_bytes = st.binary(max_size=300)
    truncated = st.integers(0, len(encoded) - 1).map(lambda n: encoded[:n])
    wrong_type = st.tuples(st.sampled_from(paths), WRONG_VALUES).map(
        lambda pv: json.dumps(_replaced(good, pv[0], pv[1])).encode()
    )
    oversized = st.sampled_from(paths).map(lambda p: json.dumps(_replaced(good, p, "x" * OVERSIZED)).encode())
    dropped = st.sampled_from(sorted(good)).map(
        lambda k: json.dumps({n: v for n, v in good.items() if n != k}).encode()
    )
    return st.one_of(random_bytes, truncated, wrong_type, oversized, dropped)


def refused_by(decode: Callable[[bytes], object]) -> Callable[[bytes], bool]:
    def refused(value: bytes) -> bool:
        try:
            decode(value)
        except (ValidationError, ValueError):
            return True
        return False

    return refused


@dataclass
class Consumed:
    """One consumed topic, its service's group, and the topics that must stay empty."""

    kafka: str
    topic: str
    group: str
    quiet_topics: list[str]
    db: AsyncDatabase[dict[str, Any]]
    publisher: KafkaPublisher
    service: Callable[[asyncio.Event], Awaitable[None]]
    produced: int = 0

    async def committed(self) -> int:
        """The group's committed offsets on the topic; -1 while the broker has no coordinator for the
        group yet (a fresh broker loads its offsets topic first), so the caller asks again."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.group)
        except GroupCoordinatorNotAvailableError:
            return -1
        finally:
            await admin.close()
        return sum(o.offset for tp, o in offsets.items() if tp.topic == self.topic and o.offset >= 0)

    async def check(self, batch: list[bytes]) -> None:
        """Produce `batch`, run the service until lag is 0, and check what it left."""
        for i, value in enumerate(batch):
            await self.publisher.publish_raw(self.topic, value, key=f"acct-{i}".encode())
        self.produced += len(batch)
        end = await topic_size(self.kafka, self.topic)
        assert end == self.produced
        async with running(self.service):

            async def caught_up() -> bool:
                return await self.committed() == end

            await eventually(caught_up, timeout=60, what=f"{self.group} committed to the end of {self.topic}")
        letters = [
            DeadLetter.model_validate_json(r.value)
            for r in await read_topic(self.kafka, dlq_topic(self.topic), until=self.produced, linger=0.5)
        ]
        assert sorted(dl.offset for dl in letters) == list(range(self.produced)), "each once"
        assert all(dl.topic == self.topic and dl.reason and dl.error for dl in letters)
        assert await self.db["uploads_in_flight"].count_documents({}) == 0
        assert await self.db["uploads"].count_documents({}) == 0
        for quiet in self.quiet_topics:
            assert await topic_size(self.kafka, quiet) == 0, quiet


@asynccontextmanager
async def running(service: Callable[[asyncio.Event], Awaitable[None]]) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(service(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


@dataclass
class World:
    """Real Kafka and a fresh database: the settings both services share, on topics of their own."""

    kafka: str
    mongodb_uri: str
    db: AsyncDatabase[dict[str, Any]]
    publisher: KafkaPublisher
    events: str
    status: str

    def shared(self, group: str) -> dict[str, Any]:
        return {
            "kafka_bootstrap_servers": self.kafka,
            "mongodb_uri": SecretStr(self.mongodb_uri),
            "mongodb_database": self.db.name,
            "topic_publish_events": self.events,
            "topic_publish_status": self.status,
            "topic_partitions": 1,
            "consumer_group": group,
            "ops_port": 0,
            "shutdown_grace_seconds": 2.0,
        }

    def consumed(self, topic: str, group: str, quiet: list[str], service: Service) -> Consumed:
        return Consumed(self.kafka, topic, group, quiet, self.db, self.publisher, service)


Service = Callable[[asyncio.Event], Awaitable[None]]


@pytest.fixture
async def world(
    kafka_bootstrap_servers: str,
    mongodb_uri: str,
    mongo_db: AsyncDatabase[dict[str, Any]],
    unique_topic: UniqueTopic,
    kafka_publisher: KafkaPublisher,
) -> World:
    events = await unique_topic("reelay.test.publish.events")
    status = await unique_topic("reelay.test.publish.status")
    return World(kafka_bootstrap_servers, mongodb_uri, mongo_db, kafka_publisher, events, status)


@pytest.fixture
async def uploader_topic(world: World, unique_topic: UniqueTopic) -> Consumed:
    requested = await unique_topic("reelay.test.upload.requested")
    group = f"test-uploader-fuzz-{uuid.uuid4().hex[:10]}"
    uploader = UploaderSettings.model_validate({**world.shared(group), "topic_upload_requested": requested})
    return world.consumed(
        requested, group, [world.events, world.status], lambda stop: run_uploader(uploader, stop)
    )


@pytest.fixture
async def poller_topic(world: World) -> Consumed:
    group = f"test-poller-fuzz-{uuid.uuid4().hex[:10]}"
    poller = PollerSettings.model_validate(
        {**world.shared(group), "callback_consumer_group": f"{group}-callbacks", "idle_sleep_seconds": 0.05}
    )
    return world.consumed(
        world.events,
        group,
        [world.status],
        lambda stop: run_poller(poller, stop, consumer_overrides=FAST_KAFKA),
    )


def batches(good: dict[str, Any], decode: Callable[[bytes], object]) -> st.SearchStrategy[list[bytes]]:
    """Batches of 1 to 6 records that `decode` (the consumer's own) refuses."""
    return st.lists(bad_records(good).filter(refused_by(decode)), min_size=1, max_size=6)


@FUZZ
@given(batch=batches(GOOD_REQUEST, UploadRequested.model_validate_json))
async def test_the_uploader_dead_letters_every_bad_record_and_changes_nothing(
    uploader_topic: Consumed, batch: list[bytes]
) -> None:
    await uploader_topic.check(batch)


@FUZZ
@given(batch=batches(GOOD_UPLOADED, PUBLISH_EVENT_ADAPTER.validate_json))
async def test_the_poller_dead_letters_every_bad_record_and_changes_nothing(
    poller_topic: Consumed, batch: list[bytes]
) -> None:
    await poller_topic.check(batch)


def test_the_good_records_the_fuzz_starts_from_are_good() -> None:
    # Each bad record is one step from these; were they bad themselves, the fuzz would prove little.
    UploadRequested.model_validate(GOOD_REQUEST)
    PUBLISH_EVENT_ADAPTER.validate_python(GOOD_UPLOADED)
