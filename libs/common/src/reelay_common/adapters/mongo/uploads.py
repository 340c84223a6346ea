"""The `uploads` collection: one document per request_id, moved forward by guarded single-document updates."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from reelay_common.adapters.mongo.client import bson_now, bson_time, to_bson, translate_errors
from reelay_common.adapters.mongo.write_guard import WriteGuard
from reelay_common.domain.errors import RetryableError
from reelay_common.domain.messages import (
    StateSource,
    UploadRequested,
)
from reelay_common.domain.records import CallbackDelivery, Change, UploadRecord, check_settable
from reelay_common.domain.states import TERMINAL_STATES, UploadState, states_before

Document = dict[str, Any]

_CLAIM_BATCH = 20  # due candidates looked at per claim_due_poll
_REV = "rev"  # bumped by every in-flight write; the archive move deletes only the version it copied
UPLOADS = "uploads"


def in_flight_name(collection: str) -> str:
    """The collection holding the in-flight work of the uploads collection `collection`."""
    return f"{collection}_in_flight"


def new_upload_document(cmd: UploadRequested, *, source: StateSource, now: datetime) -> Document:
    """The `accepted` document of a new upload (built from `UploadRecord`, the one definition)."""
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
    """Uploads in MongoDB (ports.UploadStore): guarded, forward-only, single-document updates.

    Work in flight lives in a small collection of its own (`uploads_in_flight`), so the hot paths
    (accepting a request, every transition and checkpoint, the poller's scan for due work) cost what
    the work in flight costs, not what all history costs. Once an upload is settled (terminal and no
    longer watched) and has been quiet for a grace period, `archive_settled` moves it to `uploads`,
    which keeps the full record of every upload ever handled: written once by an insert, read by
    `_id`, and updated only for the rare late fact (a post id TikTok reports after we stopped
    watching). On FerretDB v1 this is what keeps costs flat: it pushes an `_id` equality down to
    SQLite for finds but scans the whole collection for every update (docs/design.md has the figures).

    Every write goes through `WriteGuard` (a no-op on MongoDB), so on FerretDB too a transition, a
    checkpoint, a poll lease and an archive move never overwrite each other. Each in-flight write
    bumps `rev`, which lets the archive move delete exactly the version it copied.
    """

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        collection: str = UPLOADS,
        guard: WriteGuard | None = None,
    ) -> None:
        self._archive = db[collection]
        self._live_name = in_flight_name(collection)
        self._live = db[self._live_name]
        self._guard = guard if guard is not None else WriteGuard(db)

    async def create(self, cmd: UploadRequested, *, source: StateSource) -> tuple[UploadRecord, bool]:
        """Insert the `accepted` document unless one exists for this request_id; (record, created)."""
        doc = new_upload_document(cmd, source=source, now=bson_now())
        try:
            # An insert is atomic everywhere (unique _id): no write lock needed.
            with translate_errors("insert an upload"):
                await self._live.insert_one({**doc, _REV: 0})
        except DuplicateKeyError:
            existing = await self.get(cmd.request_id)
            if existing is None:  # archived in between: get() looks in flight first, then history
                raise RetryableError(f"upload {cmd.request_id} moved during create; try again") from None
            return existing, False
        # The request_id may belong to an upload that already left flight (a late replay): the
        # archived one is the upload, so withdraw the copy just inserted. The order (insert, then
        # look) is what makes this safe: an archive move copies before it deletes.
        archived = await self._find_one(self._archive, {"_id": cmd.request_id}, what="read an upload")
        if archived is not None:
            await self._guard.run(
                self._live_name,
                cmd.request_id,
                lambda: self._delete_live(cmd.request_id, rev=0),
            )
            return archived, False
        return UploadRecord.model_validate(doc), True

    async def get(self, request_id: str) -> UploadRecord | None:
        """The upload, or None (in flight first: an archived copy is never newer)."""
        query = {"_id": request_id}
        found = await self._find_one(self._live, query, what="read an upload")
        return found or await self._find_one(self._archive, query, what="read an upload")

    async def _find_one(
        self, collection: AsyncCollection[Document], query: Document, *, what: str
    ) -> UploadRecord | None:
        with translate_errors(what):
            doc = await collection.find_one(query)
        return UploadRecord.model_validate(doc) if doc is not None else None

    async def _delete_live(self, request_id: str, *, rev: int) -> bool:
        with translate_errors("withdraw an upload"):
            result = await self._live.delete_one({"_id": request_id, _REV: rev})
        return result.deleted_count == 1

    async def _update(
        self, query: Document, update: Document, *, what: str, settled_too: bool = True
    ) -> UploadRecord | None:
        """One guarded find_one_and_update of the document `query["_id"]`; the record after, or None.

        In flight first; with `settled_too`, an upload that was archived is updated there (rare:
        the costly path on servers that scan for updates).
        """
        request_id = str(query["_id"])
        live_update = {**update, "$inc": {_REV: 1}}

        async def write() -> Document | None:
            with translate_errors(what):
                doc = await self._live.find_one_and_update(
                    query, live_update, return_document=ReturnDocument.AFTER
                )
                if doc is not None or not settled_too:
                    return doc
                if await self._live.find_one({"_id": request_id}, {"_id": 1}) is not None:
                    return None  # in flight, and the guard refused
                return await self._archive.find_one_and_update(
                    query, update, return_document=ReturnDocument.AFTER
                )

        doc = await self._guard.run(self._live_name, request_id, write)
        return UploadRecord.model_validate(doc) if doc is not None else None

    async def transition(self, request_id: str, change: Change) -> UploadRecord | None:
        """Move forward to `change.target` in one guarded atomic update; None if already there or beyond."""
        target, fields = change.target, change.fields()
        check_settable(fields)
        now = bson_now()
        entry = to_bson(change.history_entry(now))
        return await self._update(
            {"_id": request_id, "state": {"$in": [s.value for s in states_before(target)]}},
            {
                "$set": {**to_bson(fields), "state": target.value, "updated_at": now},
                "$push": {"history": entry},
            },
            what="transition an upload",
            # A settled upload is terminal: no state lies beyond it, so history need not be read.
            settled_too=False,
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
        order = [("created_at", DESCENDING), ("_id", ASCENDING)]
        with translate_errors("list uploads"):
            archived = await self._archive.find(query).sort(order).to_list(limit)
            live = await self._live.find(query).sort(order).to_list(limit)
        # Read history first, then flight: an upload archived between the two reads is in both (the
        # live copy wins), never in neither.
        docs = {d["_id"]: d for d in archived} | {d["_id"]: d for d in live}
        ranked = sorted(docs.values(), key=lambda d: str(d["_id"]))
        ranked.sort(key=lambda d: d["created_at"], reverse=True)
        return [UploadRecord.model_validate(d) for d in ranked[:limit]]

    async def find_by_publish_id(self, publish_id: str) -> UploadRecord | None:
        """The upload TikTok knows as `publish_id`, or None."""
        query = {"publish_id": publish_id}
        found = await self._find_one(self._live, query, what="find an upload by publish_id")
        return found or await self._find_one(self._archive, query, what="find an upload by publish_id")

    async def claim_due_poll(self, now: datetime, lease_seconds: float) -> UploadRecord | None:
        """Lease one tracked upload whose poll is due and not leased by another replica.

        Tracked: not terminal, or `published` while the poller still watches it for its post ids
        (it clears `poll_next_at` when it stops watching). Other terminal states are never polled,
        and nothing settled is ever in flight for long, so this scan stays small.
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
                await self._live.find(due, {"_id": 1})
                .sort([("poll_next_at", ASCENDING)])
                .to_list(_CLAIM_BATCH)
            )
        for candidate in candidates:
            claimed = await self._update(
                {"_id": candidate["_id"], **due}, lease, what="claim a due poll", settled_too=False
            )
            if claimed is not None:
                return claimed
        return None

    async def schedule_poll(self, request_id: str, next_at: datetime, *, attempts: int) -> None:
        """Set when to poll next and release the lease."""
        await self._update(
            {"_id": request_id},
            {"$set": {"poll_next_at": to_bson(next_at), "poll_attempts": attempts, "poll_lease_until": None}},
            what="schedule a poll",
            settled_too=False,
        )

    async def archive_settled(self, now: datetime, *, grace_seconds: float, limit: int = 100) -> int:
        """Move uploads settled and quiet for `grace_seconds` from flight to `uploads`; how many moved."""
        cutoff = to_bson(now) - timedelta(seconds=grace_seconds)
        settled: Document = {
            "updated_at": {"$lt": cutoff},
            "$or": [
                {"state": {"$in": [s.value for s in UNPOLLED_STATES]}},
                {"state": UploadState.PUBLISHED.value, "poll_next_at": None},
            ],
        }
        with translate_errors("find settled uploads"):
            candidates = await self._live.find(settled, {"_id": 1}).to_list(limit)
        moved = 0
        for candidate in candidates:
            request_id = str(candidate["_id"])
            if await self._guard.run(self._live_name, request_id, functools.partial(self._move, request_id)):
                moved += 1
        return moved

    async def _move(self, request_id: str) -> bool:
        """Copy the in-flight document to `uploads`, then delete exactly the version copied."""
        with translate_errors("archive an upload"):
            doc = await self._live.find_one({"_id": request_id})
            if doc is None:
                return False  # another replica moved it
            try:
                await self._archive.insert_one(doc)
            except DuplicateKeyError:
                # An earlier move copied an older version and then lost the race to a late write.
                await self._archive.replace_one({"_id": request_id}, doc)
        # A write since the read bumped rev: the delete misses, and the next sweep copies again.
        return await self._delete_live(request_id, rev=int(doc.get(_REV, 0)))

    async def record_callback(self, request_id: str, delivery: CallbackDelivery) -> UploadRecord | None:
        """Set `callbacks.<state>` in one guarded update unless that callback is finished already.

        No `updated_at`: a delivery attempt is no change of the upload (and must not hold back its
        archiving); an archived upload is updated in `uploads`."""
        key = f"callbacks.{delivery.state.value}"
        return await self._update(
            {"_id": request_id, f"{key}.outcome": {"$nin": ["delivered", "failed"]}},
            {"$set": {key: to_bson(delivery.model_dump())}},
            what="record a callback",
        )
