"""Re-encrypting the stored TikTok tokens under the first configured key, and counting which key each
account's tokens are under (`reelay-admin tokens rotate|check`).

Safe while the services run: each account's new ciphertexts are written by one guarded update whose
filter is the ciphertexts just read, so a refresh that stored new tokens in between is never
overwritten (the account is read again and retried; a refresh by a service that has the new key
list already wrote them under the first key). Rotation neither decrypts into anything kept nor bumps
token_version: the tokens stay the same, only their envelope changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.database import AsyncDatabase

from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.mongo.client import translate_errors
from reelay_common.adapters.mongo.write_guard import WriteGuard

# The encrypted fields of an account document (MongoAccountStore._token_fields).
TOKEN_FIELDS = ("access_token_enc", "refresh_token_enc")

# How often one account is read again after a concurrent write changed it under us; past that it
# is reported skipped (run the command again).
MAX_ATTEMPTS = 5

# A test seam: awaited with the account id after the account is read and before its guarded write,
# where a concurrent refresh would land.
BetweenReadAndWrite = Callable[[str], Awaitable[None]]


class KeyState(StrEnum):
    """Where one account's tokens stand against the configured keys."""

    CURRENT = "current"  # every token under the first key
    OLDER = "older"  # at least one under another configured key, none under no key
    UNDECRYPTABLE = "undecryptable"  # at least one token no configured key opens
    NO_TOKENS = "no_tokens"  # nothing stored (a revoked or disconnected account)


@dataclass
class KeyCheck:
    """`tokens check`: how many accounts stand where; `older_by_key` counts the oldest key
    (1-based position in the list) an older account still needs."""

    current: int = 0
    older: int = 0
    undecryptable: int = 0
    no_tokens: int = 0
    keys: int = 1
    older_by_key: dict[int, int] = field(default_factory=dict)
    undecryptable_accounts: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The report as JSON (account ids only: nothing secret)."""
        return {
            "keys": self.keys,
            "current": self.current,
            "older": self.older,
            "undecryptable": self.undecryptable,
            "no_tokens": self.no_tokens,
            "older_by_key": {str(k): v for k, v in sorted(self.older_by_key.items())},
            "undecryptable_accounts": self.undecryptable_accounts,
        }


@dataclass
class Rotation:
    """`tokens rotate`: what happened to each account (with `dry_run`, what would have).
    `conflicts` counts the times a concurrent write changed an account between read and write."""

    dry_run: bool = False
    rotated: int = 0
    current: int = 0
    skipped: int = 0
    undecryptable: int = 0
    no_tokens: int = 0
    conflicts: int = 0
    skipped_accounts: list[str] = field(default_factory=list)
    undecryptable_accounts: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every stored token is now under the first key (nothing skipped, nothing unreadable)."""
        return self.skipped == 0 and self.undecryptable == 0

    def as_json(self) -> dict[str, Any]:
        """The report as JSON (account ids only: nothing secret)."""
        return {
            "dry_run": self.dry_run,
            "rotated": self.rotated,
            "already_current": self.current,
            "skipped": self.skipped,
            "undecryptable": self.undecryptable,
            "no_tokens": self.no_tokens,
            "conflicts": self.conflicts,
            "skipped_accounts": self.skipped_accounts,
            "undecryptable_accounts": self.undecryptable_accounts,
        }


class MongoTokenKeys:
    """The key state of the `accounts` collection's tokens, and their re-encryption."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        cipher: TokenCipher,
        *,
        collection: str = "accounts",
        fields: Sequence[str] = TOKEN_FIELDS,
        guard: WriteGuard | None = None,
    ) -> None:
        self._name = collection
        self._col: AsyncCollection[dict[str, Any]] = db[collection]
        self._cipher = cipher
        self._fields = tuple(fields)
        self._projection = dict.fromkeys(self._fields, 1)
        self._write_guard = guard if guard is not None else WriteGuard(db)

    async def check(self) -> KeyCheck:
        """Count the accounts whose tokens are under the first key, an older one, or none."""
        report = KeyCheck(keys=self._cipher.key_count)
        async for doc in self._documents():
            state, oldest = self._state(self._ciphertexts(doc))
            if state is KeyState.CURRENT:
                report.current += 1
            elif state is KeyState.OLDER:
                report.older += 1
                report.older_by_key[oldest + 1] = report.older_by_key.get(oldest + 1, 0) + 1
            elif state is KeyState.UNDECRYPTABLE:
                report.undecryptable += 1
                report.undecryptable_accounts.append(str(doc["_id"]))
            else:
                report.no_tokens += 1
        return report

    async def rotate(self, *, dry_run: bool = False, between: BetweenReadAndWrite | None = None) -> Rotation:
        """Re-encrypt every account's tokens that are under an older key, under the first one.

        Idempotent: an account already under the first key is counted and left alone. An account
        some token of which no key opens is left alone too (counted undecryptable): rotating its
        other token would not make it usable, and the operator may still add the missing key."""
        report = Rotation(dry_run=dry_run)
        async for doc in self._documents():
            await self._rotate_one(doc, report, dry_run=dry_run, between=between)
        return report

    async def _rotate_one(
        self,
        doc: Mapping[str, Any] | None,
        report: Rotation,
        *,
        dry_run: bool,
        between: BetweenReadAndWrite | None,
    ) -> None:
        account_id = "" if doc is None else str(doc["_id"])
        for _ in range(MAX_ATTEMPTS):
            if doc is None:
                return  # deleted since the listing: nothing left to rotate
            read = self._ciphertexts(doc)
            state, _oldest = self._state(read)
            if state is KeyState.CURRENT:
                report.current += 1
                return
            if state is KeyState.NO_TOKENS:
                report.no_tokens += 1
                return
            if state is KeyState.UNDECRYPTABLE:
                report.undecryptable += 1
                report.undecryptable_accounts.append(account_id)
                return
            if dry_run:
                report.rotated += 1
                return
            fresh = {f: self._cipher.rotate(c) for f, c in read.items() if self._cipher.key_index(c) != 0}
            if between is not None:
                await between(account_id)
            # The guard: the document still holds exactly what we read, every token field of it
            # (an absent or null one included), or the update matches nothing.
            expected = {f: doc.get(f) for f in self._fields}
            async with self._write_guard.document(self._name, account_id):
                with translate_errors("re-encrypt an account's tokens"):
                    result = await self._col.update_one({"_id": account_id, **expected}, {"$set": fresh})
            if result.matched_count == 1:
                report.rotated += 1
                return
            report.conflicts += 1
            with translate_errors("read an account's tokens"):
                doc = await self._col.find_one({"_id": account_id}, self._projection)
        report.skipped += 1
        report.skipped_accounts.append(account_id)

    def _documents(self) -> AsyncCursor[dict[str, Any]]:
        """Every account, its token fields only, in _id order (a stable walk)."""
        return self._col.find({}, self._projection).sort("_id", 1)

    def _ciphertexts(self, doc: Mapping[str, Any]) -> dict[str, str]:
        """The token fields that hold a ciphertext (a cleared token is null or absent)."""
        return {f: v for f in self._fields if isinstance(v := doc.get(f), str) and v}

    def _state(self, ciphertexts: Mapping[str, str]) -> tuple[KeyState, int]:
        """The account's state, and the position of the oldest key its tokens need (0: the first)."""
        if not ciphertexts:
            return KeyState.NO_TOKENS, 0
        indexes = [self._cipher.key_index(c) for c in ciphertexts.values()]
        if any(i is None for i in indexes):
            return KeyState.UNDECRYPTABLE, 0
        oldest = max(i for i in indexes if i is not None)
        return (KeyState.CURRENT if oldest == 0 else KeyState.OLDER), oldest
