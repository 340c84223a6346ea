"""Fixtures of the ingest integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.ingest.ingest_world import IngestWorld, ingest_world


@pytest.fixture
async def world(
    kafka_bootstrap_servers: str, mongodb_uri: str, mongo_db: AsyncDatabase[dict[str, Any]]
) -> AsyncIterator[IngestWorld]:
    async with ingest_world(kafka_bootstrap_servers, mongodb_uri, mongo_db) as w:
        yield w
