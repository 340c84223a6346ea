"""TikTokGateway: tokens, pacing per bucket, one refresh on 401, bounded 429 backoff, probe wiring."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from reelay_common.adapters.tiktok.client import AccessTokenInvalidError
from reelay_common.adapters.tiktok.gateway import TikTokGateway
from reelay_common.domain.errors import AuthExpiredError, InvalidInputError, RateLimitedError
from reelay_common.domain.messages import PostInfo
from reelay_common.domain.tiktok import FileUploadSourceInfo, PullFromUrlSourceInfo
from reelay_common.ports import ChunkedUpload
from reelay_testing.tokens import FakeRateLimiter

from tests.unit.tiktok.tiktok_fakes import (
    UPLOAD_URL,
    FakeUploadServer,
    MemoryReader,
    envelope,
    json_response,
    make_client,
    video_bytes,
)

CREATOR = {"creator_nickname": "Demo", "privacy_level_options": ["SELF_ONLY"]}
PULL = PullFromUrlSourceInfo(video_url="https://cdn.example.com/v.mp4")


class RotatingTokens:
    """A TokenProvider whose force_refresh issues the next token, recording every refresh."""

    def __init__(self) -> None:
        self.version = 1
        self.refreshes: list[tuple[str, str]] = []

    @property
    def current(self) -> str:
        return f"act.v{self.version}"

    async def access_token(self, account_id: str) -> str:
        return self.current

    async def force_refresh(self, account_id: str, stale_token: str) -> str:
        self.refreshes.append((account_id, stale_token))
        if stale_token == self.current:
            self.version += 1
        return self.current


class GatewayWorld:
    def __init__(self, responses: list[httpx.Response], **gateway_options: Any) -> None:
        self.responses = responses
        self.requests: list[httpx.Request] = []
        self.tokens = RotatingTokens()
        self.limiter = FakeRateLimiter()
        self.sleeps: list[float] = []
        client, self.http = make_client(self.handle)
        self.gateway = TikTokGateway(client, self.tokens, self.limiter, sleep=self.sleep, **gateway_options)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def bearers(self) -> list[str]:
        return [r.headers["Authorization"].removeprefix("Bearer ") for r in self.requests]


def ok(data: dict[str, Any]) -> httpx.Response:
    return json_response(200, envelope(data=data))


class TestPacing:
    async def test_each_call_takes_a_slot_in_its_bucket(self) -> None:
        world = GatewayWorld(
            [
                ok(CREATOR),
                ok({"publish_id": "p1"}),
                ok({"status": "PROCESSING_DOWNLOAD"}),
            ]
        )
        async with world.http:
            await world.gateway.creator_info("acct")
            await world.gateway.init_upload("acct", mode="inbox", post_info=None, source_info=PULL)
            await world.gateway.fetch_status("acct", "p1")
        assert world.limiter.calls == [("acct", "creator_info"), ("acct", "init"), ("acct", "status")]

    async def test_a_retried_call_takes_another_slot(self) -> None:
        world = GatewayWorld([json_response(429, envelope("rate_limit_exceeded")), ok(CREATOR)])
        async with world.http:
            await world.gateway.creator_info("acct")
        assert world.limiter.calls == [("acct", "creator_info")] * 2


class TestRefusedToken:
    async def test_refreshes_once_and_retries_with_the_new_token(self) -> None:
        world = GatewayWorld([json_response(401, envelope("access_token_invalid")), ok(CREATOR)])
        async with world.http:
            info = await world.gateway.creator_info("acct")
        assert info.creator_nickname == "Demo"
        assert world.tokens.refreshes == [("acct", "act.v1")]
        assert world.bearers() == ["act.v1", "act.v2"]

    async def test_a_second_refusal_is_an_auth_error(self) -> None:
        world = GatewayWorld([json_response(401, envelope("access_token_invalid"))] * 2)
        async with world.http:
            with pytest.raises(AccessTokenInvalidError) as info:
                await world.gateway.creator_info("acct")
        assert isinstance(info.value, AuthExpiredError)
        assert len(world.tokens.refreshes) == 1
        assert len(world.requests) == 2

    async def test_a_refused_fresh_token_makes_the_account_reauth_required(self) -> None:
        refused: list[str] = []

        async def grant_refused(account_id: str) -> None:
            refused.append(account_id)

        world = GatewayWorld(
            [json_response(401, envelope("access_token_invalid"))] * 2, on_grant_refused=grant_refused
        )
        async with world.http:
            with pytest.raises(AuthExpiredError) as info:
                await world.gateway.creator_info("acct")
        assert info.value.code == "account_reauth_required"
        assert refused == ["acct"]

    async def test_missing_scope_does_not_refresh(self) -> None:
        world = GatewayWorld([json_response(401, envelope("scope_not_authorized"))])
        async with world.http:
            with pytest.raises(AuthExpiredError):
                await world.gateway.creator_info("acct")
        assert world.tokens.refreshes == []


class TestRateLimited:
    async def test_waits_retry_after_then_succeeds(self) -> None:
        world = GatewayWorld(
            [json_response(429, envelope("rate_limit_exceeded"), {"Retry-After": "3"}), ok(CREATOR)]
        )
        async with world.http:
            await world.gateway.creator_info("acct")
        assert world.sleeps == [3.0]

    async def test_backs_off_exponentially_then_hands_the_429_back(self) -> None:
        world = GatewayWorld([json_response(429, envelope("rate_limit_exceeded"))] * 4)
        async with world.http:
            with pytest.raises(RateLimitedError):
                await world.gateway.init_upload("acct", mode="inbox", post_info=None, source_info=PULL)
        assert world.sleeps == [1.0, 2.0, 4.0]
        assert len(world.requests) == 4

    async def test_caps_a_long_retry_after(self) -> None:
        world = GatewayWorld(
            [json_response(429, envelope("rate_limit_exceeded"), {"Retry-After": "3600"}), ok(CREATOR)],
            backoff_max=30.0,
        )
        async with world.http:
            await world.gateway.creator_info("acct")
        assert world.sleeps == [30.0]


class TestInitUpload:
    async def test_direct_goes_to_video_init_with_post_info(self) -> None:
        world = GatewayWorld([ok({"publish_id": "p1", "upload_url": UPLOAD_URL})])
        plan = FileUploadSourceInfo(video_size=1000, chunk_size=1000, total_chunk_count=1)
        async with world.http:
            result = await world.gateway.init_upload(
                "acct", mode="direct", post_info=PostInfo(privacy_level="SELF_ONLY"), source_info=plan
            )
        assert result.upload_url == UPLOAD_URL
        (request,) = world.requests
        assert request.url.path == "/v2/post/publish/video/init/"
        assert json.loads(request.content)["post_info"]["privacy_level"] == "SELF_ONLY"

    async def test_inbox_goes_to_inbox_init(self) -> None:
        world = GatewayWorld([ok({"publish_id": "p1"})])
        async with world.http:
            await world.gateway.init_upload("acct", mode="inbox", post_info=None, source_info=PULL)
        assert world.requests[0].url.path == "/v2/post/publish/inbox/video/init/"

    @pytest.mark.parametrize(
        ("mode", "post_info"),
        [("direct", None), ("inbox", PostInfo(privacy_level="SELF_ONLY")), ("draft", None)],
    )
    async def test_refuses_mismatched_modes_without_calling_tiktok(self, mode: Any, post_info: Any) -> None:
        world = GatewayWorld([])
        async with world.http:
            with pytest.raises(InvalidInputError):
                await world.gateway.init_upload("acct", mode=mode, post_info=post_info, source_info=PULL)
        assert world.requests == []
        assert world.limiter.calls == []


class TestUploadChunks:
    async def test_a_lost_response_is_resynced_through_paced_status_fetch(self) -> None:
        size = 300
        plan = FileUploadSourceInfo(video_size=size, chunk_size=100, total_chunk_count=3)
        server = FakeUploadServer(size, faults=[None, "drop_after_store"])
        api_calls: list[str] = []

        async def handler(request: httpx.Request) -> httpx.Response:
            if request.method == "PUT":
                return await server.handler(request)
            api_calls.append(request.url.path)
            return ok({"status": "PROCESSING_UPLOAD", "uploaded_bytes": server.progress})

        limiter = FakeRateLimiter()
        client, http = make_client(handler, streaming=True)
        gateway = TikTokGateway(client, RotatingTokens(), limiter)
        async with http:
            await gateway.upload_chunks(
                ChunkedUpload(
                    UPLOAD_URL, plan, MemoryReader(video_bytes(size)), account_id="acct", publish_id="p1"
                )
            )
        assert bytes(server.received) == video_bytes(size)
        assert api_calls == ["/v2/post/publish/status/fetch/"]
        assert limiter.calls == [("acct", "status")]
        assert [first for first, _, _ in server.requests] == [0, 100, 200], "nothing sent twice"
