"""Fixtures of the TikTok layer's integration tests: the real sandbox in-process, FerretDB, the layer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.runtime import tiktok_http_client
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

from tests.integration.tiktok.tiktok_it import TikTokLayer, build_layer

# A short rate-limit window on both sides keeps pacing real (the sandbox enforces it) but fast.
WINDOW_SECONDS = 3.0


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxHandle]:
    async with running_sandbox(
        processing_delay_seconds=0.2,
        moderation_delay_seconds=0.1,
        rate_limit_window_seconds=WINDOW_SECONDS,
    ) as handle:
        yield handle


@pytest.fixture
async def tt_http() -> AsyncIterator[httpx.AsyncClient]:
    async with tiktok_http_client(30.0) as http:  # the services' own client (aiohttp underneath)
        yield http


@pytest.fixture
def layer(
    tt_http: httpx.AsyncClient, mongo_db: AsyncDatabase[dict[str, Any]], sandbox: SandboxHandle
) -> TikTokLayer:
    return build_layer(
        tt_http, mongo_db, sandbox.base_url, window_seconds=WINDOW_SECONDS, safety_margin_seconds=0.3
    )
