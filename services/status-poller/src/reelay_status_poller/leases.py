"""Exclusive poll leases, taken by inserting a uniquely keyed document.

Why not only `UploadStore.claim_due_poll`: on FerretDB v1 (our Mongo-wire server) a guarded update
is a read followed by a separate write, so two replicas can both "win" the same claim
(FerretDB/FerretDB#3040; shown by tests/integration/poller). An insert under a unique `_id` is
atomic there as everywhere, so the lease that decides who polls is an insert:

  `_id = "<request_id>#<round>#<take>"`, where `round` is the upload's `poll_attempts` (every poll
  ends by scheduling the next round or ending tracking) and `take` counts takeovers of a lease
  whose holder died (`until` passed). Racing replicas compute the same `_id`; one insert wins.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError
from reelay_common.errors import RetryableError
from reelay_common.records import UploadRecord


class PollLeases(Protocol):
    """Who may poll an upload's current round: at most one holder at a time."""

    async def acquire(self, record: UploadRecord, *, now: datetime, lease_seconds: float) -> bool:
        """Take the lease of `record`'s current poll round; False if someone else holds it."""
        ...

    async def release(self, record: UploadRecord) -> None:
        """Drop the leases of `record`'s rounds up to the current one (its poll is over)."""
        ...


def _lease_id(request_id: str, round_: int, take: int) -> str:
    return f"{request_id}#{round_}#{take}"


class MongoPollLeases:
    """PollLeases in the `poll_leases` collection."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], *, collection: str = "poll_leases") -> None:
        self._col = db[collection]

    async def ensure_indexes(self) -> None:
        """The lookup index (idempotent)."""
        try:
            await self._col.create_index(
                [("request_id", ASCENDING), ("round", ASCENDING), ("take", DESCENDING)], name="request_round"
            )
        except PyMongoError as exc:
            raise RetryableError(f"MongoDB could not index poll leases: {type(exc).__name__}") from exc

    async def acquire(self, record: UploadRecord, *, now: datetime, lease_seconds: float) -> bool:
        """Insert the next lease of this round unless a live one exists; the unique `_id` decides."""
        round_ = record.poll_attempts
        try:
            latest = await self._col.find_one(
                {"request_id": record.request_id, "round": round_}, sort=[("take", DESCENDING)]
            )
            if latest is not None and latest["until"] > now:
                return False
            take = int(latest["take"]) + 1 if latest is not None else 0
            await self._col.insert_one(
                {
                    "_id": _lease_id(record.request_id, round_, take),
                    "request_id": record.request_id,
                    "round": round_,
                    "take": take,
                    "until": now + timedelta(seconds=lease_seconds),
                }
            )
        except DuplicateKeyError:
            return False
        except PyMongoError as exc:
            raise RetryableError(f"MongoDB could not take a poll lease: {type(exc).__name__}") from exc
        return True

    async def release(self, record: UploadRecord) -> None:
        """Delete this upload's leases of rounds up to the current one."""
        try:
            await self._col.delete_many(
                {"request_id": record.request_id, "round": {"$lte": record.poll_attempts}}
            )
        except PyMongoError as exc:
            raise RetryableError(f"MongoDB could not release a poll lease: {type(exc).__name__}") from exc


class InMemoryPollLeases:
    """PollLeases in a dict, with the same semantics (for unit tests)."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}

    async def acquire(self, record: UploadRecord, *, now: datetime, lease_seconds: float) -> bool:
        """Take the lease unless a live one exists for this round."""
        mine = [v for v in self.leases.values() if v["request_id"] == record.request_id]
        this_round = [v for v in mine if v["round"] == record.poll_attempts]
        latest = max(this_round, key=lambda v: v["take"], default=None)
        if latest is not None and latest["until"] > now:
            return False
        take = latest["take"] + 1 if latest is not None else 0
        key = _lease_id(record.request_id, record.poll_attempts, take)
        if key in self.leases:
            return False
        self.leases[key] = {
            "request_id": record.request_id,
            "round": record.poll_attempts,
            "take": take,
            "until": now + timedelta(seconds=lease_seconds),
        }
        return True

    async def release(self, record: UploadRecord) -> None:
        """Forget this upload's leases of rounds up to the current one."""
        for key, value in list(self.leases.items()):
            if value["request_id"] == record.request_id and value["round"] <= record.poll_attempts:
                del self.leases[key]
