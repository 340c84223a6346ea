"""TikTok accounts in MongoDB: tokens encrypted at rest, single-flight refresh, shared rate limits.

Everything here relies on single-document guarded updates only (`find_one_and_update` with a filter
that states the precondition), because the Mongo-wire server we run on (FerretDB v1) has no
multi-document transactions. FerretDB v1 also applies an update as "read, then replace", so two
racing guarded updates of one document can both match; every write here therefore runs under
`mongo.WriteGuard` (a per-document lock built on the atomic insert of a unique `_id`, a no-op on
MongoDB), which restores the single-document atomicity the guards rely on. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from reelay_common.errors import (
    AuthExpiredError,
    InvalidInputError,
    RateLimitedError,
    RetryableError,
    TransientTikTokError,
)
from reelay_common.logging import get_logger
from reelay_common.messages import utcnow
from reelay_common.mongo import WriteGuard
from reelay_common.ports import RateBucket
from reelay_common.records import AccountRecord
from reelay_common.tiktok.client import TikTokClient
from reelay_common.tiktok.models import TokenGrant

log = get_logger(__name__)

T = TypeVar("T")
Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

STATUS_CONNECTED: Final = "connected"
STATUS_REAUTH_REQUIRED: Final = "reauth_required"
STATUS_REVOKED: Final = "revoked"

# TikTok's per-token limits (§7), per minute.
DEFAULT_LIMITS: Final[Mapping[RateBucket, int]] = {"init": 6, "status": 30, "creator_info": 20}


class DatabaseUnavailableError(RetryableError):
    """MongoDB did not answer; the caller may try again later."""


class TokenCipher:
    """Encrypts tokens for storage (Fernet: AES-128-CBC + HMAC-SHA256, urlsafe base64 key of 32 bytes)."""

    def __init__(self, key: SecretStr) -> None:
        try:
            self._fernet = Fernet(key.get_secret_value().encode())
        except (ValueError, TypeError) as exc:
            # Never echo the key: say what is wrong with it, not what it is.
            raise ValueError("token encryption key must be 32 bytes, urlsafe base64-encoded") from exc

    def encrypt(self, plaintext: str) -> str:
        """The ciphertext of `plaintext`, as text."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext of `ciphertext`; AuthExpiredError if it was not made with this key."""
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise AuthExpiredError(
                "stored token cannot be decrypted with the configured key", code="token_undecryptable"
            ) from exc


@dataclass(frozen=True)
class AccountTokens:
    """An account's tokens in clear, with what the refresh logic needs to decide."""

    account_id: str
    status: str
    access_token: str | None
    access_expires_at: datetime | None
    refresh_token: str | None
    refresh_expires_at: datetime | None
    token_version: int

    def __repr__(self) -> str:
        # Keep tokens out of reprs, tracebacks and logs.
        return (
            f"AccountTokens(account_id={self.account_id!r}, status={self.status!r}, v={self.token_version})"
        )


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class MongoAccountStore:
    """The `accounts` collection (implements ports.AccountStore); tokens encrypted at rest."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        cipher: TokenCipher,
        *,
        collection: str = "accounts",
        clock: Clock = utcnow,
        guard: WriteGuard | None = None,
    ) -> None:
        self._name = collection
        self._col: AsyncCollection[dict[str, Any]] = db[collection]
        self._cipher = cipher
        self._clock = clock
        self._write_guard = guard if guard is not None else WriteGuard(db)

    async def upsert_tokens(
        self,
        account_id: str,
        *,
        open_id: str,
        access_token: str,
        expires_in: int,
        refresh_token: str,
        refresh_expires_in: int,
        scopes: list[str],
    ) -> AccountRecord:
        """Store a fresh grant (OAuth connect), creating the account if needed; bumps token_version."""
        now = self._clock()
        doc = await self._write(
            account_id,
            lambda: self._col.find_one_and_update(
                {"_id": account_id},
                {
                    "$set": {
                        **self._token_fields(
                            now,
                            access_token=access_token,
                            expires_in=expires_in,
                            refresh_token=refresh_token,
                            refresh_expires_in=refresh_expires_in,
                        ),
                        "open_id": open_id,
                        "scopes": list(scopes),
                        "status": STATUS_CONNECTED,
                    },
                    "$inc": {"token_version": 1},
                    "$setOnInsert": {"created_at": now},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            ),
        )
        log.info("account_tokens_stored", account_id=account_id, open_id=open_id)
        return AccountRecord.model_validate(doc)

    async def get(self, account_id: str) -> AccountRecord | None:
        """The account document, tokens still encrypted."""
        doc = await self._guard(self._col.find_one({"_id": account_id}))
        return AccountRecord.model_validate(doc) if doc is not None else None

    async def get_tokens(self, account_id: str) -> AccountTokens | None:
        """The account's tokens decrypted, or None for an unknown account."""
        doc = await self._guard(self._col.find_one({"_id": account_id}))
        return self._tokens(doc) if doc is not None else None

    async def mark_reauth_required(self, account_id: str) -> None:
        """The refresh token is dead (invalid_grant): only the user reconnecting can fix it."""
        await self._set_status(account_id, STATUS_REAUTH_REQUIRED, clear_tokens=False)

    async def mark_revoked(self, account_id: str) -> None:
        """The authorisation was removed (revoke or webhook): forget the tokens."""
        await self._set_status(account_id, STATUS_REVOKED, clear_tokens=True)

    # ---- refresh lock: used by MongoTokenProvider ---------------------------------------------

    async def try_lock_refresh(
        self, account_id: str, *, owner: str, expect_version: int, lock_seconds: float
    ) -> AccountTokens | None:
        """Take the refresh lock if no live lock exists and the tokens are still `expect_version`.

        One guarded find_one_and_update: of all callers (any process) racing for the same version,
        exactly one gets the tokens back (read in the same atomic step: the latest refresh token).
        """
        now = self._clock()
        doc = await self._write(
            account_id,
            lambda: self._col.find_one_and_update(
                {
                    "_id": account_id,
                    "status": STATUS_CONNECTED,
                    "token_version": expect_version,
                    "$or": [{"refresh_lock_until": None}, {"refresh_lock_until": {"$lte": now}}],
                },
                {
                    "$set": {
                        "refresh_lock_until": now + timedelta(seconds=lock_seconds),
                        "refresh_lock_owner": owner,
                    }
                },
                return_document=ReturnDocument.AFTER,
            ),
        )
        return self._tokens(doc) if doc is not None else None

    async def store_refreshed(self, account_id: str, *, owner: str, grant: TokenGrant) -> int:
        """Persist a refreshed grant (always the new, rotated refresh token), release our lock;
        returns the new token_version."""
        now = self._clock()
        fields = self._token_fields(
            now,
            access_token=grant.access_token,
            expires_in=grant.expires_in,
            refresh_token=grant.refresh_token,
            refresh_expires_in=grant.refresh_expires_in,
        )
        if grant.scopes:
            fields["scopes"] = grant.scopes
        doc = await self._write(
            account_id,
            lambda: self._col.find_one_and_update(
                {"_id": account_id, "refresh_lock_owner": owner},
                {
                    "$set": {**fields, "refresh_lock_until": None, "refresh_lock_owner": None},
                    "$inc": {"token_version": 1},
                },
                return_document=ReturnDocument.AFTER,
            ),
        )
        if doc is None:
            # Our lock expired while TikTok answered and someone else holds it now. TikTok already
            # rotated to the grant we hold, so it is the only live one: store it anyway, leaving
            # their lock alone (their refresh with the old token will fail and see our version).
            log.warning("token_refresh_lock_lost", account_id=account_id)
            doc = await self._write(
                account_id,
                lambda: self._col.find_one_and_update(
                    {"_id": account_id},
                    {"$set": fields, "$inc": {"token_version": 1}},
                    return_document=ReturnDocument.AFTER,
                ),
            )
            if doc is None:
                raise InvalidInputError(f"unknown account {account_id}", code="unknown_account")
        return int(doc.get("token_version", 0))

    async def release_refresh_lock(self, account_id: str, *, owner: str) -> None:
        """Drop our refresh lock (after a failed refresh) so another caller may try."""
        await self._write(
            account_id,
            lambda: self._col.update_one(
                {"_id": account_id, "refresh_lock_owner": owner},
                {"$set": {"refresh_lock_until": None, "refresh_lock_owner": None}},
            ),
        )

    # ---- helpers ----------------------------------------------------------------------------------

    def _token_fields(
        self,
        now: datetime,
        *,
        access_token: str,
        expires_in: int,
        refresh_token: str,
        refresh_expires_in: int,
    ) -> dict[str, Any]:
        # Lifetimes come from each response, never constants: TikTok has changed them before.
        return {
            "access_token_enc": self._cipher.encrypt(access_token),
            "access_expires_at": now + timedelta(seconds=expires_in),
            "refresh_token_enc": self._cipher.encrypt(refresh_token),
            "refresh_expires_at": now + timedelta(seconds=refresh_expires_in),
            "updated_at": now,
        }

    def _tokens(self, doc: Mapping[str, Any]) -> AccountTokens:
        access_enc = doc.get("access_token_enc")
        refresh_enc = doc.get("refresh_token_enc")
        return AccountTokens(
            account_id=str(doc["_id"]),
            status=str(doc.get("status", STATUS_CONNECTED)),
            access_token=self._cipher.decrypt(access_enc) if access_enc else None,
            access_expires_at=_aware(doc.get("access_expires_at")),
            refresh_token=self._cipher.decrypt(refresh_enc) if refresh_enc else None,
            refresh_expires_at=_aware(doc.get("refresh_expires_at")),
            token_version=int(doc.get("token_version", 0)),
        )

    async def _set_status(self, account_id: str, status: str, *, clear_tokens: bool) -> None:
        fields: dict[str, Any] = {"status": status, "updated_at": self._clock()}
        if clear_tokens:
            fields.update(access_token_enc=None, refresh_token_enc=None)
        result = await self._write(
            account_id, lambda: self._col.update_one({"_id": account_id}, {"$set": fields})
        )
        if result.matched_count == 0:
            raise InvalidInputError(f"unknown account {account_id}", code="unknown_account")
        log.info("account_status_changed", account_id=account_id, status=status)

    @staticmethod
    async def _guard(awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except PyMongoError as exc:
            raise DatabaseUnavailableError(f"accounts store failed: {type(exc).__name__}") from exc

    async def _write(self, account_id: str, write: Callable[[], Awaitable[T]]) -> T:
        """Run one guarded write of the account's document under its write lock (see module doc)."""
        async with self._write_guard.document(self._name, account_id):
            return await self._guard(write())


class MongoTokenProvider:
    """Hands out access tokens (implements ports.TokenProvider); refreshes single-flight per
    account across processes, elected by a guarded update on the account document."""

    def __init__(
        self,
        store: MongoAccountStore,
        client: TikTokClient,
        *,
        refresh_margin_seconds: float = 300.0,
        lock_seconds: float = 60.0,
        poll_interval_seconds: float = 0.1,
        wait_timeout_seconds: float | None = None,
        owner: str | None = None,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._store = store
        self._client = client
        self._margin = timedelta(seconds=refresh_margin_seconds)
        self._lock_seconds = lock_seconds
        self._poll = poll_interval_seconds
        # Losers wait at most a lock lifetime (plus slack), after which the lock is up for grabs.
        self._wait_timeout = wait_timeout_seconds if wait_timeout_seconds is not None else lock_seconds + 5
        self._owner = owner or f"{uuid.uuid4().hex}"
        self._clock = clock
        self._sleep = sleep

    async def access_token(self, account_id: str) -> str:
        """A token valid for more than the margin, refreshing (single-flight) when it is not."""
        tokens = await self._load(account_id)
        remaining = tokens.access_expires_at - self._clock() if tokens.access_expires_at is not None else None
        if tokens.access_token is not None and remaining is not None and remaining > self._margin:
            return tokens.access_token
        try:
            return await self._refresh(tokens)
        except RetryableError as exc:
            # We refresh early; while the current token still works, a TikTok or database hiccup
            # need not stop the call. The next caller tries the refresh again.
            if tokens.access_token is not None and remaining is not None and remaining > timedelta(0):
                log.warning("token_refresh_deferred", account_id=account_id, code=exc.code)
                return tokens.access_token
            raise

    async def force_refresh(self, account_id: str, stale_token: str) -> str:
        """`stale_token` was refused: refresh, unless the stored token is already a newer one."""
        tokens = await self._load(account_id)
        if tokens.access_token is not None and tokens.access_token != stale_token:
            return tokens.access_token
        return await self._refresh(tokens)

    async def _load(self, account_id: str) -> AccountTokens:
        tokens = await self._store.get_tokens(account_id)
        if tokens is None:
            raise InvalidInputError(f"unknown account {account_id}", code="unknown_account")
        _ensure_connected(tokens)
        return tokens

    async def _refresh(self, seen: AccountTokens) -> str:
        """Refresh once across every replica; the callers that lose the election wait for the winner."""
        account_id = seen.account_id
        started = time.monotonic()
        while True:
            mine = await self._store.try_lock_refresh(
                account_id,
                owner=self._owner,
                expect_version=seen.token_version,
                lock_seconds=self._lock_seconds,
            )
            if mine is not None:
                return await self._refresh_as_winner(mine)
            current = await self._load(account_id)
            if current.token_version != seen.token_version and current.access_token is not None:
                return current.access_token
            if time.monotonic() - started > self._wait_timeout:
                raise TransientTikTokError(
                    "timed out waiting for another replica's token refresh", code="refresh_wait_timeout"
                )
            await self._sleep(self._poll)

    async def _refresh_as_winner(self, mine: AccountTokens) -> str:
        account_id = mine.account_id
        if mine.refresh_token is None:
            await self._store.release_refresh_lock(account_id, owner=self._owner)
            await self._store.mark_reauth_required(account_id)
            raise AuthExpiredError("the account has no refresh token", code="no_refresh_token")
        try:
            grant = await self._client.refresh_token(mine.refresh_token)
        except AuthExpiredError as exc:
            await self._store.release_refresh_lock(account_id, owner=self._owner)
            # A slower winner whose lock expired may have stored a rotated token meanwhile; our
            # refresh token was then already dead. Use theirs rather than disconnecting the account.
            current = await self._store.get_tokens(account_id)
            if current is not None and current.token_version != mine.token_version and current.access_token:
                return current.access_token
            await self._store.mark_reauth_required(account_id)
            log.warning("token_refresh_refused", account_id=account_id, code=exc.code, log_id=exc.log_id)
            raise
        except BaseException:
            await self._store.release_refresh_lock(account_id, owner=self._owner)
            raise
        version = await self._store.store_refreshed(account_id, owner=self._owner, grant=grant)
        log.info(
            "token_refreshed",
            account_id=account_id,
            token_version=version,
            expires_in=grant.expires_in,
            refresh_expires_in=grant.refresh_expires_in,
        )
        return grant.access_token


def _ensure_connected(tokens: AccountTokens) -> None:
    if tokens.status != STATUS_CONNECTED:
        raise AuthExpiredError(
            f"account {tokens.account_id} is {tokens.status}; the user must reconnect", code=tokens.status
        )


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
                    await self._col.insert_one({"_id": key, "stamps": [now], "version": 1})
                    return
                except DuplicateKeyError:
                    continue  # another replica created it first; read it again
                except PyMongoError as exc:
                    raise DatabaseUnavailableError(f"rate limiter failed: {type(exc).__name__}") from exc
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

    async def _find(self, key: str) -> dict[str, Any] | None:
        try:
            return await self._col.find_one({"_id": key})
        except PyMongoError as exc:
            raise DatabaseUnavailableError(f"rate limiter failed: {type(exc).__name__}") from exc

    async def _swap(self, key: str, version: int, stamps: list[float]) -> bool:
        try:
            # The write lock makes the compare-and-swap atomic on FerretDB v1 too (module doc).
            async with self._write_guard.document(self._name, key):
                result = await self._col.update_one(
                    {"_id": key, "version": version},
                    {"$set": {"stamps": stamps, "version": version + 1}},
                )
        except PyMongoError as exc:
            raise DatabaseUnavailableError(f"rate limiter failed: {type(exc).__name__}") from exc
        return result.modified_count == 1
