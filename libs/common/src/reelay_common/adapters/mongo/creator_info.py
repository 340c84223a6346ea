"""The `creator_info` collection: each account's creator_info, kept a short while for every replica.

TikTok allows an account 20 creator_info calls a minute, and ingest checks every direct post's
privacy level against it: one call a minute per account (the default lifetime, 60 s) serves any
number of posts. One small document per account, `{_id: account_id, info, fetched_at}`, replaced
whole on each fetch (last writer wins: any fresh answer will do). Within one process, callers
that find nothing fresh share one fetch instead of each calling TikTok."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from reelay_common.adapters.mongo.client import bson_now, translate_errors
from reelay_common.domain.errors import DatabaseUnavailableError
from reelay_common.domain.tiktok import CreatorInfo
from reelay_common.logging import get_logger

log = get_logger("reelay_common.adapters.mongo.creator_info")

Clock = Callable[[], datetime]

DEFAULT_MAX_AGE_SECONDS = 60.0


class MongoCreatorInfoCache:
    """creator_info per account in Mongo, fresh for `max_age_seconds` (implements
    ports.CreatorInfoCache); `max_age_seconds=0` keeps nothing and always fetches."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        collection: str = "creator_info",
        clock: Clock = bson_now,
    ) -> None:
        self._col: AsyncCollection[dict[str, Any]] = db[collection]
        self._max_age = timedelta(seconds=max_age_seconds)
        self._clock = clock
        self._fetching: dict[str, asyncio.Future[CreatorInfo]] = {}

    async def get_or_fetch(self, account_id: str, fetch: Callable[[], Awaitable[CreatorInfo]]) -> CreatorInfo:
        """The account's creator_info fetched within `max_age_seconds`, else `fetch()`'s, then kept."""
        if not self._max_age:
            return await fetch()
        kept = await self.get(account_id)
        if kept is not None:
            return kept
        while (running := self._fetching.get(account_id)) is not None:
            try:
                return await asyncio.shield(running)  # the fetch under way, its answer or its error
            except asyncio.CancelledError:
                if not running.cancelled():
                    raise  # this caller was cancelled
                # The caller that was fetching went away: fetch anew.
        return await self._fetch(account_id, fetch)

    async def get(self, account_id: str) -> CreatorInfo | None:
        """The kept creator_info of `account_id` while it is fresh, else None."""
        with translate_errors("read a kept creator_info"):
            doc = await self._col.find_one({"_id": account_id})
        if doc is None:
            return None
        fetched_at = doc.get("fetched_at")
        if not isinstance(fetched_at, datetime) or abs(self._clock() - fetched_at) >= self._max_age:
            return None
        try:
            return CreatorInfo.model_validate(doc.get("info"))
        except ValidationError:
            log.warning("kept_creator_info_unreadable", account_id=account_id)
            return None

    async def put(self, account_id: str, info: CreatorInfo) -> None:
        """Keep `info` as the account's creator_info, fetched now."""
        doc = {"info": info.model_dump(mode="json"), "fetched_at": self._clock()}
        try:
            with translate_errors("keep a creator_info"):
                await self._col.replace_one({"_id": account_id}, doc, upsert=True)
        except DuplicateKeyError:
            pass  # another replica inserted it at the same moment: its answer is as fresh

    async def _fetch(self, account_id: str, fetch: Callable[[], Awaitable[CreatorInfo]]) -> CreatorInfo:
        future: asyncio.Future[CreatorInfo] = asyncio.get_running_loop().create_future()
        self._fetching[account_id] = future
        try:
            info = await fetch()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: callers that shared it re-raise it themselves
            raise
        else:
            future.set_result(info)
        finally:
            del self._fetching[account_id]
        try:
            await self.put(account_id, info)
        except DatabaseUnavailableError as exc:
            # The answer is good; only the next caller will have to ask TikTok again.
            log.warning("creator_info_not_kept", account_id=account_id, error=str(exc))
        return info
