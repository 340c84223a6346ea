"""MongoCreatorInfoCache on FerretDB: kept for its lifetime, shared by instances (replicas), one
fetch for concurrent callers, nothing kept when the fetch fails."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.mongo.creator_info import MongoCreatorInfoCache
from reelay_common.domain.errors import RateLimitedError
from reelay_common.domain.tiktok import CreatorInfo


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class TikTok:
    """Counts creator_info calls; answers after `delay` seconds, or raises `error`."""

    def __init__(self, *, delay: float = 0.0, error: Exception | None = None) -> None:
        self.calls = 0
        self.delay = delay
        self.error = error

    async def fetch(self) -> CreatorInfo:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return CreatorInfo(creator_nickname=f"call {self.calls}", privacy_level_options=["SELF_ONLY"])


async def test_an_answer_serves_every_replica_for_its_lifetime(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    clock = Clock()
    replica_a = MongoCreatorInfoCache(mongo_db, max_age_seconds=60, clock=clock)
    replica_b = MongoCreatorInfoCache(mongo_db, max_age_seconds=60, clock=clock)
    tiktok = TikTok()

    first = await replica_a.get_or_fetch("acct-1", tiktok.fetch)
    clock.now += timedelta(seconds=59)
    assert await replica_b.get_or_fetch("acct-1", tiktok.fetch) == first
    assert tiktok.calls == 1

    clock.now += timedelta(seconds=2)  # 61 s old: stale
    fresh = await replica_b.get_or_fetch("acct-1", tiktok.fetch)
    assert (tiktok.calls, fresh.creator_nickname) == (2, "call 2")
    assert await mongo_db["creator_info"].count_documents({}) == 1  # one document per account


async def test_concurrent_callers_share_one_fetch(mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    cache = MongoCreatorInfoCache(mongo_db)
    tiktok = TikTok(delay=0.2)

    answers = await asyncio.gather(*(cache.get_or_fetch("acct-1", tiktok.fetch) for _ in range(10)))

    assert tiktok.calls == 1
    assert all(answer == answers[0] for answer in answers)


async def test_a_failed_fetch_is_shared_and_keeps_nothing(mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    cache = MongoCreatorInfoCache(mongo_db)
    tiktok = TikTok(delay=0.2, error=RateLimitedError("spent", code="rate_limited"))

    results = await asyncio.gather(
        *(cache.get_or_fetch("acct-1", tiktok.fetch) for _ in range(5)), return_exceptions=True
    )

    assert tiktok.calls == 1
    assert all(isinstance(r, RateLimitedError) for r in results)
    assert await cache.get("acct-1") is None
    tiktok.error = None
    assert (await cache.get_or_fetch("acct-1", tiktok.fetch)).creator_nickname == "call 2"


async def test_a_lifetime_of_zero_always_asks(mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    cache = MongoCreatorInfoCache(mongo_db, max_age_seconds=0)
    tiktok = TikTok()
    for _ in range(3):
        await cache.get_or_fetch("acct-1", tiktok.fetch)
    assert tiktok.calls == 3
    assert await mongo_db["creator_info"].count_documents({}) == 0


async def test_an_unreadable_document_is_fetched_anew(mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    clock = Clock()
    junk = {"_id": "acct-1", "fetched_at": clock.now, "info": {"privacy_level_options": "nope"}}
    await mongo_db["creator_info"].insert_one(junk)
    cache = MongoCreatorInfoCache(mongo_db, clock=clock)
    tiktok = TikTok()

    info = await cache.get_or_fetch("acct-1", tiktok.fetch)

    assert (tiktok.calls, info.privacy_level_options) == (1, ["SELF_ONLY"])
    assert await cache.get("acct-1") == info  # replaced by the good answer
