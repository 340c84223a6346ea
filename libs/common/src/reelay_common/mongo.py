"""MongoDB for every service: the client, indexes, the `uploads` store and GridFS blobs.

Everything here works on FerretDB v1 too: no transactions, no partial/sparse/TTL indexes. One more
difference matters: FerretDB v1 implements update and findAndModify as "read the document, then
replace it", so two concurrent guarded updates of one document can both succeed (measured: 6 of 20
racing transitions "won"). `WriteGuard` restores single-document atomicity there with a per-document
lock built on what *is* atomic, the unique `_id` of an insert; on MongoDB it does nothing.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Literal, TypeVar

from bson import ObjectId
from bson.errors import InvalidId
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pydantic import BaseModel
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from reelay_common.errors import InvalidInputError, RetryableError
from reelay_common.logging import get_logger
from reelay_common.messages import (
    ALLOWED_CONTENT_TYPES,
    MAX_VIDEO_BYTES,
    BlobSource,
    StateSource,
    UploadRequested,
)
from reelay_common.ports import check_read_range
from reelay_common.records import UploadRecord
from reelay_common.states import TERMINAL_STATES, UploadState, states_before

log = get_logger("reelay_common.mongo")

Document = dict[str, Any]

# Fields a caller may not set through transition/checkpoint: they are the store's own bookkeeping.
_PROTECTED_FIELDS = frozenset({"_id", "request_id", "state", "history", "created_at", "updated_at"})
_SETTABLE_FIELDS = (
    frozenset((info.alias or name) for name, info in UploadRecord.model_fields.items() if info.alias != "_id")
    - _PROTECTED_FIELDS
)

GRIDFS_CHUNK_BYTES = 1024 * 1024  # one GridFS chunk; also the largest piece a reader yields
_CLAIM_BATCH = 20  # due candidates looked at per claim_due_poll


def connect(uri: str, *, app_name: str) -> AsyncMongoClient[dict[str, Any]]:
    """A client that returns timezone-aware UTC datetimes (connects lazily)."""
    return AsyncMongoClient(
        uri,
        appname=app_name,
        tz_aware=True,
        tzinfo=UTC,
        serverSelectionTimeoutMS=10_000,
    )


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Create the indexes of `uploads` (idempotent; only index kinds FerretDB v1 has)."""
    uploads = db["uploads"]
    with _translated("create indexes"):
        await uploads.create_index([("account_id", ASCENDING), ("state", ASCENDING)], name="account_state")
        await uploads.create_index(
            [("account_id", ASCENDING), ("created_at", DESCENDING)], name="account_created"
        )
        await uploads.create_index([("state", ASCENDING), ("created_at", DESCENDING)], name="state_created")
        await uploads.create_index([("publish_id", ASCENDING)], name="publish_id")
        await uploads.create_index([("poll_next_at", ASCENDING)], name="poll_next_at")


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    """True when the server answers a ping within a few seconds."""
    try:
        await asyncio.wait_for(client.admin.command("ping"), timeout=5)
    except (PyMongoError, TimeoutError):
        return False
    return True


@contextmanager
def _translated(what: str) -> Iterator[None]:
    # Connection loss, elections, timeouts: the consumer loop retries RetryableError.
    try:
        yield
    except DuplicateKeyError:
        raise
    except PyMongoError as exc:
        raise RetryableError(f"MongoDB could not {what}: {type(exc).__name__}") from exc


def to_bson(value: Any) -> Any:
    """Plain BSON-storable values: pydantic models as JSON-ish dicts, enums by value, tz-aware UTC."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass timezone-aware UTC")
        return value.astimezone(UTC)
    if isinstance(value, Mapping):
        return {str(k): to_bson(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_bson(v) for v in value]
    return value


def check_settable(fields: Mapping[str, Any]) -> None:
    """Refuse fields the store owns or does not know, with a clear error (nothing is written)."""
    protected = sorted(set(fields) & _PROTECTED_FIELDS)
    if protected:
        raise ValueError(f"these upload fields are managed by the store and cannot be set: {protected}")
    unknown = sorted(set(fields) - _SETTABLE_FIELDS)
    if unknown:
        raise ValueError(f"unknown upload fields: {unknown} (add them to UploadRecord first)")


def new_upload_document(cmd: UploadRequested, *, source: StateSource, now: datetime) -> Document:
    """The `accepted` document of a new upload (shared by the Mongo store and its in-memory fake)."""
    return {
        "_id": cmd.request_id,
        "account_id": cmd.account_id,
        "mode": cmd.mode,
        "source": to_bson(cmd.source),
        "post_info": to_bson(cmd.post_info) if cmd.post_info is not None else None,
        "requested_at": to_bson(cmd.requested_at),
        "state": UploadState.ACCEPTED.value,
        "history": [{"state": UploadState.ACCEPTED.value, "at": now, "source": source, "detail": {}}],
        "created_at": now,
        "updated_at": now,
        "publish_id": None,
        "upload_url": None,
        "upload_url_expires_at": None,
        "video_size": None,
        "chunk_size": None,
        "total_chunk_count": None,
        "uploaded_bytes": 0,
        "init_attempts": 0,
        "post_ids": [],
        "poll_next_at": None,
        "poll_attempts": 0,
        "poll_lease_until": None,
        "tracking_started_at": None,
        "announced_state": None,
    }


def bson_now() -> datetime:
    """Now, at the millisecond precision BSON dates keep (so a written value reads back equal)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


_T = TypeVar("_T")


async def is_ferretdb(db: AsyncDatabase[dict[str, Any]]) -> bool:
    """True when the server is FerretDB (its buildInfo says so), whose updates are not atomic."""
    with _translated("read buildInfo"):
        info = await db.client.admin.command("buildInfo")
    return "ferretdbVersion" in info


class WriteGuard:
    """Serialises writes to one document across processes where the server does not (FerretDB v1).

    `async with guard.document("uploads", request_id): <one update>` holds a lock document
    `{_id: "uploads:<id>"}` in `collection` for the duration. Inserting it is atomic on every
    Mongo-wire server (unique `_id`), so only one writer at a time gets past it. A lock whose holder
    died is taken over after `ttl_seconds`. mode "auto" asks the server once; "never" is plain
    MongoDB behaviour; "always" forces the locks (tests).
    """

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        mode: Literal["auto", "always", "never"] = "auto",
        collection: str = "reelay_locks",
        ttl_seconds: float = 10.0,
        acquire_timeout_seconds: float = 15.0,
    ) -> None:
        self._db = db
        self._locks = db[collection]
        self._enabled: bool | None = {"auto": None, "always": True, "never": False}[mode]
        self._ttl = timedelta(seconds=ttl_seconds)
        self._timeout = acquire_timeout_seconds

    async def enabled(self) -> bool:
        """Whether writes are serialised through lock documents (asked of the server once)."""
        if self._enabled is None:
            self._enabled = await is_ferretdb(self._db)
        return self._enabled

    @asynccontextmanager
    async def document(self, collection: str, doc_id: str) -> AsyncIterator[None]:
        """Hold the write lock of one document (a no-op where the server's updates are atomic)."""
        if not await self.enabled():
            yield
            return
        key = f"{collection}:{doc_id}"
        owner = uuid.uuid4().hex
        await self._acquire(key, owner)
        try:
            yield
        finally:
            # Shielded: a cancelled writer must still release, or others wait out the TTL.
            with _translated("release a write lock"):
                await asyncio.shield(self._locks.delete_one({"_id": key, "owner": owner}))

    async def _acquire(self, key: str, owner: str) -> None:
        deadline = time.monotonic() + self._timeout
        delay = 0.002
        while True:
            now = bson_now()
            with _translated("take a write lock"):
                try:
                    await self._locks.insert_one({"_id": key, "owner": owner, "expires_at": now + self._ttl})
                    return
                except DuplicateKeyError:
                    holder = await self._locks.find_one({"_id": key})
                if holder is not None and holder["expires_at"] < now:
                    # Its holder died mid-write; remove exactly that lock (by owner) and race again.
                    log.warning("write_lock_expired", key=key)
                    await self._locks.delete_one({"_id": key, "owner": holder["owner"]})
                    continue
            if time.monotonic() > deadline:
                raise RetryableError(f"the write lock of {key} stayed busy for {self._timeout}s")
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311  # jitter, not security
            delay = min(delay * 2, 0.05)

    async def run(self, collection: str, doc_id: str, write: Callable[[], Awaitable[_T]]) -> _T:
        """`await write()` while holding the document's write lock."""
        async with self.document(collection, doc_id):
            return await write()


# Terminal states that end tracking for good; `published` may still be watched for post ids.
UNPOLLED_STATES: frozenset[UploadState] = TERMINAL_STATES - {UploadState.PUBLISHED}


class MongoUploadStore:
    """The `uploads` collection (ports.UploadStore): guarded, forward-only, single-document updates.

    Every write goes through `WriteGuard` (a no-op on MongoDB), so on FerretDB too a transition,
    a checkpoint and a poll lease never overwrite each other.
    """

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        collection: str = "uploads",
        guard: WriteGuard | None = None,
    ) -> None:
        self._name = collection
        self._uploads = db[collection]
        self._guard = guard if guard is not None else WriteGuard(db)

    async def create(self, cmd: UploadRequested, *, source: StateSource) -> tuple[UploadRecord, bool]:
        """Insert the `accepted` document unless one exists for this request_id; (record, created)."""
        doc = new_upload_document(cmd, source=source, now=bson_now())
        try:
            # An insert is atomic everywhere (unique _id): no write lock needed.
            with _translated("insert an upload"):
                await self._uploads.insert_one(doc)
        except DuplicateKeyError:
            existing = await self.get(cmd.request_id)
            if existing is None:  # deleted in between: not something Reelay does, but be honest
                raise RetryableError(f"upload {cmd.request_id} vanished during create") from None
            return existing, False
        return UploadRecord.model_validate(doc), True

    async def get(self, request_id: str) -> UploadRecord | None:
        """The upload, or None."""
        with _translated("read an upload"):
            doc = await self._uploads.find_one({"_id": request_id})
        return UploadRecord.model_validate(doc) if doc is not None else None

    async def _update(self, query: Document, update: Document, *, what: str) -> UploadRecord | None:
        """One guarded find_one_and_update of the document `query["_id"]`; the record after, or None."""

        async def write() -> Document | None:
            with _translated(what):
                return await self._uploads.find_one_and_update(
                    query, update, return_document=ReturnDocument.AFTER
                )

        doc = await self._guard.run(self._name, str(query["_id"]), write)
        return UploadRecord.model_validate(doc) if doc is not None else None

    async def transition(
        self,
        request_id: str,
        target: UploadState,
        *,
        source: StateSource,
        detail: Mapping[str, Any] | None = None,
        set_fields: Mapping[str, Any] | None = None,
    ) -> UploadRecord | None:
        """Move forward to `target` in one guarded atomic update; None if already there or beyond."""
        fields = dict(set_fields or {})
        check_settable(fields)
        now = bson_now()
        entry = {"state": target.value, "at": now, "source": source, "detail": to_bson(dict(detail or {}))}
        return await self._update(
            {"_id": request_id, "state": {"$in": [s.value for s in states_before(target)]}},
            {
                "$set": {**to_bson(fields), "state": target.value, "updated_at": now},
                "$push": {"history": entry},
            },
            what="transition an upload",
        )

    async def checkpoint(
        self, request_id: str, fields: Mapping[str, Any], *, expect_state: UploadState | None = None
    ) -> UploadRecord | None:
        """Set `fields` without a state change (only while in `expect_state`, when given)."""
        check_settable(fields)
        query: Document = {"_id": request_id}
        if expect_state is not None:
            query["state"] = expect_state.value
        return await self._update(
            query, {"$set": {**to_bson(dict(fields)), "updated_at": bson_now()}}, what="checkpoint an upload"
        )

    async def list(
        self, *, account_id: str | None = None, state: UploadState | None = None, limit: int = 100
    ) -> builtins.list[UploadRecord]:
        """Uploads, newest first, optionally for one account and/or in one state."""
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        query: Document = {}
        if account_id is not None:
            query["account_id"] = account_id
        if state is not None:
            query["state"] = state.value
        with _translated("list uploads"):
            docs = (
                await self._uploads.find(query)
                .sort([("created_at", DESCENDING), ("_id", ASCENDING)])
                .to_list(limit)
            )
        return [UploadRecord.model_validate(d) for d in docs]

    async def find_by_publish_id(self, publish_id: str) -> UploadRecord | None:
        """The upload TikTok knows as `publish_id`, or None."""
        with _translated("find an upload by publish_id"):
            doc = await self._uploads.find_one({"publish_id": publish_id})
        return UploadRecord.model_validate(doc) if doc is not None else None

    async def claim_due_poll(self, now: datetime, lease_seconds: float) -> UploadRecord | None:
        """Lease one tracked upload whose poll is due and not leased by another replica.

        Tracked: not terminal, or `published` while the poller still watches it for its post ids
        (it clears `poll_next_at` when it stops watching). Other terminal states are never polled.
        """
        now = to_bson(now)
        due: Document = {
            "poll_next_at": {"$lte": now},
            "state": {"$nin": [s.value for s in UNPOLLED_STATES]},
            "$or": [{"poll_lease_until": None}, {"poll_lease_until": {"$lt": now}}],
        }
        lease = {"$set": {"poll_lease_until": now + timedelta(seconds=lease_seconds)}}
        # Candidates first, then a guarded per-document claim that re-checks the whole condition:
        # a replica that loses the race for one candidate moves on to the next.
        with _translated("find due polls"):
            candidates = (
                await self._uploads.find(due, {"_id": 1})
                .sort([("poll_next_at", ASCENDING)])
                .to_list(_CLAIM_BATCH)
            )
        for candidate in candidates:
            claimed = await self._update({"_id": candidate["_id"], **due}, lease, what="claim a due poll")
            if claimed is not None:
                return claimed
        return None

    async def schedule_poll(self, request_id: str, next_at: datetime, *, attempts: int) -> None:
        """Set when to poll next and release the lease."""
        await self._update(
            {"_id": request_id},
            {"$set": {"poll_next_at": to_bson(next_at), "poll_attempts": attempts, "poll_lease_until": None}},
            what="schedule a poll",
        )


class GridFSVideoReader:
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
        self._chunks = chunks
        self._file_id = file_id
        self._size = size
        self._chunk_size = chunk_size
        self._content_type = content_type

    @property
    def size(self) -> int:
        """Bytes in the file."""
        return self._size

    @property
    def content_type(self) -> str:
        """The media type recorded at save time."""
        return self._content_type

    async def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """Yield exactly `length` bytes from `offset`, at most one GridFS chunk at a time."""
        check_read_range(offset, length, self._size)
        if length == 0:
            return
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
                with _translated("read a GridFS chunk"):
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
        with _translated("create GridFS indexes"):
            await self._chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
            await self._files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
        self._indexed = True

    async def save(
        self, chunks: AsyncIterable[bytes], *, filename: str | None, content_type: str, max_bytes: int
    ) -> BlobSource:
        """Stream `chunks` into a new file; over `max_bytes`: InvalidInputError "too_large", nothing kept."""
        if content_type not in ALLOWED_CONTENT_TYPES:
            raise InvalidInputError(
                f"unsupported media type {content_type!r}; use one of {', '.join(ALLOWED_CONTENT_TYPES)}",
                code="unsupported_media_type",
            )
        limit = min(max_bytes, MAX_VIDEO_BYTES)
        await self._ensure_indexes()
        file_id = ObjectId()
        buffer = bytearray()
        n = 0
        total = 0

        async def flush(data: bytes) -> None:
            nonlocal n
            with _translated("write a GridFS chunk"):
                await self._chunks.insert_one({"files_id": file_id, "n": n, "data": data})
            n += 1

        try:
            async for piece in chunks:
                total += len(piece)
                if total > limit:
                    raise InvalidInputError(
                        f"the video is larger than the limit of {limit} bytes", code="too_large"
                    )
                buffer += piece
                while len(buffer) >= GRIDFS_CHUNK_BYTES:
                    await flush(bytes(buffer[:GRIDFS_CHUNK_BYTES]))
                    del buffer[:GRIDFS_CHUNK_BYTES]
            if total == 0:
                raise InvalidInputError("the video is empty", code="empty")
            if buffer:
                await flush(bytes(buffer))
                buffer.clear()
            # The files document goes last: until it exists, readers see no file at all.
            with _translated("finish a GridFS upload"):
                await self._files.insert_one(
                    {
                        "_id": file_id,
                        "length": total,
                        "chunkSize": GRIDFS_CHUNK_BYTES,
                        "uploadDate": bson_now(),
                        "filename": filename or "upload",
                        "metadata": {"content_type": content_type},
                    }
                )
        except BaseException:
            # Whatever went wrong (too large, client gone, cancelled), leave no partial file behind.
            try:
                await asyncio.shield(self._chunks.delete_many({"files_id": file_id}))
            except PyMongoError as abort_exc:  # pragma: no cover - the database went away mid-abort
                log.warning("gridfs_abort_failed", error=type(abort_exc).__name__)
            raise
        log.info("blob_saved", blob_id=str(file_id), bytes=total, content_type=content_type)
        return BlobSource(blob_id=str(file_id), size=total, content_type=content_type, filename=filename)

    async def open(self, source: BlobSource) -> GridFSVideoReader:
        """A reader of the stored file (checks it exists and has the recorded size)."""
        file_id = _object_id(source.blob_id)
        with _translated("open a GridFS file"):
            meta = await self._files.find_one({"_id": file_id})
        if meta is None:
            raise InvalidInputError(f"blob {source.blob_id} does not exist", code="blob_not_found")
        size = int(meta["length"])
        if size != source.size:
            raise InvalidInputError(
                f"blob {source.blob_id} has {size} bytes, the request said {source.size}",
                code="blob_size_mismatch",
            )
        return GridFSVideoReader(
            self._chunks,
            file_id,
            size=size,
            chunk_size=int(meta["chunkSize"]),
            content_type=source.content_type,
        )

    async def delete(self, blob_id: str) -> None:
        """Delete a stored file; deleting one that is already gone is fine."""
        with _translated("delete a GridFS file"):
            try:
                await self._bucket.delete(_object_id(blob_id))
            except NoFile:
                return


def _object_id(blob_id: str) -> ObjectId:
    try:
        return ObjectId(blob_id)
    except (InvalidId, TypeError) as exc:
        raise InvalidInputError(f"{blob_id!r} is not a blob id", code="invalid_blob_id") from exc
