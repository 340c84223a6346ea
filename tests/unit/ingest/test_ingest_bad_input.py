"""Specification: bad input to POST /v1/uploads gets a clear 4xx, and stores and publishes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from reelay_common.domain.errors import (
    AuthExpiredError,
    RateLimitedError,
    StorageFullError,
    TikTokRejectedError,
)

from tests.unit.ingest.ingest_fakes import (
    ACCOUNT,
    IngestApp,
    direct_fields,
    inbox_fields,
    make_settings,
    mp4_bytes,
    running,
    url_body,
)


def error_of(resp: Any) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return dict(body["error"])


class TestMalformedBodies:
    async def test_a_body_that_is_not_json_is_400(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post(
            "/v1/uploads",
            content=b'{"account_id": ',
            headers={**ingest.auth, "Content-Type": "application/json"},
        )

        assert resp.status_code == 400
        assert error_of(resp)["code"] == "malformed_json"
        ingest.assert_nothing_changed()

    async def test_an_empty_json_body_is_400(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post(
            "/v1/uploads", content=b"", headers={**ingest.auth, "Content-Type": "application/json"}
        )

        assert resp.status_code == 400
        ingest.assert_nothing_changed()

    async def test_missing_fields_are_422_with_their_paths(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json({"video_url": "https://151.101.1.1/v.mp4"})

        assert resp.status_code == 422
        error = error_of(resp)
        assert error["code"] == "validation_failed"
        assert {d["field"] for d in error["detail"]} == {"body.account_id", "body.mode"}
        ingest.assert_nothing_changed()

    async def test_a_wrong_nested_field_is_422_with_its_path(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(post_info={"privacy_level": "EVERYONE"}))

        assert resp.status_code == 422
        assert [d["field"] for d in error_of(resp)["detail"]] == ["body.post_info.privacy_level"]
        ingest.assert_nothing_changed()

    async def test_an_unknown_field_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(videoUrl="https://151.101.1.1/v.mp4"))

        assert resp.status_code == 422
        assert [d["field"] for d in error_of(resp)["detail"]] == ["body.videoUrl"]
        ingest.assert_nothing_changed()

    async def test_a_json_array_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json([url_body()])

        assert resp.status_code == 422
        ingest.assert_nothing_changed()

    async def test_neither_or_both_urls_are_422(self, ingest: IngestApp) -> None:
        neither = await ingest.post_json(url_body(video_url=None))
        both = await ingest.post_json(url_body(pull_from_url="https://151.101.1.1/p.mp4"))

        for resp in (neither, both):
            assert resp.status_code == 422
            assert "exactly one of video_url or pull_from_url" in resp.text
        ingest.assert_nothing_changed()

    async def test_a_request_id_with_forbidden_characters_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(request_id="../etc/passwd"))

        assert resp.status_code == 422
        assert error_of(resp)["detail"][0]["field"] == "body.request_id"
        ingest.assert_nothing_changed()

    async def test_a_bad_idempotency_key_header_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(), **{"Idempotency-Key": "has space"})

        assert resp.status_code == 422
        assert error_of(resp)["detail"][0]["field"] == "header.Idempotency-Key"
        ingest.assert_nothing_changed()

    async def test_request_id_and_idempotency_key_that_differ_are_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(request_id="a"), **{"Idempotency-Key": "b"})

        assert resp.status_code == 422
        assert error_of(resp)["code"] == "request_id_mismatch"
        ingest.assert_nothing_changed()

    async def test_a_json_body_over_one_mebibyte_is_413(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(
            url_body(post_info={"privacy_level": "SELF_ONLY", "title": "x" * 1_100_000})
        )

        assert resp.status_code == 413
        ingest.assert_nothing_changed()

    async def test_a_body_that_is_neither_json_nor_multipart_is_415(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post(
            "/v1/uploads", content=b"account_id=acme", headers={**ingest.auth, "Content-Type": "text/plain"}
        )

        assert resp.status_code == 415
        assert error_of(resp)["code"] == "unsupported_content_type"
        ingest.assert_nothing_changed()

    async def test_broken_multipart_is_400(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post(
            "/v1/uploads",
            content=b'--xyz\r\nContent-Disposition: form-data; name="mode"\r\n\r\ninbox',  # never closed
            headers={**ingest.auth, "Content-Type": "multipart/form-data; boundary=xyz"},
        )

        assert resp.status_code == 400
        assert error_of(resp)["code"] == "malformed_multipart"
        ingest.assert_nothing_changed()

    async def test_multipart_without_a_boundary_is_400(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post(
            "/v1/uploads", content=b"x", headers={**ingest.auth, "Content-Type": "multipart/form-data"}
        )

        assert resp.status_code == 400
        ingest.assert_nothing_changed()


class TestMode:
    async def test_direct_without_post_info_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(post_info=None))

        assert resp.status_code == 422
        assert "post_info (with privacy_level) is required" in resp.text
        ingest.assert_nothing_changed()

    async def test_direct_file_without_post_info_is_422_and_keeps_no_file(self, ingest: IngestApp) -> None:
        resp = await ingest.post_file(mp4_bytes(10_000), fields={"account_id": ACCOUNT, "mode": "direct"})

        assert resp.status_code == 422
        assert "post_info (with privacy_level) is required" in resp.text
        ingest.assert_nothing_changed()

    async def test_inbox_with_post_info_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(mode="inbox"))

        assert resp.status_code == 422
        assert "inbox uploads take none" in resp.text
        ingest.assert_nothing_changed()

    async def test_post_info_that_is_not_json_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_file(mp4_bytes(10_000), fields=direct_fields() | {"post_info": "{privacy"})

        assert resp.status_code == 422
        assert error_of(resp)["detail"][0]["field"] == "body.post_info"
        ingest.assert_nothing_changed()


class TestAccountChecks:
    async def test_an_unknown_account_is_404(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(account_id="ghost"))

        assert resp.status_code == 404
        error = error_of(resp)
        assert error["code"] == "unknown_account"
        assert error["detail"] == {"account_id": "ghost"}
        ingest.assert_nothing_changed()

    async def test_an_unknown_account_is_refused_before_the_file_is_stored(self, ingest: IngestApp) -> None:
        resp = await ingest.post_file(mp4_bytes(10_000), fields=inbox_fields() | {"account_id": "ghost"})

        assert resp.status_code == 404
        assert ingest.blobs.saves == 0
        ingest.assert_nothing_changed()

    async def test_an_unknown_account_named_after_the_file_leaves_no_file_behind(
        self, ingest: IngestApp
    ) -> None:
        boundary = "b0undary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
                "Content-Type: video/mp4\r\n\r\n"
            ).encode()
            + mp4_bytes(20_000)
            + (
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="account_id"\r\n\r\nghost'
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="mode"\r\n\r\ninbox'
                f"\r\n--{boundary}--\r\n"
            ).encode()
        )

        resp = await ingest.client.post(
            "/v1/uploads",
            content=body,
            headers={**ingest.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )

        assert resp.status_code == 404
        assert ingest.blobs.saves == 1, "the fields came after the file, so it was stored first..."
        ingest.assert_nothing_changed()  # ...and deleted when the account turned out unknown

    @pytest.mark.parametrize(
        ("status", "code"),
        [("reauth_required", "account_reauth_required"), ("disconnected", "account_disconnected")],
    )
    async def test_an_account_that_needs_reconnecting_is_409_naming_the_connect_route(
        self, ingest: IngestApp, status: str, code: str
    ) -> None:
        record = ingest.accounts.records[ACCOUNT]
        ingest.accounts.records[ACCOUNT] = record.model_copy(update={"status": status})

        resp = await ingest.post_json(url_body())

        assert resp.status_code == 409
        error = error_of(resp)
        assert error["code"] == code
        assert error["detail"]["reconnect"] == f"POST /v1/accounts/{ACCOUNT}/connect"
        ingest.assert_nothing_changed()

    async def test_an_account_without_the_mode_s_scope_is_422(self, ingest: IngestApp) -> None:
        ingest.accounts.add_connected("uploader-only", scopes=["user.info.basic", "video.upload"])

        resp = await ingest.post_json(url_body(account_id="uploader-only"))

        assert resp.status_code == 422
        error = error_of(resp)
        assert error["code"] == "missing_scope"
        assert error["detail"]["required_scope"] == "video.publish"
        ingest.assert_nothing_changed()


class TestVideoUrls:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1/v.mp4",
            "http://localhost/v.mp4",
            "http://10.1.2.3/v.mp4",
            "http://192.168.0.10/v.mp4",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/v.mp4",
            "http://[::ffff:127.0.0.1]/v.mp4",
            "http://0.0.0.0/v.mp4",
        ],
    )
    async def test_a_url_into_our_own_network_is_422(self, ingest: IngestApp, url: str) -> None:
        resp = await ingest.post_json(url_body(video_url=url))

        assert resp.status_code == 422
        error = error_of(resp)
        assert error["code"] == "url_not_public"
        assert "loopback, link-local, private or reserved" in error["message"]
        ingest.assert_nothing_changed()

    async def test_a_pull_url_into_our_own_network_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(video_url=None, pull_from_url="https://10.0.0.7/v.mp4"))

        assert resp.status_code == 422
        ingest.assert_nothing_changed()

    async def test_a_url_with_credentials_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(video_url="https://user:pw@151.101.1.1/v.mp4"))

        assert resp.status_code == 422
        assert error_of(resp)["code"] == "url_credentials"
        ingest.assert_nothing_changed()

    async def test_a_non_http_url_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(video_url="file:///etc/passwd"))

        assert resp.status_code == 422
        ingest.assert_nothing_changed()

    async def test_private_urls_pass_only_when_allowed_for_development(self) -> None:
        async with running(make_settings(allow_private_urls=True)) as ingest:
            resp = await ingest.post_json(url_body(video_url="http://127.0.0.1:8100/v.mp4"))

            assert resp.status_code == 202


class TestMedia:
    async def test_a_file_of_another_type_is_415(self, ingest: IngestApp) -> None:
        resp = await ingest.post_file(b"hello", filename="notes.txt", content_type="text/plain")

        assert resp.status_code == 415
        error = error_of(resp)
        assert error["code"] == "unsupported_media_type"
        assert error["detail"]["allowed"] == ["video/mp4", "video/quicktime", "video/webm"]
        ingest.assert_nothing_changed()

    async def test_a_file_whose_bytes_are_not_a_video_is_415(self, ingest: IngestApp) -> None:
        resp = await ingest.post_file(b"<html>not a video at all</html>", content_type="video/mp4")

        assert resp.status_code == 415
        assert "is not a video/mp4 video" in error_of(resp)["message"]
        assert ingest.blobs.saves == 0
        ingest.assert_nothing_changed()

    async def test_an_octet_stream_without_a_video_name_is_415(self, ingest: IngestApp) -> None:
        resp = await ingest.post_file(
            mp4_bytes(1000), filename="blob.bin", content_type="application/octet-stream"
        )

        assert resp.status_code == 415
        ingest.assert_nothing_changed()

    async def test_an_empty_file_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_file(b"")

        assert resp.status_code == 422
        assert error_of(resp)["code"] == "empty_file"
        ingest.assert_nothing_changed()

    async def test_a_form_without_a_file_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post(
            "/v1/uploads", data=inbox_fields(), files={"other": ("x", b"y")}, headers=ingest.auth
        )

        assert resp.status_code == 422
        ingest.assert_nothing_changed()

    async def test_two_files_are_422(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post(
            "/v1/uploads",
            data=inbox_fields(),
            files=[
                ("file", ("a.mp4", mp4_bytes(100), "video/mp4")),
                ("file", ("b.mp4", mp4_bytes(100), "video/mp4")),
            ],
            headers=ingest.auth,
        )

        assert resp.status_code == 422
        assert error_of(resp)["code"] == "duplicate_field"
        ingest.assert_nothing_changed()

    async def test_an_unknown_form_field_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.post_file(mp4_bytes(100), fields=inbox_fields(caption="hi"))

        assert resp.status_code == 422
        assert error_of(resp)["code"] == "unknown_field"
        ingest.assert_nothing_changed()


class TestSize:
    async def test_a_file_over_the_limit_by_its_content_length_is_413_before_reading(self) -> None:
        async with running(make_settings(max_upload_bytes=100_000)) as ingest:
            resp = await ingest.post_file(mp4_bytes(1_300_000))

            assert resp.status_code == 413
            assert error_of(resp)["code"] == "too_large"
            assert ingest.blobs.saves == 0
            ingest.assert_nothing_changed()

    async def test_a_file_over_the_limit_while_streaming_is_413_and_nothing_is_kept(self) -> None:
        async with running(make_settings(max_upload_bytes=100_000)) as ingest:
            # Within the multipart allowance of the Content-Length check, over the file limit.
            resp = await ingest.post_file(mp4_bytes(150_000))

            assert resp.status_code == 413
            assert error_of(resp)["code"] == "too_large"
            ingest.assert_nothing_changed()

    async def test_a_full_blob_store_is_507_with_retry_after_and_nothing_is_kept(
        self, ingest: IngestApp, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def full(chunks: Any, **_kwargs: Any) -> Any:
            async for _ in chunks:
                raise StorageFullError("the blob store's budget is used up", code="storage_full")
            raise AssertionError("the file had no bytes")

        monkeypatch.setattr(ingest.blobs, "save", full)
        resp = await ingest.post_file(mp4_bytes(50_000))

        assert resp.status_code == 507
        assert error_of(resp)["code"] == "storage_full"
        assert int(resp.headers["Retry-After"]) >= 1
        ingest.assert_nothing_changed()

    async def test_a_file_at_the_limit_is_accepted(self) -> None:
        async with running(make_settings(max_upload_bytes=100_000)) as ingest:
            resp = await ingest.post_file(mp4_bytes(100_000))

            assert resp.status_code == 202


class TestPrivacyLevels:
    async def test_a_level_the_creator_does_not_offer_is_422_naming_the_offered_ones(
        self, ingest: IngestApp
    ) -> None:
        ingest.tiktok.levels[ACCOUNT] = ["FOLLOWER_OF_CREATOR", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]

        resp = await ingest.post_json(url_body(post_info={"privacy_level": "PUBLIC_TO_EVERYONE"}))

        assert resp.status_code == 422
        error = error_of(resp)
        assert error["code"] == "privacy_level_not_offered"
        assert error["detail"]["offered"] == ["FOLLOWER_OF_CREATOR", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]
        assert "FOLLOWER_OF_CREATOR, MUTUAL_FOLLOW_FRIENDS, SELF_ONLY" in error["message"]
        ingest.assert_nothing_changed()

    async def test_a_level_not_offered_is_refused_before_the_file_is_stored(self, ingest: IngestApp) -> None:
        ingest.tiktok.levels[ACCOUNT] = ["SELF_ONLY"]

        resp = await ingest.post_file(mp4_bytes(10_000), fields=direct_fields("PUBLIC_TO_EVERYONE"))

        assert resp.status_code == 422
        assert ingest.blobs.saves == 0
        ingest.assert_nothing_changed()

    async def test_an_expired_authorization_is_422_asking_to_reconnect(self, ingest: IngestApp) -> None:
        ingest.tiktok.errors[ACCOUNT] = AuthExpiredError("refresh failed", code="invalid_grant")

        resp = await ingest.post_json(url_body())

        assert resp.status_code == 422
        assert error_of(resp)["code"] == "account_reauth_required"
        ingest.assert_nothing_changed()

    async def test_a_creator_tiktok_will_not_let_post_is_422(self, ingest: IngestApp) -> None:
        ingest.tiktok.errors[ACCOUNT] = TikTokRejectedError(
            "too many posts", code="spam_risk_too_many_posts", log_id="L1"
        )

        resp = await ingest.post_json(url_body())

        assert resp.status_code == 422
        error = error_of(resp)
        assert error["code"] == "tiktok_rejected"
        assert error["detail"] == {"tiktok_code": "spam_risk_too_many_posts", "log_id": "L1"}
        ingest.assert_nothing_changed()

    async def test_a_spent_creator_info_quota_refuses_no_client(self, ingest: IngestApp) -> None:
        # TikTok's limits are ours to keep: the privacy level is left to TikTok's check at init.
        ingest.tiktok.errors[ACCOUNT] = RateLimitedError("paced", retry_after=12.2, code="paced")

        resp = await ingest.post_json(url_body(), **{"Idempotency-Key": "paced-1"})

        assert resp.status_code == 202, resp.text
        assert await ingest.uploads.get("paced-1") is not None
        assert len(ingest.requested()) == 1


class TestApiKey:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer wrong-key"},
            {"Authorization": "Basic dW5pdDp0ZXN0"},
            {"Authorization": "Bearer"},
        ],
        ids=["none", "wrong", "basic", "empty"],
    )
    async def test_an_upload_without_a_valid_key_is_401(
        self, ingest: IngestApp, headers: dict[str, str]
    ) -> None:
        resp = await ingest.client.post("/v1/uploads", json=url_body(), headers=headers)

        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert error_of(resp)["code"] == "unauthorized"
        ingest.assert_nothing_changed()

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/v1/uploads"),
            ("GET", "/v1/uploads/x"),
            ("POST", "/v1/accounts"),
            ("GET", "/v1/accounts/acme-main"),
        ],
    )
    async def test_every_v1_route_but_the_webhook_needs_a_key(
        self, ingest: IngestApp, method: str, path: str
    ) -> None:
        resp = await ingest.client.request(method, path, json={})

        assert resp.status_code == 401

    async def test_any_of_several_configured_keys_is_accepted(self) -> None:
        async with running(make_settings(api_keys="old-key,new-key")) as ingest:
            old = await ingest.client.get("/v1/uploads", headers={"Authorization": "Bearer old-key"})
            new = await ingest.client.get("/v1/uploads", headers={"Authorization": "Bearer new-key"})
            both = await ingest.client.get("/v1/uploads", headers={"Authorization": "Bearer old-key,new-key"})

            assert (old.status_code, new.status_code, both.status_code) == (200, 200, 401)


class TestErrorBodies:
    async def test_an_unknown_route_has_the_error_body(self, ingest: IngestApp) -> None:
        resp = await ingest.client.get("/v2/nothing")

        assert resp.status_code == 404
        assert error_of(resp)["code"] == "not_found"

    async def test_a_wrong_method_has_the_error_body(self, ingest: IngestApp) -> None:
        resp = await ingest.client.delete("/healthz")

        assert resp.status_code == 405
        assert error_of(resp)["code"] == "method_not_allowed"

    async def test_validation_errors_never_echo_the_input(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(post_info=json.dumps({"privacy_level": "SECRET-ish-value"})))

        assert resp.status_code == 422
        assert "SECRET-ish-value" not in resp.text
