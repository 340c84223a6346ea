"""Video blobs in S3-compatible object storage (the production choice), through aiobotocore.

A file streaming in is cut into parts of `part_bytes` (8 MiB by default) and sent as a multipart
upload, up to two parts at once while the next is read, so memory holds a few parts (about
4 x 8 MiB per upload), never the file; a file smaller than one part is a single PUT.
Any failure (the source raising, the size cap, cancellation) aborts the multipart upload, so S3
keeps no parts. A read is one ranged GET kept open across chunks, streamed in 1 MiB pieces.
Objects live under `<prefix><blob id>`, the id generated here.

Why aiobotocore: it is botocore (the AWS SDK's own request signing, retries, credential chain:
AWS_* variables, shared config, web identity in Kubernetes, instance roles) on asyncio, kept in
step with botocore releases, with explicit multipart calls, so aborting a failed upload is ours to
do and to test. obstore is faster at bulk transfers but hides the multipart lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, Iterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from reelay_common.adapters.blobs import metered as blob_checks
from reelay_common.domain.errors import RetryableError
from reelay_common.domain.messages import BlobSource
from reelay_common.logging import get_logger
from reelay_common.ports import BlobInfo, SizedVideo

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = get_logger("reelay_common.adapters.blobs.s3")

S3_READ_PIECE_BYTES = 1024 * 1024
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


@contextlib.contextmanager
def _translate_errors(what: str) -> Iterator[None]:
    """S3 and network failures as RetryableError (a missing object is handled by the callers)."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "unknown"))
        raise RetryableError(f"S3 refused to {what}: {code}", code=f"s3_{code}") from exc
    except (BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
        raise RetryableError(
            f"could not reach S3 to {what}: {type(exc).__name__}", code="s3_unavailable"
        ) from exc


def _is_not_found(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _NOT_FOUND


async def connect_s3(
    stack: AsyncExitStack,
    *,
    endpoint_url: str | None,
    region: str | None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> S3Client:
    """An S3 client closed by `stack`. Unset credentials and region come from the AWS chain."""
    session = get_session()
    config = AioConfig(
        # A custom endpoint (SeaweedFS, MinIO, Ceph) is usually one host: path-style addressing.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        # Checksums only where S3 requires them: not every S3-compatible server takes the
        # streaming trailers botocore would add by default, and TLS already guards the transfer.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10,
        read_timeout=60,
    )
    creator = session.create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region or session.get_config_variable("region") or "us-east-1",
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    )
    client: S3Client = await stack.enter_async_context(creator)
    return client


class S3VideoReader(SizedVideo):
    """An S3 object read as a VideoReader, with ONE ranged GET kept open across chunks.

    A stream() that starts where the previous one stopped reads on from the same response, so a
    chunk costs no request and no wait for its first byte (a GET per 10 MB chunk did); any other
    offset (a resumed upload, a retried chunk) drops it and opens a GET from there to the end.
    The GET is closed once read to the end or when a read breaks off; one left at a chunk boundary
    by an upload that stopped there is released with the reader.
    """

    def __init__(self, client: S3Client, *, bucket: str, key: str, size: int, content_type: str) -> None:
        super().__init__(size=size, content_type=content_type)
        self._client = client
        self._bucket = bucket
        self._key = key
        self._body: Any = None  # the open GET's StreamingBody
        self._position = 0  # the next byte it hands out

    async def _pieces(self, offset: int, length: int) -> AsyncGenerator[bytes, None]:
        """Exactly `length` bytes from `offset`, at most 1 MiB at a time."""
        if self._body is None or self._position != offset:
            await self.aclose()
            with _translate_errors("read a stored video"):
                response = await self._client.get_object(
                    Bucket=self._bucket, Key=self._key, Range=f"bytes={offset}-{self._size - 1}"
                )
            self._body, self._position = response["Body"], offset
        remaining = length
        try:
            while remaining > 0:
                with _translate_errors("read a stored video"):
                    piece = await self._body.read(min(S3_READ_PIECE_BYTES, remaining))
                if not piece:
                    raise RetryableError(f"S3 object {self._key} ended {remaining} bytes early")
                remaining -= len(piece)
                self._position += len(piece)
                yield piece
        except BaseException:
            await self.aclose()  # a read that did not finish leaves the body at an unknown place
            raise
        if self._position >= self._size:
            await self.aclose()  # read to the end: the connection goes back to the pool

    async def aclose(self) -> None:
        """Close the open GET, if any (the next stream() opens a new one)."""
        body, self._body = self._body, None
        if body is not None:
            await body.aclose()


class S3BlobStore:
    """Uploaded video files as objects under `prefix` in `bucket`, written by multipart upload."""

    def __init__(
        self, client: S3Client, *, bucket: str, prefix: str, part_bytes: int, parts_in_flight: int = 2
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._part_bytes = part_bytes
        self._parts_in_flight = parts_in_flight

    @property
    def kind(self) -> Literal["s3"]:
        """This is the S3 store."""
        return "s3"

    def key(self, blob_id: str) -> str:
        """The object key of a blob."""
        return f"{self._prefix}{blob_id}"

    async def save(
        self, chunks: AsyncIterable[bytes], *, filename: str | None, content_type: str, max_bytes: int
    ) -> BlobSource:
        """Stream `chunks` into a new object; past `max_bytes`: InvalidInputError "too_large"."""
        blob_checks.check_content_type(content_type)
        blob_id = blob_checks.new_blob_id()
        key = self.key(blob_id)
        metered = blob_checks.MeteredStream(chunks, max_bytes=max_bytes)
        upload_id: str | None = None
        # Parts being sent while the next one is read: the client's bytes keep arriving meanwhile.
        sending: list[asyncio.Task[CompletedPartTypeDef]] = []
        parts: list[CompletedPartTypeDef] = []
        pending: bytes | None = None  # one part held back: the last may be sent with a plain PUT
        try:
            async for part in blob_checks.pieces_of(metered, self._part_bytes):
                if pending is not None:
                    if upload_id is None:
                        with _translate_errors("start a multipart upload"):
                            created = await self._client.create_multipart_upload(
                                Bucket=self._bucket, Key=key, ContentType=content_type
                            )
                        upload_id = created["UploadId"]
                    number = len(parts) + len(sending) + 1
                    sending.append(asyncio.create_task(self._upload_part(key, upload_id, number, pending)))
                    if len(sending) >= self._parts_in_flight:
                        parts.append(await sending[0])  # stays listed until done, so a failure cancels it
                        sending.pop(0)
                pending = part
            sha256 = metered.finish()  # refuses an empty stream, so a part is pending
            last = pending if pending is not None else b""
            if upload_id is None:
                with _translate_errors("store a video"):
                    await self._client.put_object(
                        Bucket=self._bucket,
                        Key=key,
                        Body=last,
                        ContentType=content_type,
                        Metadata={"sha256": sha256},
                    )
            else:
                sending.append(
                    asyncio.create_task(
                        self._upload_part(key, upload_id, len(parts) + len(sending) + 1, last)
                    )
                )
                while sending:
                    parts.append(await sending[0])
                    sending.pop(0)
                with _translate_errors("complete a multipart upload"):
                    await self._client.complete_multipart_upload(
                        Bucket=self._bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                    )
        except BaseException:
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)
            if upload_id is not None:
                # Shielded: a cancelled request must not leave its parts billed in the bucket.
                await asyncio.shield(self._abort(key, upload_id))
            raise
        return blob_checks.saved(
            "s3", blob_id, metered, content_type=content_type, filename=filename, sha256=sha256
        )

    async def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> CompletedPartTypeDef:
        with _translate_errors("upload a part"):
            sent = await self._client.upload_part(
                Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
        return {"ETag": sent["ETag"], "PartNumber": number}

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            with _translate_errors("abort a multipart upload"):
                await self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
        except RetryableError as exc:
            # A bucket lifecycle rule (AbortIncompleteMultipartUpload) is the backstop for this.
            log.warning("s3_abort_failed", key=key, error=exc.message)

    async def open(self, source: BlobSource) -> S3VideoReader:
        """A reader of the stored object (checks it exists and has the recorded size)."""
        blob_checks.check_store(source, self.kind)
        info = await self.stat(source.blob_id)
        size = blob_checks.check_stored_size(source, None if info is None else info.size)
        return S3VideoReader(
            self._client,
            bucket=self._bucket,
            key=self.key(source.blob_id),
            size=size,
            content_type=source.content_type,
        )

    async def stat(self, blob_id: str) -> BlobInfo | None:
        """The stored object's size, or None when there is no such object."""
        blob_checks.checked_blob_id(blob_id)
        with _translate_errors("look up a stored video"):
            try:
                head = await self._client.head_object(Bucket=self._bucket, Key=self.key(blob_id))
            except ClientError as exc:
                if _is_not_found(exc):
                    return None
                raise
        return BlobInfo(blob_id=blob_id, size=int(head["ContentLength"]))

    async def delete(self, blob_id: str) -> None:
        """Delete a stored object; deleting one that is already gone is fine (S3 says 204 either way)."""
        blob_checks.checked_blob_id(blob_id)
        with _translate_errors("delete a stored video"):
            await self._client.delete_object(Bucket=self._bucket, Key=self.key(blob_id))
