"""Fixtures of the ingest unit tests: the app over in-memory fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.ingest.ingest_fakes import Harness, running


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with running() as harness:
        yield harness
