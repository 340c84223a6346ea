"""The `oauth_states` collection: connects started and not yet completed (ports.OAuthStateStore).

Each document is keyed by the SHA-256 of its `state` (the state itself is never stored) and holds
the tenant, the account, the scopes asked for and the PKCE verifier (encrypted with the token
cipher). A state is consumed by one atomic find_one_and_delete, so it works once however many
callbacks race. FerretDB has no TTL indexes: an expired state is refused when it comes back, and
the expired ones are pruned whenever a connect starts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.mongo.accounts import as_aware_utc
from reelay_common.adapters.mongo.client import translate_errors
from reelay_common.domain.messages import utcnow
from reelay_common.domain.oauth import PendingConnect, state_hash
from reelay_common.logging import get_logger

log = get_logger("reelay_common.adapters.mongo.oauth_states")

Clock = Callable[[], datetime]


class MongoOAuthStateStore:
    """Pending connects by state hash (implements ports.OAuthStateStore)."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        cipher: TokenCipher,
        *,
        collection: str = "oauth_states",
        clock: Clock = utcnow,
    ) -> None:
        self._col: AsyncCollection[dict[str, Any]] = db[collection]
        self._cipher = cipher
        self._clock = clock

    async def put(self, state: str, pending: PendingConnect) -> None:
        """Keep `pending` under the hash of `state` (and prune the expired ones)."""
        await self.prune()
        doc = {
            "_id": state_hash(state),
            "tenant_id": pending.tenant_id,
            "account_id": pending.account_id,
            "scopes": list(pending.scopes),
            "redirect_uri": pending.redirect_uri,
            "expires_at": pending.expires_at,
            "code_verifier_enc": (
                self._cipher.encrypt(pending.code_verifier) if pending.code_verifier is not None else None
            ),
            "created_at": self._clock(),
        }
        with translate_errors("store an OAuth state"):
            await self._col.insert_one(doc)

    async def take(
        self, state: str, *, tenant_id: str | None = None, account_id: str | None = None
    ) -> PendingConnect | None:
        """The pending connect of `state`, removed in the same step; None when there is none
        (forged, or used already) or it has expired. With `tenant_id` / `account_id`, a state of
        another tenant or account is not found (and stays for its owner)."""
        query: dict[str, Any] = {"_id": state_hash(state)}
        if tenant_id is not None:
            query["tenant_id"] = tenant_id
        if account_id is not None:
            query["account_id"] = account_id
        with translate_errors("consume an OAuth state"):
            doc = await self._col.find_one_and_delete(query)
        if doc is None:
            return None
        expires_at = as_aware_utc(doc["expires_at"])
        if expires_at is None or expires_at <= self._clock():
            log.info("oauth_state_expired", tenant_id=doc.get("tenant_id"), account_id=doc.get("account_id"))
            return None
        verifier = doc.get("code_verifier_enc")
        return PendingConnect(
            tenant_id=str(doc["tenant_id"]),
            account_id=str(doc["account_id"]),
            scopes=tuple(doc.get("scopes", ())),
            redirect_uri=str(doc["redirect_uri"]),
            expires_at=expires_at,
            code_verifier=self._cipher.decrypt(verifier) if verifier else None,
        )

    async def prune(self) -> int:
        """Delete the expired states; how many went."""
        with translate_errors("prune OAuth states"):
            result = await self._col.delete_many({"expires_at": {"$lte": self._clock()}})
        return int(result.deleted_count)
