"""TikTok's creator_info quota (20 calls a minute per account) never refuses a client: one answer
serves an account's direct posts for a while (kept in FerretDB for every replica), and when the
quota is spent the privacy level is left to TikTok's check at init. Real ingest, Kafka, FerretDB
and the TikTok sandbox."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from reelay_common.adapters.mongo.creator_info import MongoCreatorInfoCache
from reelay_common.adapters.mongo.rate_limits import DEFAULT_LIMITS, MongoRateLimiter
from reelay_testing.kafka import topic_size

from tests.integration.ingest.ingest_world import IngestWorld

VIDEO_URL = "https://151.101.1.1/v.mp4"  # public; ingest never fetches it


async def post_direct(world: IngestWorld, account_id: str, request_id: str) -> httpx.Response:
    body: dict[str, Any] = {
        "account_id": account_id,
        "mode": "direct",
        "video_url": VIDEO_URL,
        "post_info": {"privacy_level": "SELF_ONLY"},
    }
    return await world.http.post(
        "/v1/uploads", json=body, headers={**world.auth, "Idempotency-Key": request_id}
    )


def creator_info_calls(world: IngestWorld) -> int:
    return world.sandbox.state.stats.calls["creator_info"]


class TestCreatorInfoQuota:
    async def test_25_direct_posts_in_a_minute_are_all_accepted_on_one_creator_info(
        self, world: IngestWorld
    ) -> None:
        account_id = await world.connect_account()

        first = await post_direct(world, account_id, "ci-0")
        rest = await asyncio.gather(*(post_direct(world, account_id, f"ci-{n}") for n in range(1, 25)))

        assert [r.status_code for r in (first, *rest)] == [202] * 25, [r.text for r in rest]
        assert creator_info_calls(world) == 1
        assert await topic_size(world.bootstrap, world.settings.topic_upload_requested) == 25
        kept = await MongoCreatorInfoCache(world.db).get(account_id)
        assert kept is not None
        assert "SELF_ONLY" in kept.privacy_level_options

    async def test_a_refused_privacy_level_is_still_refused_from_the_kept_answer(
        self, world: IngestWorld
    ) -> None:
        account_id = await world.connect_account(private=True)  # no PUBLIC_TO_EVERYONE
        assert (await post_direct(world, account_id, "ci-ok")).status_code == 202

        body = {
            "account_id": account_id,
            "mode": "direct",
            "video_url": VIDEO_URL,
            "post_info": {"privacy_level": "PUBLIC_TO_EVERYONE"},
        }
        refused = await world.http.post("/v1/uploads", json=body, headers=world.auth)

        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "privacy_level_not_offered"
        assert creator_info_calls(world) == 1

    async def test_a_cold_cache_and_a_spent_quota_still_accept(self, world: IngestWorld) -> None:
        account_id = await world.connect_account()
        # Every creator_info slot of this minute taken (by other replicas, say): our limiter
        # would have to wait far longer than a client can.
        limiter = MongoRateLimiter(world.db)
        for _ in range(DEFAULT_LIMITS["creator_info"]):
            await limiter.acquire(account_id, "creator_info")

        resp = await post_direct(world, account_id, "ci-spent")

        assert resp.status_code == 202, resp.text
        assert creator_info_calls(world) == 0
        assert await MongoCreatorInfoCache(world.db).get(account_id) is None  # nothing kept
        assert await topic_size(world.bootstrap, world.settings.topic_upload_requested) == 1

    async def test_tiktok_answering_429_still_accepts(self, world: IngestWorld) -> None:
        account_id = await world.connect_account()
        world.sandbox.set_faults(rate_limit_burst={"creator_info": 5})  # more than the retries

        resp = await post_direct(world, account_id, "ci-429")

        assert resp.status_code == 202, resp.text
        assert creator_info_calls(world) >= 1
        assert await topic_size(world.bootstrap, world.settings.topic_upload_requested) == 1
