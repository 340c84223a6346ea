"""What the status-poller learns about TikTok's processing times: one bounded summary per account
and size class, and the schedule of polls it suggests.

A `ProcessingProfile` is an exponentially weighted histogram over log-spaced bins of processing
time (seconds from tracking start to TikTok's terminal status). It stays small (at most `BINS`
weights), forgets slowly (each observation weighs `DECAY` of the whole once there are enough) so
it follows a drift in TikTok's speed, and takes observations as intervals: a poll only knows the
publish finished between the previous poll and this one, so the weight is spread over that
interval instead of being put at the poll (which would learn the poll schedule, not TikTok).

Pure values and functions: the store (ports.PollProfiles) keeps them, the poller plans with them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# Bin k holds processing times in [2^((k-1)/4), 2^(k/4)) seconds; bin 0 everything below 1 s and
# the last one everything from 2^((BINS-2)/4) s (about 6.5 hours) up: quarter-octave resolution
# (19% wide) is well inside the spread of any real processing time.
BINS_PER_OCTAVE = 4
BINS = 62
# Each new observation weighs this share once the profile has 1/DECAY observations (before, every
# observation weighs the same: a plain average of the first ones).
DECAY = 1.0 / 32.0
# Classes of video size: log2 of the bytes (2^20 = 1 MiB...); unknown sizes (PULL_FROM_URL before
# TikTok has it) are a class of their own.
UNKNOWN_SIZE_CLASS = "unknown"
# The profile of a size class over every account, asked when the account's own is still thin.
ALL_ACCOUNTS = "*"


def size_class(video_size: int | None) -> str:
    """The size class of a video: `log2:<floor(log2(bytes))>`, or `unknown`."""
    if video_size is None or video_size <= 0:
        return UNKNOWN_SIZE_CLASS
    return f"log2:{video_size.bit_length() - 1}"


def _edge(k: int) -> float:
    """Lower edge of bin k (seconds); bin 0 starts at 0."""
    return 0.0 if k <= 0 else 2.0 ** ((k - 1) / BINS_PER_OCTAVE)


def _bin_of(seconds: float) -> int:
    if seconds < 1.0:
        return 0
    return min(BINS - 1, math.floor(math.log2(seconds) * BINS_PER_OCTAVE) + 1)


def _upper(k: int) -> float:
    return _edge(k + 1) if k < BINS - 1 else _edge(k) * 2.0


def _spread(low: float, high: float) -> Iterator[tuple[int, float]]:
    """(bin, share) of an observation known to lie in [low, high], spread uniformly in time."""
    if high - low <= 1e-9:
        yield _bin_of(high), 1.0
        return
    parts: dict[int, float] = {}
    last = BINS - 1
    for k in range(_bin_of(low), _bin_of(high) + 1):
        # The last bin is open-ended: it takes everything from its lower edge up.
        top = high if k == last else min(high, _upper(k))
        part = top - max(low, _edge(k))
        if part > 0:
            parts[k] = part
    total = sum(parts.values())
    for k, part in parts.items():
        yield k, part / total


@dataclass(frozen=True)
class ProcessingProfile:
    """An exponentially weighted histogram of processing times (weights sum to 1 once observed)."""

    weights: Mapping[int, float] = field(default_factory=dict)
    count: int = 0

    def observe(self, low: float, high: float) -> ProcessingProfile:
        """This profile with one more processing time, known to lie in [low, high] seconds."""
        if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high < low:
            raise ValueError(f"an observation needs 0 <= low <= high, got [{low}, {high}]")
        share = max(DECAY, 1.0 / (self.count + 1))
        weights = {k: w * (1.0 - share) for k, w in self.weights.items()}
        for k, part in _spread(low, high):
            weights[k] = weights.get(k, 0.0) + share * part
        # Weights that decayed to nothing are dropped: the document stays at a few bins.
        return ProcessingProfile({k: w for k, w in weights.items() if w > 1e-6}, self.count + 1)

    def quantile(self, p: float) -> float:
        """The processing time below which a share `p` of the weight lies (log-interpolated in its bin)."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"a quantile needs 0 <= p <= 1, got {p}")
        total = sum(self.weights.values())
        if total <= 0:
            raise ValueError("an empty profile has no quantiles")
        target = p * total
        seen = 0.0
        for k in sorted(self.weights):
            w = self.weights[k]
            if seen + w >= target:
                frac = (target - seen) / w if w > 0 else 0.0
                lo, hi = _edge(k), _upper(k)
                if lo <= 0:
                    return hi * frac
                return float(lo * (hi / lo) ** frac)
            seen += w
        return _upper(max(self.weights))

    def to_document(self) -> dict[str, Any]:
        """The stored form: bins as string keys (BSON keys are strings)."""
        return {"weights": {str(k): w for k, w in self.weights.items()}, "count": self.count}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> ProcessingProfile:
        """Read the stored form back; bins outside the histogram are refused."""
        weights = {int(k): float(w) for k, w in dict(doc.get("weights") or {}).items()}
        bad = [k for k in weights if not 0 <= k < BINS]
        if bad:
            raise ValueError(f"profile bins out of range: {bad}")
        return cls(weights, int(doc.get("count", 0)))


@dataclass(frozen=True)
class LearnedSchedule:
    """How a profile is turned into polls (seconds)."""

    # Polls inside the learned window are at most this far apart: a completion there is seen
    # within it. The window runs from the `low` to the `high` quantile.
    max_gap: float = 8.0
    low: float = 0.05
    high: float = 0.97
    # A profile is trusted from this many observations on.
    min_observations: int = 5

    def __post_init__(self) -> None:
        if self.max_gap <= 0:
            raise ValueError("max_gap must be positive")
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError("the learned window needs 0 <= low < high <= 1")
        if self.min_observations < 1:
            raise ValueError("min_observations must be at least 1")

    def trusts(self, profile: ProcessingProfile | None) -> bool:
        """Whether `profile` has seen enough to plan with."""
        return profile is not None and profile.count >= self.min_observations and bool(profile.weights)

    def planned_offsets(self, profile: ProcessingProfile, cap: float) -> list[float]:
        """Poll times (seconds from processing start) covering the learned window: the first one
        `max_gap` after its start (or at the median, if sooner), then every `max_gap` (never more
        than `cap`, the longest wait allowed between polls) until its end; before the first, polls
        every `cap` if it is far."""
        gap = min(self.max_gap, cap)
        start, end = profile.quantile(self.low), profile.quantile(self.high)
        # Never later than the median: where most publishes are done before tracking even starts
        # (the window starts at 0), the first poll is at once rather than a gap later.
        first = min(start + gap, profile.quantile(0.5))
        offsets = [cap * i for i in range(1, math.ceil(first / cap))]
        t = first
        while True:
            offsets.append(t)
            if t >= end:
                return offsets
            t += gap
