"""MongoTokenKeys on the real Mongo-wire server: every stored token re-encrypted under the first key,
the same tokens afterwards, a concurrent refresh never overwritten, a second run a no-op."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.mongo.accounts import MongoAccountStore
from reelay_common.adapters.mongo.token_keys import MAX_ATTEMPTS, TOKEN_FIELDS, MongoTokenKeys
from reelay_common.adapters.mongo.write_guard import WriteGuard
from reelay_common.domain.tiktok import TokenGrant

NEW = SecretStr(Fernet.generate_key().decode())
OLD = SecretStr(Fernet.generate_key().decode())
LOST = SecretStr(Fernet.generate_key().decode())  # a key no longer configured

Db = AsyncDatabase[dict[str, Any]]


def grant(tag: str) -> TokenGrant:
    """A token pair (test values) whose tokens say which account and which generation they are."""
    return TokenGrant(
        access_token=f"act.{tag}.{uuid.uuid4().hex}",
        expires_in=86_400,
        open_id=f"open-{tag}",
        refresh_token=f"rft.{tag}.{uuid.uuid4().hex}",
        refresh_expires_in=86_400 * 30,
        scope="video.publish",
    )


def store(db: Db, *keys: SecretStr) -> MongoAccountStore:
    """The accounts as a service configured with `keys` sees them (the write locks forced on, as
    FerretDB needs: the same on MongoDB)."""
    return MongoAccountStore(db, TokenCipher(list(keys)), guard=WriteGuard(db, mode="always"))


def rotator(db: Db, *keys: SecretStr) -> MongoTokenKeys:
    return MongoTokenKeys(db, TokenCipher(list(keys)), guard=WriteGuard(db, mode="always"))


async def seed(db: Db, key: SecretStr, count: int, prefix: str) -> dict[str, TokenGrant]:
    """`count` accounts whose tokens were stored by a service holding only `key`."""
    grants = {f"{prefix}-{i}": grant(f"{prefix}-{i}") for i in range(count)}
    for account_id, g in grants.items():
        await store(db, key).upsert_tokens(account_id, g)
    return grants


async def raw(db: Db) -> dict[str, dict[str, Any]]:
    """Every account's stored token fields and version, as they are in the database."""
    return {
        str(d["_id"]): {f: d.get(f) for f in (*TOKEN_FIELDS, "token_version")}
        async for d in db["accounts"].find({})
    }


async def assert_under_first_key(db: Db, grants: dict[str, TokenGrant]) -> None:
    """A service holding only NEW reads every account's tokens, and they are the ones stored."""
    only_new = store(db, NEW)
    for account_id, g in grants.items():
        tokens = await only_new.get_tokens(account_id)
        assert tokens is not None
        assert (tokens.access_token, tokens.refresh_token) == (g.access_token, g.refresh_token), account_id


class TestRotate:
    async def test_every_account_ends_under_the_first_key_with_the_same_tokens(self, mongo_db: Db) -> None:
        old = await seed(mongo_db, OLD, 4, "old")
        new = await seed(mongo_db, NEW, 2, "new")
        before = await raw(mongo_db)

        report = await rotator(mongo_db, NEW, OLD).rotate()

        assert (report.rotated, report.current, report.skipped, report.undecryptable) == (4, 2, 0, 0)
        assert report.complete
        await assert_under_first_key(mongo_db, {**old, **new})
        after = await raw(mongo_db)
        for account_id in old:
            assert after[account_id]["access_token_enc"] != before[account_id]["access_token_enc"]
            # The tokens are the same, so the refresh bookkeeping must not see a new version.
            assert after[account_id]["token_version"] == before[account_id]["token_version"]
        for account_id in new:
            assert after[account_id] == before[account_id], "a current account was rewritten"

    async def test_a_second_run_changes_nothing(self, mongo_db: Db) -> None:
        await seed(mongo_db, OLD, 3, "old")
        keys = rotator(mongo_db, NEW, OLD)
        await keys.rotate()
        once = await raw(mongo_db)

        again = await keys.rotate()

        assert (again.rotated, again.current, again.conflicts) == (0, 3, 0)
        assert await raw(mongo_db) == once

    async def test_a_dry_run_counts_and_writes_nothing(self, mongo_db: Db) -> None:
        await seed(mongo_db, OLD, 3, "old")
        await seed(mongo_db, NEW, 1, "new")
        before = await raw(mongo_db)

        report = await rotator(mongo_db, NEW, OLD).rotate(dry_run=True)

        assert (report.dry_run, report.rotated, report.current) == (True, 3, 1)
        assert await raw(mongo_db) == before

    async def test_an_account_under_no_configured_key_is_reported_and_left_alone(self, mongo_db: Db) -> None:
        old = await seed(mongo_db, OLD, 2, "old")
        await seed(mongo_db, LOST, 1, "lost")
        before = await raw(mongo_db)

        report = await rotator(mongo_db, NEW, OLD).rotate()

        assert (report.rotated, report.undecryptable, report.undecryptable_accounts) == (2, 1, ["lost-0"])
        assert not report.complete
        assert (await raw(mongo_db))["lost-0"] == before["lost-0"]
        await assert_under_first_key(mongo_db, old)

    async def test_an_account_without_tokens_is_counted_apart(self, mongo_db: Db) -> None:
        await seed(mongo_db, OLD, 2, "old")
        await store(mongo_db, OLD).mark_disconnected("old-1")  # disconnecting clears the tokens

        report = await rotator(mongo_db, NEW, OLD).rotate()

        assert (report.rotated, report.no_tokens) == (1, 1)


class TestRotateWhileServicesRun:
    """A refresh landing between the rotation's read of an account and its write."""

    async def refresh(self, db: Db, account_id: str, *keys: SecretStr) -> TokenGrant:
        """What MongoTokenProvider does on a refresh: take the lock, store the new pair."""
        accounts = store(db, *keys)
        tokens = await accounts.get_tokens(account_id)
        assert tokens is not None
        locked = await accounts.try_lock_refresh(
            account_id, owner="refresher", expect_version=tokens.token_version, lock_seconds=30
        )
        assert locked is not None
        fresh = grant(f"{account_id}-refreshed")
        await accounts.store_refreshed(account_id, owner="refresher", grant=fresh)
        return fresh

    @pytest.mark.parametrize(
        ("writer_keys", "rotated", "current"),
        [
            pytest.param((NEW, OLD), 0, 1, id="by-a-service-with-the-new-keys"),
            pytest.param((OLD,), 1, 0, id="by-a-service-not-restarted-yet"),
        ],
    )
    async def test_a_concurrent_refresh_is_not_overwritten(
        self, mongo_db: Db, writer_keys: tuple[SecretStr, ...], rotated: int, current: int
    ) -> None:
        grants = await seed(mongo_db, OLD, 1, "acct")
        refreshed: dict[str, TokenGrant] = {}

        async def refresh_once(account_id: str) -> None:
            if account_id not in refreshed:
                refreshed[account_id] = await self.refresh(mongo_db, account_id, *writer_keys)

        report = await rotator(mongo_db, NEW, OLD).rotate(between=refresh_once)

        # The rotation's write found other ciphertexts than it had read, matched nothing, and read
        # the account again: under the first key already (nothing to do) or still under the old.
        assert report.conflicts == 1
        assert (report.rotated, report.current, report.skipped) == (rotated, current, 0)
        assert refreshed["acct-0"].access_token != grants["acct-0"].access_token
        await assert_under_first_key(mongo_db, refreshed)

    async def test_an_account_that_keeps_changing_is_skipped_not_overwritten(self, mongo_db: Db) -> None:
        await seed(mongo_db, OLD, 2, "acct")
        last: dict[str, TokenGrant] = {}

        async def refresh_always(account_id: str) -> None:
            if account_id == "acct-0":  # a writer under the old key, every single time
                last[account_id] = await self.refresh(mongo_db, account_id, OLD)

        report = await rotator(mongo_db, NEW, OLD).rotate(between=refresh_always)

        assert (report.rotated, report.skipped, report.skipped_accounts) == (1, 1, ["acct-0"])
        assert report.conflicts == MAX_ATTEMPTS
        tokens = await store(mongo_db, OLD).get_tokens("acct-0")
        assert tokens is not None
        assert tokens.access_token == last["acct-0"].access_token, "the latest refresh was overwritten"


class TestCheck:
    async def test_counts_accounts_by_the_key_their_tokens_are_under(self, mongo_db: Db) -> None:
        older = SecretStr(Fernet.generate_key().decode())
        await seed(mongo_db, NEW, 2, "new")
        await seed(mongo_db, OLD, 3, "old")
        await seed(mongo_db, older, 1, "older")
        await seed(mongo_db, LOST, 1, "lost")
        await seed(mongo_db, OLD, 1, "gone")
        await store(mongo_db, OLD).mark_disconnected("gone-0")

        report = await rotator(mongo_db, NEW, OLD, older).check()

        assert report.as_json() == {
            "keys": 3,
            "current": 2,
            "older": 4,
            "undecryptable": 1,
            "no_tokens": 1,
            "older_by_key": {"2": 3, "3": 1},
            "undecryptable_accounts": ["lost-0"],
        }

    async def test_after_a_rotation_everything_is_under_the_first_key(self, mongo_db: Db) -> None:
        await seed(mongo_db, OLD, 3, "old")
        keys = rotator(mongo_db, NEW, OLD)
        assert (await keys.check()).older == 3

        await keys.rotate()

        report = await keys.check()
        assert (report.current, report.older, report.undecryptable) == (3, 0, 0)
