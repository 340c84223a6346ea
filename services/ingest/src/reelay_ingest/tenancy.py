"""Who is calling: the tenant an API key belongs to (docs/architecture.md, "Tenants").

Every /v1 route depends on `current_tenant`; a route that reads or writes a tenant's accounts or
uploads takes `TenantDep` and scopes every id it is given with `reelay_common.domain.tenancy.scoped`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from reelay_common.domain.tenancy import scoped
from reelay_common.logging import bind_learned

from reelay_ingest.context import AppContext
from reelay_ingest.problems import Unauthorized


@dataclass(frozen=True)
class Tenant:
    """The tenant of the request's API key."""

    id: str

    def key(self, local_id: str) -> str:
        """The stored key of this tenant's `local_id` (an account_id or a request_id)."""
        return scoped(self.id, local_id)


def context_of(request: Request) -> AppContext:
    """The app's AppContext (set by create_app)."""
    return cast(AppContext, request.app.state.context)


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")


async def current_tenant(
    context: Annotated[AppContext, Depends(context_of)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Tenant:
    """The tenant of the presented API key; 401 without a valid one.

    The keys configured in INGEST_API_KEYS belong to the default tenant; a tenant's own keys
    (`reelay-admin keys create`) to theirs (`reelay_ingest.keyring`).
    """
    if credentials is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer <key>")
    tenant_id = await context.keys.tenant_of(credentials.credentials)
    if tenant_id is None:
        raise Unauthorized("the API key is not valid")
    bind_learned(tenant_id=tenant_id)
    return Tenant(tenant_id)


TenantDep = Annotated[Tenant, Depends(current_tenant)]
