"""Rules more than one part of Reelay applies, each written once: which bytes make a video, what a
Content-Range says, whether a creator offers a privacy level, what TikTok's publish status means for
an upload, how long to back off before trying again, and when to stop.

Pure functions and values: no I/O, no clock, no event loop (waiting on one lives in `timing`)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from reelay_common.domain.errors import (
    BrokerUnavailableError,
    DatabaseUnavailableError,
    InvalidInputError,
    RateLimitedError,
    RetryableError,
)
from reelay_common.domain.messages import UploadMode
from reelay_common.domain.states import UploadState
from reelay_common.domain.tiktok import PublishStatusCode

# ---------------------------------------------------------------------------------------------
# Video magic numbers


SNIFF_BYTES: Final = 12  # what sniff_video_type looks at: a box header and a major brand


# ISO base media (MP4, MOV) opens with a box: 4 bytes of size, then its type. Old QuickTime files
# may open with another atom than ftyp (moov, mdat, wide, free, skip, or a pnot preview).
_QUICKTIME_ATOMS: Final = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


_EBML_MAGIC: Final = b"\x1a\x45\xdf\xa3"  # WebM is Matroska, which is EBML


def sniff_video_type(head: bytes) -> str | None:
    """The video content type a file's first bytes announce (mp4, quicktime, webm), else None."""
    if head.startswith(_EBML_MAGIC):
        return "video/webm"
    if len(head) < 8:
        return None
    box = head[4:8]
    if box == b"ftyp":
        # The major brand follows; "qt  " is QuickTime, every other ISO brand is read as MP4.
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if box in _QUICKTIME_ATOMS:
        return "video/quicktime"
    return None


# ---------------------------------------------------------------------------------------------
# HTTP Content-Range


_CONTENT_RANGE: Final = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """`bytes FIRST-LAST/TOTAL` as (first, last, total); total None for `*`; None if absent/bad."""
    if value is None:
        return None
    match = _CONTENT_RANGE.match(value)
    if match is None:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


# ---------------------------------------------------------------------------------------------
# Privacy levels


PRIVACY_LEVEL_NOT_OFFERED: Final = "privacy_level_not_offered"


def check_privacy_level(requested: str, offered: Sequence[str]) -> None:
    """Refuse (InvalidInputError, code privacy_level_not_offered) a level creator_info does not offer."""
    if requested in offered:
        return
    raise InvalidInputError(
        f"privacy_level {requested} is not offered to this creator; "
        f"choose one of {', '.join(offered) or '(none: the creator cannot post now)'}",
        code=PRIVACY_LEVEL_NOT_OFFERED,
    )


# ---------------------------------------------------------------------------------------------
# TikTok publish status -> upload state


@dataclass(frozen=True)
class StatusMeaning:
    """What a TikTok publish status says about an upload: its state, and whether it also says
    that the user posted an inbox draft (PUBLISH_COMPLETE of an inbox upload)."""

    state: UploadState
    user_posted_draft: bool = False


def upload_state_for(status: PublishStatusCode, mode: UploadMode) -> StatusMeaning:
    """The upload state TikTok's publish status (from status/fetch or a webhook) stands for."""
    if status in ("PROCESSING_UPLOAD", "PROCESSING_DOWNLOAD"):
        return StatusMeaning(UploadState.PROCESSING)
    if status == "PUBLISH_COMPLETE":
        if mode == "inbox":
            # For an inbox upload this only means the user posted the draft; its success is
            # inbox_delivered (reached now if the inbox news was missed).
            return StatusMeaning(UploadState.INBOX_DELIVERED, user_posted_draft=True)
        return StatusMeaning(UploadState.PUBLISHED)
    if status == "SEND_TO_USER_INBOX":
        return StatusMeaning(UploadState.INBOX_DELIVERED)
    return StatusMeaning(UploadState.FAILED)


# ---------------------------------------------------------------------------------------------
# Backoff


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: `initial * multiplier**attempt` seconds, capped at `maximum`, and spread
    by `jitter` (a fraction either way, 0 for none) where a caller asks for it."""

    initial: float
    maximum: float
    multiplier: float = 2.0
    jitter: float = 0.0
    # Jitter needs no cryptographic randomness; tests inject a fixed one.
    uniform: Callable[[float, float], float] = field(default=random.uniform, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("a backoff needs initial, maximum >= 0, multiplier >= 1 and 0 <= jitter < 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry `attempt` (0 is the first), capped; never jittered."""
        if attempt <= 0 or self.initial == 0:
            return min(self.maximum, self.initial)
        try:
            grown = self.initial * float(self.multiplier) ** attempt
        except OverflowError:  # thousands of attempts: long past the cap
            return self.maximum
        return min(self.maximum, grown)

    def jittered(self, seconds: float) -> float:
        """`seconds` spread uniformly by +-jitter (unchanged when jitter is 0)."""
        if not self.jitter:
            return seconds
        return seconds * self.uniform(1 - self.jitter, 1 + self.jitter)

    def sample(self, attempt: int) -> float:
        """The jittered wait before retry `attempt`: `jittered(delay(attempt))`."""
        return self.jittered(self.delay(attempt))


# ---------------------------------------------------------------------------------------------
# Retry deadline


RETRIES_EXHAUSTED: Final = "retries_exhausted"  # the error code of an upload that stopped retrying


def uses_up_retry_deadline(exc: RetryableError) -> bool:
    """Whether a retryable failure counts against an upload's retry deadline.

    Failures of what the upload depends on (its source answering 5xx or refusing connections,
    TikTok down) do: retried without end, one upload would block its account forever. TikTok's rate
    limits do not (waiting them out is the normal course, docs/architecture.md "Promises" 4), nor do
    Reelay's own Mongo and Kafka being away (nothing about this upload is wrong; it must survive them).
    """
    return not isinstance(exc, RateLimitedError | DatabaseUnavailableError | BrokerUnavailableError)


def retry_deadline_passed(retrying_since: datetime, now: datetime, deadline: timedelta) -> bool:
    """True once an upload has been retrying for `deadline` or longer."""
    return now - retrying_since >= deadline
