"""Specification of POST /v1/webhooks/tiktok: verified over the raw body, passed on, or refused."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from reelay_common.domain.messages import TikTokWebhookReceived
from reelay_common.domain.records import Change
from reelay_common.domain.states import UploadState
from reelay_ingest.errors import SignatureError
from reelay_ingest.webhooks import parse_webhook, sign, verify_signature

from tests.unit.ingest.ingest_fakes import ACCOUNT, CLIENT_SECRET, TOPICS, IngestApp, url_body

PUBLISH_ID = "v_pub_file~v2-1.7261463769757501445"


def event(name: str = "post.publish.complete", **content: Any) -> dict[str, Any]:
    return {
        "client_key": "dev-client-key",
        "event": name,
        "create_time": 1615338610,
        "user_openid": f"open-{ACCOUNT}",
        "content": json.dumps({"publish_id": PUBLISH_ID, "publish_type": "DIRECT_PUBLISH", **content}),
    }


async def with_tracked_upload(ingest: IngestApp) -> None:
    await ingest.post_json(url_body(request_id="w-1"))
    await ingest.uploads.transition(
        "w-1", Change(UploadState.UPLOADING, source="uploader", set_fields={"publish_id": PUBLISH_ID})
    )
    ingest.publisher.sent.clear()


class TestVerifiedWebhooks:
    async def test_a_signed_event_is_published_keyed_by_the_upload_s_account(self, ingest: IngestApp) -> None:
        await with_tracked_upload(ingest)

        resp = await ingest.post_webhook(event())

        assert resp.status_code == 200
        assert resp.json() == {"received": True, "event": "post.publish.complete", "published": True}
        [(message, key)] = ingest.webhooks()
        assert key == ACCOUNT
        assert message.account_id == ACCOUNT
        assert (message.event, message.publish_id, message.publish_type, message.create_time) == (
            "post.publish.complete",
            PUBLISH_ID,
            "DIRECT_PUBLISH",
            1615338610,
        )
        assert [t for t, _, _ in ingest.publisher.sent] == [TOPICS.publish_events]

    async def test_needs_no_api_key(self, ingest: IngestApp) -> None:
        resp = await ingest.post_webhook(event())  # post_webhook sends no Authorization header

        assert resp.status_code == 200

    async def test_content_is_parsed_twice_and_big_post_ids_stay_exact(self, ingest: IngestApp) -> None:
        await with_tracked_upload(ingest)
        body = json.dumps(event("post.publish.publicly_available")).replace(
            '\\"publish_type\\"', '\\"post_id\\": 7300000000000000123, \\"publish_type\\"'
        )

        resp = await ingest.post_webhook(body.encode())

        assert resp.status_code == 200
        [(message, _)] = ingest.webhooks()
        assert message.post_id == "7300000000000000123"

    async def test_a_failure_carries_tiktok_s_reason(self, ingest: IngestApp) -> None:
        await with_tracked_upload(ingest)

        await ingest.post_webhook(event("post.publish.failed", reason="file_format_check_failed"))

        [(message, _)] = ingest.webhooks()
        assert message.reason == "file_format_check_failed"

    async def test_an_event_for_an_unknown_publish_is_passed_on_keyed_by_the_user(
        self, ingest: IngestApp
    ) -> None:
        resp = await ingest.post_webhook(event())

        assert resp.status_code == 200
        [(message, key)] = ingest.webhooks()
        assert message.account_id is None
        assert key == f"open-{ACCOUNT}"

    async def test_authorization_removed_is_passed_on(self, ingest: IngestApp) -> None:
        payload = event("authorization.removed")
        payload["content"] = json.dumps({"reason": 1})

        resp = await ingest.post_webhook(payload)

        assert resp.status_code == 200
        [(message, _)] = ingest.webhooks()
        assert (message.event, message.reason, message.publish_id) == ("authorization.removed", "1", None)

    async def test_an_unknown_event_is_acknowledged_and_not_published(self, ingest: IngestApp) -> None:
        resp = await ingest.post_webhook(event("video.something.new"))

        assert resp.status_code == 200
        assert resp.json()["published"] is False
        assert ingest.publisher.sent == []

    async def test_kafka_not_acknowledging_is_503_so_tiktok_retries(self, ingest: IngestApp) -> None:
        ingest.publisher.failing_topics.add(TOPICS.publish_events)

        resp = await ingest.post_webhook(event())

        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "enqueue_failed"


class TestRefusedWebhooks:
    async def test_a_wrong_signature_is_401_and_publishes_nothing(self, ingest: IngestApp) -> None:
        resp = await ingest.post_webhook(event(), secret="not-the-secret")

        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "signature_mismatch"
        assert ingest.publisher.sent == []

    async def test_a_missing_signature_is_401(self, ingest: IngestApp) -> None:
        resp = await ingest.post_webhook(event(), signature=None)

        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "signature_missing"
        assert ingest.publisher.sent == []

    @pytest.mark.parametrize(
        "header", ["garbage", "t=abc,s=" + "0" * 64, "t=1633174587,s=xyz", "s=" + "a" * 64]
    )
    async def test_a_malformed_signature_is_401(self, ingest: IngestApp, header: str) -> None:
        resp = await ingest.post_webhook(event(), signature=header)

        assert resp.status_code == 401
        assert ingest.publisher.sent == []

    async def test_a_stale_timestamp_is_401_even_when_the_signature_matches(self, ingest: IngestApp) -> None:
        resp = await ingest.post_webhook(event(), at=int(time.time()) - 301)

        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "signature_expired"
        assert ingest.publisher.sent == []

    async def test_a_timestamp_from_the_future_beyond_tolerance_is_401(self, ingest: IngestApp) -> None:
        resp = await ingest.post_webhook(event(), at=int(time.time()) + 400)

        assert resp.status_code == 401
        assert ingest.publisher.sent == []

    async def test_a_tampered_body_is_401(self, ingest: IngestApp) -> None:
        original = json.dumps(event()).encode()
        header = sign(CLIENT_SECRET, int(time.time()), original)
        tampered = original.replace(b"post.publish.complete", b"post.publish.failed!!")

        resp = await ingest.post_webhook(tampered, signature=header)

        assert resp.status_code == 401
        assert ingest.publisher.sent == []

    async def test_the_signature_covers_the_raw_bytes_not_reserialised_json(self, ingest: IngestApp) -> None:
        # Same JSON value, different bytes (spacing): the signature of one does not fit the other.
        compact = json.dumps(event(), separators=(",", ":")).encode()
        spaced = json.dumps(event(), indent=2).encode()
        header = sign(CLIENT_SECRET, int(time.time()), compact)

        assert (await ingest.post_webhook(spaced, signature=header)).status_code == 401
        assert (await ingest.post_webhook(compact, signature=header)).status_code == 200

    async def test_a_signed_body_that_is_not_tiktok_s_shape_is_400(self, ingest: IngestApp) -> None:
        resp = await ingest.post_webhook(b'{"hello": "world"}')

        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "webhook_malformed"
        assert ingest.publisher.sent == []

    async def test_an_oversized_body_is_413(self, ingest: IngestApp) -> None:
        resp = await ingest.post_webhook(b"{" + b" " * 70_000 + b"}")

        assert resp.status_code == 413
        assert ingest.publisher.sent == []


class TestSignatureFunctions:
    def test_accepts_what_sign_produces(self) -> None:
        body = b'{"event":"x"}'
        verify_signature(sign("s3", 1000, body), body, "s3", now=1000, tolerance=300)

    def test_matches_tiktok_s_documented_construction(self) -> None:
        import hashlib
        import hmac

        body = b'{"a":1}'
        expected = hmac.new(b"secret", b"1633174587." + body, hashlib.sha256).hexdigest()
        verify_signature(f"t=1633174587,s={expected}", body, "secret", now=1633174587, tolerance=1)

    def test_accepts_uppercase_hex_and_spaces_around_fields(self) -> None:
        header = sign("k", 50, b"b")
        t, s = header.split(",")
        verify_signature(f" {t} , s={s.removeprefix('s=').upper()} ", b"b", "k", now=50, tolerance=1)

    def test_refuses_a_timestamp_of_non_ascii_digits(self) -> None:
        with pytest.raises(SignatureError):
            verify_signature("t=\u00b2,s=" + "0" * 64, b"b", "k", now=2, tolerance=300)

    def test_refuses_at_the_edge_of_tolerance_plus_one(self) -> None:
        verify_signature(sign("k", 100, b"b"), b"b", "k", now=400, tolerance=300)
        with pytest.raises(SignatureError):
            verify_signature(sign("k", 100, b"b"), b"b", "k", now=401, tolerance=300)


class TestParseWebhook:
    def test_tolerates_content_sent_as_an_object(self) -> None:
        parsed = parse_webhook(
            json.dumps(
                {"event": "post.publish.complete", "create_time": 1, "content": {"publish_id": "p"}}
            ).encode()
        )
        assert parsed.publish_id == "p"

    @pytest.mark.parametrize(
        "body",
        [
            b"[]",
            b"not json",
            b'{"event": "x"}',
            b'{"event": "", "create_time": 1}',
            b'{"event": "x", "create_time": "1"}',
            b'{"event": "x", "create_time": 1, "content": "{bad"}',
            b'{"event": "x", "create_time": 1, "content": "[1]"}',
            b'{"event": "x", "create_time": 1, "content": "{\\"publish_id\\": {}}"}',
        ],
    )
    def test_refuses_what_is_not_tiktok_s_shape(self, body: bytes) -> None:
        from reelay_ingest.errors import MalformedRequestError

        with pytest.raises(MalformedRequestError):
            parse_webhook(body)

    def test_webhook_message_validates(self) -> None:
        parsed = parse_webhook(json.dumps(event()).encode())
        message = TikTokWebhookReceived(
            event=parsed.event, create_time=parsed.create_time, publish_id=parsed.publish_id
        )
        assert message.publish_id == PUBLISH_ID
