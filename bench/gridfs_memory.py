"""Benchmark: peak Python memory of streaming a video into GridFS, ours vs PyMongo's GridIn.

`GridFSBlobStore.save` (what ingest uses for streamed files) writes one chunk document at a time;
PyMongo's `AsyncGridFSBucket.open_upload_stream` batches chunks before inserting them. Both write
the same bytes, in 64 KiB pieces, to the same Mongo-wire server, side by side in one run; the figure
is tracemalloc's peak during the write.

    MONGODB_URI=mongodb://127.0.0.1:27017 uv run python bench/gridfs_memory.py --sizes-mb 8 36 72
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable

from gridfs import AsyncGridFSBucket
from reelay_common.adapters.blobs.gridfs import GRIDFS_CHUNK_BYTES, GridFSBlobStore
from reelay_common.adapters.mongo.client import connect

PIECE = 64 * 1024


async def pieces(total: int) -> AsyncIterator[bytes]:
    block = os.urandom(PIECE)
    sent = 0
    while sent < total:
        n = min(PIECE, total - sent)
        sent += n
        yield block[:n]


async def peak_of(write: Awaitable[object]) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    await write
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6


async def main(sizes_mb: list[int], uri: str) -> None:
    client = connect(uri, app_name="bench-gridfs")
    db = client[f"bench_{uuid.uuid4().hex[:8]}"]
    ours = GridFSBlobStore(db, bucket_name="ours")
    theirs = AsyncGridFSBucket(db, bucket_name="theirs", chunk_size_bytes=GRIDFS_CHUNK_BYTES)

    async def pymongo_write(total: int) -> None:
        grid_in = theirs.open_upload_stream("v.mp4")
        async for piece in pieces(total):
            await grid_in.write(piece)
        await grid_in.close()

    rows = []
    try:
        for size_mb in sizes_mb:
            total = size_mb * 1000 * 1000
            mine = await peak_of(
                ours.save(pieces(total), filename="v.mp4", content_type="video/mp4", max_bytes=total)
            )
            pymongo = await peak_of(pymongo_write(total))
            rows.append((size_mb, mine, pymongo))
    finally:
        await client.drop_database(db.name)
        await client.close()
    print(
        "command: MONGODB_URI=... uv run python bench/gridfs_memory.py --sizes-mb "
        + " ".join(map(str, sizes_mb))
    )
    print("| video | GridFSBlobStore.save peak | PyMongo GridIn peak | GridIn / ours |")
    print("|---|---|---|---|")
    for size_mb, mine, pymongo in rows:
        print(f"| {size_mb} MB | {mine:.1f} MB | {pymongo:.1f} MB | {pymongo / mine:.0f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[8, 36, 72])
    args = parser.parse_args()
    asyncio.run(main(args.sizes_mb, os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017")))
