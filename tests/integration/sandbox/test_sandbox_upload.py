"""The chunk PUT contract (§3.1): happy paths, strict headers, strict sequencing, streaming to disk."""

from __future__ import annotations

import asyncio
import hashlib
import re

import httpx
import pytest
from reelay_testing.waiting import eventually
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

from tests.integration.sandbox.sandbox_support import FAST, Api, plan, ranges, sample

WORKED = plan(50_000_123, 10_000_000)


async def _init(api: Api, source: dict[str, object]) -> tuple[str, str]:
    resp = await api.init_direct(source)
    assert resp.status_code == 200, resp.text
    d = resp.json()["data"]
    return d["publish_id"], d["upload_url"]


class TestHappyPaths:
    async def test_worked_example_answers_206_four_times_then_201(
        self, api: Api, sandbox: SandboxHandle
    ) -> None:
        data = sample(50_000_123)
        publish_id, url = await _init(api, WORKED)
        assert ranges(WORKED) == [
            (0, 9_999_999),
            (10_000_000, 19_999_999),
            (20_000_000, 29_999_999),
            (30_000_000, 39_999_999),
            (40_000_000, 50_000_122),
        ]
        progress = []
        statuses = []
        for first, last in ranges(WORKED):
            resp = await api.put(url, data[first : last + 1], first, last, len(data))
            statuses.append(resp.status_code)
            progress.append(resp.headers["Content-Range"])
        assert statuses == [206, 206, 206, 206, 201]
        assert progress[0] == "bytes 0-9999999/50000123"
        assert progress[-1] == "bytes 0-50000122/50000123"
        pub = (await api.http.get(f"/sandbox/publishes/{publish_id}")).json()
        assert pub["complete"] is True
        assert pub["sha256"] == hashlib.sha256(data).hexdigest()
        assert [(c["first"], c["last"], c["size"], c["order"], c["status_code"]) for c in pub["chunks"]] == [
            (0, 9_999_999, 10_000_000, 1, 206),
            (10_000_000, 19_999_999, 10_000_000, 2, 206),
            (20_000_000, 29_999_999, 10_000_000, 3, 206),
            (30_000_000, 39_999_999, 10_000_000, 4, 206),
            (40_000_000, 50_000_122, 10_000_123, 5, 201),
        ]

    async def test_whole_file_of_4_mib_answers_201(self, api: Api) -> None:
        data = sample(4_194_304)
        _, url = await _init(api, plan(4_194_304))
        resp = await api.put(url, data, 0, 4_194_303, 4_194_304)
        assert resp.status_code == 201
        assert resp.headers["Content-Range"] == "bytes 0-4194303/4194304"

    @pytest.mark.parametrize("content_type", ["video/mp4", "video/quicktime", "video/webm"])
    async def test_accepts_each_documented_content_type(self, api: Api, content_type: str) -> None:
        data = sample(1_000_000)
        _, url = await _init(api, plan(1_000_000))
        resp = await api.put(url, data, 0, 999_999, 1_000_000, content_type=content_type)
        assert resp.status_code == 201

    async def test_upload_url_is_short_and_needs_no_authorization(self, api: Api) -> None:
        _, url = await _init(api, plan(1_000_000))
        assert len(url) <= 256
        assert re.search(r"/upload/\?upload_id=\d+&upload_token=[\w-]+$", url)
        resp = await api.put(url, sample(1_000_000), 0, 999_999, 1_000_000)  # no Authorization header
        assert resp.status_code == 201

    async def test_publish_id_looks_like_tiktoks(self, api: Api) -> None:
        direct, _ = await _init(api, plan(1_000_000))
        inbox = (await api.init_inbox(plan(1_000_000))).json()["data"]["publish_id"]
        assert re.fullmatch(r"v_pub_file~v2-1\.\d{19}", direct)
        assert re.fullmatch(r"v_inbox_file~v2-1\.\d{19}", inbox)
        assert len(direct) <= 64

    async def test_status_reports_uploaded_bytes_while_uploading(self, api: Api) -> None:
        data = sample(50_000_123)
        publish_id, url = await _init(api, WORKED)
        await api.put(url, data[:10_000_000], 0, 9_999_999, len(data))
        status = (await api.status(publish_id)).json()["data"]
        assert status == {
            "status": "PROCESSING_UPLOAD",
            "uploaded_bytes": 10_000_000,
            "publicaly_available_post_id": [],
        }


class TestRejectedPuts:
    """Each bad PUT is refused with the documented status and stores nothing."""

    @pytest.mark.parametrize(
        ("headers", "why"),
        [
            ({"Content-Type": "application/octet-stream"}, "content type"),
            ({"Content-Range": "bytes=0-999999/1000000"}, "malformed range"),
            ({"Content-Range": "bytes 0-999999/2000000"}, "total differs from video_size"),
            ({"Content-Range": "bytes 0-999998/1000000"}, "range length differs from Content-Length"),
        ],
    )
    async def test_bad_headers_answer_400(
        self, api: Api, sandbox: SandboxHandle, headers: dict[str, str], why: str
    ) -> None:
        publish_id, url = await _init(api, plan(1_000_000))
        base = {"Content-Type": "video/mp4", "Content-Range": "bytes 0-999999/1000000"}
        resp = await api.http.put(url, content=sample(1_000_000), headers={**base, **headers})
        assert resp.status_code == 400, why
        assert resp.headers["Content-Range"] == "bytes */1000000"
        assert sandbox.state.publishes[publish_id].uploaded_bytes == 0

    async def test_missing_content_range_answers_400(self, api: Api) -> None:
        _, url = await _init(api, plan(1_000_000))
        resp = await api.http.put(url, content=sample(1_000_000), headers={"Content-Type": "video/mp4"})
        assert resp.status_code == 400

    async def test_streamed_body_without_content_length_answers_400(self, api: Api) -> None:
        _, url = await _init(api, plan(1_000_000))

        async def body() -> object:
            yield sample(1_000_000)

        headers = {"Content-Type": "video/mp4", "Content-Range": "bytes 0-999999/1000000"}
        resp = await api.http.put(url, content=body(), headers=headers)  # chunked transfer encoding
        assert resp.status_code == 400

    async def test_unknown_upload_answers_404(self, api: Api, sandbox: SandboxHandle) -> None:
        resp = await api.put(f"{sandbox.base_url}/upload/?upload_id=1&upload_token=x", b"x", 0, 0, 1)
        assert resp.status_code == 404

    async def test_wrong_upload_token_answers_404(self, api: Api) -> None:
        _, url = await _init(api, plan(1_000_000))
        resp = await api.put(url.rsplit("=", 1)[0] + "=forged", sample(1_000_000), 0, 999_999, 1_000_000)
        assert resp.status_code == 404

    async def test_expired_upload_url_answers_403(self) -> None:
        async with (
            running_sandbox(**FAST, upload_url_ttl_seconds=0.2) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            _, url = await _init(api, plan(1_000_000))
            await asyncio.sleep(0.3)  # the TTL itself is what is under test
            resp = await api.put(url, sample(1_000_000), 0, 999_999, 1_000_000)
            assert resp.status_code == 403

    async def test_duplicate_chunk_answers_416_with_progress(self, api: Api) -> None:
        data = sample(50_000_123)
        _, url = await _init(api, WORKED)
        assert (await api.put(url, data[:10_000_000], 0, 9_999_999, len(data))).status_code == 206
        resp = await api.put(url, data[:10_000_000], 0, 9_999_999, len(data))
        assert resp.status_code == 416
        assert resp.headers["Content-Range"] == "bytes 0-9999999/50000123"

    async def test_gap_answers_416(self, api: Api) -> None:
        data = sample(50_000_123)
        _, url = await _init(api, WORKED)
        resp = await api.put(url, data[10_000_000:20_000_000], 10_000_000, 19_999_999, len(data))
        assert resp.status_code == 416
        assert resp.headers["Content-Range"] == "bytes */50000123"

    async def test_range_off_the_plan_answers_416(self, api: Api) -> None:
        data = sample(50_000_123)
        _, url = await _init(api, WORKED)
        resp = await api.put(url, data[:8_000_000], 0, 7_999_999, len(data))
        assert resp.status_code == 416

    async def test_put_after_completion_answers_416(self, api: Api) -> None:
        data = sample(1_000_000)
        _, url = await _init(api, plan(1_000_000))
        assert (await api.put(url, data, 0, 999_999, 1_000_000)).status_code == 201
        resp = await api.put(url, data, 0, 999_999, 1_000_000)
        assert resp.status_code == 416
        assert resp.headers["Content-Range"] == "bytes 0-999999/1000000"

    async def test_parallel_put_answers_416(self, sandbox: SandboxHandle, api: Api) -> None:
        data = sample(50_000_123)
        publish_id, url = await _init(api, WORKED)
        release = asyncio.Event()

        async def slow_body() -> object:
            yield data[:5_000_000]
            await release.wait()
            yield data[5_000_000:10_000_000]

        headers = {
            "Content-Type": "video/mp4",
            "Content-Range": "bytes 0-9999999/50000123",
            "Content-Length": "10000000",
        }
        first = asyncio.create_task(api.http.put(url, content=slow_body(), headers=headers))
        await eventually(lambda: sandbox.state.publishes[publish_id].put_in_flight, timeout=5, interval=0.02)
        second = await api.put(url, data[:10_000_000], 0, 9_999_999, len(data))
        release.set()
        assert second.status_code == 416
        assert (await first).status_code == 206
