"""Blob stores for the files streamed into ingest, chosen by `REELAY_BLOB_STORE` (local, s3, gridfs)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from reelay_common.adapters.blobs.gridfs import GridFSBlobStore
from reelay_common.adapters.blobs.local import LocalBlobStore
from reelay_common.adapters.blobs.s3 import S3BlobStore, connect_s3
from reelay_common.ports import BlobStore
from reelay_common.settings import CommonSettings


async def open_blob_store(
    settings: CommonSettings, stack: AsyncExitStack, *, db: AsyncDatabase[dict[str, Any]]
) -> BlobStore:
    """The configured store; whatever it opens (an S3 client) is closed by `stack`.

    `db` is used only by the gridfs store.
    """
    if settings.blob_store == "local":
        return LocalBlobStore(settings.blob_dir, max_bytes=settings.blob_max_bytes)
    if settings.blob_store == "s3":
        secret = settings.s3_secret_access_key
        client = await connect_s3(
            stack,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
        return S3BlobStore(
            client, bucket=settings.s3_bucket, prefix=settings.s3_prefix, part_bytes=settings.s3_part_bytes
        )
    return GridFSBlobStore(db)
