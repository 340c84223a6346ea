"""Fixtures shared by every tier: real Kafka and a real Mongo-wire server for integration and e2e tests.

Where they come from, in order: `KAFKA_BOOTSTRAP_SERVERS` / `MONGODB_URI` (what `make test` sets after
starting its own Kafka and FerretDB); otherwise testcontainers when a Docker daemon answers;
otherwise the test fails with a message saying how to provide them. Unit tests request none of these.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.adapters.kafka.topics import ensure_topics
from reelay_common.adapters.mongo.client import connect

_HOW_TO = (
    "Integration and e2e tests need a real Kafka and a Mongo-wire server. Run them with `make test` "
    "(which starts both), or set KAFKA_BOOTSTRAP_SERVERS and MONGODB_URI to running ones, e.g. "
    "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 MONGODB_URI=mongodb://127.0.0.1:27117"
)

_TESTS_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by tier from their folder, so `-m integration` / `-m e2e` select them."""
    for item in items:
        parts = Path(str(item.path)).relative_to(_TESTS_DIR).parts if _TESTS_DIR in item.path.parents else ()
        if parts and parts[0] == "integration":
            item.add_marker(pytest.mark.integration)
        elif parts and parts[0] == "e2e":
            item.add_marker(pytest.mark.e2e)


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]  # untyped; imported only when no service is configured

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap_servers() -> Iterator[str]:
    """Kafka for this test session (env var, else testcontainers with Docker, else a clear failure)."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if not _docker_answers():
        pytest.fail(
            f"KAFKA_BOOTSTRAP_SERVERS is not set and no Docker daemon answers. {_HOW_TO}", pytrace=False
        )
    from testcontainers.community.kafka import KafkaContainer  # Docker-only path

    with KafkaContainer().with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    """A Mongo-wire server for this test session (env var, else testcontainers, else a clear failure)."""
    configured = os.environ.get("MONGODB_URI")
    if configured:
        yield configured
        return
    if not _docker_answers():
        pytest.fail(f"MONGODB_URI is not set and no Docker daemon answers. {_HOW_TO}", pytrace=False)
    from testcontainers.community.mongodb import MongoDbContainer  # Docker-only path

    with MongoDbContainer() as mongo:
        yield mongo.get_connection_url()


@pytest.fixture(scope="session")
async def mongo_client(mongodb_uri: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    """One client for the session (tz-aware UTC, like the services')."""
    client = connect(mongodb_uri, app_name="reelay-tests")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def mongo_db(
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """A fresh, uniquely named database, dropped after the test."""
    name = f"reelay_test_{uuid.uuid4().hex[:12]}"
    db = mongo_client[name]
    try:
        yield db
    finally:
        await mongo_client.drop_database(name)


UniqueTopic = Callable[..., Awaitable[str]]


@pytest.fixture
def unique_topic(kafka_bootstrap_servers: str) -> UniqueTopic:
    """A factory: `await unique_topic("uploads", partitions=2)` creates `<prefix>.<uuid>` and its DLQ."""

    async def make(prefix: str = "reelay.test", *, partitions: int = 1) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        await ensure_topics(kafka_bootstrap_servers, [name], partitions=partitions, replication_factor=1)
        return name

    return make


@pytest.fixture
async def kafka_publisher(kafka_bootstrap_servers: str) -> AsyncIterator[KafkaPublisher]:
    """A started KafkaPublisher (acks=all, idempotent), stopped after the test."""
    async with KafkaPublisher(
        kafka_bootstrap_servers, client_id=f"reelay-tests-{uuid.uuid4().hex[:6]}"
    ) as pub:
        yield pub


@pytest.fixture(scope="session")
def s3_settings() -> dict[str, str]:
    """An S3-compatible server for this session: S3_ENDPOINT_URL and its keys, as `make test` exports
    them after starting its own SeaweedFS (scripts/stack.py test-infra up --s3)."""
    endpoint = os.environ.get("S3_ENDPOINT_URL")
    if not endpoint:
        pytest.fail(
            "S3_ENDPOINT_URL is not set. Run the tests with `make test` (which starts SeaweedFS), or "
            "point S3_ENDPOINT_URL, REELAY_S3_ACCESS_KEY_ID, REELAY_S3_SECRET_ACCESS_KEY and "
            "REELAY_S3_BUCKET at a running S3-compatible server.",
            pytrace=False,
        )
    return {
        "endpoint_url": endpoint,
        "access_key_id": os.environ.get("REELAY_S3_ACCESS_KEY_ID", ""),
        "secret_access_key": os.environ.get("REELAY_S3_SECRET_ACCESS_KEY", ""),
        "bucket": os.environ.get("REELAY_S3_BUCKET", "reelay-test"),
        "region": os.environ.get("REELAY_S3_REGION", "us-east-1"),
    }
