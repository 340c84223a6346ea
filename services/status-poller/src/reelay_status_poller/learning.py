"""The learnt part of the poll schedule: when to poll a publish, from the processing times seen
before for its account and size class, and what each terminal status teaches.

A poll is an optimisation, never a condition of correctness: without a profile it has trusted
(too few observations, the store unreachable, learning off) the schedule is today's backoff, a
webhook settles an upload whatever the schedule, and no wait between polls is ever longer than
the backoff's cap (PollPolicy.max_interval). After the learnt window the backoff takes over,
counted from the window's end, so a publish slower than ever seen is still followed to the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from reelay_common.domain.errors import RetryableError
from reelay_common.domain.profiles import ALL_ACCOUNTS, LearnedSchedule, ProcessingProfile, size_class
from reelay_common.domain.records import UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.logging import get_logger
from reelay_common.ports import PollProfiles

log = get_logger(__name__)


def next_offset(
    offsets: Sequence[float],
    elapsed: float,
    *,
    last_polled: float | None = None,
    min_interval: float,
    max_interval: float,
    backoff: Callable[[int], float],
) -> float:
    """Seconds from tracking start of the next poll after `elapsed`: the next planned offset, then
    the backoff (`backoff(i)`: the wait after the i-th poll) from the plan's end; never more than
    `max_interval` after `elapsed`. A planned poll missed since `last_polled` (None: never
    polled), e.g. when tracking starts late, is made at once."""
    # A planned poll this close is skipped (the poll that ran just now stands for it).
    near = min(1.0, min_interval / 2)
    if last_polled is None or last_polled < elapsed - near:
        since = -math.inf if last_polled is None else last_polled
        if any(since < t <= elapsed for t in offsets):
            return elapsed
    for t in offsets:
        if t > elapsed + near:
            return min(t, elapsed + max_interval)
    t, i = (offsets[-1] if offsets else 0.0), 0
    while t <= elapsed + near:
        t += backoff(i)
        i += 1
    return min(t, elapsed + max_interval)


async def plan_next_poll(
    record: UploadRecord,
    now: datetime,
    *,
    profiles: PollProfiles,
    schedule: LearnedSchedule,
    min_interval: float,
    max_interval: float,
    backoff: Callable[[int], float],
    polled_now: bool = False,
) -> datetime | None:
    """When to poll `record` next by what was learnt for it; None when nothing trusted was (the
    caller keeps today's backoff then). `polled_now`: a poll (answered or not) has just been made."""
    profile = await learned_profile(profiles, schedule, record)
    if profile is None:
        return None
    started = processing_since(record) or now
    offsets = schedule.planned_offsets(profile, cap=max_interval)
    elapsed = max(0.0, (now - started).total_seconds())
    last: float | None = elapsed
    if not polled_now:
        last = None if record.poll_last_at is None else (record.poll_last_at - started).total_seconds()
    offset = next_offset(
        offsets,
        elapsed,
        last_polled=last,
        min_interval=min_interval,
        max_interval=max_interval,
        backoff=backoff,
    )
    return started + timedelta(seconds=offset)


def processing_since(record: UploadRecord) -> datetime | None:
    """Since when TikTok has been processing `record`: its `uploaded` history entry (the uploader
    saw TikTok take the last byte), else when tracking started. The learnt times and the planned
    polls count from it, so a poller that starts tracking late (Kafka lag, a restart) neither
    learns that lag as processing nor waits it again."""
    for entry in record.history:
        if entry.state is UploadState.UPLOADED:
            return entry.at
    return record.tracking_started_at


async def learned_profile(
    profiles: PollProfiles, schedule: LearnedSchedule, record: UploadRecord
) -> ProcessingProfile | None:
    """The trusted profile for `record`: its account's for its size class, else every account's
    for that class; None when neither has seen enough (or the store cannot be read)."""
    klass = size_class(record.video_size)
    try:
        for account in (record.account_id, ALL_ACCOUNTS):
            profile = await profiles.get(account, klass)
            if schedule.trusts(profile):
                return profile
    except (RetryableError, ValueError) as exc:
        # The backoff is always a correct schedule: poll on without what was learnt.
        log.warning("poll_profile_unreadable", size_class=klass, error=repr(exc))
    return None


async def observe_terminal(
    profiles: PollProfiles, record: UploadRecord, *, after: datetime | None, by: datetime
) -> None:
    """Teach the profiles of `record` (its account's and every account's, for its size class) that
    TikTok finished it at some time in [after, by] (`after` None: since processing began); a
    failure to learn is logged, not raised."""
    started = processing_since(record)
    if started is None:
        return
    low = 0.0 if after is None else max(0.0, (after - started).total_seconds())
    high = max(low, (by - started).total_seconds())
    klass = size_class(record.video_size)
    try:
        for account in (record.account_id, ALL_ACCOUNTS):
            await profiles.observe(account, klass, low, high)
    except RetryableError as exc:
        log.warning("poll_profile_not_updated", size_class=klass, error=repr(exc))
        return
    log.info(
        "processing_time_learnt", size_class=klass, low_seconds=round(low, 2), high_seconds=round(high, 2)
    )
