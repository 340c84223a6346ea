"""Tenants: one upstream team each; every account and upload belongs to exactly one.

A client names its accounts and uploads with ids of its own (`account_id`, `request_id`). Two
tenants may choose the same id, so what Reelay stores and keys Kafka by is the id *scoped* to its
tenant (docs/architecture.md, "Tenants"). The default tenant's ids are stored as they are, so a
deployment with one tenant, and every document written before tenants existed, keeps its keys.
"""

from __future__ import annotations

import re
from typing import Final

DEFAULT_TENANT: Final = "default"
TENANT_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,39}$"
# Never part of a client's id (the API's id pattern is [A-Za-z0-9._:-]), so a scoped key splits
# back into its tenant and id without ambiguity.
SCOPE_SEPARATOR: Final = "~"

_TENANT_ID = re.compile(TENANT_ID_PATTERN)


def check_tenant_id(tenant_id: str) -> str:
    """`tenant_id` if it is a valid tenant id, else ValueError saying what one looks like."""
    if not _TENANT_ID.fullmatch(tenant_id):
        raise ValueError(
            f"tenant id {tenant_id!r} is not valid: 1-40 lowercase letters, digits or '-', "
            "not starting with '-'"
        )
    return tenant_id


def scoped(tenant_id: str, local_id: str) -> str:
    """The stored key of `local_id` (an account_id or request_id) of `tenant_id`."""
    if SCOPE_SEPARATOR in local_id:
        raise ValueError(f"an id must not contain {SCOPE_SEPARATOR!r}: {local_id!r}")
    if tenant_id == DEFAULT_TENANT:
        return local_id
    return f"{check_tenant_id(tenant_id)}{SCOPE_SEPARATOR}{local_id}"


def split_scoped(key: str) -> tuple[str, str]:
    """(tenant_id, local id) of a stored key made by `scoped`."""
    tenant_id, sep, local_id = key.partition(SCOPE_SEPARATOR)
    if not sep:
        return DEFAULT_TENANT, key
    return tenant_id, local_id
