"""Resumable, streaming, sequential chunk upload to one TikTok `upload_url` (§3, §3.1).

Each chunk's bytes stream from `reader.stream(offset, length)` straight into the PUT, so memory
holds one piece of the reader at a time, never the chunk or the file. After a 416 or a lost
response the upload resynchronises from the server's progress (the response's Content-Range, or
status/fetch `uploaded_bytes` through `status_probe`) instead of starting again, and resumes at a
chunk boundary of the plan, since TikTok expects the chunk ranges it was promised at init."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable
from typing import Final

from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.domain.chunks import chunk_boundaries, chunk_ranges
from reelay_common.domain.errors import (
    InvalidInputError,
    RateLimitedError,
    RetryableError,
    TransientTikTokError,
    UploadOutOfSyncError,
)
from reelay_common.domain.rules import Backoff
from reelay_common.domain.tiktok import FileUploadSourceInfo
from reelay_common.logging import get_logger
from reelay_common.ports import ProgressCallback, VideoReader

log = get_logger("reelay_common.adapters.tiktok.upload")

Sleep = Callable[[float], Awaitable[None]]


StatusProbe = Callable[[], Awaitable[int | None]]


DEFAULT_MAX_ATTEMPTS: Final = 5


DEFAULT_MAX_RESYNCS: Final = 8


async def upload_chunks(
    client: TikTokClient,
    upload_url: str,
    plan: FileUploadSourceInfo,
    reader: VideoReader,
    *,
    start_offset: int = 0,
    on_progress: ProgressCallback | None = None,
    status_probe: StatusProbe | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_resyncs: int = DEFAULT_MAX_RESYNCS,
    backoff_initial: float = 0.5,
    backoff_max: float = 8.0,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """PUT every chunk of `plan` from `start_offset` on, sequentially and streaming.

    Returns once TikTok answered 201 (or its progress proves it holds every byte). A 5xx, a 429
    or a dropped connection retries the same chunk with exponential backoff, `max_attempts` times
    per chunk, then raises the last error. A 416 or a lost response resumes from the server's
    progress. A 403 raises UploadUrlExpiredError; 400/404 raise TikTokRejectedError.
    `on_progress(confirmed_bytes)` runs after each chunk the server accepted.
    """
    if reader.size != plan.video_size:
        raise InvalidInputError(
            f"the video has {reader.size} bytes but the plan expects {plan.video_size}",
            code="source_size_mismatch",
        )
    if max_attempts < 1 or max_resyncs < 0:
        raise ValueError("max_attempts must be >= 1 and max_resyncs >= 0")
    ranges = chunk_ranges(plan)
    boundaries = chunk_boundaries(plan)
    total = plan.video_size
    offset = _floor_boundary(boundaries, max(0, start_offset))
    if offset != start_offset:
        log.info("upload_resume_realigned", requested_offset=start_offset, offset=offset)
    if offset >= total:
        # A previous run saw every byte confirmed; there is nothing left to send.
        return

    backoff = Backoff(backoff_initial, backoff_max)
    failures = 0  # consecutive transient failures of the current chunk
    resyncs = 0
    while True:
        index = boundaries.index(offset)
        first, last = ranges[index]
        try:
            result = await client.put_chunk(
                upload_url,
                first=first,
                last=last,
                total=total,
                content_type=reader.content_type,
                body=reader.stream(first, last - first + 1),
            )
        except UploadOutOfSyncError as exc:
            resyncs += 1
            if resyncs > max_resyncs:
                raise
            server = _snap(boundaries, exc.server_offset)
            if server is None and status_probe is not None:
                server = _snap(boundaries, await _probe(status_probe))
            if server is None:
                # Nothing tells us where the server is: the 416 stands, give it back to the caller.
                raise
            log.info(
                "upload_resynced", reason="range_not_satisfiable", sent_first=first, server_offset=server
            )
            if server == offset:
                # The server agrees on the offset yet refused the range: most likely our previous
                # PUT is still being received (TikTok takes one at a time). Give it a moment.
                await sleep(backoff.delay(resyncs - 1))
            offset = await _advance(offset, server, on_progress)
            if offset >= total:
                return
            failures = 0
            continue
        except (TransientTikTokError, RateLimitedError) as exc:
            # The PUT's own rate limit is undocumented; a 429 there is waited out like a 5xx.
            failures += 1
            if failures >= max_attempts:
                log.warning("chunk_upload_gave_up", first=first, last=last, attempts=failures, code=exc.code)
                raise
            delay = backoff.delay(failures - 1)
            if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
                delay = min(backoff_max, max(delay, exc.retry_after))
            log.info(
                "chunk_upload_retry", first=first, last=last, attempt=failures, delay=delay, code=exc.code
            )
            await sleep(delay)
            if exc.http_status is None and status_probe is not None:
                # No response at all: the chunk may have landed. Ask instead of guessing; a replayed
                # chunk counts as committed only if the server's progress proves it.
                server = _snap(boundaries, await _probe(status_probe))
                if server is not None and server > offset:
                    log.info(
                        "upload_resynced", reason="lost_response", sent_first=first, server_offset=server
                    )
                    offset = await _advance(offset, server, on_progress)
                    if offset >= total:
                        return
                    failures = 0
            continue

        failures = 0
        if result.status_code == 201:
            if last != total - 1:
                log.warning("upload_completed_early", sent_last=last, total=total)
            if on_progress is not None:
                await on_progress(total)
            log.info("upload_complete", bytes=total, chunks=len(ranges))
            return
        expected = last + 1
        server = _snap(boundaries, result.server_progress) if result.server_progress is not None else expected
        if server is None:
            server = expected
        if server != expected:
            resyncs += 1
            if resyncs > max_resyncs:
                raise UploadOutOfSyncError(
                    "the server's progress keeps disagreeing with ours", server_offset=result.server_progress
                )
            log.info("upload_resynced", reason="progress_mismatch", expected=expected, server_offset=server)
        log.info("chunk_uploaded", first=first, last=last, bytes=last - first + 1)
        offset = await _advance(offset, server, on_progress) if server != offset else offset
        if offset >= total:
            # 206 on the final chunk yet every byte is there: the 201 must have been lost in transit.
            return


async def _advance(offset: int, server: int, on_progress: ProgressCallback | None) -> int:
    """Move to the server's offset; report progress when it moved forward."""
    if server > offset and on_progress is not None:
        await on_progress(server)
    return server


async def _probe(status_probe: StatusProbe) -> int | None:
    """Ask status/fetch how many bytes TikTok holds; None if it cannot tell right now."""
    try:
        return await status_probe()
    except RetryableError as exc:
        log.info("upload_status_probe_failed", code=exc.code)
        return None


def _floor_boundary(boundaries: list[int], offset: int) -> int:
    """The last chunk boundary at or before `offset`."""
    i = bisect.bisect_right(boundaries, offset) - 1
    return boundaries[max(0, i)]


def _snap(boundaries: list[int], progress: int | None) -> int | None:
    """The chunk boundary the server's reported progress stands for, or None if unknown.

    The Content-Range end may be an inclusive index or a count (§3.1), so both `progress` and
    `progress - 1` are tried; a value on a boundary is exact. Anything else (a partly stored
    chunk) falls back to the boundary before it, since TikTok expects the planned ranges.
    """
    if progress is None or progress < 0:
        return None
    for candidate in (progress, progress - 1):
        if candidate in boundaries:
            return candidate
    return _floor_boundary(boundaries, progress)
