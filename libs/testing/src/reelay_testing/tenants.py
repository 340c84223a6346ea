"""A fake of ports.TenantStore in dicts, written from the port's contract (the contract suite in
tests/integration/platform runs the same assertions on it and on MongoTenantStore)."""

from __future__ import annotations

from reelay_common.domain.api_keys import (
    KEY_LABEL_MAX,
    TENANT_NAME_MAX,
    ApiKeyRecord,
    NewApiKey,
    TenantExistsError,
    TenantRecord,
    UnknownApiKeyError,
    UnknownTenantError,
    check_key_id,
    check_text,
    default_tenant,
)
from reelay_common.domain.tenancy import DEFAULT_TENANT, check_tenant_id

from reelay_testing.roundtrip import stored_now


class FakeTenantStore:
    """ports.TenantStore in dicts: `keys` holds the records (digests), never a key."""

    def __init__(self) -> None:
        self.tenants: dict[str, TenantRecord] = {}
        self.keys: dict[str, ApiKeyRecord] = {}

    async def create_tenant(self, tenant_id: str, *, name: str | None = None) -> TenantRecord:
        check_tenant_id(tenant_id)
        name = check_text(name, what="tenant name", limit=TENANT_NAME_MAX)
        if tenant_id == DEFAULT_TENANT or tenant_id in self.tenants:
            raise TenantExistsError(f"tenant {tenant_id!r} exists already")
        self.tenants[tenant_id] = TenantRecord(tenant_id=tenant_id, name=name, created_at=stored_now())
        return self.tenants[tenant_id]

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        return default_tenant() if tenant_id == DEFAULT_TENANT else self.tenants.get(tenant_id)

    async def list_tenants(self) -> list[TenantRecord]:
        return [default_tenant(), *(self.tenants[t] for t in sorted(self.tenants))]

    async def _known_tenant(self, tenant_id: str) -> None:
        check_tenant_id(tenant_id)
        if await self.get_tenant(tenant_id) is None:
            raise UnknownTenantError(f"no tenant {tenant_id!r}")

    async def create_key(self, tenant_id: str, *, label: str | None = None) -> tuple[ApiKeyRecord, NewApiKey]:
        label = check_text(label, what="key label", limit=KEY_LABEL_MAX)
        await self._known_tenant(tenant_id)
        record, new = ApiKeyRecord.issue(tenant_id, label=label, now=stored_now())
        self.keys[new.key_id] = record
        return record, new

    async def list_keys(self, tenant_id: str) -> list[ApiKeyRecord]:
        await self._known_tenant(tenant_id)
        mine = [k for k in self.keys.values() if k.tenant_id == tenant_id]
        return sorted(mine, key=lambda k: (k.created_at, k.key_id))

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        return self.keys.get(key_id)

    async def revoke_key(self, key_id: str) -> ApiKeyRecord:
        check_key_id(key_id)
        record = self.keys.get(key_id)
        if record is None:
            raise UnknownApiKeyError(f"no API key {key_id!r}")
        if record.revoked_at is None:
            record = self.keys[key_id] = record.model_copy(update={"revoked_at": stored_now()})
        return record
