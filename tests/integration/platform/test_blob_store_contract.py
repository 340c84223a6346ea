"""One contract for every BlobStore: local files, S3 (a real SeaweedFS, signed requests) and GridFS
(a real Mongo-wire server). The same tests run on each; `leftovers` counts what a store still holds
(files and `.part` files; objects and unfinished multipart uploads; GridFS documents)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.blobs.gridfs import GRIDFS_CHUNK_BYTES, GridFSBlobStore
from reelay_common.adapters.blobs.local import LOCAL_PIECE_BYTES, LocalBlobStore
from reelay_common.adapters.blobs.metered import new_blob_id
from reelay_common.adapters.blobs.s3 import S3_READ_PIECE_BYTES, S3BlobStore, connect_s3
from reelay_common.domain.errors import InvalidInputError
from reelay_common.domain.messages import BlobSource, BlobStoreKind
from reelay_common.ports import BlobStore, SizedVideo
from reelay_common.settings import S3_MIN_PART_BYTES
from reelay_testing.readers import aiter_bytes

MIB = 1024 * 1024
PART = S3_MIN_PART_BYTES  # the S3 store's part size here: a 2-part-and-a-bit file is a real multipart
DATA = os.urandom(2 * PART + 12345)
MAX_PIECE = max(GRIDFS_CHUNK_BYTES, LOCAL_PIECE_BYTES, S3_READ_PIECE_BYTES)


@dataclass
class Harness:
    store: BlobStore
    leftovers: Callable[[], Awaitable[int]]


@pytest.fixture(params=["local", "s3", "gridfs"])
def harness(request: pytest.FixtureRequest) -> Harness:
    found: Harness = request.getfixturevalue(f"{request.param}_harness")
    return found


@pytest.fixture
def local_harness(tmp_path: Path) -> Harness:
    root = tmp_path / "blobs"

    async def left() -> int:
        return len(list(root.iterdir())) if root.exists() else 0

    return Harness(LocalBlobStore(root, max_bytes=1024 * MIB), left)


@pytest.fixture
async def s3_harness(s3_settings: dict[str, str]) -> AsyncIterator[Harness]:
    async with AsyncExitStack() as stack:
        client = await connect_s3(
            stack,
            endpoint_url=s3_settings["endpoint_url"],
            region=s3_settings["region"],
            access_key_id=s3_settings["access_key_id"] or None,
            secret_access_key=s3_settings["secret_access_key"] or None,
        )
        prefix = f"contract/{uuid.uuid4().hex[:12]}/"
        bucket = s3_settings["bucket"]

        async def left() -> int:
            objects = await client.list_objects_v2(Bucket=bucket, Prefix=prefix)
            uploads = await client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
            return len(objects.get("Contents", [])) + len(uploads.get("Uploads", []))

        yield Harness(S3BlobStore(client, bucket=bucket, prefix=prefix, part_bytes=PART), left)


@pytest.fixture
def gridfs_harness(mongo_db: AsyncDatabase[dict[str, Any]]) -> Harness:
    async def left() -> int:
        return await mongo_db["videos.files"].count_documents({}) + await mongo_db[
            "videos.chunks"
        ].count_documents({})

    return Harness(GridFSBlobStore(mongo_db), left)


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    out = bytearray()
    async for piece in stream:
        assert 0 < len(piece) <= MAX_PIECE  # bounded pieces: memory never grows with the file
        out += piece
    return bytes(out)


async def failing_after(data: bytes, fail_at: int) -> AsyncIterator[bytes]:
    """The client goes away mid-upload: the stream raises after `fail_at` bytes."""
    sent = 0
    async for piece in aiter_bytes(data, 256 * 1024):
        if sent >= fail_at:
            raise ConnectionResetError("the client went away")
        sent += len(piece)
        yield piece


async def save(store: BlobStore, data: bytes, **kw: Any) -> BlobSource:
    return await store.save(
        aiter_bytes(data, kw.pop("piece", 100_003)),
        filename=kw.pop("filename", "clip.mp4"),
        content_type="video/mp4",
        max_bytes=kw.pop("max_bytes", len(data)),
    )


class TestBlobStoreContract:
    async def test_round_trip_keeps_every_byte_and_records_the_sha256(self, harness: Harness) -> None:
        store = harness.store
        source = await save(store, DATA)
        assert (source.size, source.content_type, source.filename) == (len(DATA), "video/mp4", "clip.mp4")
        assert source.store == store.kind
        assert source.sha256 == hashlib.sha256(DATA).hexdigest()
        info = await store.stat(source.blob_id)
        assert info is not None
        assert info.size == len(DATA)
        reader = await store.open(source)
        assert (reader.size, reader.content_type) == (len(DATA), "video/mp4")
        assert hashlib.sha256(await collect(reader.stream(0, len(DATA)))).hexdigest() == source.sha256

    async def test_ranged_reads_at_chunk_and_part_boundaries_and_the_last_byte(
        self, harness: Harness
    ) -> None:
        source = await save(harness.store, DATA)
        reader = await harness.store.open(source)
        ranges = [
            (0, 1),
            (MIB - 1, 2),  # across a GridFS chunk / local piece
            (MIB, MIB),  # exactly one chunk
            (PART - 1, 2),  # across an S3 part
            (PART, PART),  # exactly one part
            (PART + 7, PART + 12345 - 7),  # to the very end
            (len(DATA) - 1, 1),  # the last byte
            (len(DATA), 0),  # nothing, at the end
        ]
        for offset, length in ranges:
            got = await collect(reader.stream(offset, length))
            assert got == DATA[offset : offset + length], (offset, length)
        with pytest.raises(ValueError, match="outside a file"):
            await collect(reader.stream(len(DATA) - 1, 2))

    async def test_chunk_after_chunk_a_stop_midway_and_going_back_read_the_right_bytes(
        self, harness: Harness
    ) -> None:
        # What an upload asks of one reader: chunk after chunk (S3 reads on from one open GET),
        # a chunk abandoned midway (a failed PUT), its retry, and a resume from an earlier offset.
        source = await save(harness.store, DATA)
        reader = await harness.store.open(source)
        chunk = PART + 3
        assert await collect(reader.stream(0, chunk)) == DATA[:chunk]
        assert await collect(reader.stream(chunk, chunk)) == DATA[chunk : 2 * chunk]
        rest = len(DATA) - 2 * chunk
        stream = reader.stream(2 * chunk, rest)
        first = await anext(stream)
        assert first == DATA[2 * chunk : 2 * chunk + len(first)]
        await stream.aclose()  # abandoned after one piece
        assert await collect(reader.stream(2 * chunk, rest)) == DATA[2 * chunk :]  # its retry
        assert await collect(reader.stream(MIB, 10)) == DATA[MIB : MIB + 10]  # back: a resume
        assert await collect(reader.stream(MIB + 10, chunk)) == DATA[MIB + 10 : MIB + 10 + chunk]
        assert isinstance(reader, SizedVideo)
        await reader.aclose()  # S3's GET stopped midway stays open until the reader is closed

    async def test_a_file_over_the_cap_is_refused_and_leaves_nothing(self, harness: Harness) -> None:
        with pytest.raises(InvalidInputError) as exc:
            await save(harness.store, DATA, max_bytes=len(DATA) - 1)  # refused after two whole parts
        assert exc.value.code == "too_large"
        assert await harness.leftovers() == 0

    async def test_a_stream_that_fails_midway_leaves_nothing(self, harness: Harness) -> None:
        with pytest.raises(ConnectionResetError):
            await harness.store.save(
                failing_after(DATA, PART + MIB), filename=None, content_type="video/mp4", max_bytes=len(DATA)
            )
        assert await harness.leftovers() == 0

    async def test_a_cancelled_save_leaves_nothing(self, harness: Harness) -> None:
        stalled = asyncio.Event()

        async def stalls() -> AsyncIterator[bytes]:
            async for piece in aiter_bytes(DATA[: PART + MIB], 256 * 1024):
                yield piece
            stalled.set()
            await asyncio.Event().wait()  # the client stops sending; the request is cancelled
            yield b""

        task = asyncio.create_task(
            harness.store.save(stalls(), filename=None, content_type="video/mp4", max_bytes=len(DATA))
        )
        await asyncio.wait_for(stalled.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)  # the shielded abort may finish just after the cancellation
        assert await harness.leftovers() == 0

    async def test_delete_removes_the_blob_and_may_be_repeated(self, harness: Harness) -> None:
        store = harness.store
        source = await save(store, b"abc" * 1000)
        await store.delete(source.blob_id)
        await store.delete(source.blob_id)
        assert await store.stat(source.blob_id) is None
        with pytest.raises(InvalidInputError) as exc:
            await store.open(source)
        assert exc.value.code == "blob_not_found"
        assert await harness.leftovers() == 0

    async def test_reading_a_missing_blob_is_blob_not_found(self, harness: Harness) -> None:
        store = harness.store
        blob_id = new_blob_id() if store.kind != "gridfs" else "6b0571000000000000000001"
        assert await store.stat(blob_id) is None
        with pytest.raises(InvalidInputError) as exc:
            await store.open(BlobSource(blob_id=blob_id, size=10, store=store.kind))
        assert exc.value.code == "blob_not_found"

    async def test_a_blob_of_another_store_is_refused_by_name(self, harness: Harness) -> None:
        other: BlobStoreKind = "s3" if harness.store.kind != "s3" else "local"
        with pytest.raises(InvalidInputError) as exc:
            await harness.store.open(BlobSource(blob_id=new_blob_id(), size=10, store=other))
        assert exc.value.code == "blob_store_mismatch"

    async def test_a_malformed_blob_id_is_refused(self, harness: Harness) -> None:
        for bad in ("../../etc/passwd", "not-an-id", ""):
            with pytest.raises(InvalidInputError) as exc:
                await harness.store.open(BlobSource(blob_id=bad, size=1, store=harness.store.kind))
            assert exc.value.code == "invalid_blob_id"

    async def test_concurrent_writes_each_keep_their_own_bytes(self, harness: Harness) -> None:
        blobs = [os.urandom(PART + 1000 * i + 1) for i in range(4)]
        sources = await asyncio.gather(*(save(harness.store, b, piece=65_536) for b in blobs))
        assert len({s.blob_id for s in sources}) == len(blobs)
        for data, source in zip(blobs, sources, strict=True):
            reader = await harness.store.open(source)
            assert await collect(reader.stream(0, len(data))) == data
            await harness.store.delete(source.blob_id)
        assert await harness.leftovers() == 0
