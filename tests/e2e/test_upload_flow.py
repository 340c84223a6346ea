"""Specification of the whole path: one video from HTTP to `published`, through real Kafka and Mongo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from reelay_testing.waiting import eventually
from tiktok_sandbox.media import write_sample_mp4

from tests.e2e.flows import connect_account
from tests.e2e.stack import Stack, wait_for_upload_state
from tests.support import sha256_of

pytestmark = pytest.mark.e2e

BIG_VIDEO_BYTES = 70 * 1000 * 1000  # > 64 MB: TikTok requires several chunks


class TestUploadThroughTheStack:
    async def test_large_video_is_published_in_sequential_chunks(
        self,
        stack: Stack,
        http: httpx.AsyncClient,
        video_dir: Path,
        mongo_client: AsyncMongoClient[dict[str, Any]],
    ) -> None:
        account_id, _ = await connect_account(http, stack)
        video = video_dir / "big.mp4"
        write_sample_mp4(video, BIG_VIDEO_BYTES)

        with video.open("rb") as f:
            resp = await http.post(
                f"{stack.ingest_url}/v1/uploads",
                headers=stack.headers,
                data={
                    "account_id": account_id,
                    "mode": "direct",
                    "post_info": json.dumps({"privacy_level": "SELF_ONLY", "title": "e2e #reelay"}),
                },
                files={"file": ("big.mp4", f, "video/mp4")},
            )
        assert resp.status_code == 202, resp.text
        accepted = resp.json()
        request_id = accepted["request_id"]

        final = await wait_for_upload_state(
            http,
            f"{stack.ingest_url}/v1/uploads/{request_id}",
            until={"published", "failed", "unconfirmed"},
            timeout=240,
            headers=stack.headers,
        )
        assert final["state"] == "published", f"{final}\n{stack.logs()}"
        history = final["history"]
        assert isinstance(history, list)
        states = [entry["state"] for entry in history]
        assert states == ["accepted", "uploading", "uploaded", "processing", "published"]

        publish = (await http.get(f"{stack.sandbox_url}/sandbox/publishes/{final['publish_id']}")).json()
        chunks = publish["chunks"]
        assert len(chunks) >= 2, "a > 64 MB video must go in several chunks"
        assert [c["order"] for c in chunks] == sorted(c["order"] for c in chunks)
        assert all(c["stored"] for c in chunks), "no fault was injected: every PUT is accepted"
        assert [c["status_code"] for c in chunks] == [206] * (len(chunks) - 1) + [201]
        expected_first = 0
        for chunk in chunks:
            assert chunk["first"] == expected_first, "chunks must be sequential and contiguous"
            assert chunk["size"] == chunk["last"] - chunk["first"] + 1
            expected_first = chunk["last"] + 1
        assert expected_first == BIG_VIDEO_BYTES
        assert publish["complete"] is True
        assert publish["sha256"] == sha256_of(video)

        # Settled, the upload leaves the in-flight work for `uploads`, and reads the same from there.
        db = mongo_client[stack.database]

        async def archived() -> bool:
            return (
                await db["uploads"].count_documents({"_id": request_id}) == 1
                and await db["uploads_in_flight"].count_documents({"_id": request_id}) == 0
            )

        await eventually(archived, timeout=30, what="the published upload archived")
        again = (await http.get(f"{stack.ingest_url}/v1/uploads/{request_id}", headers=stack.headers)).json()
        assert again == final
