"""Helpers for the TikTok layer's integration tests: a file-backed reader and the wired-up layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.mongo.accounts import MongoAccountStore
from reelay_common.adapters.mongo.rate_limits import MongoRateLimiter
from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.adapters.tiktok.gateway import TikTokGateway
from reelay_common.adapters.tiktok.tokens import MongoTokenProvider
from reelay_common.domain.tiktok import TokenGrant
from reelay_common.settings import DEV_TOKEN_KEY

SANDBOX_CLIENT_KEY = "dev-client-key"
SANDBOX_CLIENT_SECRET = "dev-client-secret"  # the sandbox's documented dev secret


@dataclass
class TikTokLayer:
    """The TikTok layer wired against one sandbox and one database, as a service would wire it."""

    http: httpx.AsyncClient
    client: TikTokClient
    store: MongoAccountStore
    tokens: MongoTokenProvider
    limiter: MongoRateLimiter
    gateway: TikTokGateway


def build_layer(
    http: httpx.AsyncClient,
    db: AsyncDatabase[dict[str, Any]],
    base_url: str,
    *,
    window_seconds: float = 60.0,
    safety_margin_seconds: float = 1.0,
    **gateway_options: Any,
) -> TikTokLayer:
    client = TikTokClient(
        http, base_url=base_url, client_key=SANDBOX_CLIENT_KEY, client_secret=SecretStr(SANDBOX_CLIENT_SECRET)
    )
    store = MongoAccountStore(db, TokenCipher(SecretStr(DEV_TOKEN_KEY)))
    tokens = MongoTokenProvider(store, client, poll_interval_seconds=0.05)
    limiter = MongoRateLimiter(db, window_seconds=window_seconds, safety_margin_seconds=safety_margin_seconds)
    gateway = TikTokGateway(
        client,
        tokens,
        limiter,
        backoff_initial=0.05,
        upload_backoff_initial=0.05,
        **gateway_options,
    )
    return TikTokLayer(http=http, client=client, store=store, tokens=tokens, limiter=limiter, gateway=gateway)


async def connect_account(
    layer: TikTokLayer,
    sandbox_base_url: str,
    account_id: str,
    *,
    username: str,
    expires_in: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """Create a sandbox user, get its tokens through the admin API, store them; returns (open_id, grant).

    With `expires_in`, the stored access token is recorded as expiring that soon (to force a refresh).
    """
    user = (await layer.http.post(f"{sandbox_base_url}/sandbox/users", json={"username": username})).json()
    open_id = user["open_id"]
    grant = (await layer.http.post(f"{sandbox_base_url}/sandbox/users/{open_id}/tokens")).json()
    await layer.store.upsert_tokens(
        account_id,
        TokenGrant.model_validate(grant if expires_in is None else {**grant, "expires_in": expires_in}),
    )
    return open_id, grant


async def sandbox_stats(http: httpx.AsyncClient, base_url: str) -> dict[str, Any]:
    response = await http.get(f"{base_url}/sandbox/stats")
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


async def sandbox_publishes(http: httpx.AsyncClient, base_url: str, open_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"{base_url}/sandbox/publishes", params={"open_id": open_id})
    response.raise_for_status()
    publishes: list[dict[str, Any]] = response.json()["publishes"]
    return publishes
