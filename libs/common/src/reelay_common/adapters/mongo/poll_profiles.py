"""The `poll_profiles` collection: the processing times the status-poller has learnt.

One small document per (account, size class), `{_id: "<account>|<class>", account_id, size_class,
version, weights, count, updated_at}`. An observation is a compare-and-swap on `version`: read the
document, fold the observation in (domain.profiles), replace it where `version` is still the one
read, else read again. On MongoDB that replace is atomic by itself; on FerretDB v1, whose updates
read and then replace, the WriteGuard serialises the writers of the document. Either way
concurrent observations of several replicas are all kept, with no transaction, change stream,
TTL index or `$pull` (none of which FerretDB v1.24 has)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from reelay_common.adapters.mongo.client import bson_now, translate_errors
from reelay_common.adapters.mongo.write_guard import WriteGuard
from reelay_common.domain.errors import RetryableError
from reelay_common.domain.profiles import ProcessingProfile

Clock = Callable[[], datetime]

# Compare-and-swap rounds before an observation gives up (each lost round means another writer
# got in first; on FerretDB the guard makes that rare).
_MAX_ROUNDS = 8


def profile_id(account_id: str, size_class: str) -> str:
    """The `_id` of one profile document."""
    return f"{account_id}|{size_class}"


class MongoPollProfiles:
    """Learnt processing times in Mongo (implements ports.PollProfiles)."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        guard: WriteGuard | None = None,
        collection: str = "poll_profiles",
        clock: Clock = bson_now,
    ) -> None:
        self._col: AsyncCollection[dict[str, Any]] = db[collection]
        self._name = collection
        self._guard = guard if guard is not None else WriteGuard(db)
        self._clock = clock

    async def get(self, account_id: str, size_class: str) -> ProcessingProfile | None:
        with translate_errors("read a poll profile"):
            doc = await self._col.find_one({"_id": profile_id(account_id, size_class)})
        return None if doc is None else ProcessingProfile.from_document(doc)

    async def observe(self, account_id: str, size_class: str, low: float, high: float) -> ProcessingProfile:
        doc_id = profile_id(account_id, size_class)
        ProcessingProfile().observe(low, high)  # a bad observation is refused before any write
        return await self._guard.run(
            self._name, doc_id, lambda: self._swap(doc_id, account_id, size_class, low, high)
        )

    async def _swap(
        self, doc_id: str, account_id: str, size_class: str, low: float, high: float
    ) -> ProcessingProfile:
        for _ in range(_MAX_ROUNDS):
            with translate_errors("read a poll profile"):
                doc = await self._col.find_one({"_id": doc_id})
            before = ProcessingProfile() if doc is None else ProcessingProfile.from_document(doc)
            after = before.observe(low, high)
            version = 0 if doc is None else int(doc.get("version", 0))
            new = {
                "account_id": account_id,
                "size_class": size_class,
                "version": version + 1,
                "updated_at": self._clock(),
                **after.to_document(),
            }
            with translate_errors("keep a poll profile"):
                if doc is None:
                    try:
                        await self._col.insert_one({"_id": doc_id, **new})
                    except DuplicateKeyError:
                        continue  # another replica's first observation came first: fold into it
                    return after
                result = await self._col.replace_one({"_id": doc_id, "version": version}, new)
            if result.matched_count == 1:
                return after
        raise RetryableError(f"the poll profile {doc_id} kept changing under {_MAX_ROUNDS} writers")
