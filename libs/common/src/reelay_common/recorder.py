"""StateRecorder: every state change of an upload is a guarded update in Mongo, then an announcement
of `PublishStatusChanged` on `reelay.publish.status` (keyed by account_id)."""

from __future__ import annotations

import asyncio

from reelay_common.domain.messages import PublishStatusChanged, StateSource
from reelay_common.domain.records import Change, UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.logging import get_logger
from reelay_common.metrics import UPLOAD_DETECTION_DELAY_SECONDS, UPLOAD_STATE_TRANSITIONS
from reelay_common.ports import Publisher, UploadStore

log = get_logger("reelay_common.recorder")


class StateRecorder:
    """Records forward-only transitions and announces each one at least once."""

    def __init__(
        self,
        uploads: UploadStore,
        publisher: Publisher,
        *,
        status_topic: str,
        announce_wait_seconds: float = 2.0,
    ) -> None:
        self._uploads = uploads
        self._publisher = publisher
        self._status_topic = status_topic
        self._announce_wait = announce_wait_seconds
        # Announcements in flight in this process, by (request_id, state): True once sent, False if
        # the publish failed. A refused caller waits on its winner's instead of polling the store.
        self._announcing: dict[tuple[str, UploadState], asyncio.Future[bool]] = {}

    async def record(self, request_id: str, change: Change) -> UploadRecord | None:
        """Move the upload to `change.target` if that is forward, then announce it; None if the guard
        refused.

        When the guard refuses because the upload is already in `target` but that state was never
        announced (the publish failed after the update), the announcement is sent now: a retried
        handler therefore never loses one. A winner of the same transition still announcing in this
        process is waited for (up to `announce_wait_seconds`), so a race here sends one announcement;
        a winner in another process cannot be seen, and the two may both announce. Duplicates are
        allowed: consumers dedupe on (request_id, state).
        """
        target, source = change.target, change.source
        moved = await self._uploads.transition(request_id, change)
        if moved is not None:
            UPLOAD_STATE_TRANSITIONS.labels(state=target.value, source=source).inc()
            _observe_detection_delay(moved, target, source)
            log.info(
                "upload_state_changed",
                request_id=request_id,
                account_id=moved.account_id,
                publish_id=moved.publish_id,
                state=target.value,
                source=source,
            )
            await self._announce_moved(moved, source=source)
            return moved
        current = await self._uploads.get(request_id)
        if current is None:
            log.warning("upload_state_change_unknown_upload", request_id=request_id, state=target.value)
            return None
        sent_by_winner = False
        if _unannounced(current, target):
            winner = self._announcing.get((request_id, target))
            if winner is not None:
                sent_by_winner = await self._sent_in_time(winner)
                if not sent_by_winner:
                    # Its publish failed or is slow: read once more, the winner may have moved it on.
                    current = await self._uploads.get(request_id) or current
        if not sent_by_winner and _unannounced(current, target):
            log.warning("upload_state_announced_late", request_id=request_id, state=target.value)
            await self._announce_moved(current, source=source)
        else:
            log.info(
                "upload_state_change_refused",
                request_id=request_id,
                state=current.state.value,
                requested=target.value,
                source=source,
            )
        return None

    async def _announce_moved(self, record: UploadRecord, *, source: StateSource) -> None:
        """Announce the record's state, letting refused callers of this process wait on it."""
        key = (record.request_id, record.state)
        sent: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._announcing[key] = sent
        try:
            await self.announce(record, source=source)
        except BaseException:
            sent.set_result(False)
            raise
        else:
            sent.set_result(True)
        finally:
            if self._announcing.get(key) is sent:
                del self._announcing[key]

    async def _sent_in_time(self, sent: asyncio.Future[bool]) -> bool:
        """True once a winner's announcement went out, within `announce_wait_seconds`.

        False when its publish failed (the retried handler, or this caller, announces instead) or
        did not finish in time (then this caller announces too).
        """
        await asyncio.wait({sent}, timeout=self._announce_wait)
        return sent.done() and sent.result()

    async def announce(self, record: UploadRecord, *, source: StateSource) -> None:
        """Publish `PublishStatusChanged` for the record's current state (e.g. `accepted` at ingest)."""
        entry = next((h for h in reversed(record.history) if h.state is record.state), None)
        previous = _previous_state(record)
        message = PublishStatusChanged(
            request_id=record.request_id,
            account_id=record.account_id,
            publish_id=record.publish_id,
            state=record.state,
            previous_state=previous,
            source=source,
            detail=dict(entry.detail) if entry is not None else {},
            post_ids=list(record.post_ids),
            at=entry.at if entry is not None else record.updated_at,
        )
        await self._publisher.publish(self._status_topic, message, key=record.account_id)
        # Only while still in this state: a later transition's own announcement must not be masked.
        await self._uploads.checkpoint(
            record.request_id, {"announced_state": record.state}, expect_state=record.state
        )


def _previous_state(record: UploadRecord) -> UploadState | None:
    """The state before the latest entry of the current state in the history."""
    for i in range(len(record.history) - 1, -1, -1):
        if record.history[i].state is record.state:
            return record.history[i - 1].state if i > 0 else None
    return None


def _unannounced(record: UploadRecord, target: UploadState) -> bool:
    """The upload is in `target`, and that state has not been announced yet."""
    return record.state is target and record.announced_state is not target


def _observe_detection_delay(record: UploadRecord, target: UploadState, source: StateSource) -> None:
    # How long the outcome took to be known once TikTok had the bytes (none for a pull from URL
    # or an upload that failed before `uploaded`).
    if not target.is_terminal:
        return
    uploaded = [h.at for h in record.history if h.state is UploadState.UPLOADED]
    reached = [h.at for h in record.history if h.state is target]
    if uploaded and reached:
        delay = (reached[-1] - uploaded[0]).total_seconds()
        UPLOAD_DETECTION_DELAY_SECONDS.labels(state=target.value, source=source).observe(max(0.0, delay))
