"""Fixtures of the status-poller's unit tests."""

from __future__ import annotations

import pytest
from reelay_testing.fakes import InMemoryUploadStore, RecordingPublisher

from tests.unit.poller.poller_fakes import POLICY, FakeClock, Harness, ScriptedTikTok


@pytest.fixture
def h() -> Harness:
    return Harness(
        uploads=InMemoryUploadStore(),
        publisher=RecordingPublisher(),
        tiktok=ScriptedTikTok(),
        clock=FakeClock(),
        policy=POLICY,
    )
