"""Read a Kafka topic from the beginning, without a consumer group (nothing is committed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass(frozen=True)
class TopicRecord:
    """One record read back: where it sits, and its key and value bytes."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


Until = int | Callable[[Sequence[TopicRecord]], bool]


def _at_least(count: int) -> Callable[[Sequence[TopicRecord]], bool]:
    def enough(records: Sequence[TopicRecord]) -> bool:
        return len(records) >= count

    return enough


async def _fetch(consumer: AIOKafkaConsumer) -> list[TopicRecord]:
    batches = await consumer.getmany(timeout_ms=200)
    return [TopicRecord(r.partition, r.offset, r.key, r.value) for batch in batches.values() for r in batch]


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Until = 1,
    timeout: float = 30.0,  # noqa: ASYNC109  # the bound is what callers choose; the loop checks it between fetches
    linger: float = 0.0,
) -> list[TopicRecord]:
    """Records of `topic` from the start until `until` holds: a count (at least that many) or a predicate.

    Bounded: after `timeout` seconds an AssertionError says how many records arrived. Whatever
    arrives in the `linger` seconds after `until` holds is kept too, so late duplicates show.
    """
    done = until if callable(until) else _at_least(until)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[TopicRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while not done(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s on {topic}; saw {len(records)} records")
            records.extend(await _fetch(consumer))
        settled = time.monotonic() + linger
        while time.monotonic() < settled:
            records.extend(await _fetch(consumer))
    finally:
        await consumer.stop()
    return records


async def topic_size(bootstrap: str, topic: str) -> int:
    """How many records `topic` holds (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap)  # no group: nothing is committed
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assert partitions, f"topic {topic} does not exist"
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return int(sum(ends.values()))
    finally:
        await consumer.stop()
