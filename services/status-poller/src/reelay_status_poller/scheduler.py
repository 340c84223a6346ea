"""The poll scheduler: leases due uploads from the store and polls them with bounded concurrency.

Mongo is the schedule. `claim_due_poll` is one guarded, atomic update that sets a lease (atomic on
FerretDB v1 too, through the store's WriteGuard), so several replicas share the work without
polling one publish twice at the same time, and a poller killed mid-poll loses nothing: its lease
expires and another one (or its restart) picks the upload up. A poll is bounded well inside the
lease (PollPolicy.fetch_timeout), so a slow one is never taken over while it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from prometheus_client import Counter
from reelay_common.domain.errors import RetryableError
from reelay_common.domain.records import UploadRecord
from reelay_common.domain.rules import Backoff
from reelay_common.domain.timing import sleep_unless_stopped
from reelay_common.logging import get_logger, unit_of_work
from reelay_common.ports import UploadStore

from reelay_status_poller.handlers import PollOutcome

log = get_logger(__name__)

# Registered once per process, like every prometheus_client metric; served by the ops server.
POLLS = Counter("reelay_poller_polls_total", "Status polls finished, by outcome.", ["outcome"])
CLAIM_FAILURES = Counter("reelay_poller_claim_failures_total", "Failed attempts to lease a due poll.")

PollFn = Callable[[UploadRecord], Awaitable[PollOutcome]]
OutcomeHook = Callable[[PollOutcome | None], None]


class PollScheduler:
    """Claims due polls and runs them, at most `concurrency` at a time, until stopped."""

    def __init__(
        self,
        *,
        uploads: UploadStore,
        poll: PollFn,
        clock: Callable[[], datetime],
        lease_seconds: float,
        concurrency: int,
        idle_sleep_seconds: float = 0.5,
        error_retry_seconds: float = 30.0,
        store_backoff_max_seconds: float = 10.0,
        shutdown_grace_seconds: float = 20.0,
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._uploads = uploads
        self._poll = poll
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._concurrency = concurrency
        self._idle_sleep = idle_sleep_seconds
        self._error_retry = error_retry_seconds
        # A store that cannot be reached is retried ever more slowly, from twice the idle sleep.
        self._store_backoff = Backoff(idle_sleep_seconds, store_backoff_max_seconds)
        self._grace = shutdown_grace_seconds
        self._on_outcome = on_outcome
        self._healthy = True

    def is_healthy(self) -> bool:
        """False while the store cannot be reached for claims."""
        return self._healthy

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and poll until `stop` is set; then let in-flight polls finish (bounded)."""
        slots = asyncio.Semaphore(self._concurrency)
        in_flight: set[asyncio.Task[None]] = set()
        store_failures = 0
        log.info("scheduler_started", concurrency=self._concurrency, lease_seconds=self._lease_seconds)
        try:
            while not stop.is_set():
                if not await _acquire_or_stop(slots, stop):
                    break
                try:
                    record = await self._uploads.claim_due_poll(self._clock(), self._lease_seconds)
                except Exception as exc:
                    slots.release()
                    store_failures += 1
                    CLAIM_FAILURES.inc()
                    self._healthy = False
                    delay = self._store_backoff.delay(store_failures)
                    log.warning("poll_claim_failed", error=repr(exc), retry_in=delay)
                    await sleep_unless_stopped(stop, delay)
                    continue
                store_failures = 0
                self._healthy = True
                if record is None:
                    slots.release()
                    await sleep_unless_stopped(stop, self._idle_sleep)
                    continue
                task = asyncio.create_task(self._run_one(record, slots), name=f"poll:{record.request_id}")
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            await self._drain(in_flight)
            log.info("scheduler_stopped")

    async def _run_one(self, record: UploadRecord, slots: asyncio.Semaphore) -> None:
        outcome: PollOutcome | None = None
        ids = {
            "request_id": record.request_id,
            "account_id": record.account_id,
            "publish_id": record.publish_id,
        }
        # One poll is one unit of work: its context is bound here, once, for everything it logs.
        with unit_of_work(**{k: v for k, v in ids.items() if v is not None}):
            try:
                outcome = await self._poll(record)
            except asyncio.CancelledError:
                # Shutdown: the lease stays and expires, so the upload is polled again later.
                raise
            except Exception:
                log.exception("poll_failed", request_id=record.request_id, publish_id=record.publish_id)
                next_at = self._clock() + timedelta(seconds=self._error_retry)
                try:
                    await self._uploads.schedule_poll(
                        record.request_id, next_at, attempts=record.poll_attempts + 1
                    )
                except Exception as exc:
                    # The lease expires on its own; the upload is not lost.
                    log.warning("poll_reschedule_failed", request_id=record.request_id, error=repr(exc))
            finally:
                slots.release()
        POLLS.labels(outcome=outcome.value if outcome is not None else "error").inc()
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    async def _drain(self, in_flight: set[asyncio.Task[None]]) -> None:
        if not in_flight:
            return
        _done, pending = await asyncio.wait(set(in_flight), timeout=self._grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning("polls_cancelled_at_shutdown", count=len(pending))


async def _acquire_or_stop(slots: asyncio.Semaphore, stop: asyncio.Event) -> bool:
    """Wait for a free slot; False if `stop` came first (no slot held then)."""
    acquire = asyncio.ensure_future(slots.acquire())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        # A cancelled Semaphore.acquire hands its wake-up on to the next waiter, so no slot leaks.
        acquire.cancel()
    if acquire.done() and not acquire.cancelled():
        if stop.is_set():
            slots.release()
            return False
        return True
    return False


ARCHIVED = Counter("reelay_poller_archived_uploads_total", "Settled uploads moved out of the in-flight work.")


async def archive_settled_uploads(
    uploads: UploadStore,
    stop: asyncio.Event,
    *,
    clock: Callable[[], datetime],
    grace_seconds: float,
    interval_seconds: float,
    batch: int = 100,
) -> None:
    """Keep the in-flight work small: every `interval_seconds`, archive what has settled."""
    failures = 0
    backoff = Backoff(interval_seconds, max(interval_seconds, 60.0))
    while not stop.is_set():
        try:
            moved = await uploads.archive_settled(clock(), grace_seconds=grace_seconds, limit=batch)
        except RetryableError as exc:
            failures += 1
            log.warning("archive_failed", error=repr(exc), retry_in=backoff.delay(failures))
            await sleep_unless_stopped(stop, backoff.delay(failures))
            continue
        failures = 0
        if moved:
            ARCHIVED.inc(moved)
            log.info("uploads_archived", count=moved)
        if moved < batch:  # a full batch means more may be waiting: go again at once
            await sleep_unless_stopped(stop, interval_seconds)
