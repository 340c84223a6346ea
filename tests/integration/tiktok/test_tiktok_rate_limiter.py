"""MongoRateLimiter on FerretDB: a strict sliding window per account and bucket, shared by replicas.

Time is a controllable clock injected into the limiters, so waiting is asserted, not timed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.mongo.rate_limits import MongoRateLimiter
from reelay_common.domain.errors import RateLimitedError
from reelay_testing.clocks import FakeClock

T0 = 1_800_000_000.0


def replicas(
    db: AsyncDatabase[dict[str, Any]], clock: FakeClock, n: int = 2, **options: Any
) -> list[MongoRateLimiter]:
    """`n` limiters on one database: what `n` replicas of a service hold."""
    return [
        MongoRateLimiter(db, clock=clock.time, sleep=clock.sleep, safety_margin_seconds=0.0, **options)
        for _ in range(n)
    ]


class TestSharedWindow:
    async def test_the_seventh_init_from_two_replicas_waits_until_the_window_frees(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        clock = FakeClock(T0)
        a, b = replicas(mongo_db, clock)
        for i in range(6):
            await (a if i % 2 == 0 else b).acquire("acct", "init")
            clock.advance(1.0)
        assert clock.sleeps == []
        assert clock.time() == T0 + 6
        await a.acquire("acct", "init")
        # The first call (at T0) leaves the 60 s window at T0 + 60: that is when the 7th may go.
        assert clock.sleeps == [pytest.approx(54.0)]
        assert clock.time() == pytest.approx(T0 + 60.0)

    async def test_concurrent_acquisitions_never_exceed_the_limit(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        clock = FakeClock(T0)
        a, b = replicas(mongo_db, clock)
        await asyncio.gather(*((a if i % 2 else b).acquire("acct", "init") for i in range(7)))
        assert clock.sleeps == [pytest.approx(60.0)], "six went at once, exactly one waited a window"

    async def test_the_window_slides(self, mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
        clock = FakeClock(T0)
        (a,) = replicas(mongo_db, clock, n=1)
        for _ in range(6):
            await a.acquire("acct", "init")
        clock.advance(30.0)
        await a.acquire("acct", "init")  # still inside the first calls' window: waits the other 30 s
        assert clock.sleeps == [pytest.approx(30.0)]

    async def test_accounts_and_buckets_are_independent(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        clock = FakeClock(T0)
        a, b = replicas(mongo_db, clock)
        for _ in range(6):
            await a.acquire("acct-1", "init")
        await b.acquire("acct-2", "init")
        await b.acquire("acct-1", "status")
        await b.acquire("acct-1", "creator_info")
        assert clock.sleeps == []

    @pytest.mark.parametrize(("bucket", "limit"), [("status", 30), ("creator_info", 20), ("init", 6)])
    async def test_default_limits_per_minute(
        self, mongo_db: AsyncDatabase[dict[str, Any]], bucket: Any, limit: int
    ) -> None:
        clock = FakeClock(T0)
        a, b = replicas(mongo_db, clock)
        for i in range(limit):
            await (a, b)[i % 2].acquire("acct", bucket)
        assert clock.sleeps == []
        await b.acquire("acct", bucket)
        assert clock.sleeps == [pytest.approx(60.0)]


class TestRefusals:
    async def test_an_unknown_bucket_is_refused(self, mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
        (a,) = replicas(mongo_db, FakeClock(T0), n=1)
        with pytest.raises(ValueError, match="bucket"):
            await a.acquire("acct", "upload")  # type: ignore[arg-type]  # the bad input under test

    async def test_a_wait_beyond_max_wait_is_handed_back_as_rate_limited(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        clock = FakeClock(T0)
        (a,) = replicas(mongo_db, clock, n=1, max_wait_seconds=10.0)
        for _ in range(6):
            await a.acquire("acct", "init")
        with pytest.raises(RateLimitedError) as info:
            await a.acquire("acct", "init")
        assert info.value.retry_after == pytest.approx(60.0)
        assert clock.sleeps == []
