"""A fake BlobStore in memory: the BlobStore port (save with a size cap and sha256, open, stat, delete)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable
from typing import Literal

from reelay_common.domain.errors import InvalidInputError
from reelay_common.domain.messages import ALLOWED_CONTENT_TYPES, MAX_VIDEO_BYTES, BlobSource
from reelay_common.ports import BlobInfo

from reelay_testing.readers import BytesVideoReader


class FakeBlobStore:
    """Blobs in a dict; tests/integration/platform/test_platform_gridfs.py holds it to GridFS's contract."""

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[bytes, str]] = {}
        self._next = 0

    @property
    def kind(self) -> Literal["local"]:
        """Stands in for the local store (the kind it records in its BlobSources)."""
        return "local"

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
        blob_id = f"{self._next:032x}"  # shaped like the local store's ids (32 hex digits)
        self.blobs[blob_id] = (bytes(buf), content_type)
        return BlobSource(
            blob_id=blob_id,
            size=len(buf),
            content_type=content_type,
            filename=filename,
            store=self.kind,
            sha256=hashlib.sha256(buf).hexdigest(),
        )

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

    async def stat(self, blob_id: str) -> BlobInfo | None:
        """The stored blob's size, or None."""
        blob = self.blobs.get(blob_id)
        return None if blob is None else BlobInfo(blob_id=blob_id, size=len(blob[0]))

    async def delete(self, blob_id: str) -> None:
        """Forget a blob; deleting one that is gone is fine."""
        self.blobs.pop(blob_id, None)
