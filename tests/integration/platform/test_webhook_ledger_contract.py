"""One WebhookLedger contract for the fake and the real Mongo ledger."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.mongo.webhooks import MongoWebhookLedger
from reelay_common.ports import WebhookLedger
from reelay_testing.webhooks import FakeWebhookLedger

KEY = "v_pub_file~v2-1.1|post.publish.complete|1700000000"


@pytest.fixture(params=["memory", "mongo"])
def ledger(request: pytest.FixtureRequest) -> WebhookLedger:
    """The fake and the real ledger: every test below runs against both."""
    if request.param == "memory":
        return FakeWebhookLedger()
    return MongoWebhookLedger(request.getfixturevalue("mongo_db"))


async def test_a_webhook_is_seen_once_remembered(ledger: WebhookLedger) -> None:
    assert not await ledger.seen(KEY)
    await ledger.remember(KEY)
    assert await ledger.seen(KEY)
    assert not await ledger.seen(KEY.replace("1700000000", "1700000001"))  # another create_time


async def test_remembering_twice_at_once_is_harmless(ledger: WebhookLedger) -> None:
    await asyncio.gather(*(ledger.remember(KEY) for _ in range(5)))
    assert await ledger.seen(KEY)


async def test_the_mongo_ledger_keeps_one_small_document_per_webhook(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    ledger = MongoWebhookLedger(mongo_db)
    for _ in range(3):
        await ledger.remember(KEY)
    [doc] = await mongo_db["webhook_events"].find({}).to_list()
    assert doc["_id"] == KEY
    assert set(doc) == {"_id", "seen_at"}
