"""The TikTok adapters implement the ports handlers use (checked by mypy and at run time)."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.mongo.accounts import MongoAccountStore
from reelay_common.adapters.mongo.rate_limits import MongoRateLimiter
from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.adapters.tiktok.gateway import TikTokGateway
from reelay_common.adapters.tiktok.tokens import MongoTokenProvider
from reelay_common.ports import AccountStore, RateLimiter, TikTokApi, TokenProvider
from reelay_common.settings import DEV_TOKEN_KEY
from reelay_testing.tokens import FakeRateLimiter


class TestAdaptersFitThePorts:
    async def test_each_adapter_is_its_port(self) -> None:
        # No I/O: a Mongo client connects lazily and is never used here.
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient("mongodb://127.0.0.1:1", connect=False)
        db = mongo["unused"]
        async with httpx.AsyncClient() as http:
            client = TikTokClient(
                http, base_url="https://x.test", client_key="k", client_secret=SecretStr("s")
            )
            store: AccountStore = MongoAccountStore(db, TokenCipher(SecretStr(DEV_TOKEN_KEY)))
            assert isinstance(store, MongoAccountStore)
            tokens: TokenProvider = MongoTokenProvider(store, client)
            limiter: RateLimiter = MongoRateLimiter(db)
            api: TikTokApi = TikTokGateway(client, tokens, FakeRateLimiter())
            for port_method in ("creator_info", "init_upload", "fetch_status", "upload_chunks"):
                assert callable(getattr(api, port_method))
            assert callable(limiter.acquire)
        await mongo.close()
