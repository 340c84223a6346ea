"""MongoDB connection helpers: client, indexes, health, BSON values, the one translation of errors.

Everything here works on FerretDB v1 too (no transactions, no partial/sparse/TTL indexes); see
docs/design.md for what else that server does differently."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from enum import Enum
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from pydantic import BaseModel
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from reelay_common.domain.errors import DatabaseUnavailableError

P = ParamSpec("P")
R = TypeVar("R")


def connect(uri: str, *, app_name: str) -> AsyncMongoClient[dict[str, Any]]:
    """A client that returns timezone-aware UTC datetimes (connects lazily)."""
    return AsyncMongoClient(
        uri,
        appname=app_name,
        tz_aware=True,
        tzinfo=UTC,
        serverSelectionTimeoutMS=10_000,
    )


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Create the indexes of `uploads` and `uploads_in_flight` (idempotent; kinds FerretDB v1 has)."""
    with translate_errors("create indexes"):
        for name in ("uploads", "uploads_in_flight"):
            coll = db[name]
            await coll.create_index([("account_id", ASCENDING), ("state", ASCENDING)], name="account_state")
            await coll.create_index(
                [("account_id", ASCENDING), ("created_at", DESCENDING)], name="account_created"
            )
            await coll.create_index([("state", ASCENDING), ("created_at", DESCENDING)], name="state_created")
            await coll.create_index([("publish_id", ASCENDING)], name="publish_id")
            # One tenant's listing (docs/architecture.md, "Tenants").
            await coll.create_index(
                [("tenant_id", ASCENDING), ("created_at", DESCENDING)], name="tenant_created"
            )
        # Only work in flight is ever due for a poll, owes Kafka a message or waits to be archived.
        await db["uploads_in_flight"].create_index([("poll_next_at", ASCENDING)], name="poll_next_at")
        await db["uploads_in_flight"].create_index([("outbox_due_at", ASCENDING)], name="outbox_due_at")
        await db["uploads_in_flight"].create_index([("updated_at", ASCENDING)], name="updated_at")
        # A tenant's API keys are listed by tenant (reelay-admin keys list).
        await db["api_keys"].create_index(
            [("tenant_id", ASCENDING), ("created_at", ASCENDING)], name="tenant"
        )
    await _backfill_request_ids(db)


async def _backfill_request_ids(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Claim the request_id of every upload stored before `uploads_ids` existed (once: when it is empty).

    A request_id is "new" when its insert into `uploads_ids` succeeds; an upgraded deployment's
    older uploads must be in there first, or a late replay of one would be accepted a second time.
    """
    with translate_errors("backfill request ids"):
        if await db["uploads_ids"].find_one({}, {"_id": 1}) is not None:
            return
        for name in ("uploads", "uploads_in_flight"):
            batch: list[dict[str, Any]] = []
            async for doc in db[name].find({}, {"_id": 1, "created_at": 1}):
                batch.append({"_id": doc["_id"], "at": doc.get("created_at")})
                if len(batch) == 1000:
                    await _insert_ignoring_duplicates(db, batch)
                    batch = []
            if batch:
                await _insert_ignoring_duplicates(db, batch)


async def _insert_ignoring_duplicates(db: AsyncDatabase[dict[str, Any]], docs: list[dict[str, Any]]) -> None:
    try:
        await db["uploads_ids"].insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        # Another replica backfilling at the same time, or a request claimed meanwhile.
        if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
            raise


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    """True when the server answers a ping within a few seconds."""
    try:
        await asyncio.wait_for(client.admin.command("ping"), timeout=5)
    except (PyMongoError, TimeoutError):
        return False
    return True


class _TranslateErrors:
    """See `translate_errors`: a context manager that is also a decorator of coroutine functions."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # DuplicateKeyError is an answer, not an outage: the adapters decide what it means.
        if isinstance(exc, PyMongoError) and not isinstance(exc, DuplicateKeyError):
            raise DatabaseUnavailableError(f"MongoDB could not {self._what}: {type(exc).__name__}") from exc

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(fn)
        async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return await fn(*args, **kwargs)

        return translated


def translate_errors(what: str) -> _TranslateErrors:
    """The one translation of MongoDB's errors, for every Mongo adapter: PyMongoError (connection
    loss, elections, timeouts) becomes DatabaseUnavailableError, which is retryable; DuplicateKeyError
    passes through. `with translate_errors("read an upload"): ...`, or `@translate_errors(...)` on an
    async function."""
    return _TranslateErrors(what)


def to_bson(value: Any) -> Any:
    """Plain BSON-storable values: pydantic models as JSON-ish dicts, enums by value, tz-aware UTC."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass timezone-aware UTC")
        return value.astimezone(UTC)
    if isinstance(value, Mapping):
        return {str(k): to_bson(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_bson(v) for v in value]
    return value


def bson_time(value: datetime) -> datetime:
    """`value` as a BSON date keeps it: UTC, cut to milliseconds (so a written value reads back equal)."""
    if value.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass timezone-aware UTC")
    utc = value.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def bson_now() -> datetime:
    """Now, at the millisecond precision BSON dates keep (so a written value reads back equal)."""
    return bson_time(datetime.now(UTC))


async def is_ferretdb(db: AsyncDatabase[dict[str, Any]]) -> bool:
    """True when the server is FerretDB (its buildInfo says so), whose updates are not atomic."""
    with translate_errors("read buildInfo"):
        info = await db.client.admin.command("buildInfo")
    return "ferretdbVersion" in info
