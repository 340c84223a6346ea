"""The `uploads` collection: one document per request_id, moved forward by guarded single-document updates."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Mapping, Sequence
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
from reelay_common.domain.records import CallbackDelivery, Change, OutboxEntry, UploadRecord, check_settable
from reelay_common.domain.states import TERMINAL_STATES, UploadState, states_before
from reelay_common.domain.tenancy import DEFAULT_TENANT

Document = dict[str, Any]

_CLAIM_BATCH = 20  # due candidates looked at per claim
_REV = "rev"  # bumped by every in-flight write; the archive move deletes only the version it copied
UPLOADS = "uploads"


def in_flight_name(collection: str) -> str:
    """The collection holding the in-flight work of the uploads collection `collection`."""
    return f"{collection}_in_flight"


def ids_name(collection: str) -> str:
    """The collection of every request_id ever accepted into `collection` (one tiny doc each).

    A new request_id is claimed by an insert there: its unique index answers "seen before?" at the
    cost of an insert on every server, where a lookup of a missing `_id` in `uploads` scans all
    history on FerretDB (docs/design.md, "The state store").
    """
    return f"{collection}_ids"


def _lease_free(field: str, now: datetime) -> Document:
    return {"$or": [{field: None}, {field: {"$lt": now}}]}


def new_upload_document(
    cmd: UploadRequested, *, source: StateSource, now: datetime, enqueue: bool = False
) -> Document:
    """The first document of a new upload (built from `UploadRecord`, the one definition)."""
    # The client's times carry microseconds: cut as BSON stores them (the same bytes), so the record
    # `create` returns equals the one read back.
    cut = {"requested_at": bson_time(cmd.requested_at)}
    if cmd.publish_at is not None:
        cut["publish_at"] = bson_time(cmd.publish_at)
    record = UploadRecord.new(cmd.model_copy(update=cut), source=source, now=now, enqueue=enqueue)
    doc: Document = to_bson(record.new_document())
    return doc


def tenant_filter(tenant_id: str) -> Document:
    """The documents of `tenant_id`: the default tenant's include those written before tenants,
    which have no `tenant_id` (a null match finds a missing field)."""
    if tenant_id == DEFAULT_TENANT:
        return {"tenant_id": {"$in": [DEFAULT_TENANT, None]}}
    return {"tenant_id": tenant_id}


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
        self._ids = db[ids_name(collection)]
        self._guard = guard if guard is not None else WriteGuard(db)

    async def create(
        self, cmd: UploadRequested, *, source: StateSource, enqueue: bool = False, lease_seconds: float = 0.0
    ) -> tuple[UploadRecord, bool]:
        """Insert the `accepted` document unless the request_id is known; (record, created).

        The document carries its outbox (the `accepted` announcement, and with `enqueue` the command),
        leased for `lease_seconds` to the caller, who sends it at once (OutboxRelay.drain).
        """
        now = bson_now()
        doc = new_upload_document(cmd, source=source, now=now, enqueue=enqueue)
        if lease_seconds > 0:
            doc["outbox_lease_until"] = now + timedelta(seconds=lease_seconds)
        key = str(doc["_id"])  # the request_id scoped to its tenant
        try:
            with translate_errors("claim a request_id"):
                await self._ids.insert_one({"_id": key, "at": now})
        except DuplicateKeyError:
            existing = await self.get(key)
            if existing is not None:
                return existing, False
            # Claimed, but no upload stored: the claimant died between its two inserts, or is
            # between them now. The in-flight insert below settles which of us creates it.
        try:
            # An insert is atomic everywhere (unique _id): no write lock needed.
            with translate_errors("insert an upload"):
                await self._live.insert_one({**doc, _REV: 0})
        except DuplicateKeyError:
            existing = await self.get(key)
            if existing is None:  # archived in between: get() looks in flight first, then history
                raise RetryableError(f"upload {key} moved during create; try again") from None
            return existing, False
        return UploadRecord.model_validate(doc), True

    async def find_in_flight(self, request_id: str) -> UploadRecord | None:
        """The upload if it is still in flight (a read that costs what the work in flight costs)."""
        return await self._find_one(self._live, {"_id": request_id}, what="read an upload")

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
        announce = OutboxEntry.status(target, source=change.source, at=now)
        return await self._update(
            {"_id": request_id, "state": {"$in": [s.value for s in states_before(target)]}},
            {
                "$set": {
                    **to_bson(fields),
                    "state": target.value,
                    "updated_at": now,
                    "outbox_due_at": change.outbox_due_at(now),
                },
                "$push": {"history": entry, "outbox": to_bson(announce.model_dump())},
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
        self,
        *,
        tenant_id: str | None = None,
        account_id: str | None = None,
        state: UploadState | None = None,
        limit: int = 100,
    ) -> builtins.list[UploadRecord]:
        """Uploads, newest first, optionally of one tenant, for one account (its stored key) and/or
        in one state."""
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        query: Document = {}
        if tenant_id is not None:
            query.update(tenant_filter(tenant_id))
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
            **_lease_free("poll_lease_until", now),
        }
        lease = {"$set": {"poll_lease_until": now + timedelta(seconds=lease_seconds)}}
        return await self._claim_one(due, lease, order="poll_next_at", what="claim a due poll")

    async def _claim_one(
        self, due: Document, lease: Document, *, order: str, what: str
    ) -> UploadRecord | None:
        """Lease one in-flight document matching `due`, earliest `order` first.

        Candidates first, then a guarded per-document claim that re-checks the whole condition:
        a replica that loses the race for one candidate moves on to the next.
        """
        with translate_errors(what):
            candidates = (
                await self._live.find(due, {"_id": 1}).sort([(order, ASCENDING)]).to_list(_CLAIM_BATCH)
            )
        for candidate in candidates:
            claimed = await self._update(
                {"_id": candidate["_id"], **due}, lease, what=what, settled_too=False
            )
            if claimed is not None:
                return claimed
        return None

    async def claim_due_outbox(self, now: datetime, lease_seconds: float) -> UploadRecord | None:
        """Lease one upload whose outbox is due and not being sent by another process."""
        now = to_bson(now)
        due: Document = {"outbox_due_at": {"$lte": now}, **_lease_free("outbox_lease_until", now)}
        lease = {"$set": {"outbox_lease_until": now + timedelta(seconds=lease_seconds)}}
        return await self._claim_one(due, lease, order="outbox_due_at", what="claim a due outbox")

    async def lease_outbox(self, request_id: str, now: datetime, lease_seconds: float) -> UploadRecord | None:
        """Lease this upload's outbox if it has entries and no other process holds it; else None."""
        now = to_bson(now)
        query: Document = {
            "_id": request_id,
            "outbox_due_at": {"$ne": None},
            **_lease_free("outbox_lease_until", now),
        }
        lease = {"$set": {"outbox_lease_until": now + timedelta(seconds=lease_seconds)}}
        return await self._update(query, lease, what="lease an outbox", settled_too=False)

    async def settle_outbox(
        self, request_id: str, sent: Sequence[OutboxEntry], *, next_try_at: datetime
    ) -> UploadRecord | None:
        """Remove the entries `sent` and release the lease; what is left is due at `next_try_at`.

        Entries are only ever appended by others, so an outbox as long as `sent` is exactly `sent`:
        then one update empties it. Otherwise the sent ones are pulled by value and the rest waits.
        """
        released = {"outbox_lease_until": None}
        if sent:
            emptied = await self._update(
                {"_id": request_id, "outbox": {"$size": len(sent)}},
                {"$set": {"outbox": [], "outbox_due_at": None, **released}},
                what="settle an outbox",
                settled_too=False,
            )
            if emptied is not None:
                return emptied
            await self._update(
                {"_id": request_id},
                {"$pullAll": {"outbox": [to_bson(e.model_dump()) for e in sent]}},
                what="settle an outbox",
                settled_too=False,
            )
        emptied = await self._update(
            {"_id": request_id, "outbox": {"$size": 0}},
            {"$set": {"outbox_due_at": None, **released}},
            what="settle an outbox",
            settled_too=False,
        )
        if emptied is not None:
            return emptied
        return await self._update(
            {"_id": request_id},
            {"$set": {"outbox_due_at": to_bson(next_try_at), **released}},
            what="settle an outbox",
            settled_too=False,
        )

    async def count_owing(self) -> int:
        """How many uploads in flight still owe Kafka a message (only work in flight can)."""
        with translate_errors("count owed outboxes"):
            return await self._live.count_documents({"outbox_due_at": {"$ne": None}})

    async def add_post_ids(
        self, request_id: str, post_ids: Sequence[str], *, source: StateSource
    ) -> UploadRecord | None:
        """Merge `post_ids` into the upload atomically and announce them; None if none was new."""
        ids = list(post_ids)
        if not ids:
            return None
        current = await self.find_in_flight(request_id)
        if current is None:
            archived = await self._archive_doc(request_id)
            if archived is None:
                return None
            current = UploadRecord.model_validate(archived)
            await self._revive(archived)
        now = bson_now()
        announce = OutboxEntry.status(current.state, source=source, at=now)
        return await self._update(
            # Only while some id is missing, and in the state the announcement names.
            {"_id": request_id, "state": current.state.value, "post_ids": {"$not": {"$all": ids}}},
            {
                "$addToSet": {"post_ids": {"$each": ids}},
                "$set": {"updated_at": now, "outbox_due_at": now},
                "$push": {"outbox": to_bson(announce.model_dump())},
            },
            what="add post ids",
            # In flight (revived above): only there does the relay look for what to send.
            settled_too=False,
        )

    async def _revive(self, doc: Document) -> None:
        """Put an archived upload back in flight (a late fact to announce); the archive move returns it."""
        try:
            with translate_errors("revive an upload"):
                await self._live.insert_one({**doc, _REV: 0})
        except DuplicateKeyError:
            pass  # revived by another writer meanwhile

    async def _archive_doc(self, request_id: str) -> Document | None:
        with translate_errors("read an upload"):
            return await self._archive.find_one({"_id": request_id})

    async def schedule_poll(
        self, request_id: str, next_at: datetime, *, attempts: int, polled_at: datetime | None = None
    ) -> None:
        """Set when to poll next and release the lease (and when TikTok was last asked, if it was)."""
        fields: Document = {
            "poll_next_at": to_bson(next_at),
            "poll_attempts": attempts,
            "poll_lease_until": None,
        }
        if polled_at is not None:
            fields["poll_last_at"] = to_bson(polled_at)
        await self._update(
            {"_id": request_id},
            {"$set": fields},
            what="schedule a poll",
            settled_too=False,
        )

    async def archive_settled(self, now: datetime, *, grace_seconds: float, limit: int = 100) -> int:
        """Move uploads settled and quiet for `grace_seconds` from flight to `uploads`; how many moved."""
        cutoff = to_bson(now) - timedelta(seconds=grace_seconds)
        settled: Document = {
            "updated_at": {"$lt": cutoff},
            "outbox_due_at": None,  # nothing left to send
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
