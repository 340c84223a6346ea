"""Fixtures of the ingest unit tests: the app over in-memory fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.ingest.ingest_fakes import IngestApp, running


@pytest.fixture
async def ingest() -> AsyncIterator[IngestApp]:
    async with running() as harness:
        yield harness
