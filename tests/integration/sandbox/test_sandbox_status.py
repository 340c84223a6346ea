"""Status progression (§6) and the media checks that decide it (§9)."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from reelay_testing.waiting import eventually
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

from tests.integration.sandbox.sandbox_support import FAST, PUBLIC, SELF_ONLY, Api, sample


class TestDirectPost:
    async def test_public_post_completes_then_gets_a_19_digit_post_id(self, api: Api) -> None:
        publish_id = await api.publish(sample(2_000_000), post_info=PUBLIC)
        await api.wait_status(publish_id, "PUBLISH_COMPLETE")

        async def has_post_id() -> httpx.Response | None:
            resp = await api.status(publish_id)
            return resp if resp.json()["data"]["publicaly_available_post_id"] else None

        resp = await eventually(has_post_id, timeout=5, interval=0.02)
        # The id is a JSON number above 2^53, as TikTok's int64: read it from the raw text.
        raw = re.search(r'"publicaly_available_post_id":\s*\[(\d+)\]', resp.text)
        assert raw is not None
        assert len(raw.group(1)) == 19
        assert int(raw.group(1)) > 2**53
        assert resp.json()["data"]["uploaded_bytes"] == 2_000_000

    async def test_private_visibility_completes_without_post_id(self, api: Api) -> None:
        publish_id = await api.publish(sample(2_000_000), post_info=SELF_ONLY)
        data = await api.wait_status(publish_id, "PUBLISH_COMPLETE")
        assert data["publicaly_available_post_id"] == []

    async def test_post_ids_can_be_emitted_as_strings(self) -> None:
        async with (
            running_sandbox(**FAST, post_id_json="string") as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            publish_id = await api.publish(sample(2_000_000))

            async def ids() -> list[object]:
                return list((await api.status(publish_id)).json()["data"]["publicaly_available_post_id"])

            (post_id,) = await eventually(ids, timeout=5, interval=0.02)
            assert isinstance(post_id, str)
            assert len(post_id) == 19

    async def test_status_is_processing_upload_until_processed(self) -> None:
        async with (
            running_sandbox(processing_delay_seconds=30) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            publish_id = await api.publish(sample(2_000_000))
            data = (await api.status(publish_id)).json()["data"]
            assert data["status"] == "PROCESSING_UPLOAD"
            assert data["uploaded_bytes"] == 2_000_000


class TestInbox:
    async def test_inbox_upload_ends_in_send_to_user_inbox(self, api: Api) -> None:
        publish_id = await api.publish(sample(2_000_000), inbox=True)
        data = await api.wait_status(publish_id, "SEND_TO_USER_INBOX")
        assert "fail_reason" not in data

    async def test_inbox_status_needs_only_video_upload(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        user = sandbox.add_user("uploader", scopes=["video.upload"])
        api = Api(http, sandbox.issue_tokens(user.open_id)["access_token"])
        publish_id = await api.publish(sample(2_000_000), inbox=True)
        await api.wait_status(publish_id, "SEND_TO_USER_INBOX")


class TestMediaChecks:
    @pytest.mark.parametrize(
        ("media", "reason"),
        [
            (b"\x00" * 1_000_000, "file_format_check_failed"),
            (b"not a video at all" * 60_000, "file_format_check_failed"),
            (sample(1_000_000)[:-1] + b"\x00", None),  # payload bytes are not inspected
            (sample(1_000_000, duration_s=601), "duration_check_failed"),
            (sample(1_000_000, width=320, height=640), "picture_size_check_failed"),
            (sample(1_000_000, width=1080, height=4097), "picture_size_check_failed"),
            (sample(1_000_000, fps=15), "frame_rate_check_failed"),
            (sample(1_000_000, fps=60, width=360, height=4096, duration_s=600), None),
        ],
        ids=["zeros", "text", "valid", "too_long", "too_small", "too_tall", "too_few_fps", "edges"],
    )
    async def test_media_decides_the_outcome(self, api: Api, media: bytes, reason: str | None) -> None:
        publish_id = await api.publish(media, post_info=SELF_ONLY)
        data = await api.wait_status(publish_id, "FAILED", "PUBLISH_COMPLETE")
        assert data.get("fail_reason") == reason
        assert data["status"] == ("FAILED" if reason else "PUBLISH_COMPLETE")

    async def test_duration_limit_is_the_creators(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        user = sandbox.add_user("shorty", max_video_post_duration_sec=60)
        api = Api(http, sandbox.issue_tokens(user.open_id)["access_token"])
        info = (await api.creator_info()).json()["data"]
        assert info["max_video_post_duration_sec"] == 60
        publish_id = await api.publish(sample(1_000_000, duration_s=61), post_info=SELF_ONLY)
        data = await api.wait_status(publish_id, "FAILED")
        assert data["fail_reason"] == "duration_check_failed"

    async def test_a_truncated_mp4_fails_the_format_check(self, api: Api) -> None:
        # The mdat box claims 3 MB but the file stops at 2 MB: the container is broken.
        publish_id = await api.publish(sample(3_000_000)[:2_000_000])
        data = await api.wait_status(publish_id, "FAILED", "PUBLISH_COMPLETE")
        assert data["fail_reason"] == "file_format_check_failed"


class TestCreatorInfo:
    async def test_public_account_options(self, api: Api) -> None:
        data = (await api.creator_info()).json()["data"]
        assert data["privacy_level_options"] == ["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]
        assert data["creator_nickname"]
        assert data["duet_disabled"] is False

    async def test_private_account_options_and_disabled_duet(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        user = sandbox.add_user("hidden", private_account=True)
        api = Api(http, sandbox.issue_tokens(user.open_id)["access_token"])
        resp = await api.creator_info()
        data = resp.json()["data"]
        assert data["privacy_level_options"] == ["FOLLOWER_OF_CREATOR", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]
        assert data["duet_disabled"] is True
        assert data["stitch_disabled"] is True
        assert json.loads(resp.text)["error"]["code"] == "ok"


class TestInboxDrafts:
    async def test_posting_a_draft_completes_it_and_frees_a_pending_share(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient, api: Api
    ) -> None:
        ids = [await api.publish(sample(1_000_000, seed=i), inbox=True) for i in range(5)]
        for publish_id in ids:
            await api.wait_status(publish_id, "SEND_TO_USER_INBOX")
        source = {
            "source": "FILE_UPLOAD",
            "video_size": 1_000_000,
            "chunk_size": 1_000_000,
            "total_chunk_count": 1,
        }
        assert (await api.init_inbox(source, token=api.token)).status_code == 403
        posted = await http.post(f"/sandbox/publishes/{ids[0]}/draft", json={"action": "post"})
        assert posted.json()["status"] == "PUBLISH_COMPLETE"
        assert (await api.status(ids[0])).json()["data"]["status"] == "PUBLISH_COMPLETE"
        deleted = await http.post(f"/sandbox/publishes/{ids[1]}/draft", json={"action": "delete"})
        assert deleted.json()["status"] == "SEND_TO_USER_INBOX"
        fresh = Api(
            http, sandbox.issue_tokens(sandbox.default_user.open_id)["access_token"]
        )  # init budget is per token
        assert (await fresh.init_inbox(source)).status_code == 200

    @pytest.mark.parametrize("body", [{"action": "share"}, {}, {"action": "post", "x": 1}])
    async def test_bad_draft_actions_are_refused(
        self, http: httpx.AsyncClient, api: Api, body: dict[str, str]
    ) -> None:
        publish_id = await api.publish(sample(1_000_000), inbox=True)
        await api.wait_status(publish_id, "SEND_TO_USER_INBOX")
        resp = await http.post(f"/sandbox/publishes/{publish_id}/draft", json=body)
        assert resp.status_code == 400
        assert (await api.status(publish_id)).json()["data"]["status"] == "SEND_TO_USER_INBOX"

    async def test_direct_posts_are_not_drafts(self, http: httpx.AsyncClient, api: Api) -> None:
        publish_id = await api.publish(sample(1_000_000))
        resp = await http.post(f"/sandbox/publishes/{publish_id}/draft", json={"action": "post"})
        assert resp.status_code == 409
