"""Fixtures of the status-poller's integration tests: a World on real Kafka, Mongo and the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from tiktok_sandbox.testing import running_sandbox

from tests.conftest import UniqueTopic
from tests.integration.poller.poller_world import World


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    """Sandbox settings for the test (a test class may override this fixture)."""
    # TikTok takes a moment to process, so the poller sees PROCESSING_UPLOAD before PUBLISH_COMPLETE.
    return {"processing_delay_seconds": 1.5, "moderation_delay_seconds": 0.2}


@pytest.fixture
async def world(
    sandbox_overrides: dict[str, Any],
    kafka_bootstrap_servers: str,
    mongodb_uri: str,
    mongo_db: AsyncDatabase[dict[str, Any]],
    unique_topic: UniqueTopic,
    kafka_publisher: KafkaPublisher,
) -> AsyncIterator[World]:
    async with running_sandbox(**sandbox_overrides) as sandbox:
        yield World(
            kafka=kafka_bootstrap_servers,
            mongodb_uri=mongodb_uri,
            db=mongo_db,
            sandbox=sandbox,
            events_topic=await unique_topic("poller.events", partitions=2),
            status_topic=await unique_topic("poller.status", partitions=2),
            publisher=kafka_publisher,
        )
