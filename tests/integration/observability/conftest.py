"""Fixtures of the observability tests: the three services in-process (see inprocess.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from tests.integration.observability.inprocess import Services, running_services


@pytest.fixture
async def services(
    kafka_bootstrap_servers: str, mongodb_uri: str, mongo_db: AsyncDatabase[dict[str, Any]], tmp_path: Path
) -> AsyncIterator[Services]:
    async with running_services(kafka_bootstrap_servers, mongodb_uri, mongo_db, tmp_path) as s:
        yield s
