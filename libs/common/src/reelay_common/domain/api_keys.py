"""Tenants' API keys: their format, their digest, and the records kept of tenants and keys.

A key is `rly_<key_id>_<secret>`: `key_id` is public (it names the key in listings, logs and
`reelay-admin keys revoke`) and finds the key's record in one read; the secret is 32 random bytes.
Only the SHA-256 digest of the whole key is stored. A key this random needs no slow password hash
(nobody can guess 256 bits, however fast each guess), so a plain digest, compared in constant time,
is the right tool (docs/architecture.md, "Tenants").
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from reelay_common.domain.tenancy import DEFAULT_TENANT

KEY_PREFIX: Final = "rly"
KEY_ID_BYTES: Final = 8  # 16 hex characters: unique enough to name a key, and public anyway
SECRET_BYTES: Final = 32
KEY_LABEL_MAX: Final = 100
TENANT_NAME_MAX: Final = 200

_KEY = re.compile(
    rf"^{KEY_PREFIX}_(?P<key_id>[0-9a-f]{{{2 * KEY_ID_BYTES}}})_(?P<secret>[A-Za-z0-9_-]{{43}})$"
)
KEY_ID_PATTERN: Final = rf"^[0-9a-f]{{{2 * KEY_ID_BYTES}}}$"


class UnknownTenantError(LookupError):
    """No tenant has this id."""


class TenantExistsError(ValueError):
    """A tenant with this id exists already."""


class UnknownApiKeyError(LookupError):
    """No API key has this key id."""


@dataclass(frozen=True)
class NewApiKey:
    """A key just made: `key` is the only time its secret exists outside the client's hands."""

    key_id: str
    key: str

    def __repr__(self) -> str:  # never the secret, in logs or tracebacks
        return f"NewApiKey(key_id={self.key_id!r})"


def new_api_key() -> NewApiKey:
    """A fresh random key and its id."""
    key_id = secrets.token_hex(KEY_ID_BYTES)
    return NewApiKey(key_id=key_id, key=f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}")


def key_id_of(presented: str) -> str | None:
    """The key id of a presented key in the tenants' format, or None (another kind of key)."""
    match = _KEY.fullmatch(presented)
    return match["key_id"] if match is not None else None


def key_digest(key: str) -> str:
    """What is stored of a key: the hex SHA-256 of the whole key."""
    return hashlib.sha256(key.encode()).hexdigest()


def digest_matches(presented: str, digest: str) -> bool:
    """Whether `presented` is the key of `digest`, compared in constant time."""
    return hmac.compare_digest(key_digest(presented).encode(), digest.encode())


class TenantRecord(BaseModel):
    """The `tenants` document: one upstream team."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    tenant_id: str = Field(alias="_id")
    name: str | None = None
    created_at: datetime


class ApiKeyRecord(BaseModel):
    """The `api_keys` document: a tenant's key, by its public id; the digest only, never the key."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    key_id: str = Field(alias="_id")
    tenant_id: str = DEFAULT_TENANT
    digest: str = Field(repr=False)
    label: str | None = None
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked (it lets nobody in any more)."""
        return self.revoked_at is not None

    @classmethod
    def issue(cls, tenant_id: str, *, label: str | None, now: datetime) -> tuple[ApiKeyRecord, NewApiKey]:
        """A new key of `tenant_id` (its `label` checked already, with `check_text`): the record to
        store, holding the key's digest only, and the key to show once."""
        new = new_api_key()
        record = cls(
            key_id=new.key_id, tenant_id=tenant_id, digest=key_digest(new.key), label=label, created_at=now
        )
        return record, new


# The default tenant exists without a document: it owns INGEST_API_KEYS and every id stored before
# tenants. This is what it looks like in a listing.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def default_tenant() -> TenantRecord:
    """The default tenant, as listed."""
    return TenantRecord(tenant_id=DEFAULT_TENANT, name="default (INGEST_API_KEYS)", created_at=_EPOCH)


def check_text(value: str | None, *, what: str, limit: int) -> str | None:
    """`value` stripped (None when empty), or ValueError when longer than `limit` or not printable."""
    if value is None:
        return None
    value = value.strip()
    if len(value) > limit:
        raise ValueError(f"the {what} is longer than {limit} characters")
    if not value.isprintable():
        raise ValueError(f"the {what} must be printable text")
    return value or None


def check_key_id(key_id: str) -> str:
    """`key_id` if it looks like a key id, else ValueError saying what one looks like."""
    if not re.fullmatch(KEY_ID_PATTERN, key_id):
        raise ValueError(f"key id {key_id!r} is not valid: {2 * KEY_ID_BYTES} lowercase hex characters")
    return key_id
