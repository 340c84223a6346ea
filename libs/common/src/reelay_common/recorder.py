"""StateRecorder: every state change of an upload is a guarded update in Mongo, then an announcement
of `PublishStatusChanged` on `reelay.publish.status` (keyed by account_id)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from reelay_common.domain.messages import PublishStatusChanged, StateSource
from reelay_common.domain.records import UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.logging import get_logger
from reelay_common.ports import Publisher, UploadStore

log = get_logger("reelay_common.recorder")


class StateRecorder:
    """Records forward-only transitions and announces each one at least once."""

    def __init__(
        self,
        store: UploadStore,
        publisher: Publisher,
        *,
        status_topic: str,
        announce_wait_seconds: float = 2.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._status_topic = status_topic
        self._announce_wait = announce_wait_seconds

    async def record(
        self,
        request_id: str,
        target: UploadState,
        *,
        source: StateSource,
        detail: Mapping[str, Any] | None = None,
        set_fields: Mapping[str, Any] | None = None,
    ) -> UploadRecord | None:
        """Move the upload to `target` if that is forward, then announce it; None if the guard refused.

        When the guard refuses because the upload is already in `target` but that state was never
        announced (the publish failed after the update), the announcement is sent now: a retried
        handler therefore never loses one. Duplicate announcements are possible; consumers dedupe
        on (request_id, state).
        """
        moved = await self._store.transition(
            request_id, target, source=source, detail=detail, set_fields=set_fields
        )
        if moved is not None:
            log.info(
                "upload_state_changed",
                request_id=request_id,
                account_id=moved.account_id,
                publish_id=moved.publish_id,
                state=target.value,
                source=source,
            )
            await self.announce(moved, source=source)
            return moved
        current = await self._unannounced(request_id, target)
        if current is None:
            log.warning("upload_state_change_unknown_upload", request_id=request_id, state=target.value)
            return None
        if current.state is target and current.announced_state is not target:
            log.warning("upload_state_announced_late", request_id=request_id, state=target.value)
            await self.announce(current, source=source)
        else:
            log.info(
                "upload_state_change_refused",
                request_id=request_id,
                state=current.state.value,
                requested=target.value,
                source=source,
            )
        return None

    async def _unannounced(self, request_id: str, target: UploadState) -> UploadRecord | None:
        """The upload, after giving a concurrent winner of the same transition time to announce it.

        Whoever moved the upload announces right after; only when that has not happened within
        `announce_wait_seconds` (its publish failed, or it crashed) does a refused caller step in.
        """
        deadline = time.monotonic() + self._announce_wait
        while True:
            current = await self._store.get(request_id)
            if (
                current is None
                or current.state is not target
                or current.announced_state is target
                or time.monotonic() >= deadline
            ):
                return current
            await asyncio.sleep(0.05)

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
        await self._store.checkpoint(
            record.request_id, {"announced_state": record.state}, expect_state=record.state
        )


def _previous_state(record: UploadRecord) -> UploadState | None:
    """The state before the latest entry of the current state in the history."""
    for i in range(len(record.history) - 1, -1, -1):
        if record.history[i].state is record.state:
            return record.history[i - 1].state if i > 0 else None
    return None
