"""Fixtures for the sandbox's integration tests: an in-process sandbox on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

from tests.integration.sandbox.sandbox_support import FAST, Api


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxHandle]:
    """A sandbox with fast processing and default rules."""
    async with running_sandbox(**FAST) as sb:
        yield sb


@pytest.fixture
async def http(sandbox: SandboxHandle) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client pointed at the sandbox."""
    async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def api(sandbox: SandboxHandle, http: httpx.AsyncClient) -> Api:
    """A TikTok caller holding a fresh token of the default (public) user."""
    return Api(http, sandbox.issue_tokens(sandbox.default_user.open_id)["access_token"])
