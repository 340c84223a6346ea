"""WriteGuard: one writer per document at a time, across clients, on the real Mongo-wire server."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.mongo.client import bson_now, is_ferretdb
from reelay_common.adapters.mongo.write_guard import WriteGuard
from reelay_common.domain.errors import RetryableError


async def read_modify_write(db: AsyncDatabase[dict[str, Any]], guard: WriteGuard) -> None:
    """The racy pattern FerretDB's own updates follow: read, compute, replace."""
    async with guard.document("counters", "c1"):
        doc = await db["counters"].find_one({"_id": "c1"})
        assert doc is not None
        await asyncio.sleep(0.001)  # widen the window a race would need
        await db["counters"].replace_one({"_id": "c1"}, {"n": doc["n"] + 1})


class TestWriteGuard:
    async def test_serialises_concurrent_writers_of_one_document(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        await mongo_db["counters"].insert_one({"_id": "c1", "n": 0})
        guards = [WriteGuard(mongo_db, mode="always") for _ in range(4)]  # as if four replicas
        await asyncio.gather(*(read_modify_write(mongo_db, guards[i % 4]) for i in range(40)))
        doc = await mongo_db["counters"].find_one({"_id": "c1"})
        assert doc is not None
        assert doc["n"] == 40

    async def test_releases_the_lock_when_the_write_fails(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        guard = WriteGuard(mongo_db, mode="always", acquire_timeout_seconds=1)
        with pytest.raises(KeyError):
            async with guard.document("uploads", "r1"):
                raise KeyError("boom")
        async with guard.document("uploads", "r1"):
            pass
        assert await mongo_db["reelay_locks"].count_documents({}) == 0

    async def test_releases_the_lock_when_the_writer_is_cancelled(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        guard = WriteGuard(mongo_db, mode="always", acquire_timeout_seconds=1)
        entered = asyncio.Event()

        async def hold_forever() -> None:
            async with guard.document("uploads", "r1"):
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(hold_forever())
        await asyncio.wait_for(entered.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with guard.document("uploads", "r1"):
            pass

    async def test_a_busy_lock_becomes_a_retryable_error(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        await mongo_db["reelay_locks"].insert_one(
            {"_id": "uploads:r1", "owner": "someone", "expires_at": bson_now() + timedelta(minutes=5)}
        )
        guard = WriteGuard(mongo_db, mode="always", acquire_timeout_seconds=0.3)
        with pytest.raises(RetryableError, match="stayed busy"):
            async with guard.document("uploads", "r1"):
                pass

    async def test_takes_over_the_lock_of_a_dead_holder(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        await mongo_db["reelay_locks"].insert_one(
            {"_id": "uploads:r1", "owner": "crashed", "expires_at": bson_now() - timedelta(seconds=1)}
        )
        guard = WriteGuard(mongo_db, mode="always", acquire_timeout_seconds=1)
        async with guard.document("uploads", "r1"):
            held = await mongo_db["reelay_locks"].find_one({"_id": "uploads:r1"})
            assert held is not None
            assert held["owner"] != "crashed"

    async def test_never_mode_takes_no_locks(self, mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
        guard = WriteGuard(mongo_db, mode="never")
        async with guard.document("uploads", "r1"):
            assert await mongo_db["reelay_locks"].count_documents({}) == 0

    async def test_auto_mode_locks_exactly_when_the_server_is_ferretdb(
        self, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        assert await WriteGuard(mongo_db).enabled() == await is_ferretdb(mongo_db)
