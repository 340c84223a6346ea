"""The outbox relay: what an upload owes Kafka is written into its document, then sent from there.

Every state change (and ingest's accepted command) is appended to the upload's `outbox` by the same
single-document update that makes the change (docs/architecture.md, promise 1), so a process that
dies between its Mongo write and its Kafka publish loses nothing: the entry waits in Mongo. The
writer sends its entries at once (`drain`); whatever it could not send (Kafka down, the process
killed) is sent by `run`, the relay loop every service runs, which leases due documents so several
replicas do not send the same entries (a lease that runs out while its holder still sends can let
two send: consumers dedupe on request_id and state). Entries leave in the order they were written,
through the idempotent producer, keyed by account_id: per upload, announcements stay in forward
order, at least once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from reelay_common.domain.errors import RetryableError
from reelay_common.domain.messages import PublishStatusChanged
from reelay_common.domain.records import Change, OutboxEntry, UploadRecord
from reelay_common.domain.rules import Backoff
from reelay_common.domain.states import UploadState
from reelay_common.domain.timing import sleep_unless_stopped
from reelay_common.logging import get_logger
from reelay_common.metrics import (
    OUTBOX_OWING_UPLOADS,
    OUTBOX_PENDING_AGE_SECONDS,
    OUTBOX_SEND_FAILURES,
    OUTBOX_SENT,
    UPLOAD_STATE_TRANSITIONS,
)
from reelay_common.ports import Publisher, UploadStore

log = get_logger("reelay_common.outbox")

# What a send raises when Kafka does not take a message in time (the publisher translates the
# broker's errors into RetryableError; the deadline raises TimeoutError). Anything else is a bug.
NOT_SENT = (RetryableError, TimeoutError)


def message_for(record: UploadRecord, entry: OutboxEntry) -> tuple[BaseModel, str]:
    """The message an outbox entry stands for, built from the document as it is now, and its kind."""
    if entry.kind == "upload_requested":
        return record.request(), "upload_requested"
    state = entry.state or record.state
    index = next(
        (i for i in range(len(record.history) - 1, -1, -1) if record.history[i].state is state), None
    )
    history_entry = record.history[index] if index is not None else None
    previous = record.history[index - 1].state if index else None
    message = PublishStatusChanged(
        # The client's own ids and its tenant (docs/architecture.md, "Tenants").
        request_id=record.client_request_id,
        account_id=record.client_account_id,
        tenant_id=record.tenant_id,
        publish_id=record.publish_id,
        state=state,
        previous_state=previous,
        source=entry.source or (history_entry.source if history_entry else "ingest"),
        detail=dict(history_entry.detail) if history_entry is not None else {},
        post_ids=list(record.post_ids),
        at=history_entry.at if history_entry is not None else entry.at,
    )
    return message, "status"


class OutboxRelay:
    """Sends uploads' outbox entries to Kafka: at once for the writer (`drain`), and in the background
    for whatever was left (`run`)."""

    def __init__(
        self,
        uploads: UploadStore,
        publisher: Publisher,
        *,
        requested_topic: str,
        status_topic: str,
        send_timeout_seconds: float = 5.0,
        lease_seconds: float = 30.0,
        interval_seconds: float = 1.0,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        before_send: Callable[[], None] | None = None,
    ) -> None:
        self._uploads = uploads
        self._publisher = publisher
        self._topics = {"upload_requested": requested_topic, "status": status_topic}
        self._send_timeout = send_timeout_seconds
        self.lease_seconds = lease_seconds
        self._interval = interval_seconds
        self._backoff = backoff or Backoff(initial=1.0, maximum=30.0, jitter=0.2)
        self._clock = clock
        self._failures = 0  # consecutive failed sends in this process (for the backoff and the log)
        self._before_send = before_send  # fault injection (reelay_common.faults); None in production

    async def drain(
        self, request_id: str, *, leased: UploadRecord | None = None, within_seconds: float | None = None
    ) -> bool:
        """Send what `request_id` owes Kafka now; True when nothing is left.

        `leased` is the record when the caller already holds its outbox lease (`create` gives the
        creator one). Otherwise the lease is taken here; when another process holds it, that one
        sends, and this returns False at once. Never raises for Kafka: what could not be sent stays
        for the relay loop. `within_seconds` bounds the time spent waiting for Kafka (default: the
        send timeout); a send cut short may still reach Kafka, and be sent again (at least once).
        """
        record = leased or await self._uploads.lease_outbox(request_id, self._clock(), self.lease_seconds)
        if record is None:
            return False
        budget = within_seconds if within_seconds is not None else self._send_timeout
        return await self._send_leased(record, deadline=asyncio.get_running_loop().time() + budget)

    async def _send_leased(self, record: UploadRecord, *, deadline: float) -> bool:
        if self._before_send is not None and record.outbox:
            self._before_send()
        while True:
            sent: list[OutboxEntry] = []
            failed: BaseException | None = None
            waiting_until: datetime | None = None
            for entry in record.outbox:
                if entry.kind == "upload_requested" and record.state.is_terminal:
                    sent.append(entry)  # cancelled (or ended) before it was queued: never queued
                    continue
                if entry.due_at is not None and entry.due_at > self._clock():
                    waiting_until = entry.due_at  # a scheduled command: it and what follows wait
                    break
                if entry.kind == "upload_requested":
                    record = await self._release_scheduled(record)
                    if record.state.is_terminal:
                        sent.append(entry)  # cancelled as its time came: never queued
                        continue
                message, kind = message_for(record, entry)
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._publisher.publish(self._topics[kind], message, key=record.account_id)
                except NOT_SENT as exc:
                    failed = exc
                    break
                sent.append(entry)
                OUTBOX_SENT.labels(kind=kind).inc()
                OUTBOX_PENDING_AGE_SECONDS.observe(max(0.0, (self._clock() - entry.at).total_seconds()))
            delay = self._note_outcome(failed, record.request_id)
            next_try = (
                waiting_until
                if failed is None and waiting_until
                else self._clock() + timedelta(seconds=delay)
            )
            after = await self._uploads.settle_outbox(record.request_id, sent, next_try_at=next_try)
            done = after is None or not after.outbox
            if failed is not None or waiting_until is not None or done:
                return failed is None and waiting_until is None and done
            # Entries were appended while these were sent: send those too, under a fresh lease.
            again = await self._uploads.lease_outbox(record.request_id, self._clock(), self.lease_seconds)
            if again is None:
                return False
            record = again

    async def _release_scheduled(self, record: UploadRecord) -> UploadRecord:
        """A scheduled upload whose time has come moves to `accepted` (its announcement appended);
        the record as it is now, whoever won (a cancel may have)."""
        if record.state is not UploadState.SCHEDULED:
            return record
        moved = await self._uploads.transition(
            record.request_id, Change(UploadState.ACCEPTED, source="scheduler")
        )
        if moved is not None:
            UPLOAD_STATE_TRANSITIONS.labels(state=UploadState.ACCEPTED.value, source="scheduler").inc()
            log.info(
                "scheduled_upload_released", request_id=record.request_id, publish_at=str(record.publish_at)
            )
            return moved
        return await self._uploads.get(record.request_id) or record

    def _note_outcome(self, failed: BaseException | None, request_id: str) -> float:
        """Log a change between "Kafka takes messages" and "it does not" once; the next retry's delay."""
        if failed is None:
            if self._failures:
                log.info("outbox_sending_again", after_failures=self._failures)
            self._failures = 0
            return 0.0
        OUTBOX_SEND_FAILURES.inc()
        if not self._failures:
            log.warning("outbox_send_failed", request_id=request_id, error=type(failed).__name__)
        self._failures += 1
        return self._backoff.sample(self._failures - 1)

    async def run(self, stop: asyncio.Event) -> None:
        """The relay loop: send every due outbox, lease by lease, until `stop`."""
        while not stop.is_set():
            try:
                while not stop.is_set():
                    record = await self._uploads.claim_due_outbox(self._clock(), self.lease_seconds)
                    if record is None:
                        break
                    await self._drain_guarded(record)
                OUTBOX_OWING_UPLOADS.set(await self._uploads.count_owing())
            except RetryableError as exc:  # Mongo unavailable: try again next round
                log.warning("outbox_relay_round_failed", error=type(exc).__name__)
            if await sleep_unless_stopped(stop, self._interval):
                return

    async def _drain_guarded(self, record: UploadRecord) -> None:
        """Drain one claimed outbox; a bug in one upload's entries must not stop every other's."""
        try:
            await self.drain(record.request_id, leased=record)
        except RetryableError:
            raise
        except Exception:  # a bug (not Kafka, not Mongo): logged as one, this upload is retried later
            log.exception("outbox_entry_failed", request_id=record.request_id)
            later = self._clock() + timedelta(seconds=self._backoff.maximum)
            await self._uploads.settle_outbox(record.request_id, [], next_try_at=later)
