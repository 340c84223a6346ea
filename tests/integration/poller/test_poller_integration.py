"""The status-poller against real Kafka, a real Mongo-wire server and the TikTok sandbox: events
start tracking, polls drive uploads to their outcome, replicas share the work without polling one
publish twice at once, and a killed poller loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from reelay_common.domain.messages import TikTokWebhookReceived, dlq_topic
from reelay_common.domain.states import UploadState
from reelay_testing.kafka import read_topic
from reelay_testing.waiting import eventually

from tests.integration.poller.poller_world import World

S = UploadState


class TestTrackingToTheOutcome:
    async def test_an_uploaded_video_is_polled_to_published_and_every_change_announced(
        self, world: World
    ) -> None:
        account = await world.connected_account("acct-a")
        record = await world.uploaded_video(account)

        async with world.running_poller():
            await world.announce_uploaded(record)
            await world.wait_for_state(record.request_id, S.PUBLISHED)
            changes = await world.status_changes(2)

        done = await world.uploads.get(record.request_id)
        assert done is not None
        assert [e.state for e in done.history] == [
            S.ACCEPTED,
            S.UPLOADING,
            S.UPLOADED,
            S.PROCESSING,
            S.PUBLISHED,
        ]
        assert [e.source for e in done.history[-2:]] == ["poller", "poller"]
        assert done.history[-1].detail["tiktok_status"] == "PUBLISH_COMPLETE"
        assert done.poll_next_at is None  # tracking ended
        mine = [c for c in changes if c.request_id == record.request_id]
        assert [(c.state, c.previous_state) for c in mine] == [
            (S.PROCESSING, S.UPLOADED),
            (S.PUBLISHED, S.PROCESSING),
        ]
        assert all(c.publish_id == record.publish_id and c.account_id == account for c in mine)
        assert world.sandbox.state.publishes[str(record.publish_id)].status == "PUBLISH_COMPLETE"

    async def test_a_webhook_settles_the_upload_and_a_bad_record_is_dead_lettered(self, world: World) -> None:
        account = await world.connected_account("acct-w")
        record = await world.uploaded_video(account)
        webhook = TikTokWebhookReceived(
            event="post.publish.failed",
            create_time=1_700_000_000,
            publish_id=record.publish_id,
            reason="duration_check_failed",
            publish_type="DIRECT_PUBLISH",
        )

        async with world.running_poller():
            # Same key, so the same partition: the webhook comes after the bad record.
            await world.publisher.publish_raw(
                world.events_topic, b'{"type": "nonsense"', key=account.encode()
            )
            await world.publisher.publish(world.events_topic, webhook, key=account)
            await world.wait_for_state(record.request_id, S.FAILED)
            dead = [r.value for r in await read_topic(world.kafka, dlq_topic(world.events_topic), timeout=20)]

        done = await world.uploads.get(record.request_id)
        assert done is not None
        assert done.history[-1].source == "webhook"
        assert done.history[-1].detail["fail_reason"] == "duration_check_failed"
        assert b"nonsense" in dead[0]


class TestReplicas:
    @pytest.fixture
    def sandbox_overrides(self) -> dict[str, Any]:
        # Long enough for a good number of polls per publish.
        return {"processing_delay_seconds": 3.0, "moderation_delay_seconds": 0.2}

    async def test_two_pollers_never_poll_one_publish_at_the_same_time(self, world: World) -> None:
        async with world.running_poller(), world.running_poller():
            records = []
            for i in range(6):
                # One creator each: TikTok's 30 status calls a minute are per token.
                account = await world.connected_account(f"acct-{i}")
                record = await world.uploaded_video(account)
                await world.announce_uploaded(record)
                records.append(record)
            for record in records:
                await world.wait_for_state(record.request_id, S.PUBLISHED, timeout=60)

        # Read once both pollers have stopped: a poll's last write (its count) follows its transition.
        done = [await world.uploads.get(r.request_id) for r in records]
        made = [
            (d.request_id, e.state) for d in done if d is not None for e in d.history if e.source == "poller"
        ]
        changes = await world.status_changes(len(made))

        # Every poll that reached TikTok was counted once in the document it polled (the lease
        # holder writes poll_attempts + 1). Two pollers polling one publish at once would both
        # call TikTok but write the same count, so TikTok would see more calls than counted.
        counted = sum(d.poll_attempts for d in done if d is not None)
        calls = world.status_fetch_calls()
        assert calls <= counted
        assert calls >= 3 * len(records)
        assert all(d is not None and d.history[-1].state is S.PUBLISHED for d in done)
        # Each change happened once and was announced once.
        assert len(made) == len(set(made))
        assert Counter((c.request_id, c.state) for c in changes) == Counter(made)


class TestKilledPoller:
    @pytest.fixture
    def sandbox_overrides(self) -> dict[str, Any]:
        # Long enough to kill the poller while TikTok is still processing.
        return {"processing_delay_seconds": 8.0, "moderation_delay_seconds": 0.2}

    async def test_a_poller_killed_mid_tracking_is_replaced_and_the_upload_still_finishes(
        self, world: World, tmp_path: Path
    ) -> None:
        account = await world.connected_account("acct-k")
        # Both leases short: the SIGKILL may land mid-drain, between the outbox lease and its
        # settle, and the replacement then waits out that lease (30 s by default, as long as the
        # read of the announcements below) before it sends `published`.
        env = world.env(POLLER_LEASE_SECONDS="3", REELAY_OUTBOX_LEASE_SECONDS="3")
        first_log = tmp_path / "first.log"

        async with _poller_process(env, first_log) as first:
            # TikTok's processing clock starts with the last PUT: upload once the poller runs.
            await eventually(
                lambda: b"scheduler_started" in first_log.read_bytes(), timeout=60, what="poller up"
            )
            record = await world.uploaded_video(account)
            await world.announce_uploaded(record)
            await world.wait_for_state(record.request_id, S.PROCESSING, timeout=40)
            first.send_signal(signal.SIGKILL)  # no goodbye: no lease released, nothing flushed
            await asyncio.wait_for(first.wait(), 10)

        # TikTok finishes while no poller runs; nothing moves the document meanwhile.
        await eventually(
            lambda: world.sandbox.state.publishes[str(record.publish_id)].status == "PUBLISH_COMPLETE",
            timeout=20,
            what="TikTok finished processing",
        )
        assert await world.state_of(record.request_id) is S.PROCESSING

        async with _poller_process(env, tmp_path / "second.log"):
            await world.wait_for_state(record.request_id, S.PUBLISHED, timeout=40)

        done = await world.uploads.get(record.request_id)
        assert done is not None
        states = [e.state for e in done.history]
        assert states.count(S.PROCESSING) == 1
        assert states[-1] is S.PUBLISHED

        # Announcements are at least once (StateRecorder): the SIGKILL may land after the first poller
        # announced `processing` but before it noted so in Mongo, and the second announces it again.
        # What is promised: every change announced, in forward order, and nothing else.
        async def announced() -> list[S]:
            changes = await world.status_changes(2)
            mine = [c.state for c in changes if c.request_id == record.request_id]
            return mine if S.PUBLISHED in mine else []

        mine = await eventually(announced, timeout=60, what="published announced")
        assert list(dict.fromkeys(mine)) == [S.PROCESSING, S.PUBLISHED]
        assert mine == sorted(mine, key=lambda s: s.rank)


@asynccontextmanager
async def _poller_process(env: dict[str, str], log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m reelay_status_poller` as a child process, terminated (gracefully) on exit."""
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "reelay_status_poller",
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    # Awaited, not blocked on: the sandbox in this event loop must keep answering.
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
