"""TikTok's per-account rate limits, shared by every replica.

A strict 60 s sliding window kept in MongoDB and advanced by compare-and-swap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from reelay_common.adapters.mongo.client import translate_errors
from reelay_common.adapters.mongo.write_guard import WriteGuard
from reelay_common.domain.errors import RateLimitedError
from reelay_common.logging import get_logger
from reelay_common.ports import RateBucket

log = get_logger("reelay_common.adapters.mongo.rate_limits")

Sleep = Callable[[float], Awaitable[None]]


# TikTok's per-token limits (§7), per minute.
DEFAULT_LIMITS: Final[Mapping[RateBucket, int]] = {"init": 6, "status": 30, "creator_info": 20}


class MongoRateLimiter:
    """Paces calls per (account, bucket) in a strict sliding 60 s window shared by every replica
    (implements ports.RateLimiter).

    One document per key holds the start times of the calls in the window and a version; a slot
    is taken by a compare-and-swap on the version, so replicas never overcommit (no transactions).
    Times come from each replica's clock (`clock`, epoch seconds); the safety margin absorbs skew.
    """

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        collection: str = "rate_limits",
        limits: Mapping[RateBucket, int] | None = None,
        window_seconds: float = 60.0,
        safety_margin_seconds: float = 1.0,
        max_wait_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        guard: WriteGuard | None = None,
    ) -> None:
        self._name = collection
        self._col: AsyncCollection[dict[str, Any]] = db[collection]
        self._write_guard = guard if guard is not None else WriteGuard(db)
        self._limits = dict(limits if limits is not None else DEFAULT_LIMITS)
        self._window = window_seconds
        # TikTok counts when the call arrives, we count when it leaves: leave a little slack.
        self._margin = safety_margin_seconds
        self._max_wait = max_wait_seconds
        self._clock = clock
        self._sleep = sleep

    async def acquire(self, account_id: str, bucket: RateBucket) -> None:
        """Wait until a call in `bucket` for `account_id` fits in the window, and take that slot."""
        limit = self._limits.get(bucket)
        if limit is None:
            raise ValueError(f"no rate limit configured for bucket {bucket!r}")
        key = f"{account_id}:{bucket}"
        waited = 0.0
        while True:
            now = self._clock()
            doc = await self._find(key)
            if doc is None:
                try:
                    with translate_errors("start a rate-limit window"):
                        await self._col.insert_one({"_id": key, "stamps": [now], "version": 1})
                    return
                except DuplicateKeyError:
                    continue  # another replica created it first; read it again
            horizon = now - self._window - self._margin
            live = sorted(float(s) for s in doc.get("stamps", []) if float(s) > horizon)
            if len(live) < limit:
                if await self._swap(key, int(doc.get("version", 0)), [*live, now]):
                    return
                continue  # lost the race for this version: look again
            # Full: the oldest call in the window leaves it at oldest + window (+ margin).
            wait = max(live[-limit] + self._window + self._margin - now, 0.001)
            if self._max_wait is not None and waited + wait > self._max_wait:
                raise RateLimitedError(
                    f"{bucket} calls for this account are paced", retry_after=wait, code="paced"
                )
            log.info("rate_limit_wait", account_id=account_id, bucket=bucket, seconds=round(wait, 3))
            waited += wait
            await self._sleep(wait)

    @translate_errors("read a rate-limit window")
    async def _find(self, key: str) -> dict[str, Any] | None:
        return await self._col.find_one({"_id": key})

    @translate_errors("take a rate-limit slot")
    async def _swap(self, key: str, version: int, stamps: list[float]) -> bool:
        # The write lock makes the compare-and-swap atomic on FerretDB v1 too (module doc).
        async with self._write_guard.document(self._name, key):
            result = await self._col.update_one(
                {"_id": key, "version": version},
                {"$set": {"stamps": stamps, "version": version + 1}},
            )
        return result.modified_count == 1
