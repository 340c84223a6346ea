"""The `webhook_events` collection: the TikTok webhooks already applied, one small document each.

`{_id: webhook_key, seen_at}`: looking one up is a read by `_id`, never a scan of the history, and
noting one is an insert whose unique `_id` makes it idempotent on every Mongo-wire server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from reelay_common.adapters.mongo.client import bson_now, translate_errors

Clock = Callable[[], datetime]


class MongoWebhookLedger:
    """The applied webhooks in Mongo (implements ports.WebhookLedger). `seen_at` says when, for an
    operator who prunes entries older than TikTok's 72 hours of retries."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        collection: str = "webhook_events",
        clock: Clock = bson_now,
    ) -> None:
        self._col: AsyncCollection[dict[str, Any]] = db[collection]
        self._clock = clock

    async def seen(self, key: str) -> bool:
        with translate_errors("read an applied webhook"):
            return await self._col.find_one({"_id": key}, projection={"_id": 1}) is not None

    async def remember(self, key: str) -> None:
        try:
            with translate_errors("note an applied webhook"):
                await self._col.insert_one({"_id": key, "seen_at": self._clock()})
        except DuplicateKeyError:
            pass  # noted already: the same webhook, applied twice at once
