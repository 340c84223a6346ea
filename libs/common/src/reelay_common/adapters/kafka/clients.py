"""What the Kafka producer and consumer share: starting an aiokafka client."""

from __future__ import annotations

from typing import Protocol

from aiokafka.errors import KafkaError

from reelay_common.domain.errors import BrokerUnavailableError


class _Client(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def start_client(client: _Client, *, what: str) -> None:
    """Start `client` (connect to Kafka); when that fails, stop it and raise BrokerUnavailableError
    (a RetryableError)."""
    try:
        await client.start()
    except KafkaError as exc:
        await client.stop()
        raise BrokerUnavailableError(f"could not connect the Kafka {what}: {exc!r}") from exc
