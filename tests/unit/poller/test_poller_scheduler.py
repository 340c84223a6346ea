"""The poll scheduler: leases due uploads, bounds concurrency, never loses an upload to a failing
poll or a failing store, and stops promptly."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from reelay_common.domain.errors import DatabaseUnavailableError
from reelay_common.domain.messages import UploadRequested, UrlSource
from reelay_common.domain.records import Change, UploadRecord
from reelay_common.domain.states import UploadState
from reelay_status_poller.handlers import PollOutcome
from reelay_status_poller.scheduler import PollScheduler, archive_settled_uploads
from reelay_testing.stores import FakeUploadStore
from reelay_testing.waiting import eventually
from structlog.testing import capture_logs


def now() -> datetime:
    return datetime.now(UTC)


async def due_uploads(uploads: FakeUploadStore, count: int) -> list[str]:
    ids = []
    for i in range(count):
        rid = f"req-{i}"
        cmd = UploadRequested(
            request_id=rid,
            account_id="acct-1",
            mode="inbox",
            source=UrlSource(url="https://videos.example.com/a.mp4"),
        )
        await uploads.create(cmd, source="ingest")
        await uploads.checkpoint(
            rid, {"publish_id": f"pub-{i}", "poll_next_at": now() - timedelta(seconds=1)}
        )
        ids.append(rid)
    return ids


def scheduler(
    uploads: Any, poll: Callable[[UploadRecord], Awaitable[PollOutcome]], **kw: Any
) -> PollScheduler:
    options: dict[str, Any] = {
        "lease_seconds": 30,
        "concurrency": 4,
        "idle_sleep_seconds": 0.01,
        "error_retry_seconds": 30,
        "shutdown_grace_seconds": 5,
    }
    options.update(kw)
    return PollScheduler(uploads=uploads, poll=poll, clock=now, **options)


class Finisher:
    """A poll that ends tracking, counting calls and how many run at once (overall and per upload)."""

    def __init__(self, uploads: FakeUploadStore, *, delay: float = 0.0, repeat: int = 1) -> None:
        self.uploads = uploads
        self.delay = delay
        self.repeat = repeat
        self.calls: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.max_running = 0
        self.max_running_one = 0

    async def __call__(self, record: UploadRecord) -> PollOutcome:
        self.calls[record.request_id] += 1
        self.running[record.request_id] += 1
        self.max_running = max(self.max_running, sum(self.running.values()))
        self.max_running_one = max(self.max_running_one, self.running[record.request_id])
        try:
            await asyncio.sleep(self.delay)
            if self.calls[record.request_id] < self.repeat:
                await self.uploads.schedule_poll(record.request_id, now(), attempts=record.poll_attempts + 1)
                return PollOutcome.WAITING
            await self.uploads.checkpoint(record.request_id, {"poll_next_at": None, "poll_lease_until": None})
            return PollOutcome.SETTLED
        finally:
            self.running[record.request_id] -= 1


async def run_until(sched: PollScheduler, check: Callable[[], bool], timeout: float = 5.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run(stop))
    try:
        await eventually(check, timeout=timeout, interval=0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class TestPollScheduler:
    async def test_polls_every_due_upload_once(self) -> None:
        uploads = FakeUploadStore()
        ids = await due_uploads(uploads, 6)
        poll = Finisher(uploads)

        await run_until(scheduler(uploads, poll), lambda: sum(poll.calls.values()) >= 6)

        assert poll.calls == Counter(dict.fromkeys(ids, 1))

    async def test_does_not_poll_what_is_not_due(self) -> None:
        uploads = FakeUploadStore()
        [rid] = await due_uploads(uploads, 1)
        await uploads.checkpoint(rid, {"poll_next_at": now() + timedelta(hours=1)})
        poll = Finisher(uploads)
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler(uploads, poll).run(stop))

        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, 5)

        assert poll.calls == Counter()

    async def test_never_runs_more_polls_at_once_than_its_concurrency(self) -> None:
        uploads = FakeUploadStore()
        await due_uploads(uploads, 10)
        poll = Finisher(uploads, delay=0.05)

        await run_until(scheduler(uploads, poll, concurrency=3), lambda: sum(poll.calls.values()) >= 10)

        assert poll.max_running == 3

    async def test_two_schedulers_never_poll_one_upload_at_the_same_time(self) -> None:
        uploads = FakeUploadStore()
        ids = await due_uploads(uploads, 4)
        poll = Finisher(uploads, delay=0.02, repeat=5)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(scheduler(uploads, poll).run(stop)) for _ in range(2)]

        await eventually(lambda: sum(poll.calls.values()) >= 20, timeout=5, interval=0.01)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

        assert poll.calls == Counter(dict.fromkeys(ids, 5))
        assert poll.max_running_one == 1

    async def test_a_failing_poll_is_rescheduled_not_lost(self) -> None:
        uploads = FakeUploadStore()
        [rid] = await due_uploads(uploads, 1)

        async def broken(record: UploadRecord) -> PollOutcome:
            raise RuntimeError("bug in a handler")

        outcomes: list[PollOutcome | None] = []
        sched = scheduler(uploads, broken, error_retry_seconds=0.2, on_outcome=outcomes.append)
        await run_until(sched, lambda: len(outcomes) >= 2)

        record = await uploads.get(rid)
        assert record is not None
        assert record.poll_next_at is not None
        assert record.poll_lease_until is None
        assert record.poll_attempts >= 2
        assert outcomes[:2] == [None, None]

    async def test_stops_promptly_while_idle(self) -> None:
        uploads = FakeUploadStore()
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler(uploads, Finisher(uploads), idle_sleep_seconds=30).run(stop))
        await asyncio.sleep(0.05)

        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 5)

        assert time.monotonic() - started < 1

    async def test_lets_an_inflight_poll_finish_on_stop(self) -> None:
        uploads = FakeUploadStore()
        [rid] = await due_uploads(uploads, 1)
        poll = Finisher(uploads, delay=0.3)
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler(uploads, poll).run(stop))
        await eventually(lambda: poll.running[rid] == 1, timeout=5, interval=0.01)

        stop.set()
        await asyncio.wait_for(task, 5)

        record = await uploads.get(rid)
        assert record is not None
        assert record.poll_next_at is None  # the poll ran to its end

    async def test_a_poll_outliving_the_grace_is_cancelled_and_its_lease_left_to_expire(self) -> None:
        uploads = FakeUploadStore()
        [rid] = await due_uploads(uploads, 1)
        poll = Finisher(uploads, delay=3600)
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler(uploads, poll, shutdown_grace_seconds=0.1).run(stop))
        await eventually(lambda: poll.running[rid] == 1, timeout=5, interval=0.01)

        stop.set()
        await asyncio.wait_for(task, 5)

        record = await uploads.get(rid)
        assert record is not None
        assert record.poll_next_at is not None
        assert record.poll_lease_until is not None
        # Once the lease has expired, the upload is due again: nothing was lost.
        assert await uploads.claim_due_poll(record.poll_lease_until + timedelta(seconds=1), 30) is not None

    async def test_survives_a_store_outage_and_reports_it(self) -> None:
        uploads = FakeUploadStore()
        [rid] = await due_uploads(uploads, 1)
        outage = {"left": 3}

        class FlakyStore:
            def __getattr__(self, name: str) -> Any:
                return getattr(uploads, name)

            async def claim_due_poll(self, when: datetime, lease_seconds: float) -> UploadRecord | None:
                if outage["left"] > 0:
                    outage["left"] -= 1
                    raise ConnectionError("mongo is down")
                return await uploads.claim_due_poll(when, lease_seconds)

        poll = Finisher(uploads)
        sched = scheduler(FlakyStore(), poll, store_backoff_max_seconds=0.05)
        health: list[bool] = []
        stop = asyncio.Event()
        task = asyncio.create_task(sched.run(stop))

        def polled_while_watching_health() -> bool:
            health.append(sched.is_healthy())
            return poll.calls[rid] == 1

        await eventually(polled_while_watching_health, timeout=5, interval=0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

        assert False in health
        assert sched.is_healthy()

    def test_refuses_zero_concurrency(self) -> None:
        with pytest.raises(ValueError, match="concurrency"):
            scheduler(FakeUploadStore(), Finisher(FakeUploadStore()), concurrency=0)


class TestLogContext:
    async def test_every_line_of_a_poll_carries_its_upload_ids(self) -> None:
        uploads = FakeUploadStore()
        (rid,) = await due_uploads(uploads, 1)
        finish = Finisher(uploads)
        log = structlog.get_logger("reelay.test")

        async def poll(record: UploadRecord) -> PollOutcome:
            log.info("polling")
            return await finish(record)

        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await run_until(scheduler(uploads, poll), lambda: finish.calls[rid] == 1)
        polling = next(e for e in logs if e["event"] == "polling")
        assert (polling["request_id"], polling["account_id"], polling["publish_id"]) == (
            rid,
            "acct-1",
            "pub-0",
        )


class TestArchiveSettledUploads:
    async def test_archives_what_settles_and_keeps_going_after_a_store_failure(self) -> None:
        uploads = FakeUploadStore()
        ids = await due_uploads(uploads, 3)
        for rid in ids:
            moved = await uploads.transition(rid, Change(UploadState.INBOX_DELIVERED, source="poller"))
            assert moved is not None  # and its announcements were sent (nothing owed keeps it in flight)
            await uploads.settle_outbox(rid, moved.outbox, next_try_at=now())
        calls = 0
        real = uploads.archive_settled

        async def flaky(at: datetime, *, grace_seconds: float, limit: int = 100) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise DatabaseUnavailableError("MongoDB could not find settled uploads")
            return await real(at, grace_seconds=grace_seconds, limit=limit)

        uploads.archive_settled = flaky  # type: ignore[method-assign,assignment]  # a store that fails once
        stop = asyncio.Event()
        with capture_logs() as logs:
            task = asyncio.create_task(
                archive_settled_uploads(uploads, stop, clock=now, grace_seconds=0, interval_seconds=0.01)
            )
            await eventually(lambda: uploads.archived == set(ids))
            stop.set()
            await asyncio.wait_for(task, timeout=5)
        assert [e["event"] for e in logs if e["event"] == "archive_failed"] == ["archive_failed"]
        assert any(e["event"] == "uploads_archived" and e["count"] == 3 for e in logs)

    async def test_leaves_uploads_in_flight_alone(self) -> None:
        uploads = FakeUploadStore()
        await due_uploads(uploads, 2)  # accepted, being polled: not settled
        stop = asyncio.Event()
        task = asyncio.create_task(
            archive_settled_uploads(uploads, stop, clock=now, grace_seconds=0, interval_seconds=0.01)
        )
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        assert uploads.archived == set()
