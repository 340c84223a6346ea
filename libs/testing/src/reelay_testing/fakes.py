"""In-memory fakes of the ports, for fast unit tests. The same contract tests run against these and
the real adapters (tests/integration/platform), so a fake never drifts from reality unnoticed."""

from __future__ import annotations

import asyncio
import builtins
import copy
import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from reelay_common.adapters.mongo.client import bson_now, to_bson
from reelay_common.adapters.mongo.uploads import UNPOLLED_STATES, check_settable, new_upload_document
from reelay_common.domain.errors import AuthExpiredError, InvalidInputError
from reelay_common.domain.messages import (
    ALLOWED_CONTENT_TYPES,
    MAX_VIDEO_BYTES,
    BlobSource,
    StateSource,
    UploadRequested,
)
from reelay_common.domain.records import AccountRecord, UploadRecord
from reelay_common.domain.states import UploadState, states_before
from reelay_common.ports import BlobInfo, RateBucket, check_read_range

M = TypeVar("M", bound=BaseModel)


_FAKE_CIPHERTEXT = "fake-ciphertext"  # a stand-in for ciphertext in a fake, not a secret


def _bson_like(value: Any) -> Any:
    """What a value looks like after a round trip through BSON: datetimes cut to milliseconds."""
    value = to_bson(value)
    if isinstance(value, datetime):
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if isinstance(value, dict):
        return {k: _bson_like(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bson_like(v) for v in value]
    return value


class InMemoryUploadStore:
    """ports.UploadStore in a dict, with exactly the guarded, forward-only semantics of MongoUploadStore."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    def _record(self, doc: dict[str, Any]) -> UploadRecord:
        return UploadRecord.model_validate(copy.deepcopy(doc))

    async def create(self, cmd: UploadRequested, *, source: StateSource) -> tuple[UploadRecord, bool]:
        """Insert the `accepted` document unless one exists; (record, created)."""
        existing = self.docs.get(cmd.request_id)
        if existing is not None:
            return self._record(existing), False
        doc = _bson_like(new_upload_document(cmd, source=source, now=bson_now()))
        self.docs[cmd.request_id] = doc
        return self._record(doc), True

    async def get(self, request_id: str) -> UploadRecord | None:
        """The upload, or None."""
        doc = self.docs.get(request_id)
        return self._record(doc) if doc is not None else None

    async def transition(
        self,
        request_id: str,
        target: UploadState,
        *,
        source: StateSource,
        detail: Mapping[str, Any] | None = None,
        set_fields: Mapping[str, Any] | None = None,
    ) -> UploadRecord | None:
        """Move forward to `target` (guarded, as one step); None if already there or beyond."""
        fields = dict(set_fields or {})
        check_settable(fields)
        doc = self.docs.get(request_id)
        if doc is None or UploadState(doc["state"]) not in states_before(target):
            return None
        now = bson_now()
        doc.update(_bson_like(fields))
        doc["state"] = target.value
        doc["updated_at"] = now
        doc["history"].append(
            {"state": target.value, "at": now, "source": source, "detail": _bson_like(dict(detail or {}))}
        )
        return self._record(doc)

    async def checkpoint(
        self, request_id: str, fields: Mapping[str, Any], *, expect_state: UploadState | None = None
    ) -> UploadRecord | None:
        """Set `fields` without a state change (only while in `expect_state`, when given)."""
        check_settable(fields)
        doc = self.docs.get(request_id)
        if doc is None or (expect_state is not None and doc["state"] != expect_state.value):
            return None
        doc.update(_bson_like(dict(fields)))
        doc["updated_at"] = bson_now()
        return self._record(doc)

    async def list(
        self, *, account_id: str | None = None, state: UploadState | None = None, limit: int = 100
    ) -> builtins.list[UploadRecord]:
        """Uploads, newest first, optionally for one account and/or in one state."""
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        docs = [
            d
            for d in self.docs.values()
            if (account_id is None or d["account_id"] == account_id)
            and (state is None or d["state"] == state.value)
        ]
        docs.sort(key=lambda d: d["_id"])
        docs.sort(key=lambda d: d["created_at"], reverse=True)
        return [self._record(d) for d in docs[:limit]]

    async def find_by_publish_id(self, publish_id: str) -> UploadRecord | None:
        """The upload TikTok knows as `publish_id`, or None."""
        for doc in self.docs.values():
            if doc.get("publish_id") == publish_id:
                return self._record(doc)
        return None

    async def claim_due_poll(self, now: datetime, lease_seconds: float) -> UploadRecord | None:
        """Lease the earliest due, unleased, tracked upload (as MongoUploadStore.claim_due_poll)."""
        now = to_bson(now)
        terminal = {s.value for s in UNPOLLED_STATES}
        due = [
            d
            for d in self.docs.values()
            if d.get("poll_next_at") is not None
            and d["poll_next_at"] <= now
            and d["state"] not in terminal
            and (d.get("poll_lease_until") is None or d["poll_lease_until"] < now)
        ]
        if not due:
            return None
        doc = min(due, key=lambda d: d["poll_next_at"])
        doc["poll_lease_until"] = _bson_like(now + timedelta(seconds=lease_seconds))
        return self._record(doc)

    async def schedule_poll(self, request_id: str, next_at: datetime, *, attempts: int) -> None:
        """Set when to poll next and release the lease."""
        doc = self.docs.get(request_id)
        if doc is not None:
            doc.update(
                {"poll_next_at": _bson_like(next_at), "poll_attempts": attempts, "poll_lease_until": None}
            )


class RecordingPublisher:
    """ports.Publisher that remembers what was sent; `fail_with` makes the next publishes raise."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, BaseModel, str]] = []
        self.raw: list[tuple[str, bytes, bytes | None]] = []
        self.fail_with: list[BaseException] = []

    async def publish(self, topic: str, message: BaseModel, *, key: str) -> None:
        """Record (topic, message, key), or raise the next queued failure."""
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.sent.append((topic, message, key))

    async def publish_raw(self, topic: str, value: bytes, *, key: bytes | None) -> None:
        """Record raw bytes (what the consumer loop uses for dead letters)."""
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.raw.append((topic, value, key))

    def messages(self, topic: str | None = None, of_type: type[M] | None = None) -> list[Any]:
        """The messages sent, optionally on one topic and/or of one type."""
        return [
            m
            for t, m, _ in self.sent
            if (topic is None or t == topic) and (of_type is None or isinstance(m, of_type))
        ]


class InMemoryAccountStore:
    """ports.AccountStore in a dict. Tokens are kept apart from the records, as if encrypted."""

    def __init__(self) -> None:
        self.records: dict[str, AccountRecord] = {}
        self.tokens: dict[str, tuple[str, str]] = {}

    async def upsert_tokens(
        self,
        account_id: str,
        *,
        open_id: str,
        access_token: str,
        expires_in: int,
        refresh_token: str,
        refresh_expires_in: int,
        scopes: list[str],
    ) -> AccountRecord:
        """Store fresh tokens for the account (created if new); the record never holds them in clear."""
        now = bson_now()
        previous = self.records.get(account_id)
        record = AccountRecord(
            account_id=account_id,
            open_id=open_id,
            scopes=list(scopes),
            access_token_enc=_FAKE_CIPHERTEXT,
            access_expires_at=now + timedelta(seconds=expires_in),
            refresh_token_enc=_FAKE_CIPHERTEXT,
            refresh_expires_at=now + timedelta(seconds=refresh_expires_in),
            token_version=(previous.token_version + 1) if previous is not None else 1,
            status="connected",
            created_at=previous.created_at if previous is not None else now,
            updated_at=now,
        )
        self.records[account_id] = record
        self.tokens[account_id] = (access_token, refresh_token)
        return record.model_copy(deep=True)

    async def get(self, account_id: str) -> AccountRecord | None:
        """The account, or None."""
        record = self.records.get(account_id)
        return record.model_copy(deep=True) if record is not None else None

    def add_connected(
        self, account_id: str, *, open_id: str | None = None, scopes: Iterable[str] = ()
    ) -> None:
        """Test shortcut: a connected account with long-lived fake tokens."""
        now = bson_now()
        self.records[account_id] = AccountRecord(
            account_id=account_id,
            open_id=open_id or f"open-{account_id}",
            scopes=list(scopes) or ["user.info.basic", "video.publish", "video.upload"],
            access_token_enc=_FAKE_CIPHERTEXT,
            access_expires_at=now + timedelta(days=1),
            refresh_token_enc=_FAKE_CIPHERTEXT,
            refresh_expires_at=now + timedelta(days=365),
            token_version=1,
            created_at=now,
            updated_at=now,
        )
        self.tokens[account_id] = (f"act.{account_id}", f"rft.{account_id}")


class FixedTokenProvider:
    """ports.TokenProvider handing out one fixed token; counts forced refreshes."""

    def __init__(
        self,
        token: str = "act.test-token",  # noqa: S107  # a fake token for tests, not a secret
        *,
        accounts: Iterable[str] | None = None,
    ) -> None:
        self.token = token
        self.accounts = set(accounts) if accounts is not None else None
        self.refreshes: list[tuple[str, str]] = []

    def _check(self, account_id: str) -> None:
        if self.accounts is not None and account_id not in self.accounts:
            raise AuthExpiredError(f"account {account_id} is not connected", code="account_not_connected")

    async def access_token(self, account_id: str) -> str:
        """The fixed token (AuthExpiredError for accounts outside `accounts`, when given)."""
        self._check(account_id)
        return self.token

    async def force_refresh(self, account_id: str, stale_token: str) -> str:
        """Record the refresh and keep handing out the same token."""
        self._check(account_id)
        self.refreshes.append((account_id, stale_token))
        return self.token


class NoopRateLimiter:
    """ports.RateLimiter that never waits; remembers every acquire."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, RateBucket]] = []

    async def acquire(self, account_id: str, bucket: RateBucket) -> None:
        """Record the call and return at once."""
        self.calls.append((account_id, bucket))


class FileVideoReader:
    """ports.VideoReader over a file on disk: bounded pieces from any offset, nothing kept."""

    def __init__(self, path: Path, *, piece_size: int = 256 * 1024, content_type: str = "video/mp4") -> None:
        if piece_size < 1:
            raise ValueError("piece_size must be positive")
        self.path = path
        self.piece_size = piece_size
        self._content_type = content_type
        self._size = path.stat().st_size

    @property
    def size(self) -> int:
        """Bytes in the file."""
        return self._size

    @property
    def content_type(self) -> str:
        """The media type given at construction."""
        return self._content_type

    async def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """Yield exactly `length` bytes from `offset`, at most `piece_size` at a time."""
        check_read_range(offset, length, self._size)
        with self.path.open("rb") as f:
            f.seek(offset)
            left = length
            while left > 0:
                # A thread keeps the event loop free while the disk answers.
                piece = await asyncio.to_thread(f.read, min(self.piece_size, left))
                if not piece:
                    raise OSError(f"{self.path} ended {left} bytes early")
                left -= len(piece)
                yield piece


class BytesVideoReader:
    """ports.VideoReader over bytes in memory; `reads` records every (offset, length) asked for."""

    def __init__(self, data: bytes, content_type: str = "video/mp4", *, piece_size: int = 64 * 1024) -> None:
        if piece_size < 1:
            raise ValueError("piece_size must be positive")
        self.data = data
        self.content_type_ = content_type
        self.piece_size = piece_size
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        """Bytes in the video."""
        return len(self.data)

    @property
    def content_type(self) -> str:
        """The media type given at construction."""
        return self.content_type_

    async def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """Yield exactly `length` bytes from `offset`, at most `piece_size` at a time."""
        check_read_range(offset, length, len(self.data))
        self.reads.append((offset, length))
        end = offset + length
        for start in range(offset, end, self.piece_size):
            yield self.data[start : min(end, start + self.piece_size)]


class InMemoryBlobStore:
    """The BlobStore port in memory (save with a size cap, open, stat, delete)."""

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
        blob_id = f"{self._next:032x}"
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


async def aiter_bytes(data: bytes, piece_size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """`data` as an async stream of pieces (feeds BlobStore.save in tests)."""
    for start in range(0, len(data), piece_size):
        yield data[start : start + piece_size]


__all__ = [
    "BytesVideoReader",
    "FixedTokenProvider",
    "InMemoryAccountStore",
    "InMemoryBlobStore",
    "InMemoryUploadStore",
    "NoopRateLimiter",
    "RecordingPublisher",
    "aiter_bytes",
]
