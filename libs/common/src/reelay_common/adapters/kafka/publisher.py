"""Kafka publisher: JSON messages, sent with acks=all and awaited until the broker acknowledges them."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
)
from prometheus_client import Counter
from pydantic import BaseModel

from reelay_common.adapters.kafka.availability import kafka_availability
from reelay_common.adapters.kafka.clients import start_client
from reelay_common.domain.errors import (
    BrokerUnavailableError,
)
from reelay_common.tracing import producer_span

PUBLISHED = Counter("reelay_kafka_published_total", "Messages acknowledged by Kafka.", ["topic"])


class KafkaPublisher:
    """Publishes JSON messages and waits for every in-sync replica's ack (idempotent producer)."""

    def __init__(self, bootstrap_servers: str, *, client_id: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        # aiokafka's repeated connection errors are held back; an acknowledged send says Kafka is back.
        self._availability = kafka_availability()

    async def start(self) -> None:
        """Connect to Kafka."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
        )
        await start_client(producer, what="producer")
        self._producer = producer

    async def stop(self) -> None:
        """Flush what is pending and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def publish(self, topic: str, message: BaseModel, *, key: str) -> None:
        """Publish `message` as JSON under `key` and wait for the broker's acknowledgement."""
        await self.publish_raw(topic, message.model_dump_json().encode(), key=key.encode())

    async def publish_raw(self, topic: str, value: bytes, *, key: bytes | None) -> None:
        """Publish raw bytes (dead letters keep the original key bytes) and wait for the ack."""
        if self._producer is None:
            raise RuntimeError("KafkaPublisher is not started")
        try:
            with producer_span(topic) as headers:  # the record carries this span's traceparent
                await self._producer.send_and_wait(topic, value=value, key=key, headers=headers or None)
        except KafkaError as exc:
            raise BrokerUnavailableError(f"Kafka did not acknowledge a message on {topic}: {exc!r}") from exc
        PUBLISHED.labels(topic=topic).inc()
        self._availability.available()

    async def healthy(self) -> bool:
        """True when the producer is started and can see the cluster."""
        if self._producer is None:
            return False
        # A metadata round trip to the cluster. (Not the partitions of `__consumer_offsets`: that
        # topic only exists once some consumer group has committed, so a fresh broker would
        # never look ready.)
        try:
            metadata = await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 5)
        except (KafkaError, TimeoutError):
            return False
        if metadata.brokers():
            self._availability.available()
            return True
        return False
