"""Specification of the key ring: which tenant a presented key belongs to, and what is stored of it."""

from __future__ import annotations

from reelay_common.domain.api_keys import key_digest
from reelay_ingest.keyring import KeyRing
from reelay_testing.tenants import FakeTenantStore


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def ring_with_key(*, cache_seconds: float = 10.0) -> tuple[KeyRing, FakeTenantStore, Clock, str, str]:
    store, clock = FakeTenantStore(), Clock()
    await store.create_tenant("team-a")
    record, new = await store.create_key("team-a", label="ci")
    ring = KeyRing(["configured-key"], store, cache_seconds=cache_seconds, clock=clock)
    return ring, store, clock, record.key_id, new.key


async def test_a_configured_key_is_the_default_tenants_and_a_created_one_its_tenants() -> None:
    ring, _, _, _, key = await ring_with_key()
    assert await ring.tenant_of("configured-key") == "default"
    assert await ring.tenant_of(key) == "team-a"


async def test_only_the_digest_is_stored_and_shown_once() -> None:
    _, store, _, key_id, key = await ring_with_key()
    [record] = await store.list_keys("team-a")
    assert record.digest == key_digest(key)
    assert key not in record.model_dump_json()
    assert key.split("_", 2)[2] not in record.model_dump_json()
    # Nothing gives it back: listing, reading and revoking return records, which hold no key.
    assert key not in (await store.get_key(key_id) or record).model_dump_json()
    assert key not in (await store.revoke_key(key_id)).model_dump_json()


async def test_a_wrong_secret_an_unknown_id_or_another_kind_of_key_lets_nobody_in() -> None:
    ring, _, _, key_id, key = await ring_with_key()
    assert await ring.tenant_of(f"rly_{key_id}_{'x' * 43}") is None
    assert await ring.tenant_of(f"rly_{'0' * 16}_{key.split('_', 2)[2]}") is None
    for other in ("", "configured-key ", "rly_", key + "x", key.upper()):
        assert await ring.tenant_of(other) is None


async def test_a_revoked_key_is_refused_once_the_cached_record_expires() -> None:
    ring, store, clock, key_id, key = await ring_with_key(cache_seconds=10)
    assert await ring.tenant_of(key) == "team-a"  # cached now
    await store.revoke_key(key_id)
    clock.now += 9  # within INGEST_API_KEY_CACHE_SECONDS: the documented latency
    assert await ring.tenant_of(key) == "team-a"
    clock.now += 2
    assert await ring.tenant_of(key) is None


async def test_without_a_cache_a_revoked_key_is_refused_at_once() -> None:
    ring, store, _, key_id, key = await ring_with_key(cache_seconds=0)
    assert await ring.tenant_of(key) == "team-a"
    await store.revoke_key(key_id)
    assert await ring.tenant_of(key) is None


async def test_a_new_key_works_at_once() -> None:
    ring, store, _, _, _ = await ring_with_key()
    _, fresh = await store.create_key("team-a")
    assert await ring.tenant_of(fresh.key) == "team-a"


async def test_without_a_store_only_the_configured_keys_let_anyone_in() -> None:
    _, _, _, _, key = await ring_with_key()
    ring = KeyRing(["configured-key"], None)
    assert await ring.tenant_of("configured-key") == "default"
    assert await ring.tenant_of(key) is None
