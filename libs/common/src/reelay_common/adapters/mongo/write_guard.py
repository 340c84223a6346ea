"""WriteGuard: single-document atomicity where updates are read-then-replace (FerretDB v1).

On MongoDB it does nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Literal, TypeVar

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from reelay_common.adapters.mongo.client import bson_now, is_ferretdb, translate_errors
from reelay_common.domain.errors import RetryableError
from reelay_common.domain.rules import Backoff
from reelay_common.logging import get_logger

log = get_logger("reelay_common.adapters.mongo.write_guard")

_T = TypeVar("_T")

# Waits for a busy lock: 2 ms doubling to 50 ms, spread +-50% so waiting writers do not collide again.
_LOCK_BACKOFF = Backoff(0.002, 0.05, jitter=0.5)


class WriteGuard:
    """Serialises writes to one document across processes where the server does not (FerretDB v1).

    `async with guard.document("uploads", request_id): <one update>` holds a lock document
    `{_id: "uploads:<id>"}` in `collection` for the duration. Inserting it is atomic on every
    Mongo-wire server (unique `_id`), so only one writer at a time gets past it. A lock whose holder
    died is taken over after `ttl_seconds`. mode "auto" asks the server once; "never" is plain
    MongoDB behaviour; "always" forces the locks (tests).
    """

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        mode: Literal["auto", "always", "never"] = "auto",
        collection: str = "reelay_locks",
        ttl_seconds: float = 10.0,
        acquire_timeout_seconds: float = 15.0,
    ) -> None:
        self._db = db
        self._locks = db[collection]
        self._enabled: bool | None = {"auto": None, "always": True, "never": False}[mode]
        self._ttl = timedelta(seconds=ttl_seconds)
        self._timeout = acquire_timeout_seconds

    async def enabled(self) -> bool:
        """Whether writes are serialised through lock documents (asked of the server once)."""
        if self._enabled is None:
            self._enabled = await is_ferretdb(self._db)
        return self._enabled

    @asynccontextmanager
    async def document(self, collection: str, doc_id: str) -> AsyncIterator[None]:
        """Hold the write lock of one document (a no-op where the server's updates are atomic)."""
        if not await self.enabled():
            yield
            return
        key = f"{collection}:{doc_id}"
        owner = uuid.uuid4().hex
        await self._acquire(key, owner)
        try:
            yield
        finally:
            # Shielded: a cancelled writer must still release, or others wait out the TTL.
            with translate_errors("release a write lock"):
                await asyncio.shield(self._locks.delete_one({"_id": key, "owner": owner}))

    async def _acquire(self, key: str, owner: str) -> None:
        deadline = time.monotonic() + self._timeout
        waits = 0
        while True:
            now = bson_now()
            with translate_errors("take a write lock"):
                try:
                    await self._locks.insert_one({"_id": key, "owner": owner, "expires_at": now + self._ttl})
                    return
                except DuplicateKeyError:
                    holder = await self._locks.find_one({"_id": key})
                if holder is not None and holder["expires_at"] < now:
                    # Its holder died mid-write; remove exactly that lock (by owner) and race again.
                    log.warning("write_lock_expired", key=key)
                    await self._locks.delete_one({"_id": key, "owner": holder["owner"]})
                    continue
            if time.monotonic() > deadline:
                raise RetryableError(f"the write lock of {key} stayed busy for {self._timeout}s")
            await asyncio.sleep(_LOCK_BACKOFF.sample(waits))
            waits += 1

    async def run(self, collection: str, doc_id: str, write: Callable[[], Awaitable[_T]]) -> _T:
        """`await write()` while holding the document's write lock."""
        async with self.document(collection, doc_id):
            return await write()
