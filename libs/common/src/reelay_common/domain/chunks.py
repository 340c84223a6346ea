"""Chunk plans for FILE_UPLOAD that obey every rule of the reference's §3, under both readings of "MB".

The rules, and how the planner keeps them:
- `total_chunk_count = floor(video_size / chunk_size)`, the remainder joins the last chunk (never ceil).
- A file of at most 64,000,000 bytes goes as one chunk (`chunk_size = video_size`); that covers
  the rule that files under 5 MB must be whole, and stays under 64 MB whichever "MB" is meant.
- Larger files: `chunk_size` is kept within 5,242,880..64,000,000 (safe if "MB" is 10^6 or 2^20),
  and at most `video_size // 2` so that floor(video_size / chunk_size) >= 2 (the floor trap: a file
  between chunk_size and 2 x chunk_size would otherwise become one oversize chunk). The last chunk is
  then shorter than 2 x chunk_size, so at most 128,000,000 bytes.
- At most 1000 chunks: with chunk_size >= 5,242,880 and the size cap, a plan has at most 819.
- The size cap "4 GB" is read as 4,000,000,000 bytes, the same cap the ingest API enforces
  (`messages.MAX_VIDEO_BYTES`): the reading safe under both meanings of "GB", as for "MB", so we
  never send a file TikTok may refuse. Anything larger is refused with InvalidInputError before
  any call to TikTok."""

from __future__ import annotations

from typing import Final

from reelay_common.domain.errors import InvalidInputError
from reelay_common.domain.messages import MAX_VIDEO_BYTES
from reelay_common.domain.tiktok import FileUploadSourceInfo

MAX_VIDEO_SIZE: Final = MAX_VIDEO_BYTES  # 4,000,000,000 bytes


SINGLE_CHUNK_MAX: Final = 64_000_000


MIN_CHUNK_SIZE: Final = 5_242_880  # 5 MiB, which is also >= 5,000,000


MAX_CHUNK_SIZE: Final = 64_000_000  # 64 * 10^6, which is also <= 64 MiB


MAX_FINAL_CHUNK: Final = 128_000_000


MAX_CHUNK_COUNT: Final = 1000


DEFAULT_CHUNK_SIZE: Final = 10_000_000


def plan_chunks(video_size: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> FileUploadSourceInfo:
    """The FILE_UPLOAD `source_info` for a video; `chunk_size` is a preference, clamped to what is safe."""
    if isinstance(video_size, bool) or not isinstance(video_size, int):
        raise InvalidInputError("video_size must be an integer", code="invalid_video_size")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise InvalidInputError("chunk_size must be an integer", code="invalid_chunk_size")
    if video_size < 1:
        raise InvalidInputError("the video is empty", code="empty_video")
    if video_size > MAX_VIDEO_SIZE:
        raise InvalidInputError(
            f"the video is {video_size} bytes; TikTok accepts at most {MAX_VIDEO_SIZE}", code="too_large"
        )
    if video_size <= SINGLE_CHUNK_MAX:
        return FileUploadSourceInfo(video_size=video_size, chunk_size=video_size, total_chunk_count=1)
    size = min(max(chunk_size, MIN_CHUNK_SIZE), MAX_CHUNK_SIZE, video_size // 2)
    count = video_size // size
    return FileUploadSourceInfo(video_size=video_size, chunk_size=size, total_chunk_count=count)


def chunk_ranges(plan: FileUploadSourceInfo) -> list[tuple[int, int]]:
    """The inclusive byte ranges (first, last) of each chunk, in upload order."""
    if plan.total_chunk_count < 1 or plan.chunk_size < 1 or plan.video_size < 1:
        raise InvalidInputError("the chunk plan is empty", code="invalid_chunk_plan")
    if plan.chunk_size * plan.total_chunk_count > plan.video_size:
        raise InvalidInputError("the chunk plan is larger than the video", code="invalid_chunk_plan")
    ranges: list[tuple[int, int]] = []
    for i in range(plan.total_chunk_count):
        first = i * plan.chunk_size
        last = plan.video_size - 1 if i == plan.total_chunk_count - 1 else first + plan.chunk_size - 1
        ranges.append((first, last))
    return ranges


def chunk_boundaries(plan: FileUploadSourceInfo) -> list[int]:
    """The offsets an upload may resume from: each chunk's first byte, then `video_size` (done)."""
    return [first for first, _ in chunk_ranges(plan)] + [plan.video_size]
