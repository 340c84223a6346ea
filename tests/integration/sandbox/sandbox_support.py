"""Helpers for the sandbox's own tests: a thin TikTok caller, sample media, a webhook receiver."""

from __future__ import annotations

from typing import Any

import httpx
from reelay_testing.waiting import eventually
from tiktok_sandbox.media import iter_sample_mp4

# Fast clocks so status progressions and webhook retries finish within a test.
FAST: dict[str, Any] = {
    "processing_delay_seconds": 0.05,
    "moderation_delay_seconds": 0.05,
    "webhook_backoff_seconds": 0.05,
}
PUBLIC = {"privacy_level": "PUBLIC_TO_EVERYONE", "title": "a title #tag"}
SELF_ONLY = {"privacy_level": "SELF_ONLY"}


def plan(video_size: int, chunk_size: int | None = None, count: int | None = None) -> dict[str, Any]:
    """A FILE_UPLOAD source_info; without chunk_size, the reference's compliant plan."""
    if chunk_size is None:
        chunk_size = video_size if video_size <= 64_000_000 else 10_000_000
    if count is None:
        count = video_size // chunk_size
    return {
        "source": "FILE_UPLOAD",
        "video_size": video_size,
        "chunk_size": chunk_size,
        "total_chunk_count": count,
    }


def ranges(source: dict[str, Any]) -> list[tuple[int, int]]:
    """Inclusive byte ranges of the plan's chunks."""
    size, chunk, count = source["video_size"], source["chunk_size"], source["total_chunk_count"]
    return [(i * chunk, size - 1 if i == count - 1 else (i + 1) * chunk - 1) for i in range(count)]


def sample(size: int, **kwargs: Any) -> bytes:
    """A valid sample MP4 of exactly `size` bytes."""
    return b"".join(iter_sample_mp4(size, **kwargs))


def code(resp: httpx.Response) -> str:
    """error.code of an envelope response."""
    return str(resp.json()["error"]["code"])


class Api:
    """Calls the sandbox the way a TikTok client would."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.token = token

    async def call(self, path: str, body: Any = None, *, token: str | None = None) -> httpx.Response:
        """POST a data endpoint with Bearer auth and a JSON body."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        if body is None:
            return await self.http.post(path, headers=headers)
        return await self.http.post(path, headers=headers, json=body)

    async def creator_info(self, **kw: Any) -> httpx.Response:
        return await self.call("/v2/post/publish/creator_info/query/", **kw)

    async def init_direct(
        self, source: dict[str, Any], post_info: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response:
        body = {"post_info": post_info or PUBLIC, "source_info": source}
        return await self.call("/v2/post/publish/video/init/", body, **kw)

    async def init_inbox(self, source: dict[str, Any], **kw: Any) -> httpx.Response:
        return await self.call("/v2/post/publish/inbox/video/init/", {"source_info": source}, **kw)

    async def status(self, publish_id: str, **kw: Any) -> httpx.Response:
        return await self.call("/v2/post/publish/status/fetch/", {"publish_id": publish_id}, **kw)

    async def cancel(self, publish_id: str, **kw: Any) -> httpx.Response:
        return await self.call("/v2/post/publish/cancel/", {"publish_id": publish_id}, **kw)

    async def put(
        self,
        url: str,
        body: bytes,
        first: int,
        last: int,
        total: int,
        *,
        content_type: str = "video/mp4",
        extra: dict[str, str] | None = None,
    ) -> httpx.Response:
        """PUT one chunk with the documented headers (httpx sets Content-Length from the body)."""
        headers = {
            "Content-Type": content_type,
            "Content-Range": f"bytes {first}-{last}/{total}",
            **(extra or {}),
        }
        return await self.http.put(url, content=body, headers=headers)

    async def upload(self, url: str, data: bytes, source: dict[str, Any]) -> list[int]:
        """PUT every chunk in order; returns the status codes."""
        statuses = []
        for first, last in ranges(source):
            resp = await self.put(url, data[first : last + 1], first, last, len(data))
            statuses.append(resp.status_code)
        return statuses

    async def publish(
        self, data: bytes, *, post_info: dict[str, Any] | None = None, inbox: bool = False
    ) -> str:
        """init + upload every chunk; returns the publish_id."""
        source = plan(len(data))
        resp = await (self.init_inbox(source) if inbox else self.init_direct(source, post_info))
        assert resp.status_code == 200, resp.text
        d = resp.json()["data"]
        statuses = await self.upload(d["upload_url"], data, source)
        assert statuses[-1] == 201, statuses
        return str(d["publish_id"])

    async def wait_status(self, publish_id: str, *wanted: str, timeout: float = 5.0) -> dict[str, Any]:
        """Poll status/fetch until the status is one of `wanted`; returns `data`."""

        async def check() -> dict[str, Any] | None:
            data: dict[str, Any] = (await self.status(publish_id)).json()["data"]
            return data if data.get("status") in wanted else None

        result: dict[str, Any] = await eventually(check, timeout=timeout, interval=0.02)
        return result


class WebhookReceiver:
    """A local HTTP endpoint that records what the sandbox posts to it."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        self._statuses = list(statuses or [])
        self._runner: Any = None
        self.url = ""

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.read()
        status = self._statuses.pop(0) if self._statuses else 200
        self.received.append((dict(request.headers), body, status))
        return web.Response(status=status)

    async def __aenter__(self) -> WebhookReceiver:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Parsed bodies of the answered-200 deliveries (optionally of one event)."""
        import json

        out = [json.loads(body) for _, body, status in self.received if status == 200]
        return [e for e in out if name is None or e["event"] == name]
