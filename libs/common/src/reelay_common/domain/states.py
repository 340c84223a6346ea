"""The life of one upload, as a forward-only state machine."""

from __future__ import annotations

from enum import StrEnum


class UploadState(StrEnum):
    """States of one upload (MongoDB `uploads`, one document per request_id)."""

    SCHEDULED = "scheduled"  # held until its publish_at (TikTok has no scheduling for API posts)
    ACCEPTED = "accepted"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    PROCESSING = "processing"
    PUBLISHED = "published"
    INBOX_DELIVERED = "inbox_delivered"
    FAILED = "failed"
    UNCONFIRMED = "unconfirmed"
    CANCELLED = "cancelled"  # by its client, before TikTok had it

    @property
    def rank(self) -> int:
        """Position on the forward-only path; terminal states share the highest rank."""
        return _RANK[self]

    @property
    def is_terminal(self) -> bool:
        """True for states an upload never leaves."""
        return self in TERMINAL_STATES


_RANK: dict[UploadState, int] = {
    UploadState.SCHEDULED: -1,
    UploadState.ACCEPTED: 0,
    UploadState.UPLOADING: 1,
    UploadState.UPLOADED: 2,
    UploadState.PROCESSING: 3,
    UploadState.PUBLISHED: 4,
    UploadState.INBOX_DELIVERED: 4,
    UploadState.FAILED: 4,
    UploadState.UNCONFIRMED: 4,
    UploadState.CANCELLED: 4,
}


TERMINAL_STATES: frozenset[UploadState] = frozenset(
    {
        UploadState.PUBLISHED,
        UploadState.INBOX_DELIVERED,
        UploadState.FAILED,
        UploadState.UNCONFIRMED,
        UploadState.CANCELLED,
    }
)

# An upload may be cancelled only while TikTok has no byte of it: held, or accepted (queued, or
# waiting for its init or in it: a file upload moves to `uploading` only with its recorded publish).
CANCELLABLE_STATES: frozenset[UploadState] = frozenset({UploadState.SCHEDULED, UploadState.ACCEPTED})


def can_transition(current: UploadState, target: UploadState) -> bool:
    """Whether `current -> target` moves strictly forward.

    `unconfirmed` is the one terminal state that may still be corrected: a late webhook or poll
    that learns the real outcome (published, inbox_delivered, failed) may replace it.
    """
    if current is UploadState.UNCONFIRMED:
        return target in {UploadState.PUBLISHED, UploadState.INBOX_DELIVERED, UploadState.FAILED}
    if current.is_terminal:
        return False
    if target is UploadState.CANCELLED:
        return current in CANCELLABLE_STATES
    return target.rank > current.rank


def states_before(target: UploadState) -> list[UploadState]:
    """Every state from which `target` may be reached: the guard of an atomic update."""
    return [s for s in UploadState if can_transition(s, target)]
