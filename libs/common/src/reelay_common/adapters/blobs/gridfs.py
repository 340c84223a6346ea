"""GridFS video blobs: streamed in one chunk document at a time, read back in small cursor batches.

For deployments that want MongoDB only. On FerretDB v1 it is slow, and slower the more is stored:
FerretDB pushes no filter down to its backend, so every chunk query scans the whole chunks
collection (about 6 s per 10 MB chunk with a few hundred MB stored). Use `local` or `s3` there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any, Literal

from bson import ObjectId
from bson.errors import InvalidId
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from reelay_common.adapters.blobs.metered import (
    MeteredStream,
    check_content_type,
    check_store,
    check_stored_size,
    pieces_of,
    saved,
)
from reelay_common.adapters.mongo.client import bson_now, translate_errors
from reelay_common.domain.errors import DatabaseUnavailableError, InvalidInputError, RetryableError
from reelay_common.domain.messages import BlobSource
from reelay_common.logging import get_logger
from reelay_common.ports import BlobInfo, SizedVideo

log = get_logger("reelay_common.adapters.blobs.gridfs")


GRIDFS_CHUNK_BYTES = 1024 * 1024  # one GridFS chunk; also the largest piece a reader yields


class GridFSVideoReader(SizedVideo):
    """A GridFS file read as a VideoReader: any offset, bounded pieces, nothing held in memory.

    Chunks are read with our own cursor in small batches: FerretDB v1 does not cap a cursor batch
    at 16 MiB as MongoDB does, so PyMongo's GridOut (default batch: 101 chunks of 1 MiB) gets a
    reply larger than the 48 MB wire-message limit and fails with ProtocolError.
    """

    _BATCH_CHUNKS = 4  # ~4 MiB per reply: small, and well below every server's message limit

    def __init__(
        self,
        chunks: AsyncCollection[dict[str, Any]],
        file_id: ObjectId,
        *,
        size: int,
        chunk_size: int,
        content_type: str,
    ) -> None:
        super().__init__(size=size, content_type=content_type)
        self._chunks = chunks
        self._file_id = file_id
        self._chunk_size = chunk_size

    async def _pieces(self, offset: int, length: int) -> AsyncGenerator[bytes, None]:
        """Exactly `length` bytes from `offset`, at most one GridFS chunk at a time."""
        n = offset // self._chunk_size
        skip = offset - n * self._chunk_size
        remaining = length
        cursor = (
            self._chunks.find({"files_id": self._file_id, "n": {"$gte": n}}, projection={"n": 1, "data": 1})
            .sort("n", ASCENDING)
            .batch_size(self._BATCH_CHUNKS)
        )
        try:
            while remaining > 0:
                with translate_errors("read a GridFS chunk"):
                    doc = await cursor.next()
                if doc["n"] != n:
                    raise RetryableError(f"blob {self._file_id} is missing chunk {n}")
                data = bytes(doc["data"])[skip:]
                skip = 0
                piece = data[:remaining]
                if not piece:
                    raise RetryableError(f"blob {self._file_id} ended {remaining} bytes early")
                remaining -= len(piece)
                n += 1
                yield piece
        except StopAsyncIteration as exc:
            raise RetryableError(f"blob {self._file_id} ended {remaining} bytes early") from exc
        finally:
            await cursor.close()


class GridFSBlobStore:
    """Uploaded video files in GridFS (bucket "videos"), written as a stream with a size cap.

    Files are written in the standard GridFS layout (`<bucket>.files` / `<bucket>.chunks`), so
    PyMongo's own GridFS reads them; but the writing is ours, one chunk document at a time:
    PyMongo's GridIn batches up to ~48 MB of chunks per insert, which would make memory grow
    with the video (promise 3) for every upload streamed into ingest.
    """

    def __init__(self, db: AsyncDatabase[dict[str, Any]], *, bucket_name: str = "videos") -> None:
        self._bucket = AsyncGridFSBucket(db, bucket_name=bucket_name, chunk_size_bytes=GRIDFS_CHUNK_BYTES)
        self._files = db[f"{bucket_name}.files"]
        self._chunks = db[f"{bucket_name}.chunks"]
        self._indexed = False

    async def _ensure_indexes(self) -> None:
        # The indexes the GridFS spec asks writers to create before the first write.
        if self._indexed:
            return
        with translate_errors("create GridFS indexes"):
            await self._chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
            await self._files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
        self._indexed = True

    @property
    def kind(self) -> Literal["gridfs"]:
        """This is the GridFS store."""
        return "gridfs"

    async def save(
        self, chunks: AsyncIterable[bytes], *, filename: str | None, content_type: str, max_bytes: int
    ) -> BlobSource:
        """Stream `chunks` into a new file; over `max_bytes`: InvalidInputError "too_large", nothing kept."""
        check_content_type(content_type)
        await self._ensure_indexes()
        file_id = ObjectId()
        metered = MeteredStream(chunks, max_bytes=max_bytes)
        n = 0
        try:
            async for data in pieces_of(metered, GRIDFS_CHUNK_BYTES):
                with translate_errors("write a GridFS chunk"):
                    await self._chunks.insert_one({"files_id": file_id, "n": n, "data": data})
                n += 1
            sha256 = metered.finish()
            # The files document goes last: until it exists, readers see no file at all.
            with translate_errors("finish a GridFS upload"):
                await self._files.insert_one(
                    {
                        "_id": file_id,
                        "length": metered.size,
                        "chunkSize": GRIDFS_CHUNK_BYTES,
                        "uploadDate": bson_now(),
                        "filename": filename or "upload",
                        "metadata": {"content_type": content_type, "sha256": sha256},
                    }
                )
        except BaseException:
            # Whatever went wrong (too large, client gone, cancelled), leave no partial file behind.
            try:
                with translate_errors("remove a partial GridFS file"):
                    await asyncio.shield(self._chunks.delete_many({"files_id": file_id}))
            except (
                DatabaseUnavailableError
            ) as abort_exc:  # pragma: no cover - the database went away mid-abort
                log.warning("gridfs_abort_failed", error=type(abort_exc).__name__)
            raise
        return saved(
            "gridfs", str(file_id), metered, content_type=content_type, filename=filename, sha256=sha256
        )

    async def stat(self, blob_id: str) -> BlobInfo | None:
        """The stored file's size, or None when it does not exist."""
        with translate_errors("stat a GridFS file"):
            meta = await self._files.find_one({"_id": _object_id(blob_id)}, projection={"length": 1})
        return None if meta is None else BlobInfo(blob_id=blob_id, size=int(meta["length"]))

    async def open(self, source: BlobSource) -> GridFSVideoReader:
        """A reader of the stored file (checks it exists and has the recorded size)."""
        check_store(source, self.kind)
        file_id = _object_id(source.blob_id)
        with translate_errors("open a GridFS file"):
            meta = await self._files.find_one({"_id": file_id})
        size = check_stored_size(source, None if meta is None else int(meta["length"]))
        assert meta is not None  # check_stored_size refused a missing file
        return GridFSVideoReader(
            self._chunks,
            file_id,
            size=size,
            chunk_size=int(meta["chunkSize"]),
            content_type=source.content_type,
        )

    async def delete(self, blob_id: str) -> None:
        """Delete a stored file; deleting one that is already gone is fine."""
        with translate_errors("delete a GridFS file"):
            try:
                await self._bucket.delete(_object_id(blob_id))
            except NoFile:
                return


def _object_id(blob_id: str) -> ObjectId:
    try:
        return ObjectId(blob_id)
    except (InvalidId, TypeError) as exc:
        raise InvalidInputError(f"{blob_id!r} is not a blob id", code="invalid_blob_id") from exc
