"""StateRecorder: every state change of an upload is a guarded update in Mongo that also writes its
announcement (`PublishStatusChanged` on `reelay.publish.status`, keyed by account_id) into the
upload's outbox, which the OutboxRelay then sends."""

from __future__ import annotations

from reelay_common.domain.messages import StateSource
from reelay_common.domain.records import Change, UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.logging import get_logger
from reelay_common.metrics import UPLOAD_DETECTION_DELAY_SECONDS, UPLOAD_STATE_TRANSITIONS
from reelay_common.ports import Outbox, UploadStore

log = get_logger("reelay_common.recorder")


class StateRecorder:
    """Records forward-only transitions; each one's announcement is written with it and sent at once."""

    def __init__(self, uploads: UploadStore, outbox: Outbox) -> None:
        self._uploads = uploads
        self._outbox = outbox

    def created(self, record: UploadRecord) -> None:
        """Count a new upload's first state, by who created it (its first history entry)."""
        source = record.history[0].source if record.history else "ingest"
        UPLOAD_STATE_TRANSITIONS.labels(state=record.state.value, source=source).inc()

    async def record(self, request_id: str, change: Change, *, send: bool = True) -> UploadRecord | None:
        """Move the upload to `change.target` if that is forward, then send its announcement; None
        if the guard refused.

        The announcement is part of the transition's own update (the outbox), so it cannot be lost
        between the Mongo write and the Kafka publish; Kafka being down delays it, never fails the
        transition. A refused transition still sends what the upload owes (a retried handler whose
        first try died after its update). `send=False` leaves a move's announcement to the caller
        (`Outbox.drain`, e.g. beside work that need not wait for it), or to the relay loop.
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
            if send:
                await self._outbox.drain(request_id)
            return moved
        current = await self._uploads.get(request_id)
        if current is None:
            log.warning("upload_state_change_unknown_upload", request_id=request_id, state=target.value)
            return None
        log.info(
            "upload_state_change_refused",
            request_id=request_id,
            state=current.state.value,
            requested=target.value,
            source=source,
        )
        if current.outbox:
            await self._outbox.drain(request_id)
        return None


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
