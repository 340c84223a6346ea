"""The `tenants` and `api_keys` collections (implements ports.TenantStore).

`tenants`: `{_id: tenant_id, name, created_at}`. `api_keys`: `{_id: key_id, tenant_id, digest,
label, created_at, revoked_at}`; a presented key is found by its public key id (a read by `_id`),
then its digest compared in constant time. The key itself is never stored (docs/architecture.md,
"Tenants")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from reelay_common.adapters.mongo.client import bson_now, translate_errors
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

TENANTS = "tenants"
API_KEYS = "api_keys"


class MongoTenantStore:
    """Tenants and their API keys in MongoDB."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        tenants: str = TENANTS,
        api_keys: str = API_KEYS,
        clock: Callable[[], datetime] = bson_now,
    ) -> None:
        self._tenants = db[tenants]
        self._keys = db[api_keys]
        self._clock = clock

    async def create_tenant(self, tenant_id: str, *, name: str | None = None) -> TenantRecord:
        check_tenant_id(tenant_id)
        name = check_text(name, what="tenant name", limit=TENANT_NAME_MAX)
        if tenant_id == DEFAULT_TENANT:
            raise TenantExistsError(f"tenant {tenant_id!r} exists already (it always does)")
        record = TenantRecord(tenant_id=tenant_id, name=name, created_at=self._clock())
        try:
            with translate_errors("create a tenant"):
                await self._tenants.insert_one(record.model_dump(by_alias=True))
        except DuplicateKeyError:
            raise TenantExistsError(f"tenant {tenant_id!r} exists already") from None
        return record

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        if tenant_id == DEFAULT_TENANT:
            return default_tenant()
        with translate_errors("read a tenant"):
            doc = await self._tenants.find_one({"_id": tenant_id})
        return TenantRecord.model_validate(doc) if doc is not None else None

    async def list_tenants(self) -> list[TenantRecord]:
        with translate_errors("list tenants"):
            docs = await self._tenants.find({}).sort([("_id", ASCENDING)]).to_list(None)
        return [default_tenant(), *(TenantRecord.model_validate(d) for d in docs)]

    async def _known_tenant(self, tenant_id: str) -> None:
        check_tenant_id(tenant_id)
        if await self.get_tenant(tenant_id) is None:
            raise UnknownTenantError(f"no tenant {tenant_id!r}; create it with `reelay-admin tenants create`")

    async def create_key(self, tenant_id: str, *, label: str | None = None) -> tuple[ApiKeyRecord, NewApiKey]:
        label = check_text(label, what="key label", limit=KEY_LABEL_MAX)
        await self._known_tenant(tenant_id)
        record, new = ApiKeyRecord.issue(tenant_id, label=label, now=self._clock())
        with translate_errors("create an API key"):
            await self._keys.insert_one(record.model_dump(by_alias=True))
        return record, new

    async def list_keys(self, tenant_id: str) -> list[ApiKeyRecord]:
        await self._known_tenant(tenant_id)
        with translate_errors("list API keys"):
            docs = (
                await self._keys.find({"tenant_id": tenant_id})
                .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
                .to_list(None)
            )
        return [ApiKeyRecord.model_validate(d) for d in docs]

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        with translate_errors("read an API key"):
            doc = await self._keys.find_one({"_id": key_id})
        return ApiKeyRecord.model_validate(doc) if doc is not None else None

    async def revoke_key(self, key_id: str) -> ApiKeyRecord:
        check_key_id(key_id)
        with translate_errors("revoke an API key"):
            await self._keys.update_one(
                {"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": self._clock()}}
            )
            doc = await self._keys.find_one({"_id": key_id})
        if doc is None:
            raise UnknownApiKeyError(f"no API key {key_id!r}")
        return ApiKeyRecord.model_validate(doc)
