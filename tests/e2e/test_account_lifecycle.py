"""Specification of an account's life through the whole stack
(docs/architecture.md, "The account lifecycle"): connected through TikTok's OAuth as a browser
would, an upload for it published; and each way of losing it (a refresh TikTok refuses, TikTok's
authorization.removed) stops its queued uploads with their code, with nothing retried."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.settings import DEV_TOKEN_KEY
from reelay_testing.waiting import eventually
from tiktok_sandbox.media import write_sample_mp4

from tests.e2e.flows import assert_published_once, connect_account_via_oauth, post_video
from tests.e2e.stack import CLIENT_KEY, CLIENT_SECRET, Stack, wait_for_upload_state

pytestmark = pytest.mark.e2e

VIDEO_BYTES = 2_000_000


@pytest.fixture
def video(video_dir: Path) -> Path:
    path = video_dir / "small.mp4"
    write_sample_mp4(path, VIDEO_BYTES)
    return path


class TestConnectedThroughOAuth:
    async def test_an_account_connected_in_the_browser_gets_its_upload_published(
        self, stack: Stack, http: httpx.AsyncClient, video: Path
    ) -> None:
        account_id, open_id = await connect_account_via_oauth(http, stack)

        account = (
            await http.get(f"{stack.ingest_url}/v1/accounts/{account_id}", headers=stack.headers)
        ).json()
        assert account["status"] == "connected"
        assert account["open_id"] == open_id
        request_id = await post_video(http, stack, account_id, video)
        await assert_published_once(http, stack, request_id, open_id, video)


class TestLosingAnAccount:
    async def test_a_refused_refresh_fails_the_queued_uploads_with_reauth_required(
        self,
        stack: Stack,
        http: httpx.AsyncClient,
        video: Path,
        mongo_client: AsyncMongoClient[dict[str, Any]],
    ) -> None:
        account_id, open_id = await connect_account_via_oauth(http, stack)
        stack.kill("uploader")
        try:
            queued = [await post_video(http, stack, account_id, video) for _ in range(2)]
            await _refresh_token_dies(stack, http, mongo_client, account_id)
        finally:
            stack.start("uploader")

        for request_id in queued:
            await _failed_with(http, stack, request_id, "account_reauth_required")
        account = (
            await http.get(f"{stack.ingest_url}/v1/accounts/{account_id}", headers=stack.headers)
        ).json()
        assert account["status"] == "reauth_required"
        refused = await http.post(
            f"{stack.ingest_url}/v1/uploads",
            headers=stack.headers,
            json={
                "account_id": account_id,
                "mode": "inbox",
                "video_url": f"{stack.sandbox_url}/sandbox/media/sample.mp4",
            },
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "account_reauth_required"
        assert f"/v1/accounts/{account_id}/connect" in refused.json()["error"]["message"]
        _nothing_retried(stack, queued)
        await _no_token_in_clear(stack, http, mongo_client, open_id)

    async def test_authorization_removed_fails_the_queued_uploads_with_account_disconnected(
        self,
        stack: Stack,
        http: httpx.AsyncClient,
        video: Path,
        mongo_client: AsyncMongoClient[dict[str, Any]],
    ) -> None:
        account_id, open_id = await connect_account_via_oauth(http, stack)
        stack.kill("uploader")
        try:
            queued = [await post_video(http, stack, account_id, video) for _ in range(2)]
            # The creator disconnects the app in TikTok: the sandbox revokes and sends the webhook.
            resp = await http.put(
                f"{stack.sandbox_url}/sandbox/faults", json={"revoke_tokens": [open_id], "revoke_reason": 1}
            )
            resp.raise_for_status()
            for request_id in queued:
                detail = await _failed_with(http, stack, request_id, "account_disconnected")
                assert detail["reason"] == "tiktok_user_disconnected"
        finally:
            stack.start("uploader")

        account = (
            await http.get(f"{stack.ingest_url}/v1/accounts/{account_id}", headers=stack.headers)
        ).json()
        assert account["status"] == "disconnected"
        assert account["disconnect_reason"] == "tiktok_user_disconnected"

        # The uploader takes the queued commands and leaves them as they are.
        await eventually(
            lambda: _handled(stack, queued) == set(queued),
            timeout=180,
            interval=0.5,
            what="the uploader to take the queued commands",
        )
        for request_id in queued:
            await _failed_with(http, stack, request_id, "account_disconnected")
        _nothing_retried(stack, queued)
        await _no_token_in_clear(stack, http, mongo_client, open_id)


async def _no_token_in_clear(
    stack: Stack, http: httpx.AsyncClient, mongo_client: AsyncMongoClient[dict[str, Any]], open_id: str
) -> None:
    """No token TikTok issued the creator is in any collection of the stack or any service's log."""
    issued = (await http.get(f"{stack.sandbox_url}/sandbox/users/{open_id}/tokens")).json()
    tokens = [t["access_token"] for t in issued["access_tokens"]]
    tokens += [t["refresh_token"] for t in issued["refresh_tokens"]]
    assert tokens
    db = mongo_client[stack.database]
    dump = "".join([str(await db[name].find().to_list(None)) for name in await db.list_collection_names()])
    logs = "".join(
        s.log_path.read_text(errors="replace") for n, s in stack.services.items() if n != "sandbox"
    )
    leaked = [t[:8] for t in tokens if t in dump or t in logs]
    assert leaked == [], f"tokens in clear (their first characters): {leaked}"


async def _refresh_token_dies(
    stack: Stack, http: httpx.AsyncClient, mongo_client: AsyncMongoClient[dict[str, Any]], account_id: str
) -> None:
    """A refresh elsewhere rotates the account's refresh token (the stored one dies, as TikTok
    rotates), and the stored access token is due: the uploader's next refresh is refused."""
    accounts = mongo_client[stack.database]["accounts"]
    doc = await accounts.find_one({"_id": account_id})
    assert doc is not None
    refresh_token = TokenCipher(_dev_key()).decrypt(doc["refresh_token_enc"])
    resp = await http.post(
        f"{stack.sandbox_url}/v2/oauth/token/",
        data={
            "client_key": CLIENT_KEY,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        },
    )
    assert "access_token" in resp.json(), resp.text
    await accounts.update_one(
        {"_id": account_id}, {"$set": {"access_expires_at": datetime.now(UTC) - timedelta(minutes=1)}}
    )


def _dev_key() -> Any:
    from pydantic import SecretStr

    return SecretStr(DEV_TOKEN_KEY)


async def _failed_with(http: httpx.AsyncClient, stack: Stack, request_id: str, code: str) -> dict[str, Any]:
    final = await wait_for_upload_state(
        http,
        f"{stack.ingest_url}/v1/uploads/{request_id}",
        until={"failed", "published", "unconfirmed", "inbox_delivered"},
        timeout=180,
        headers=stack.headers,
    )
    assert final["state"] == "failed", f"{final}\n{stack.logs()}"
    history = final["history"]
    assert isinstance(history, list)
    assert [h["state"] for h in history].count("failed") == 1
    detail: dict[str, Any] = history[-1]["detail"]
    assert detail["code"] == code, history
    return detail


def _uploader_events(stack: Stack) -> list[dict[str, Any]]:
    lines = stack.services["uploader"].log_path.read_text(errors="replace").splitlines()
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return [e for e in events if isinstance(e, dict)]


def _handled(stack: Stack, request_ids: list[str]) -> set[str]:
    return {
        e["request_id"]
        for e in _uploader_events(stack)
        if e.get("event") == "upload_handled" and e.get("request_id") in request_ids
    }


def _nothing_retried(stack: Stack, request_ids: list[str]) -> None:
    retried = [
        e
        for e in _uploader_events(stack)
        if e.get("event") == "upload_will_retry" and e.get("request_id") in request_ids
    ]
    assert retried == [], retried
