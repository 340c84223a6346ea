"""The e2e tier: the whole stack as real processes over real Kafka and a real Mongo-wire server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap_servers: str, mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    with running_stack(
        kafka_bootstrap_servers=kafka_bootstrap_servers, mongodb_uri=mongodb_uri, workdir=workdir
    ) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
        yield client


@pytest.fixture
def video_dir(tmp_path: Path) -> Path:
    return tmp_path
