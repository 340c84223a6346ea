"""The real StateRecorder and OutboxRelay over whatever store and publisher a test uses (not a
test double: the production classes, wired as a service wires them)."""

from __future__ import annotations

from dataclasses import dataclass

from reelay_common.outbox import OutboxRelay
from reelay_common.ports import Publisher, UploadStore
from reelay_common.recorder import StateRecorder
from reelay_common.settings import TOPIC_UPLOAD_REQUESTED


@dataclass(frozen=True)
class Recording:
    """A recorder and the outbox relay it sends through (one per test's deps)."""

    recorder: StateRecorder
    outbox: OutboxRelay


def recording(
    uploads: UploadStore,
    publisher: Publisher,
    *,
    status_topic: str,
    requested_topic: str = TOPIC_UPLOAD_REQUESTED,
    send_timeout_seconds: float = 5.0,
) -> Recording:
    """The recorder and relay a service builds, over `uploads` and `publisher`."""
    outbox = OutboxRelay(
        uploads,
        publisher,
        requested_topic=requested_topic,
        status_topic=status_topic,
        send_timeout_seconds=send_timeout_seconds,
        interval_seconds=0.05,
    )
    return Recording(recorder=StateRecorder(uploads, outbox), outbox=outbox)
