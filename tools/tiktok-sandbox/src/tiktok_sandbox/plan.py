"""FILE_UPLOAD chunk plan rules (§3), checked at init exactly as the emulator enforces them.

"MB" is ambiguous in TikTok's docs (10^6 and 2^20 both appear). The default "safe" rules accept
only plans that are valid under *both* readings, the ranges the reference calls safe:

- non-final chunk_size 5,242,880 .. 64,000,000 bytes;
- a single chunk (the whole file) at most 64,000,000 bytes;
- the final chunk at most 128,000,000 bytes;
- video_size at most 4,000,000,000 bytes (4 GB in the smaller reading).

"loose" takes the generous reading instead (5,000,000 .. 67,108,864 per chunk, final and single
up to 134,217,728 / 67,108,864, files up to 4 GiB), for operators mirroring a TikTok that has
been seen to accept those. Everything else is the same in both modes: count = floor(size /
chunk_size), 1..1000 chunks, the remainder joins the final chunk, a whole-file plan has
chunk_size == video_size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ChunkRules = Literal["safe", "loose"]


@dataclass(frozen=True)
class Limits:
    """Byte limits of one reading of "MB"."""

    min_chunk: int
    max_chunk: int
    max_single: int
    max_final: int
    max_video: int


LIMITS: dict[ChunkRules, Limits] = {
    "safe": Limits(5_242_880, 64_000_000, 64_000_000, 128_000_000, 4_000_000_000),
    "loose": Limits(5_000_000, 67_108_864, 67_108_864, 134_217_728, 4_294_967_296),
}
MAX_CHUNKS = 1000


class PlanError(ValueError):
    """The plan breaks a §3 rule; the message says which (TikTok answers only "The chunk size is invalid")."""


@dataclass(frozen=True)
class ChunkPlan:
    """A validated FILE_UPLOAD plan."""

    video_size: int
    chunk_size: int
    total_chunk_count: int

    def chunk_range(self, index: int) -> tuple[int, int]:
        """Inclusive (first, last) byte of chunk `index` (0-based); the final chunk takes the remainder."""
        if not 0 <= index < self.total_chunk_count:
            raise IndexError(index)
        first = index * self.chunk_size
        last = self.video_size - 1 if index == self.total_chunk_count - 1 else first + self.chunk_size - 1
        return first, last


def validate_plan(
    video_size: int, chunk_size: int, total_chunk_count: int, *, rules: ChunkRules = "safe"
) -> ChunkPlan:
    """Return the plan if TikTok (read strictly per `rules`) would accept it, else raise PlanError."""
    lim = LIMITS[rules]
    if video_size < 1 or chunk_size < 1:
        raise PlanError("video_size and chunk_size must be positive")
    if video_size > lim.max_video:
        raise PlanError(f"video_size {video_size} exceeds {lim.max_video}")
    if chunk_size > video_size:
        raise PlanError("chunk_size exceeds video_size")
    expected = video_size // chunk_size  # floor, never ceil: the remainder joins the last chunk
    if total_chunk_count != expected:
        raise PlanError(f"total_chunk_count must be floor(video_size/chunk_size) = {expected}")
    if not 1 <= total_chunk_count <= MAX_CHUNKS:
        raise PlanError(f"total_chunk_count must be 1..{MAX_CHUNKS}")
    if total_chunk_count == 1:
        if video_size > lim.max_single:
            raise PlanError(f"a file over {lim.max_single} bytes must be sent in several chunks")
        if chunk_size != video_size and not lim.min_chunk <= chunk_size <= lim.max_chunk:
            raise PlanError("a single-chunk plan needs chunk_size == video_size or a valid chunk_size")
    else:
        if not lim.min_chunk <= chunk_size <= lim.max_chunk:
            raise PlanError(f"chunk_size must be {lim.min_chunk}..{lim.max_chunk}")
        final = video_size - (total_chunk_count - 1) * chunk_size
        if final > lim.max_final:
            raise PlanError(f"final chunk of {final} bytes exceeds {lim.max_final}")
    return ChunkPlan(video_size, chunk_size, total_chunk_count)
