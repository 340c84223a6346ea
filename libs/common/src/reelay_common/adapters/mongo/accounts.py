"""The `accounts` collection: TikTok tokens stored encrypted, written under guarded single-document updates.

FerretDB v1 has no multi-document transactions and applies an update as "read, then replace", so
every write here runs under `WriteGuard` (a no-op on MongoDB). Tokens are never logged."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.mongo.client import translate_errors
from reelay_common.adapters.mongo.write_guard import WriteGuard
from reelay_common.domain.errors import InvalidInputError
from reelay_common.domain.messages import utcnow
from reelay_common.domain.records import AccountRecord, AccountStatus, account_status
from reelay_common.domain.tenancy import SCOPE_SEPARATOR, split_scoped
from reelay_common.domain.tiktok import TokenGrant
from reelay_common.logging import get_logger

log = get_logger("reelay_common.adapters.mongo.accounts")

T = TypeVar("T")

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class AccountTokens:
    """An account's tokens in clear, with what the refresh logic needs to decide."""

    account_id: str
    status: AccountStatus
    access_token: str | None
    access_expires_at: datetime | None
    refresh_token: str | None
    refresh_expires_at: datetime | None
    token_version: int
    # Set by try_lock_refresh when the lock it took had been another caller's and had expired: that
    # caller may still be on its way to store a grant TikTok already rotated to.
    took_over_lock: bool = False

    def __repr__(self) -> str:
        # Keep tokens out of reprs, tracebacks and logs.
        return (
            f"AccountTokens(account_id={self.account_id!r}, status={self.status!r}, v={self.token_version})"
        )


def as_aware_utc(value: datetime | None) -> datetime | None:
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

    @property
    def cipher(self) -> TokenCipher:
        """The cipher the tokens are stored under: what else keeps a secret of a connect uses it too."""
        return self._cipher

    async def upsert_tokens(
        self, account_id: str, grant: TokenGrant, *, requested_scopes: list[str] | None = None
    ) -> AccountRecord:
        """Store a fresh grant (OAuth connect), creating the account if needed; bumps token_version.

        `requested_scopes` (an OAuth connect's): what was asked for, so the view can say which the
        user did not grant. A reconnect of a disconnected account clears its disconnect reason."""
        now = self._clock()
        extra: dict[str, Any] = {} if requested_scopes is None else {"requested_scopes": requested_scopes}
        doc = await self._write(
            account_id,
            lambda: self._col.find_one_and_update(
                {"_id": account_id},
                {
                    "$set": {
                        **self._token_fields(now, grant),
                        "open_id": grant.open_id,
                        "scopes": grant.scopes,
                        "status": AccountStatus.CONNECTED,
                        "disconnect_reason": None,
                        "disconnected_at": None,
                        **extra,
                    },
                    "$inc": {"token_version": 1},
                    # The tenant of the stored key (docs/architecture.md, "Tenants").
                    "$setOnInsert": {"created_at": now, "tenant_id": split_scoped(account_id)[0]},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            ),
        )
        log.info("account_tokens_stored", account_id=account_id, open_id=grant.open_id)
        return AccountRecord.model_validate(doc)

    async def get(self, account_id: str) -> AccountRecord | None:
        """The account document, tokens still encrypted."""
        with translate_errors("read an account"):
            doc = await self._col.find_one({"_id": account_id})
        return AccountRecord.model_validate(doc) if doc is not None else None

    async def get_tokens(self, account_id: str) -> AccountTokens | None:
        """The account's tokens decrypted, or None for an unknown account."""
        with translate_errors("read an account's tokens"):
            doc = await self._col.find_one({"_id": account_id})
        return self._tokens(doc) if doc is not None else None

    async def access_token_of(self, account_id: str) -> str | None:
        """The account's access token in clear (to revoke it), or None."""
        tokens = await self.get_tokens(account_id)
        return tokens.access_token if tokens is not None else None

    async def mark_reauth_required(self, account_id: str) -> None:
        """The refresh token is dead (invalid_grant): only the user reconnecting can fix it."""
        await self._set_status(account_id, AccountStatus.REAUTH_REQUIRED, clear_tokens=False)

    async def mark_disconnected(self, account_id: str, *, reason: str = "disconnected") -> None:
        """The authorisation is gone (DELETE, or TikTok's authorization.removed): forget the
        tokens, keep the account (its id, open_id and why it was disconnected)."""
        await self._set_status(
            account_id,
            AccountStatus.DISCONNECTED,
            clear_tokens=True,
            extra={"disconnect_reason": reason, "disconnected_at": self._clock()},
        )

    async def list_keys(self, *, prefix: str | None, limit: int = 500) -> list[AccountRecord]:
        """Accounts whose key starts with `prefix` (a tenant's `tenant~`), or, with None, the keys
        without a tenant prefix (the default tenant's); ordered by key."""
        pattern = f"^{re.escape(prefix)}" if prefix is not None else f"^[^{re.escape(SCOPE_SEPARATOR)}]*$"
        with translate_errors("list accounts"):
            docs = await self._col.find({"_id": {"$regex": pattern}}).sort("_id", 1).to_list(limit)
        return [AccountRecord.model_validate(d) for d in docs]

    async def find_by_open_id(self, open_id: str) -> list[AccountRecord]:
        """Every account (of any tenant) bound to TikTok's `open_id`."""
        with translate_errors("find accounts by open_id"):
            docs = await self._col.find({"open_id": open_id}).to_list(100)
        return [AccountRecord.model_validate(d) for d in docs]

    # ---- refresh lock: used by MongoTokenProvider ---------------------------------------------

    async def try_lock_refresh(
        self, account_id: str, *, owner: str, expect_version: int, lock_seconds: float
    ) -> AccountTokens | None:
        """Take the refresh lock if no live lock exists and the tokens are still `expect_version`.

        One guarded find_one_and_update: of all callers (any process) racing for the same version,
        exactly one gets the tokens back (read in the same atomic step: the latest refresh token).
        """
        now = self._clock()
        # The document as it was (only the lock fields change): whose lock, if any, was taken over.
        before = await self._write(
            account_id,
            lambda: self._col.find_one_and_update(
                {
                    "_id": account_id,
                    "status": AccountStatus.CONNECTED,
                    "token_version": expect_version,
                    "$or": [{"refresh_lock_until": None}, {"refresh_lock_until": {"$lte": now}}],
                },
                {
                    "$set": {
                        "refresh_lock_until": now + timedelta(seconds=lock_seconds),
                        "refresh_lock_owner": owner,
                    }
                },
                return_document=ReturnDocument.BEFORE,
            ),
        )
        if before is None:
            return None
        previous = before.get("refresh_lock_owner")
        return replace(self._tokens(before), took_over_lock=previous is not None and previous != owner)

    async def store_refreshed(self, account_id: str, *, owner: str, grant: TokenGrant) -> int:
        """Persist a refreshed grant (always the new, rotated refresh token), release our lock;
        returns the new token_version."""
        now = self._clock()
        fields = self._token_fields(now, grant)
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
            if doc.get("status") == AccountStatus.REAUTH_REQUIRED:
                # That other caller refreshed with the token TikTok had already rotated away, got
                # invalid_grant and marked the account dead; the grant just stored proves it alive.
                version = doc.get("token_version", 0)
                await self._write(
                    account_id,
                    lambda: self._col.update_one(
                        {
                            "_id": account_id,
                            "status": AccountStatus.REAUTH_REQUIRED,
                            "token_version": version,
                        },
                        {"$set": {"status": AccountStatus.CONNECTED}},
                    ),
                )
                log.warning("account_reconnected_by_late_grant", account_id=account_id)
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

    def _token_fields(self, now: datetime, grant: TokenGrant) -> dict[str, Any]:
        # Lifetimes come from each response, never constants: TikTok has changed them before.
        return {
            "access_token_enc": self._cipher.encrypt(grant.access_token),
            "access_expires_at": now + timedelta(seconds=grant.expires_in),
            "refresh_token_enc": self._cipher.encrypt(grant.refresh_token),
            "refresh_expires_at": now + timedelta(seconds=grant.refresh_expires_in),
            "updated_at": now,
        }

    def _tokens(self, doc: Mapping[str, Any]) -> AccountTokens:
        access_enc = doc.get("access_token_enc")
        refresh_enc = doc.get("refresh_token_enc")
        return AccountTokens(
            account_id=str(doc["_id"]),
            status=account_status(doc.get("status")),
            access_token=self._cipher.decrypt(access_enc) if access_enc else None,
            access_expires_at=as_aware_utc(doc.get("access_expires_at")),
            refresh_token=self._cipher.decrypt(refresh_enc) if refresh_enc else None,
            refresh_expires_at=as_aware_utc(doc.get("refresh_expires_at")),
            token_version=int(doc.get("token_version", 0)),
        )

    async def _set_status(
        self,
        account_id: str,
        status: AccountStatus,
        *,
        clear_tokens: bool,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        fields: dict[str, Any] = {"status": status, "updated_at": self._clock(), **(extra or {})}
        if clear_tokens:
            fields.update(access_token_enc=None, refresh_token_enc=None)
        result = await self._write(
            account_id, lambda: self._col.update_one({"_id": account_id}, {"$set": fields})
        )
        if result.matched_count == 0:
            raise InvalidInputError(f"unknown account {account_id}", code="unknown_account")
        log.info("account_status_changed", account_id=account_id, status=status)

    async def _write(self, account_id: str, write: Callable[[], Awaitable[T]]) -> T:
        """Run one guarded write of the account's document under its write lock (see module doc)."""
        async with self._write_guard.document(self._name, account_id):
            with translate_errors("write an account"):
                return await write()
