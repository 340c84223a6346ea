"""A fake BlobStore in memory: the contract of GridFSBlobStore (save with a size cap, open, delete)."""

from __future__ import annotations

from collections.abc import AsyncIterable

from reelay_common.domain.errors import InvalidInputError
from reelay_common.domain.messages import ALLOWED_CONTENT_TYPES, MAX_VIDEO_BYTES, BlobSource

from reelay_testing.readers import BytesVideoReader


class FakeBlobStore:
    """Blobs in a dict; tests/integration/platform/test_platform_gridfs.py holds it to GridFS's contract."""

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[bytes, str]] = {}
        self._next = 0

    async def save(
        self, chunks: AsyncIterable[bytes], *, filename: str | None, content_type: str, max_bytes: int
    ) -> BlobSource:
        """Collect `chunks`; over `max_bytes`: InvalidInputError "too_large", nothing kept."""
        if content_type not in ALLOWED_CONTENT_TYPES:
            raise InvalidInputError(f"unsupported media type {content_type!r}", code="unsupported_media_type")
        limit = min(max_bytes, MAX_VIDEO_BYTES)
        buf = bytearray()
        async for piece in chunks:
            buf += piece
            if len(buf) > limit:
                raise InvalidInputError(
                    f"the video is larger than the limit of {limit} bytes", code="too_large"
                )
        if not buf:
            raise InvalidInputError("the video is empty", code="empty")
        self._next += 1
        blob_id = f"{self._next:024x}"  # shaped like an ObjectId, as GridFS ids are
        self.blobs[blob_id] = (bytes(buf), content_type)
        return BlobSource(blob_id=blob_id, size=len(buf), content_type=content_type, filename=filename)

    async def open(self, source: BlobSource) -> BytesVideoReader:
        """A reader of the stored bytes."""
        blob = self.blobs.get(source.blob_id)
        if blob is None:
            raise InvalidInputError(f"blob {source.blob_id} does not exist", code="blob_not_found")
        if len(blob[0]) != source.size:
            raise InvalidInputError(
                f"blob {source.blob_id} has {len(blob[0])} bytes, the request said {source.size}",
                code="blob_size_mismatch",
            )
        return BytesVideoReader(blob[0], content_type=blob[1])

    async def delete(self, blob_id: str) -> None:
        """Forget a blob; deleting one that is gone is fine."""
        self.blobs.pop(blob_id, None)
