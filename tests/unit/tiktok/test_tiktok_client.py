"""TikTokClient: request shapes, response parsing and the error mapping, over httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from reelay_common.adapters.tiktok.client import (
    AccessTokenInvalidError,
    parse_retry_after,
    progress_from_content_range,
)
from reelay_common.domain.errors import (
    AuthExpiredError,
    InvalidInputError,
    RateLimitedError,
    ReelayError,
    TikTokRejectedError,
    TransientTikTokError,
    UploadOutOfSyncError,
    UploadUrlExpiredError,
)
from reelay_common.domain.messages import PostInfo
from reelay_common.domain.tiktok import FileUploadSourceInfo, PullFromUrlSourceInfo
from structlog.testing import capture_logs

from tests.unit.tiktok.tiktok_fakes import (
    BASE_URL,
    CLIENT_KEY,
    CLIENT_SECRET,
    UPLOAD_URL,
    envelope,
    json_response,
    make_client,
)

ACCESS = "act.secret-access-token"  # a test value
REFRESH = "rft.secret-refresh-token"  # a test value


async def call_creator_info(handler: Any) -> Any:
    client, http = make_client(handler)
    async with http:
        return await client.creator_info(ACCESS)


# (HTTP status, body, headers) -> (error class, code)
ENVELOPE_CASES: list[tuple[int, Any, dict[str, str], type[ReelayError], str | None]] = [
    (500, envelope("internal_error"), {}, TransientTikTokError, "internal_error"),
    (200, envelope("internal_error"), {}, TransientTikTokError, "internal_error"),
    (503, "<html>bad gateway</html>", {}, TransientTikTokError, "bad_response"),
    (502, envelope("some_new_code"), {}, TransientTikTokError, "some_new_code"),
    (429, envelope("rate_limit_exceeded"), {"Retry-After": "7"}, RateLimitedError, "rate_limit_exceeded"),
    (429, "Too Many Requests", {}, RateLimitedError, "rate_limit_exceeded"),
    (200, envelope("rate_limit_exceeded"), {}, RateLimitedError, "rate_limit_exceeded"),
    (401, envelope("access_token_invalid"), {}, AccessTokenInvalidError, "access_token_invalid"),
    (401, "", {}, AccessTokenInvalidError, "access_token_invalid"),
    (401, envelope("scope_not_authorized"), {}, AuthExpiredError, "scope_not_authorized"),
    (200, envelope("spam_risk_too_many_posts"), {}, TikTokRejectedError, "spam_risk_too_many_posts"),
    (
        200,
        envelope("spam_risk_user_banned_from_posting"),
        {},
        TikTokRejectedError,
        "spam_risk_user_banned_from_posting",
    ),
    (200, envelope("reached_active_user_cap"), {}, TikTokRejectedError, "reached_active_user_cap"),
    (400, envelope("invalid_param"), {}, TikTokRejectedError, "invalid_param"),
    (400, envelope("invalid_params"), {}, TikTokRejectedError, "invalid_params"),
    (
        403,
        envelope("privacy_level_option_mismatch"),
        {},
        TikTokRejectedError,
        "privacy_level_option_mismatch",
    ),
    (403, envelope("url_ownership_unverified"), {}, TikTokRejectedError, "url_ownership_unverified"),
    (
        403,
        envelope("unaudited_client_can_only_post_to_private_accounts"),
        {},
        TikTokRejectedError,
        "unaudited_client_can_only_post_to_private_accounts",
    ),
    (
        403,
        envelope("spam_risk_too_many_pending_share"),
        {},
        TikTokRejectedError,
        "spam_risk_too_many_pending_share",
    ),
    (400, envelope("invalid_publish_id"), {}, TikTokRejectedError, "invalid_publish_id"),
    (404, "<html>not found</html>", {}, TikTokRejectedError, "bad_response"),
    (200, "not json at all", {}, TransientTikTokError, "bad_response"),
    (200, {"data": {}}, {}, TransientTikTokError, "bad_response"),
]


class TestEnvelopeErrors:
    @pytest.mark.parametrize(("status", "body", "headers", "expected", "code"), ENVELOPE_CASES)
    async def test_maps_code_and_status_to_the_error_tree(
        self, status: int, body: Any, headers: dict[str, str], expected: type[ReelayError], code: str | None
    ) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            if isinstance(body, str):
                return httpx.Response(status, content=body.encode(), headers=headers)
            return json_response(status, body, headers)

        with pytest.raises(expected) as info:
            await call_creator_info(handler)
        assert type(info.value) is expected
        assert info.value.code == code
        assert info.value.http_status == status

    async def test_keeps_log_id_on_errors(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return json_response(403, envelope("spam_risk_too_many_posts", log_id="20221011ABC"))

        with pytest.raises(TikTokRejectedError) as info:
            await call_creator_info(handler)
        assert info.value.log_id == "20221011ABC"
        assert info.value.detail()["log_id"] == "20221011ABC"

    async def test_rate_limit_carries_retry_after(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return json_response(429, envelope("rate_limit_exceeded"), {"Retry-After": "12"})

        with pytest.raises(RateLimitedError) as info:
            await call_creator_info(handler)
        assert info.value.retry_after == 12.0

    async def test_access_token_invalid_is_an_auth_expired_error_when_it_escapes(self) -> None:
        assert issubclass(AccessTokenInvalidError, AuthExpiredError)

    async def test_success_needs_code_ok_even_with_http_200(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return json_response(200, envelope("reached_active_user_cap", {"creator_nickname": "x"}))

        with pytest.raises(TikTokRejectedError):
            await call_creator_info(handler)


class TestTransportErrors:
    @pytest.mark.parametrize(
        ("exc", "code"),
        [
            (httpx.ConnectError("refused"), "connection_error"),
            (httpx.RemoteProtocolError("server disconnected"), "connection_error"),
            (httpx.ReadError("reset"), "connection_error"),
            (httpx.ReadTimeout("slow"), "timeout"),
            (httpx.ConnectTimeout("slow"), "timeout"),
        ],
    )
    async def test_are_transient_and_chained(self, exc: Exception, code: str) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            raise exc

        with pytest.raises(TransientTikTokError) as info:
            await call_creator_info(handler)
        assert info.value.code == code
        assert info.value.__cause__ is exc


class TestDataEndpoints:
    async def test_creator_info_parses_the_creator(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return json_response(
                200,
                envelope(
                    data={
                        "creator_nickname": "Demo",
                        "creator_username": "demo",
                        "privacy_level_options": ["PUBLIC_TO_EVERYONE", "SELF_ONLY"],
                        "max_video_post_duration_sec": 600,
                        "comment_disabled": True,
                    }
                ),
            )

        info = await call_creator_info(handler)
        assert info.creator_nickname == "Demo"
        assert info.privacy_level_options == ["PUBLIC_TO_EVERYONE", "SELF_ONLY"]
        assert info.max_video_post_duration_sec == 600
        assert info.comment_disabled is True
        (request,) = seen
        assert request.method == "POST"
        assert str(request.url) == f"{BASE_URL}/v2/post/publish/creator_info/query/"
        assert request.headers["Authorization"] == f"Bearer {ACCESS}"
        assert request.headers["Content-Type"] == "application/json; charset=UTF-8"

    async def test_direct_post_init_sends_post_info_and_source_info(self) -> None:
        bodies: list[dict[str, Any]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            assert request.url.path == "/v2/post/publish/video/init/"
            bodies.append(json.loads(request.content))
            return json_response(
                200, envelope(data={"publish_id": "v_pub_file~v2-1.1", "upload_url": UPLOAD_URL})
            )

        client, http = make_client(handler)
        plan = FileUploadSourceInfo(video_size=50_000_123, chunk_size=10_000_000, total_chunk_count=5)
        async with http:
            result = await client.init_direct_post(
                ACCESS, PostInfo(privacy_level="SELF_ONLY", title="hello #tag"), plan
            )
        assert result.publish_id == "v_pub_file~v2-1.1"
        assert result.upload_url == UPLOAD_URL
        (body,) = bodies
        assert body["source_info"] == {
            "source": "FILE_UPLOAD",
            "video_size": 50_000_123,
            "chunk_size": 10_000_000,
            "total_chunk_count": 5,
        }
        assert body["post_info"]["privacy_level"] == "SELF_ONLY"
        assert body["post_info"]["title"] == "hello #tag"
        assert "video_cover_timestamp_ms" not in body["post_info"]

    async def test_inbox_init_sends_source_info_only(self) -> None:
        bodies: list[dict[str, Any]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            assert request.url.path == "/v2/post/publish/inbox/video/init/"
            bodies.append(json.loads(request.content))
            return json_response(200, envelope(data={"publish_id": "v_inbox_url~v2.1"}))

        client, http = make_client(handler)
        async with http:
            result = await client.init_inbox(
                ACCESS, PullFromUrlSourceInfo(video_url="https://cdn.example.com/v.mp4")
            )
        assert result.publish_id == "v_inbox_url~v2.1"
        assert result.upload_url is None
        assert bodies == [
            {"source_info": {"source": "PULL_FROM_URL", "video_url": "https://cdn.example.com/v.mp4"}}
        ]

    async def test_status_fetch_keeps_post_ids_above_2_pow_53_exact(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            assert json.loads(request.content) == {"publish_id": "p1"}
            raw = (
                '{"data": {"status": "PUBLISH_COMPLETE",'
                ' "publicaly_available_post_id": [7261463769757501445], "uploaded_bytes": 1000},'
                ' "error": {"code": "ok", "message": "", "log_id": "L"}}'
            )
            return httpx.Response(200, content=raw.encode())

        client, http = make_client(handler)
        async with http:
            status = await client.fetch_status(ACCESS, "p1")
        assert status.status == "PUBLISH_COMPLETE"
        assert status.publicaly_available_post_id == ["7261463769757501445"]
        assert status.uploaded_bytes == 1000

    async def test_cancel_maps_not_cancellable_to_rejected(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            assert request.url.path == "/v2/post/publish/cancel/"
            return json_response(400, envelope("publish_not_cancellable"))

        client, http = make_client(handler)
        async with http:
            with pytest.raises(TikTokRejectedError) as info:
                await client.cancel(ACCESS, "p1")
        assert info.value.code == "publish_not_cancellable"

    async def test_unexpected_success_body_is_rejected_without_echoing_it(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return json_response(200, envelope(data={"upload_url": "x"}))  # no publish_id

        client, http = make_client(handler)
        async with http:
            with pytest.raises(TikTokRejectedError) as info:
                await client.init_inbox(ACCESS, PullFromUrlSourceInfo(video_url="https://a.example/v.mp4"))
        assert info.value.code == "unexpected_body"


def token_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "access_token": "act.new",
        "expires_in": 7200,
        "open_id": "open-1",
        "refresh_token": "rft.new",
        "refresh_expires_in": 15552000,
        "scope": "video.publish,video.upload",
        "token_type": "Bearer",
    }
    body.update(overrides)
    return body


class TestOAuth:
    async def test_refresh_sends_client_key_form_encoded(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return json_response(200, token_body())

        client, http = make_client(handler)
        async with http:
            grant = await client.refresh_token(REFRESH)
        assert grant.access_token == "act.new"
        assert grant.refresh_token == "rft.new"
        assert grant.expires_in == 7200
        assert grant.scopes == ["video.publish", "video.upload"]
        (request,) = seen
        assert request.url.path == "/v2/oauth/token/"
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        form = parse_qs(request.content.decode())
        assert form == {
            "client_key": [CLIENT_KEY],
            "client_secret": [CLIENT_SECRET],
            "grant_type": ["refresh_token"],
            "refresh_token": [REFRESH],
        }
        assert "client_id" not in form
        assert "Authorization" not in request.headers

    @pytest.mark.parametrize("verifier", [None, "pkce-verifier"])
    async def test_exchange_code_sends_the_authorization_code_grant(self, verifier: str | None) -> None:
        forms: list[dict[str, list[str]]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            forms.append(parse_qs(request.content.decode()))
            return json_response(200, token_body())

        client, http = make_client(handler)
        async with http:
            grant = await client.exchange_code(
                "code-1", redirect_uri="https://app.example/cb", code_verifier=verifier
            )
        assert grant.open_id == "open-1"
        (form,) = forms
        expected = {
            "client_key": [CLIENT_KEY],
            "client_secret": [CLIENT_SECRET],
            "code": ["code-1"],
            "grant_type": ["authorization_code"],
            "redirect_uri": ["https://app.example/cb"],
        }
        if verifier is not None:
            expected["code_verifier"] = [verifier]
        assert form == expected

    @pytest.mark.parametrize(
        ("status", "error", "expected"),
        [
            (200, "invalid_grant", AuthExpiredError),
            (400, "invalid_grant", AuthExpiredError),
            (400, "access_denied", AuthExpiredError),
            (200, "server_error", TransientTikTokError),
            (503, "temporarily_unavailable", TransientTikTokError),
            (400, "invalid_client", TikTokRejectedError),
            (400, "invalid_request", TikTokRejectedError),
            (400, "unsupported_grant_type", TikTokRejectedError),
            (429, "rate_limit_exceeded", RateLimitedError),
        ],
    )
    async def test_flat_errors_are_detected_by_the_error_key(
        self, status: int, error: str, expected: type[ReelayError]
    ) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return json_response(status, {"error": error, "error_description": "nope", "log_id": "OAUTHLOG"})

        client, http = make_client(handler)
        async with http:
            with pytest.raises(expected) as info:
                await client.refresh_token(REFRESH)
        assert type(info.value) is expected
        assert info.value.code == error
        assert info.value.log_id == "OAUTHLOG"

    async def test_oauth_5xx_without_body_is_transient(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(502, content=b"bad gateway")

        client, http = make_client(handler)
        async with http:
            with pytest.raises(TransientTikTokError):
                await client.refresh_token(REFRESH)

    async def test_revoke_sends_the_token(self) -> None:
        forms: list[dict[str, list[str]]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            assert request.url.path == "/v2/oauth/revoke/"
            forms.append(parse_qs(request.content.decode()))
            return json_response(200, {})

        client, http = make_client(handler)
        async with http:
            await client.revoke(ACCESS)
        assert forms == [{"client_key": [CLIENT_KEY], "client_secret": [CLIENT_SECRET], "token": [ACCESS]}]

    async def test_never_logs_tokens_or_secrets(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v2/oauth/token/":
                return json_response(
                    200, {"error": "invalid_grant", "error_description": "dead", "log_id": "L"}
                )
            return json_response(401, envelope("access_token_invalid"))

        client, http = make_client(handler)
        with capture_logs() as logs:
            async with http:
                with pytest.raises(AuthExpiredError):
                    await client.refresh_token(REFRESH)
                with pytest.raises(AccessTokenInvalidError):
                    await client.creator_info(ACCESS)
        assert logs, "the failures should have been logged"
        dumped = repr(logs)
        for secret in (ACCESS, REFRESH, CLIENT_SECRET):
            assert secret not in dumped


async def one_piece(data: bytes) -> AsyncIterator[bytes]:
    yield data


class TestPutChunk:
    async def test_sends_exact_headers_and_no_authorization(self) -> None:
        seen: list[httpx.Request] = []

        async def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            body = b"".join([piece async for piece in request.stream])  # type: ignore[union-attr]  # async body
            assert len(body) == 10
            return httpx.Response(206, headers={"Content-Range": "bytes 0-19/100"})

        client, http = make_client(handler)
        async with http:
            result = await client.put_chunk(
                UPLOAD_URL, first=10, last=19, total=100, content_type="video/webm", body=one_piece(b"x" * 10)
            )
        assert result.status_code == 206
        assert result.server_progress == 20
        (request,) = seen
        assert str(request.url) == UPLOAD_URL
        assert request.method == "PUT"
        assert request.headers["Content-Length"] == "10"
        assert request.headers["Content-Range"] == "bytes 10-19/100"
        assert request.headers["Content-Type"] == "video/webm"
        assert "Authorization" not in request.headers
        assert "Transfer-Encoding" not in request.headers

    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            (403, UploadUrlExpiredError),
            (416, UploadOutOfSyncError),
            (404, TikTokRejectedError),
            (400, TikTokRejectedError),
            (500, TransientTikTokError),
            (502, TransientTikTokError),
            (503, TransientTikTokError),
            (429, RateLimitedError),
        ],
    )
    async def test_maps_http_status(self, status: int, expected: type[ReelayError]) -> None:
        async def handler(request: httpx.Request) -> httpx.Response:
            async for _ in request.stream:  # type: ignore[union-attr]  # async body
                pass
            return httpx.Response(status, headers={"Content-Range": "bytes 0-9/100"})

        client, http = make_client(handler)
        async with http:
            with pytest.raises(expected) as info:
                await client.put_chunk(
                    UPLOAD_URL,
                    first=10,
                    last=19,
                    total=100,
                    content_type="video/mp4",
                    body=one_piece(b"x" * 10),
                )
        assert type(info.value) is expected
        assert info.value.http_status == status
        if isinstance(info.value, UploadOutOfSyncError):
            assert info.value.server_offset == 10

    @pytest.mark.parametrize("status", [201, 206])
    async def test_accepts_201_and_206(self, status: int) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, headers={"Content-Range": "bytes 0-99/100"})

        client, http = make_client(handler)
        async with http:
            result = await client.put_chunk(
                UPLOAD_URL, first=90, last=99, total=100, content_type="video/mp4", body=one_piece(b"x" * 10)
            )
        assert result.status_code == status
        assert result.server_progress == 100

    async def test_dropped_connection_is_transient_without_status(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadError("reset", request=request)

        client, http = make_client(handler)
        async with http:
            with pytest.raises(TransientTikTokError) as info:
                await client.put_chunk(
                    UPLOAD_URL, first=0, last=9, total=10, content_type="video/mp4", body=one_piece(b"x" * 10)
                )
        assert info.value.http_status is None
        assert isinstance(info.value.__cause__, httpx.ReadError)

    @pytest.mark.parametrize("answer", ["dropped", "early"])
    async def test_a_body_cut_short_is_closed_before_the_put_returns(self, answer: str) -> None:
        # The transport stops reading the body (the connection dropped, or the server answered
        # before it had it all) and never closes it: the video reader behind it must be closed by
        # then, not by the garbage collector (it held a file open: a ResourceWarning at random).
        closed: list[bool] = []

        async def pieces() -> AsyncIterator[bytes]:
            try:
                for _ in range(10):
                    yield b"x"
            finally:
                closed.append(True)

        async def handler(request: httpx.Request) -> httpx.Response:
            async for _ in request.stream:  # type: ignore[union-attr]  # async body
                break  # one piece, then the transport is done with the body
            if answer == "dropped":
                raise httpx.WriteError("connection reset mid-body", request=request)
            return httpx.Response(403, json={"error": {"code": "access_denied", "message": "expired"}})

        client, http = make_client(handler, streaming=True)
        async with http:
            with pytest.raises(TransientTikTokError if answer == "dropped" else UploadUrlExpiredError):
                await client.put_chunk(
                    UPLOAD_URL, first=0, last=9, total=10, content_type="video/mp4", body=pieces()
                )
            assert closed == [True]

    @pytest.mark.parametrize("size", [9, 11])
    async def test_refuses_a_body_that_does_not_match_content_length(self, size: int) -> None:
        async def handler(request: httpx.Request) -> httpx.Response:
            async for _ in request.stream:  # type: ignore[union-attr]  # async body
                pass
            return httpx.Response(201)

        client, http = make_client(handler)
        async with http:
            with pytest.raises(InvalidInputError) as info:
                await client.put_chunk(
                    UPLOAD_URL,
                    first=0,
                    last=9,
                    total=10,
                    content_type="video/mp4",
                    body=one_piece(b"x" * size),
                )
        assert info.value.code == "source_size_mismatch"

    @pytest.mark.parametrize(("first", "last", "total"), [(-1, 9, 10), (5, 4, 10), (0, 10, 10)])
    async def test_refuses_an_impossible_range_without_calling(
        self, first: int, last: int, total: int
    ) -> None:
        calls: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            return httpx.Response(201)

        client, http = make_client(handler)
        async with http:
            with pytest.raises(InvalidInputError):
                await client.put_chunk(
                    UPLOAD_URL,
                    first=first,
                    last=last,
                    total=total,
                    content_type="video/mp4",
                    body=one_piece(b""),
                )
        assert calls == []


class TestProgressHeader:
    @pytest.mark.parametrize(
        ("header", "sent_last", "expected"),
        [
            ("bytes 0-9999999/50000123", 9_999_999, 10_000_000),  # inclusive index
            ("bytes 0-10000000/50000123", 9_999_999, 10_000_000),  # a count
            ("bytes 0-50000122/50000123", 50_000_122, 50_000_123),
            ("bytes 0-19999999/50000123", None, 20_000_000),  # no cross-check: read as HTTP does
            ("bytes 0-50000123/50000123", 50_000_122, 50_000_123),
            ("bytes */50000123", None, 0),  # nothing stored yet
            ("bytes 5-9/10", None, None),
            ("garbage", None, None),
            (None, None, None),
        ],
    )
    def test_cross_checks_count_against_inclusive_index(
        self, header: str | None, sent_last: int | None, expected: int | None
    ) -> None:
        assert progress_from_content_range(header, sent_last=sent_last) == expected


class TestRetryAfter:
    def test_reads_seconds(self) -> None:
        assert parse_retry_after("30") == 30.0

    def test_reads_http_dates(self) -> None:
        now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
        assert parse_retry_after(format_datetime(now + timedelta(seconds=45), usegmt=True), now=now) == 45.0

    @pytest.mark.parametrize("value", [None, "", "soon"])
    def test_ignores_what_it_cannot_read(self, value: str | None) -> None:
        assert parse_retry_after(value) is None
