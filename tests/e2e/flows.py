"""The steps e2e tests share: connect an account, upload a video, watch TikTok receive it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
from reelay_testing.waiting import eventually

from tests.browser import consent
from tests.e2e.stack import Stack, wait_for_upload_state
from tests.support import sha256_of

# What the crash and restart tests upload: > 64 MB, so TikTok takes it in seven 10 MB chunks and a
# kill once the first is stored lands mid-upload.
MID_UPLOAD_VIDEO_BYTES = 70 * 1000 * 1000


async def connect_account(http: httpx.AsyncClient, stack: Stack, *, private: bool = False) -> tuple[str, str]:
    """Create a sandbox user, take its tokens and register them with ingest: (account_id, open_id)."""
    username = f"e2e-{uuid.uuid4().hex[:8]}"
    resp = await http.post(
        f"{stack.sandbox_url}/sandbox/users", json={"username": username, "private_account": private}
    )
    resp.raise_for_status()
    open_id = resp.json()["open_id"]
    resp = await http.post(f"{stack.sandbox_url}/sandbox/users/{open_id}/tokens")
    resp.raise_for_status()
    tokens = resp.json()
    account_id = f"acct-{username}"
    resp = await http.post(
        f"{stack.ingest_url}/v1/accounts",
        headers=stack.headers,
        json={
            "account_id": account_id,
            "open_id": open_id,
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "expires_in": tokens["expires_in"],
            "refresh_expires_in": tokens["refresh_expires_in"],
            "scope": tokens["scope"],
        },
    )
    assert resp.status_code == 201, resp.text
    return account_id, open_id


async def connect_account_via_oauth(http: httpx.AsyncClient, stack: Stack) -> tuple[str, str]:
    """Create a sandbox creator and connect it as a person would: ingest's authorize URL, the
    sandbox's consent page approved for that creator, the redirect followed to ingest's callback.
    (account_id, open_id)."""
    username = f"e2e-{uuid.uuid4().hex[:8]}"
    resp = await http.post(f"{stack.sandbox_url}/sandbox/users", json={"username": username})
    resp.raise_for_status()
    open_id = str(resp.json()["open_id"])
    account_id = f"acct-{username}"
    resp = await http.post(f"{stack.ingest_url}/v1/accounts/{account_id}/connect", headers=stack.headers)
    assert resp.status_code == 200, resp.text
    page = await consent(http, resp.json()["authorize_url"], creator=username)
    assert page.status_code == 200, f"{page.text}\n{stack.logs()}"
    assert "Account connected" in page.text
    return account_id, open_id


async def post_video(
    http: httpx.AsyncClient, stack: Stack, account_id: str, video: Path, **fields: str
) -> str:
    """Upload `video` as a direct post through ingest (with more form `fields`); returns the request_id."""
    with video.open("rb") as f:
        resp = await http.post(
            f"{stack.ingest_url}/v1/uploads",
            headers=stack.headers,
            data={
                "account_id": account_id,
                "mode": "direct",
                "post_info": json.dumps({"privacy_level": "SELF_ONLY"}),
                **fields,
            },
            files={"file": (video.name, f, "video/mp4")},
        )
    assert resp.status_code == 202, resp.text
    return str(resp.json()["request_id"])


async def first_chunk_stored(http: httpx.AsyncClient, stack: Stack, open_id: str) -> dict[str, object]:
    """Wait (bounded) until TikTok holds part of the account's video; returns that publish."""

    async def partly_stored() -> dict[str, object] | None:
        listing = (
            await http.get(f"{stack.sandbox_url}/sandbox/publishes", params={"open_id": open_id})
        ).json()
        if listing["publishes"] and any(c["stored"] for c in listing["publishes"][0]["chunks"]):
            return dict(listing["publishes"][0])
        return None

    try:
        return await eventually(partly_stored, timeout=180, interval=0.1, what="a chunk to reach the sandbox")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from exc


async def assert_published_once(
    http: httpx.AsyncClient, stack: Stack, request_id: str, open_id: str, video: Path
) -> None:
    """The upload ends `published`, as exactly one TikTok publish holding exactly the video's bytes:
    by the sandbox's record, each stored chunk is the next range of the video, none stored twice."""
    final = await wait_for_upload_state(
        http,
        f"{stack.ingest_url}/v1/uploads/{request_id}",
        until={"published", "failed", "unconfirmed"},
        timeout=300,
        headers=stack.headers,
    )
    assert final["state"] == "published", f"{final}\n{stack.logs()}"
    listing = (await http.get(f"{stack.sandbox_url}/sandbox/publishes", params={"open_id": open_id})).json()
    assert listing["count"] == 1, "one request, one TikTok publish"
    [done] = listing["publishes"]
    assert done["complete"] is True
    assert done["sha256"] == sha256_of(video), "TikTok holds other bytes than the source video"
    stored = [(c["first"], c["last"]) for c in done["chunks"] if c["stored"]]
    assert len(stored) == len(set(stored)), f"a chunk was stored twice: {stored}"
    starts = [0] + [last + 1 for _, last in stored]
    assert [first for first, _ in stored] == starts[:-1], (
        f"stored chunks out of order or overlapping: {stored}"
    )
    assert starts[-1] == video.stat().st_size, f"the stored chunks do not cover the video: {stored}"
