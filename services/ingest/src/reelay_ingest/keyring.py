"""Which tenant a presented API key belongs to (docs/architecture.md, "Tenants").

Two kinds of key let a caller in: those configured in INGEST_API_KEYS, which belong to the default
tenant (a single-tenant deployment needs nothing else), and tenants' keys made by
`reelay-admin keys create`, found by their public key id and checked against the stored digest.
A found key record is kept for `cache_seconds` (INGEST_API_KEY_CACHE_SECONDS), so a revoked key
still works on a replica that saw it within that time; unknown key ids are never cached, so a new
key works at once.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from reelay_common.domain.api_keys import ApiKeyRecord, digest_matches, key_id_of
from reelay_common.domain.tenancy import DEFAULT_TENANT
from reelay_common.ports import TenantStore

MAX_CACHED_KEYS = 10_000


class KeyRing:
    """Resolves a presented key to its tenant's id (None: the key lets nobody in)."""

    def __init__(
        self,
        configured: Sequence[str],
        store: TenantStore | None,
        *,
        cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._configured = tuple(k.encode() for k in configured)
        self._store = store
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, ApiKeyRecord]] = OrderedDict()

    async def tenant_of(self, presented: str) -> str | None:
        """The tenant of `presented`, or None for a key that is unknown, revoked or wrong."""
        given = presented.encode()
        # Compared against every configured key, without stopping at a match, so timing says nothing.
        if any([hmac.compare_digest(given, key) for key in self._configured]):
            return DEFAULT_TENANT
        key_id = key_id_of(presented)
        if key_id is None or self._store is None:
            return None
        record = await self._record(key_id)
        if record is None or record.revoked or not digest_matches(presented, record.digest):
            return None
        return record.tenant_id

    async def _record(self, key_id: str) -> ApiKeyRecord | None:
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        assert self._store is not None
        record = await self._store.get_key(key_id)
        if record is None:
            self._cache.pop(key_id, None)
            return None
        if self._cache_seconds > 0:
            self._cache[key_id] = (now + self._cache_seconds, record)
            self._cache.move_to_end(key_id)
            while len(self._cache) > MAX_CACHED_KEYS:
                self._cache.popitem(last=False)
        return record
