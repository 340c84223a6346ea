"""One TenantStore contract for the fake and the real Mongo store (docs/architecture.md, "Tenants")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.mongo.client import ensure_indexes
from reelay_common.adapters.mongo.tenants import MongoTenantStore
from reelay_common.domain.api_keys import (
    TenantExistsError,
    UnknownApiKeyError,
    UnknownTenantError,
    digest_matches,
    key_digest,
    key_id_of,
)
from reelay_common.ports import TenantStore
from reelay_testing.tenants import FakeTenantStore


@pytest.fixture
async def indexed_db(mongo_db: AsyncDatabase[dict[str, Any]]) -> AsyncDatabase[dict[str, Any]]:
    await ensure_indexes(mongo_db)
    return mongo_db


@pytest.fixture(params=["memory", "mongo"])
def store(request: pytest.FixtureRequest) -> TenantStore:
    """The fake and the real store: every test below runs against both."""
    if request.param == "memory":
        return FakeTenantStore()
    return MongoTenantStore(request.getfixturevalue("indexed_db"))


class TestTenants:
    async def test_a_tenant_is_created_once_and_listed_after_the_default_one(
        self, store: TenantStore
    ) -> None:
        created = await store.create_tenant("team-b", name="Team B")
        await store.create_tenant("team-a")
        assert (created.tenant_id, created.name) == ("team-b", "Team B")
        assert await store.get_tenant("team-b") == created
        assert [t.tenant_id for t in await store.list_tenants()] == ["default", "team-a", "team-b"]
        with pytest.raises(TenantExistsError, match="team-b"):
            await store.create_tenant("team-b")

    async def test_the_default_tenant_always_exists(self, store: TenantStore) -> None:
        assert await store.get_tenant("default") is not None
        with pytest.raises(TenantExistsError):
            await store.create_tenant("default")

    @pytest.mark.parametrize("bad", ["", "Team-A", "-a", "a_b", "a" * 41, "a~b"])
    async def test_a_bad_tenant_id_is_refused(self, store: TenantStore, bad: str) -> None:
        with pytest.raises(ValueError, match="tenant id"):
            await store.create_tenant(bad)
        assert [t.tenant_id for t in await store.list_tenants()] == ["default"]

    async def test_concurrent_creates_make_one_tenant(self, store: TenantStore) -> None:
        results = await asyncio.gather(
            *(store.create_tenant("team-a") for _ in range(5)), return_exceptions=True
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        assert all(isinstance(r, TenantExistsError) for r in results if isinstance(r, BaseException))


class TestKeys:
    async def test_a_key_is_returned_once_and_only_its_digest_is_kept(self, store: TenantStore) -> None:
        await store.create_tenant("team-a")
        record, new = await store.create_key("team-a", label="ci")
        assert new.key.startswith(f"rly_{record.key_id}_")
        assert key_id_of(new.key) == record.key_id
        assert new.key not in repr(new)
        assert record.digest == key_digest(new.key)
        assert digest_matches(new.key, record.digest)
        stored = await store.get_key(record.key_id)
        assert stored == record
        assert new.key not in stored.model_dump_json()
        assert (stored.tenant_id, stored.label, stored.revoked) == ("team-a", "ci", False)

    async def test_a_tenant_has_several_keys_and_lists_them_oldest_first(self, store: TenantStore) -> None:
        await store.create_tenant("team-a")
        await store.create_tenant("team-b")
        first, _ = await store.create_key("team-a")
        await asyncio.sleep(0.005)
        second, _ = await store.create_key("team-a")
        await store.create_key("team-b")
        assert [k.key_id for k in await store.list_keys("team-a")] == [first.key_id, second.key_id]
        assert first.key_id != second.key_id

    async def test_keys_of_an_unknown_tenant_are_refused(self, store: TenantStore) -> None:
        with pytest.raises(UnknownTenantError, match="nobody"):
            await store.create_key("nobody")
        with pytest.raises(UnknownTenantError):
            await store.list_keys("nobody")

    async def test_the_default_tenant_may_have_keys_of_its_own(self, store: TenantStore) -> None:
        record, _ = await store.create_key("default")
        assert record.tenant_id == "default"

    async def test_a_revoked_key_stays_revoked_at_its_first_time(self, store: TenantStore) -> None:
        await store.create_tenant("team-a")
        record, _ = await store.create_key("team-a")
        revoked = await store.revoke_key(record.key_id)
        assert revoked.revoked
        assert revoked.revoked_at is not None
        again = await store.revoke_key(record.key_id)
        assert again.revoked_at == revoked.revoked_at
        [listed] = await store.list_keys("team-a")
        assert listed.revoked

    async def test_revoking_an_unknown_or_malformed_key_id_is_refused(self, store: TenantStore) -> None:
        with pytest.raises(UnknownApiKeyError):
            await store.revoke_key("0123456789abcdef")
        with pytest.raises(ValueError, match="key id"):
            await store.revoke_key("not-a-key-id")


async def test_the_mongo_store_keeps_no_key_anywhere(mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    store = MongoTenantStore(mongo_db)
    await store.create_tenant("team-a")
    _, new = await store.create_key("team-a", label="ci")
    dump = [await mongo_db[name].find({}).to_list(None) for name in ("tenants", "api_keys")]
    assert new.key not in repr(dump)
    secret = new.key.split("_", 2)[2]
    assert secret not in repr(dump)
    [doc] = await mongo_db["api_keys"].find({}).to_list(None)
    assert set(doc) == {"_id", "tenant_id", "digest", "label", "created_at", "revoked_at"}
