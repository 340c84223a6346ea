"""Read a Kafka topic from the beginning, without a consumer group (nothing is committed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer


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


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Until = 1,
    timeout: float = 30.0,  # noqa: ASYNC109  # the bound is what callers choose; the loop checks it between fetches
) -> list[TopicRecord]:
    """Records of `topic` from the start until `until` holds: a count (at least that many) or a predicate.

    Bounded: after `timeout` seconds an AssertionError says how many records arrived. What one
    fetch returns with the record that satisfies `until` is kept too, so duplicates show.
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
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(TopicRecord(r.partition, r.offset, r.key, r.value) for r in batch)
    finally:
        await consumer.stop()
    return records
