"""The e2e tier: the whole stack as real processes over real Kafka and a real Mongo-wire server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import DEFAULT_BLOB_STORE, Stack, running_stack, stack_on


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap_servers: str, mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The module's stack, on the default blob store."""
    workdir = tmp_path_factory.mktemp("stack")
    with running_stack(
        kafka_bootstrap_servers=kafka_bootstrap_servers, mongodb_uri=mongodb_uri, workdir=workdir
    ) as s:
        yield s


@pytest.fixture(scope="module")
def store_stack(
    request: pytest.FixtureRequest,
    blob_store: str,
    kafka_bootstrap_servers: str,
    mongodb_uri: str,
) -> Iterator[Stack]:
    """The module's stack on `blob_store`, which a test parametrizes with scope="module" (so pytest
    runs the tests of one store together, on one stack); the default store's is `stack` itself."""
    if blob_store == DEFAULT_BLOB_STORE:
        yield request.getfixturevalue("stack")
        return
    with stack_on(
        request, blob_store, kafka_bootstrap_servers=kafka_bootstrap_servers, mongodb_uri=mongodb_uri
    ) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
        yield client


@pytest.fixture
def video_dir(tmp_path: Path) -> Path:
    return tmp_path
