"""Must-show (issue 8): after an OAuth round trip, a refresh, a key rotation and a disconnect, with the
services running, no TikTok token (old or new, as the sandbox issued them) appears in clear in any
document of the database or in any Reelay service's log. Each step acts, then `ledger.collect`s the
tokens the sandbox issued; the search at the end covers all of them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from tiktok_sandbox.media import write_sample_mp4

from tests.e2e.flows import connect_account_via_oauth, post_video
from tests.e2e.stack import Stack, running_stack, wait_for_upload_state
from tests.e2e.token_audit import TokenLedger, assert_no_token_in_clear

pytestmark = pytest.mark.e2e

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
REELAY_PROCESSES = ("ingest", "uploader", "status-poller")


@pytest.fixture(scope="module")
def keyed_stack(
    kafka_bootstrap_servers: str, mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack of this module's own (its services get restarted with other keys), under OLD_KEY."""
    with running_stack(
        kafka_bootstrap_servers=kafka_bootstrap_servers,
        mongodb_uri=mongodb_uri,
        workdir=tmp_path_factory.mktemp("keyed-stack"),
        extra_env={"REELAY_TOKEN_ENCRYPTION_KEYS": OLD_KEY},
    ) as s:
        yield s


def restart_with_keys(stack: Stack, keys: str) -> None:
    """What an operator does: set the new key list, restart every Reelay service."""
    stack.env["REELAY_TOKEN_ENCRYPTION_KEYS"] = keys
    for name in REELAY_PROCESSES:
        stack.kill(name, signal.SIGTERM)
        stack.start(name)


def admin_tokens(stack: Stack, *args: str, keys: str) -> subprocess.CompletedProcess[str]:
    """`reelay-admin tokens ARGS` against the stack's database, as the operator runs it."""
    return subprocess.run(  # our own interpreter and module
        [sys.executable, "-m", "reelay_ingest.admin", "tokens", *args],
        env={**stack.env, "REELAY_TOKEN_ENCRYPTION_KEYS": keys},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def register_expiring(http: httpx.AsyncClient, stack: Stack) -> tuple[str, str]:
    """A sandbox user whose tokens are registered as if the access token expired in a second: the
    services refresh it on first use. (account_id, open_id)"""
    username = f"keys-{uuid.uuid4().hex[:8]}"
    resp = await http.post(f"{stack.sandbox_url}/sandbox/users", json={"username": username})
    resp.raise_for_status()
    open_id = resp.json()["open_id"]
    tokens = (await http.post(f"{stack.sandbox_url}/sandbox/users/{open_id}/tokens")).json()
    account_id = f"acct-{username}"
    resp = await http.post(
        f"{stack.ingest_url}/v1/accounts",
        headers=stack.headers,
        json={
            "account_id": account_id,
            "open_id": open_id,
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "expires_in": 1,
            "refresh_expires_in": tokens["refresh_expires_in"],
            "scope": tokens["scope"],
        },
    )
    assert resp.status_code == 201, resp.text
    return account_id, open_id


async def publish_once(http: httpx.AsyncClient, stack: Stack, account_id: str, video: Path) -> None:
    request_id = await post_video(http, stack, account_id, video)
    final = await wait_for_upload_state(
        http,
        f"{stack.ingest_url}/v1/uploads/{request_id}",
        until={"published", "failed", "unconfirmed"},
        timeout=240,
        headers=stack.headers,
    )
    assert final["state"] == "published", f"{final}\n{stack.logs()}"


async def expire_access_token(db: AsyncDatabase[dict[str, Any]], account_id: str) -> None:
    """Time passes: the stored access token is due, so the next use refreshes it."""
    await db["accounts"].update_one({"_id": account_id}, {"$set": {"access_expires_at": datetime.now(UTC)}})


class TestNoTokenInClear:
    async def test_after_an_oauth_connect_a_refresh_a_key_rotation_and_a_disconnect(
        self,
        keyed_stack: Stack,
        http: httpx.AsyncClient,
        mongo_client: AsyncMongoClient[dict[str, Any]],
        video_dir: Path,
    ) -> None:
        stack, db, ledger = keyed_stack, mongo_client[keyed_stack.database], TokenLedger()
        video = write_sample_mp4(video_dir / "clip.mp4", 300_000)
        outputs: dict[str, str] = {}

        # 0. Connect an account through TikTok's OAuth (the code exchanged by ingest's callback).
        connected_id, connected_open_id = await connect_account_via_oauth(http, stack)
        assert len(await ledger.collect(http, stack, connected_open_id)) == 2
        await publish_once(http, stack, connected_id, video)

        # 1. Register tokens (under the old key), and refresh them through the running services.
        account_id, open_id = await register_expiring(http, stack)
        assert len(await ledger.collect(http, stack, open_id)) == 2
        await publish_once(http, stack, account_id, video)
        assert len(await ledger.collect(http, stack, open_id)) == 2, "the services did not refresh"

        # 2. Rotate: the new key first, restart, re-encrypt while the services run.
        restart_with_keys(stack, f"{NEW_KEY},{OLD_KEY}")
        rotated = admin_tokens(stack, "rotate", "--json", keys=f"{NEW_KEY},{OLD_KEY}")
        outputs["tokens rotate"] = rotated.stdout + rotated.stderr
        assert rotated.returncode == 0, rotated.stderr
        assert json.loads(rotated.stdout)["rotated"] == 2

        # 3. Refresh again, now under the new key, and publish with the rotated tokens.
        await expire_access_token(db, account_id)
        await publish_once(http, stack, account_id, video)
        assert len(await ledger.collect(http, stack, open_id)) == 2, "the services did not refresh"

        # 4. Nothing needs the old key any more.
        checked = admin_tokens(stack, "check", "--json", keys=NEW_KEY)
        outputs["tokens check"] = checked.stdout + checked.stderr
        assert checked.returncode == 0, checked.stdout
        assert json.loads(checked.stdout)["current"] == 2

        # 5. Disconnect both: TikTok's grant is revoked and the stored tokens are deleted.
        for gone in (connected_id, account_id):
            resp = await http.delete(f"{stack.ingest_url}/v1/accounts/{gone}", headers=stack.headers)
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "disconnected"
        await ledger.collect(http, stack, connected_open_id)
        await ledger.collect(http, stack, open_id)
        stored = await db["accounts"].find({"_id": {"$in": [connected_id, account_id]}}).to_list(10)
        assert [d.get("access_token_enc") for d in stored] == [None, None]
        assert [d.get("refresh_token_enc") for d in stored] == [None, None]

        searched = await assert_no_token_in_clear(db, stack, ledger, also=outputs)
        # OAuth: one pair; the registered account: three (registered, two refreshes).
        assert len(ledger.tokens) == 8
        assert {"accounts", "uploads"} <= searched
