"""Fixtures of the status-poller's unit tests."""

from __future__ import annotations

import pytest
from reelay_testing.clocks import FakeClock
from reelay_testing.publisher import FakePublisher
from reelay_testing.stores import FakeUploadStore

from tests.unit.poller.poller_fakes import POLICY, PollerWorld, ScriptedTikTok


@pytest.fixture
def poller() -> PollerWorld:
    return PollerWorld(
        uploads=FakeUploadStore(),
        publisher=FakePublisher(),
        tiktok=ScriptedTikTok(),
        clock=FakeClock(),
        policy=POLICY,
    )
