"""Real ports.VideoReader implementations over a file or bytes, and bytes as an async stream.

Not fakes: nothing in production reads like this, but each is a complete reader of the port's
contract (bounded pieces from any offset), so tests and bench/ use them as sources.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

from reelay_common.ports import SizedVideo, check_read_range


class FileVideoReader(SizedVideo):
    """ports.VideoReader over a file on disk: bounded pieces from any offset, nothing kept."""

    def __init__(self, path: Path, *, piece_size: int = 256 * 1024, content_type: str = "video/mp4") -> None:
        if piece_size < 1:
            raise ValueError("piece_size must be positive")
        super().__init__(size=path.stat().st_size, content_type=content_type)
        self.path = path
        self.piece_size = piece_size

    async def _pieces(self, offset: int, length: int) -> AsyncGenerator[bytes, None]:
        """Exactly `length` bytes from `offset`, at most `piece_size` at a time."""
        with self.path.open("rb") as f:
            f.seek(offset)
            left = length
            while left > 0:
                # A thread keeps the event loop free while the disk answers.
                piece = await asyncio.to_thread(f.read, min(self.piece_size, left))
                if not piece:
                    raise OSError(f"{self.path} ended {left} bytes early")
                left -= len(piece)
                yield piece


class BytesVideoReader:
    """ports.VideoReader over bytes in memory; `reads` records every (offset, length) asked for."""

    def __init__(self, data: bytes, content_type: str = "video/mp4", *, piece_size: int = 64 * 1024) -> None:
        if piece_size < 1:
            raise ValueError("piece_size must be positive")
        self.data = data
        self.content_type_ = content_type
        self.piece_size = piece_size
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        """Bytes in the video."""
        return len(self.data)

    @property
    def content_type(self) -> str:
        """The media type given at construction."""
        return self.content_type_

    async def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """Yield exactly `length` bytes from `offset`, at most `piece_size` at a time."""
        check_read_range(offset, length, len(self.data))
        self.reads.append((offset, length))
        end = offset + length
        for start in range(offset, end, self.piece_size):
            yield self.data[start : min(end, start + self.piece_size)]


async def aiter_bytes(data: bytes, piece_size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """`data` as an async stream of pieces (feeds BlobStore.save in tests)."""
    for start in range(0, len(data), piece_size):
        yield data[start : start + piece_size]
