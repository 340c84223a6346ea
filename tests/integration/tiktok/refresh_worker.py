"""A separate process asking for one account's token (used by the cross-process refresh test).

argv: MONGODB_URI DB_NAME ACCOUNT_ID SANDBOX_BASE_URL TASKS. Prints "ready" once connected, waits for
a line on stdin (the starting gun, fired at every process at once), runs TASKS concurrent
`access_token` calls and prints the tokens as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
from pydantic import SecretStr
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.mongo.accounts import MongoAccountStore
from reelay_common.adapters.mongo.client import connect
from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.adapters.tiktok.tokens import MongoTokenProvider
from reelay_common.settings import DEV_TOKEN_KEY


async def main(uri: str, db_name: str, account_id: str, base_url: str, tasks: int) -> None:
    client = connect(uri, app_name="reelay-refresh-worker")
    try:
        async with httpx.AsyncClient(timeout=30.0) as http:
            tiktok = TikTokClient(
                http,
                base_url=base_url,
                client_key="dev-client-key",
                client_secret=SecretStr("dev-client-secret"),
            )
            store = MongoAccountStore(client[db_name], TokenCipher(SecretStr(DEV_TOKEN_KEY)))
            providers = [MongoTokenProvider(store, tiktok, poll_interval_seconds=0.02) for _ in range(tasks)]
            await store.get(account_id)  # connect before the start line, so the race is a race
            await store.try_lock_refresh("warm-up", owner="-", expect_version=0, lock_seconds=0)
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            tokens = await asyncio.gather(*(p.access_token(account_id) for p in providers))
    finally:
        await client.close()
    print(json.dumps(tokens))


if __name__ == "__main__":
    uri, db_name, account_id, base_url, tasks = sys.argv[1:6]
    asyncio.run(main(uri, db_name, account_id, base_url, int(tasks)))
