"""Webhooks (§8): TikTok's body, a verifiable TikTok-Signature, retries until a 200."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
from reelay_testing.waiting import eventually
from tiktok_sandbox.testing import running_sandbox

from tests.integration.sandbox.sandbox_support import FAST, PUBLIC, Api, WebhookReceiver, sample

SECRET = "webhook-test-secret"


def _verify(headers: dict[str, str], body: bytes) -> bool:
    sig = headers["Tiktok-Signature"] if "Tiktok-Signature" in headers else headers["TikTok-Signature"]
    parts = dict(p.split("=", 1) for p in sig.split(","))
    expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["s"]) and abs(time.time() - int(parts["t"])) < 300


async def _events(receiver: WebhookReceiver, *names: str) -> list[dict[str, object]]:
    async def got() -> list[dict[str, object]] | None:
        found = [receiver.events(n) for n in names]
        return [e[0] for e in found] if all(found) else None

    result: list[dict[str, object]] = await eventually(got, timeout=5, interval=0.02)
    return result


class TestWebhooks:
    async def test_direct_post_sends_complete_then_publicly_available_signed(self) -> None:
        async with (
            WebhookReceiver() as hook,
            running_sandbox(**FAST, webhook_url=hook.url, client_secret=SECRET, client_key="key-1") as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            user = sb.default_user
            api = Api(http, sb.issue_tokens(user.open_id)["access_token"])
            publish_id = await api.publish(sample(2_000_000), post_info=PUBLIC)
            complete, public = await _events(hook, "post.publish.complete", "post.publish.publicly_available")
            assert complete["client_key"] == "key-1"
            assert complete["user_openid"] == user.open_id
            assert isinstance(complete["create_time"], int)
            assert isinstance(complete["content"], str)  # a JSON string, parsed twice
            assert json.loads(complete["content"]) == {
                "publish_id": publish_id,
                "publish_type": "DIRECT_PUBLISH",
            }
            content = json.loads(str(public["content"]))
            assert content["publish_id"] == publish_id
            assert content["publish_type"] == "DIRECT_PUBLISH"
            status = (await api.status(publish_id)).json()["data"]
            assert [content["post_id"]] == status["publicaly_available_post_id"]
            assert all(_verify(h, b) for h, b, _ in hook.received)

    async def test_signature_covers_the_raw_body(self) -> None:
        async with (
            WebhookReceiver() as hook,
            running_sandbox(**FAST, webhook_url=hook.url, client_secret=SECRET) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            await api.publish(sample(2_000_000), inbox=True)
            await _events(hook, "post.publish.inbox_delivered")
            headers, body, _ = hook.received[0]
            assert _verify(headers, body)
            assert not _verify(headers, body.replace(b'"event"', b'"event" '))

    async def test_inbox_and_failure_events(self) -> None:
        async with (
            WebhookReceiver() as hook,
            running_sandbox(**FAST, webhook_url=hook.url, client_secret=SECRET) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            inbox_id = await api.publish(sample(2_000_000), inbox=True)
            failed_id = await api.publish(b"\x00" * 1_000_000)
            delivered, failed = await _events(hook, "post.publish.inbox_delivered", "post.publish.failed")
            assert json.loads(str(delivered["content"])) == {
                "publish_id": inbox_id,
                "publish_type": "INBOX_SHARE",
            }
            assert json.loads(str(failed["content"])) == {
                "publish_id": failed_id,
                "reason": "file_format_check_failed",
                "publish_type": "DIRECT_PUBLISH",
            }

    async def test_non_200_answers_are_retried_until_200(self) -> None:
        async with (
            WebhookReceiver(statuses=[500, 503]) as hook,
            running_sandbox(**FAST, webhook_url=hook.url, client_secret=SECRET) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            await api.publish(sample(2_000_000), inbox=True)
            await _events(hook, "post.publish.inbox_delivered")
            assert [status for _, _, status in hook.received] == [500, 503, 200]
            assert all(_verify(h, b) for h, b, _ in hook.received)
            deliveries = (await http.get("/sandbox/webhooks")).json()["deliveries"]
            assert deliveries[0]["attempts"] == [500, 503, 200]
            assert deliveries[0]["delivered"] is True

    async def test_retries_are_bounded(self) -> None:
        async with (
            WebhookReceiver(statuses=[500] * 10) as hook,
            running_sandbox(**FAST, webhook_url=hook.url, webhook_max_attempts=3) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            await api.publish(sample(2_000_000), inbox=True)

            async def gave_up() -> bool:
                deliveries = (await http.get("/sandbox/webhooks")).json()["deliveries"]
                return bool(deliveries) and len(deliveries[0]["attempts"]) == 3

            await eventually(gave_up, timeout=5, interval=0.02)
            deliveries = (await http.get("/sandbox/webhooks")).json()["deliveries"]
            assert deliveries[0]["delivered"] is False
            assert len(hook.received) == 3

    async def test_revoke_sends_authorization_removed_reason_5(self) -> None:
        async with (
            WebhookReceiver() as hook,
            running_sandbox(**FAST, webhook_url=hook.url, client_secret=SECRET) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            tokens = sb.issue_tokens(sb.default_user.open_id)
            form = {"client_key": "dev-client-key", "client_secret": SECRET, "token": tokens["access_token"]}
            resp = await http.post("/v2/oauth/revoke/", data=form)
            assert resp.json() == {}
            (removed,) = await _events(hook, "authorization.removed")
            assert removed["user_openid"] == sb.default_user.open_id
            assert json.loads(str(removed["content"])) == {"reason": 5}
