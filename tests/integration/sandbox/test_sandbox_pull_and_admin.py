"""PULL_FROM_URL (§4), cancel, sliding rate windows, and the /sandbox/ inspection API."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from reelay_testing.waiting import eventually
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

from tests.integration.sandbox.sandbox_support import (
    FAST,
    SELF_ONLY,
    Api,
    WebhookReceiver,
    code,
    plan,
    sample,
)


class MediaHost:
    """An https server on localhost with a self-signed certificate, serving sample media."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.video = sample(3_000_000)
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/videos/ok.mp4", self._ok)
        app.router.add_get("/videos/moved.mp4", self._redirect)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.base = f"https://localhost:{self._runner.addresses[0][1]}"

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(body=self.video, content_type="video/mp4")

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(body=self.video, content_type="video/mp4")

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/videos/ok.mp4")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def media_host(tmp_path: Path) -> AsyncIterator[MediaHost]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    host = MediaHost(cert, key)
    await host.start()
    yield host
    await host.stop()


def _pull(url: str) -> dict[str, Any]:
    return {"source": "PULL_FROM_URL", "video_url": url}


class TestPullFromUrl:
    async def test_downloads_checks_and_publishes(self, media_host: MediaHost) -> None:
        async with (
            running_sandbox(**FAST, verified_domains=["localhost"], pull_ca_file=media_host.cert) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            resp = await api.init_direct(_pull(f"{media_host.base}/videos/ok.mp4"), SELF_ONLY)
            data = resp.json()["data"]
            assert set(data) == {"publish_id"}  # no upload_url for PULL_FROM_URL
            assert data["publish_id"].startswith("v_pub_url~v2-1.")
            status = await api.wait_status(data["publish_id"], "PUBLISH_COMPLETE", "FAILED")
            assert status["status"] == "PUBLISH_COMPLETE"
            assert status["downloaded_bytes"] == len(media_host.video)
            assert "uploaded_bytes" not in status

    @pytest.mark.parametrize("path", ["/videos/moved.mp4", "/videos/missing.mp4"])
    async def test_redirects_and_errors_fail_the_pull(self, media_host: MediaHost, path: str) -> None:
        async with (
            running_sandbox(
                **FAST, verified_url_prefixes=[f"{media_host.base}/videos/"], pull_ca_file=media_host.cert
            ) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            publish_id = (await api.init_inbox(_pull(media_host.base + path))).json()["data"]["publish_id"]
            assert publish_id.startswith("v_inbox_url~v2-1.")
            status = await api.wait_status(publish_id, "FAILED", "SEND_TO_USER_INBOX")
            assert status["fail_reason"] == "video_pull_failed"

    async def test_untrusted_certificate_fails_the_pull(self, media_host: MediaHost) -> None:
        async with (
            running_sandbox(**FAST, verified_domains=["localhost"]) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            publish_id = (await api.init_direct(_pull(f"{media_host.base}/videos/ok.mp4"), SELF_ONLY)).json()[
                "data"
            ]["publish_id"]
            status = await api.wait_status(publish_id, "FAILED", "PUBLISH_COMPLETE")
            assert status["fail_reason"] == "video_pull_failed"

    async def test_simulated_pull_needs_no_media_host(self) -> None:
        async with (
            running_sandbox(
                **FAST, verified_domains=["media.example"], pull_mode="simulate", pull_simulate_size=2_000_000
            ) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            publish_id = (await api.init_direct(_pull("https://cdn.media.example/v.mp4"), SELF_ONLY)).json()[
                "data"
            ]["publish_id"]
            status = await api.wait_status(publish_id, "PUBLISH_COMPLETE")
            assert status["downloaded_bytes"] == 2_000_000

    async def test_cancel_during_download_fails_with_publish_cancelled(self) -> None:
        async with (
            WebhookReceiver() as hook,
            running_sandbox(
                **FAST,
                verified_domains=["media.example"],
                pull_mode="simulate",
                download_delay_seconds=30,
                webhook_url=hook.url,
            ) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            publish_id = (await api.init_direct(_pull("https://media.example/v.mp4"), SELF_ONLY)).json()[
                "data"
            ]["publish_id"]
            assert (await api.status(publish_id)).json()["data"]["status"] == "PROCESSING_DOWNLOAD"
            resp = await api.cancel(publish_id)
            assert (resp.status_code, code(resp)) == (200, "ok")
            status = (await api.status(publish_id)).json()["data"]
            assert (status["status"], status["fail_reason"]) == ("FAILED", "publish_cancelled")
            again = await api.cancel(publish_id)
            assert code(again) == "publish_not_cancellable"
            await api.wait_status(publish_id, "FAILED")

            async def failed_event() -> bool:
                await asyncio.sleep(0)
                return bool(hook.events("post.publish.failed"))

            await eventually(failed_event, timeout=5, interval=0.02)


class TestRateWindows:
    async def test_window_slides_and_limits_are_per_token(self) -> None:
        async with (
            running_sandbox(**FAST, rate_limit_window_seconds=0.5) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            statuses = [(await api.creator_info()).status_code for _ in range(21)]
            assert statuses == [200] * 20 + [429]
            other_token = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            assert (await other_token.creator_info()).status_code == 200
            await asyncio.sleep(0.6)  # the window length itself is what is under test
            assert (await api.creator_info()).status_code == 200


class TestInspection:
    async def test_create_user_and_issue_tokens(self, http: httpx.AsyncClient) -> None:
        resp = await http.post(
            "/sandbox/users", json={"username": "alice", "private_account": True, "scopes": ["video.upload"]}
        )
        assert resp.status_code == 201
        open_id = resp.json()["open_id"]
        tokens = (await http.post(f"/sandbox/users/{open_id}/tokens")).json()
        assert tokens["open_id"] == open_id
        assert tokens["scope"] == "video.upload"
        listed = (await http.get(f"/sandbox/users/{open_id}/tokens")).json()
        assert [t["access_token"] for t in listed["access_tokens"]] == [tokens["access_token"]]

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"username": ""},
            {"username": "x", "scopes": ["video.everything"]},
            {"username": "x", "extra": 1},
        ],
    )
    async def test_bad_user_is_refused_and_creates_nothing(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        before = len(sandbox.state.users)
        resp = await http.post("/sandbox/users", json=body)
        assert resp.status_code == 400
        assert resp.json()["error"]
        assert len(sandbox.state.users) == before

    async def test_malformed_json_is_refused(self, http: httpx.AsyncClient) -> None:
        resp = await http.post("/sandbox/users", content=b"{", headers={"Content-Type": "application/json"})
        assert resp.status_code == 400

    async def test_duplicate_open_id_is_a_conflict(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        resp = await http.post(
            "/sandbox/users", json={"username": "x", "open_id": sandbox.default_user.open_id}
        )
        assert resp.status_code == 409

    async def test_patch_user_makes_the_account_private(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient, api: Api
    ) -> None:
        open_id = sandbox.default_user.open_id
        resp = await http.patch(f"/sandbox/users/{open_id}", json={"private_account": True})
        assert resp.json()["private_account"] is True
        info = (await api.creator_info()).json()["data"]
        assert "PUBLIC_TO_EVERYONE" not in info["privacy_level_options"]
        assert (await http.patch("/sandbox/users/nobody", json={"banned": True})).status_code == 404

    async def test_publishes_filter_by_account_and_hash(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient, api: Api
    ) -> None:
        other = sandbox.add_user("other")
        other_api = Api(http, sandbox.issue_tokens(other.open_id)["access_token"])
        video = sample(2_000_000)
        await api.publish(video)
        await api.publish(sample(2_000_000, seed=1))
        await other_api.publish(video)
        mine = (await http.get("/sandbox/publishes", params={"open_id": sandbox.default_user.open_id})).json()
        assert mine["count"] == 2
        same_video = (
            await http.get("/sandbox/publishes", params={"sha256": hashlib.sha256(video).hexdigest()})
        ).json()
        assert same_video["count"] == 2
        assert {p["open_id"] for p in same_video["publishes"]} == {
            sandbox.default_user.open_id,
            other.open_id,
        }
        assert (await http.get("/sandbox/publishes/v_pub_file~v2-1.0")).status_code == 404

    async def test_stats_count_calls_and_violations(self, http: httpx.AsyncClient, api: Api) -> None:
        await api.creator_info()
        await api.init_direct(plan(50_000_123, 10_000_000, 6))
        stats = (await http.get("/sandbox/stats")).json()
        assert stats["calls"]["creator_info"] == 1
        assert stats["calls"]["video_init"] == 1
        assert stats["violations"] == {"invalid_params": 1}
        assert stats["recent_violations"][0]["detail"].startswith("total_chunk_count")

    async def test_reset_forgets_everything_but_the_default_user(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient, api: Api
    ) -> None:
        default_open_id = sandbox.default_user.open_id
        await api.publish(sample(2_000_000))
        sandbox.add_user("temp")
        assert (await http.post("/sandbox/reset")).status_code == 200
        assert (await http.get("/sandbox/publishes")).json()["count"] == 0
        users = (await http.get("/sandbox/users")).json()["users"]
        assert [u["open_id"] for u in users] == [default_open_id]
        assert (await api.creator_info()).status_code == 401  # tokens are gone too

    async def test_healthz(self, http: httpx.AsyncClient) -> None:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
