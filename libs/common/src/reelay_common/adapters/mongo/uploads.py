"""The `uploads` collection: one document per request_id, moved forward by guarded single-document updates."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from reelay_common.adapters.mongo.client import bson_now, bson_time, to_bson, translate_errors
from reelay_common.adapters.mongo.write_guard import WriteGuard
from reelay_common.domain.errors import RetryableError
from reelay_common.domain.messages import (
    StateSource,
    UploadRequested,
)
from reelay_common.domain.records import UploadRecord
from reelay_common.domain.states import TERMINAL_STATES, UploadState, states_before

Document = dict[str, Any]

_CLAIM_BATCH = 20  # due candidates looked at per claim_due_poll


def check_settable(fields: Mapping[str, Any]) -> None:
    """Refuse fields the store owns or does not know, with a clear error (nothing is written)."""
    protected = sorted(set(fields) & UploadRecord.store_managed_fields())
    if protected:
        raise ValueError(f"these upload fields are managed by the store and cannot be set: {protected}")
    unknown = sorted(set(fields) - UploadRecord.settable_fields())
    if unknown:
        raise ValueError(f"unknown upload fields: {unknown} (add them to UploadRecord first)")


def new_upload_document(cmd: UploadRequested, *, source: StateSource, now: datetime) -> Document:
    """The `accepted` document of a new upload (shared by the Mongo store and its in-memory fake)."""
    record = UploadRecord.new(cmd, source=source, now=now)
    # requested_at is the client's, with microseconds: cut as BSON stores it (the same bytes), so the
    # record `create` returns equals the one read back.
    if record.requested_at is not None:
        record = record.model_copy(update={"requested_at": bson_time(record.requested_at)})
    doc: Document = to_bson(record.new_document())
    return doc


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
            with translate_errors("insert an upload"):
                await self._uploads.insert_one(doc)
        except DuplicateKeyError:
            existing = await self.get(cmd.request_id)
            if existing is None:  # deleted in between: not something Reelay does, but be honest
                raise RetryableError(f"upload {cmd.request_id} vanished during create") from None
            return existing, False
        return UploadRecord.model_validate(doc), True

    async def get(self, request_id: str) -> UploadRecord | None:
        """The upload, or None."""
        with translate_errors("read an upload"):
            doc = await self._uploads.find_one({"_id": request_id})
        return UploadRecord.model_validate(doc) if doc is not None else None

    async def _update(self, query: Document, update: Document, *, what: str) -> UploadRecord | None:
        """One guarded find_one_and_update of the document `query["_id"]`; the record after, or None."""

        async def write() -> Document | None:
            with translate_errors(what):
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
        with translate_errors("list uploads"):
            docs = (
                await self._uploads.find(query)
                .sort([("created_at", DESCENDING), ("_id", ASCENDING)])
                .to_list(limit)
            )
        return [UploadRecord.model_validate(d) for d in docs]

    async def find_by_publish_id(self, publish_id: str) -> UploadRecord | None:
        """The upload TikTok knows as `publish_id`, or None."""
        with translate_errors("find an upload by publish_id"):
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
        with translate_errors("find due polls"):
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
