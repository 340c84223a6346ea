"""What every blob store shares: the checks while a file streams in (media type, size cap, sha256)
and the checks of a stored blob before it is read (it exists, with the size the request said)."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator

from reelay_common.domain.errors import InvalidInputError
from reelay_common.domain.messages import ALLOWED_CONTENT_TYPES, MAX_VIDEO_BYTES, BlobSource, BlobStoreKind
from reelay_common.logging import get_logger

log = get_logger("reelay_common.blobs")


def check_content_type(content_type: str) -> None:
    """Refuse a media type the uploader cannot send (before any byte is stored)."""
    if content_type not in ALLOWED_CONTENT_TYPES:
        raise InvalidInputError(
            f"unsupported media type {content_type!r}; use one of {', '.join(ALLOWED_CONTENT_TYPES)}",
            code="unsupported_media_type",
        )


def new_blob_id() -> str:
    """A fresh blob id: 32 hex digits, never derived from anything a client sent."""
    return uuid.uuid4().hex


_BLOB_ID = re.compile(r"[0-9a-f]{32}")


def checked_blob_id(blob_id: str) -> str:
    """`blob_id` if it has the shape new_blob_id gives (so no message can address another path or key)."""
    if not _BLOB_ID.fullmatch(blob_id):
        raise InvalidInputError(f"{blob_id!r} is not a blob id", code="invalid_blob_id")
    return blob_id


def check_store(source: BlobSource, kind: BlobStoreKind) -> None:
    """Refuse a blob written to another store (a message without `store` predates the choice: GridFS)."""
    written_to = source.store or "gridfs"
    if written_to != kind:
        raise InvalidInputError(
            f"blob {source.blob_id} was stored in {written_to}, but this service reads {kind}",
            code="blob_store_mismatch",
        )


class MeteredStream:
    """An upload stream that counts and hashes what passes, refusing past the cap before it is stored."""

    def __init__(self, chunks: AsyncIterable[bytes], *, max_bytes: int, hash_here: bool = True) -> None:
        self._chunks = chunks
        self.limit = min(max_bytes, MAX_VIDEO_BYTES)
        self.size = 0
        # hash_here=False: the store feeds `sha256` itself, in the worker thread that writes each
        # piece (hashlib lets go of the GIL, so the event loop keeps receiving meanwhile).
        self.sha256 = hashlib.sha256()
        self._hash_here = hash_here

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._chunks:
            if not piece:
                continue
            self.size += len(piece)
            if self.size > self.limit:
                raise InvalidInputError(
                    f"the video is larger than the limit of {self.limit} bytes", code="too_large"
                )
            if self._hash_here:
                self.sha256.update(piece)
            yield piece

    def finish(self) -> str:
        """After the stream ended: its sha256 (hex); an empty stream is refused."""
        if self.size == 0:
            raise InvalidInputError("the video is empty", code="empty")
        return self.sha256.hexdigest()


async def pieces_of(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Re-cut a stream into pieces of exactly `size` bytes (the last one may be shorter).

    Each byte is copied once (one join per piece), not appended, sliced and trimmed.
    """
    held: list[bytes] = []
    held_bytes = 0
    async for piece in chunks:
        held.append(piece)
        held_bytes += len(piece)
        if held_bytes < size:
            continue
        data = b"".join(held)
        start = 0
        while held_bytes - start >= size:
            yield data[start : start + size]  # the whole of `data` when it is exactly one piece
            start += size
        rest = data[start:]
        held, held_bytes = ([rest] if rest else []), len(rest)
    if held:
        yield b"".join(held)


def saved(
    store: BlobStoreKind,
    blob_id: str,
    metered: MeteredStream,
    *,
    content_type: str,
    filename: str | None,
    sha256: str | None,
) -> BlobSource:
    """The source of a video a store has just saved whole (and the log line that says so)."""
    log.info("blob_saved", store=store, blob_id=blob_id, bytes=metered.size, content_type=content_type)
    return BlobSource(
        blob_id=blob_id,
        size=metered.size,
        content_type=content_type,
        filename=filename,
        store=store,
        sha256=sha256,
    )


def check_stored_size(source: BlobSource, stored_size: int | None) -> int:
    """The stored blob's size, once it is known to exist (`stored_size` not None) and to have the
    size the request said: else InvalidInputError "blob_not_found" or "blob_size_mismatch"."""
    if stored_size is None:
        raise InvalidInputError(f"blob {source.blob_id} does not exist", code="blob_not_found")
    if stored_size != source.size:
        raise InvalidInputError(
            f"blob {source.blob_id} has {stored_size} bytes, the request said {source.size}",
            code="blob_size_mismatch",
        )
    return stored_size
