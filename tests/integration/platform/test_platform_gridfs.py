"""GridFS blobs on the real Mongo-wire server (FerretDB in CI): streamed in, capped, read from any offset."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.blobs.gridfs import GRIDFS_CHUNK_BYTES, GridFSBlobStore
from reelay_common.adapters.mongo.client import connect, ensure_indexes, ping
from reelay_common.domain.errors import InvalidInputError
from reelay_common.domain.messages import BlobSource
from reelay_testing.blobs import FakeBlobStore
from reelay_testing.readers import aiter_bytes

DATA = os.urandom(3 * GRIDFS_CHUNK_BYTES + 12345)


@pytest.fixture(params=["memory", "gridfs"])
def blobs(request: pytest.FixtureRequest) -> GridFSBlobStore | FakeBlobStore:
    if request.param == "memory":
        return FakeBlobStore()
    db: AsyncDatabase[dict[str, Any]] = request.getfixturevalue("mongo_db")
    return GridFSBlobStore(db)


async def collect(stream: AsyncIterator[bytes], *, max_piece: int = GRIDFS_CHUNK_BYTES) -> bytes:
    out = bytearray()
    async for piece in stream:
        assert 0 < len(piece) <= max_piece
        out += piece
    return bytes(out)


class TestBlobStore:
    async def test_saves_a_stream_and_reads_it_back_whole(
        self, blobs: GridFSBlobStore | FakeBlobStore
    ) -> None:
        source = await blobs.save(
            aiter_bytes(DATA, 100_000), filename="clip.mp4", content_type="video/mp4", max_bytes=len(DATA)
        )
        assert (source.size, source.content_type, source.filename) == (len(DATA), "video/mp4", "clip.mp4")
        reader = await blobs.open(source)
        assert (reader.size, reader.content_type) == (len(DATA), "video/mp4")
        got = await collect(reader.stream(0, len(DATA)))
        assert hashlib.sha256(got).digest() == hashlib.sha256(DATA).digest()

    @pytest.mark.parametrize(
        ("offset", "length"),
        [
            (0, 1),
            (GRIDFS_CHUNK_BYTES - 1, 2),
            (GRIDFS_CHUNK_BYTES + 7, 2 * GRIDFS_CHUNK_BYTES),
            (len(DATA) - 5, 5),
        ],
    )
    async def test_streams_any_range(
        self, blobs: GridFSBlobStore | FakeBlobStore, offset: int, length: int
    ) -> None:
        source = await blobs.save(
            aiter_bytes(DATA), filename=None, content_type="video/mp4", max_bytes=len(DATA)
        )
        reader = await blobs.open(source)
        assert await collect(reader.stream(offset, length)) == DATA[offset : offset + length]

    async def test_refuses_a_range_outside_the_file(self, blobs: GridFSBlobStore | FakeBlobStore) -> None:
        source = await blobs.save(
            aiter_bytes(b"x" * 100), filename=None, content_type="video/mp4", max_bytes=100
        )
        reader = await blobs.open(source)
        with pytest.raises(ValueError, match="outside a file of 100 bytes"):
            await collect(reader.stream(90, 11))

    async def test_refuses_a_video_over_the_cap_and_keeps_nothing(
        self, blobs: GridFSBlobStore | FakeBlobStore
    ) -> None:
        with pytest.raises(InvalidInputError) as exc:
            await blobs.save(
                aiter_bytes(DATA), filename="big.mp4", content_type="video/mp4", max_bytes=len(DATA) - 1
            )
        assert exc.value.code == "too_large"
        if isinstance(blobs, GridFSBlobStore):
            db = blobs._bucket._files.database  # what is left in the bucket's collections
            assert await db["videos.files"].count_documents({}) == 0
            assert await db["videos.chunks"].count_documents({}) == 0
        else:
            assert blobs.blobs == {}

    async def test_refuses_an_unsupported_media_type(self, blobs: GridFSBlobStore | FakeBlobStore) -> None:
        with pytest.raises(InvalidInputError) as exc:
            await blobs.save(
                aiter_bytes(b"GIF89a"), filename="x.gif", content_type="image/gif", max_bytes=100
            )
        assert exc.value.code == "unsupported_media_type"

    async def test_refuses_an_empty_video(self, blobs: GridFSBlobStore | FakeBlobStore) -> None:
        with pytest.raises(InvalidInputError) as exc:
            await blobs.save(aiter_bytes(b""), filename=None, content_type="video/mp4", max_bytes=100)
        assert exc.value.code == "empty"

    async def test_opening_a_deleted_blob_is_a_clear_error(
        self, blobs: GridFSBlobStore | FakeBlobStore
    ) -> None:
        source = await blobs.save(aiter_bytes(b"abc"), filename=None, content_type="video/mp4", max_bytes=10)
        await blobs.delete(source.blob_id)
        await blobs.delete(source.blob_id)  # deleting twice is fine
        with pytest.raises(InvalidInputError) as exc:
            await blobs.open(source)
        assert exc.value.code == "blob_not_found"

    async def test_opening_with_the_wrong_size_is_a_clear_error(
        self, blobs: GridFSBlobStore | FakeBlobStore
    ) -> None:
        source = await blobs.save(aiter_bytes(b"abc"), filename=None, content_type="video/mp4", max_bytes=10)
        with pytest.raises(InvalidInputError) as exc:
            await blobs.open(source.model_copy(update={"size": 4}))
        assert exc.value.code == "blob_size_mismatch"

    async def test_a_malformed_blob_id_is_a_clear_error(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        with pytest.raises(InvalidInputError) as exc:
            await GridFSBlobStore(mongo_db).open(BlobSource(blob_id="not-an-id", size=1))
        assert exc.value.code == "invalid_blob_id"


class TestMongoHelpers:
    async def test_ping_answers_true_for_a_live_server(self, mongodb_uri: str) -> None:
        client = connect(mongodb_uri, app_name="reelay-tests")
        try:
            assert await ping(client)
        finally:
            await client.close()

    async def test_ping_answers_false_when_nothing_listens(self) -> None:
        client = connect("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300", app_name="reelay-tests")
        try:
            assert not await ping(client)
        finally:
            await client.close()

    async def test_ensure_indexes_is_idempotent(self, mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
        await ensure_indexes(mongo_db)
        await ensure_indexes(mongo_db)
        names = {ix["name"] async for ix in await mongo_db["uploads"].list_indexes()}
        assert {"account_state", "publish_id"} <= names
        in_flight = {ix["name"] async for ix in await mongo_db["uploads_in_flight"].list_indexes()}
        assert {"account_state", "publish_id", "poll_next_at", "updated_at"} <= in_flight


class TestLargeBlobs:
    async def test_a_file_larger_than_a_wire_message_reads_back_whole_and_from_an_offset(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        # > 48 MB: a reader that fetched chunks in default-sized cursor batches (101 x 1 MiB)
        # would get a reply over the wire-message limit from FerretDB and fail with ProtocolError.
        size = 50 * GRIDFS_CHUNK_BYTES + 777
        block = os.urandom(GRIDFS_CHUNK_BYTES)

        async def pieces() -> AsyncIterator[bytes]:
            sent = 0
            while sent < size:
                n = min(len(block), size - sent)
                sent += n
                yield block[:n]

        expected = hashlib.sha256()
        sent = 0
        while sent < size:
            n = min(len(block), size - sent)
            expected.update(block[:n])
            sent += n

        store = GridFSBlobStore(mongo_db)
        source = await store.save(pieces(), filename="big.mp4", content_type="video/mp4", max_bytes=size)
        reader = await store.open(source)

        got = hashlib.sha256()
        async for piece in reader.stream(0, size):
            assert len(piece) <= GRIDFS_CHUNK_BYTES
            got.update(piece)
        assert got.hexdigest() == expected.hexdigest()

        tail_offset = size - GRIDFS_CHUNK_BYTES - 100
        tail = await collect(reader.stream(tail_offset, size - tail_offset))
        assert tail == (block * 51)[tail_offset:size]
