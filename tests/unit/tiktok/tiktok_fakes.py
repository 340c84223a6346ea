"""Test doubles for the TikTok layer's unit tests: a scripted upload server, readers, envelopes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr
from reelay_common.adapters.tiktok.client import TikTokClient

BASE_URL = "https://tiktok.test"
UPLOAD_URL = "https://upload.tiktok.test/upload/?upload_id=u1&upload_token=t1"
CLIENT_KEY = "unit-client-key"
CLIENT_SECRET = "unit-client-secret"  # a test value


def envelope(
    code: str = "ok", data: dict[str, Any] | None = None, *, log_id: str = "LOG123"
) -> dict[str, Any]:
    """A TikTok data-endpoint body."""
    return {"data": data or {}, "error": {"code": code, "message": f"msg {code}", "log_id": log_id}}


class StreamingMockTransport(httpx.AsyncBaseTransport):
    """Like httpx.MockTransport, but hands the request body to the handler unread, as a stream.

    (MockTransport reads the whole body before calling its handler, which would hide buffering.)
    """

    def __init__(self, handler: Callable[[httpx.Request], Awaitable[httpx.Response]]) -> None:
        self.handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.handler(request)


def make_client(
    handler: Callable[[httpx.Request], Any], *, streaming: bool = False
) -> tuple[TikTokClient, httpx.AsyncClient]:
    """A TikTokClient over a MockTransport running `handler` (sync or async); with `streaming`,
    the (async) handler receives the body as the client streams it."""
    transport: httpx.AsyncBaseTransport = (
        StreamingMockTransport(handler) if streaming else httpx.MockTransport(handler)
    )
    http = httpx.AsyncClient(transport=transport)
    client = TikTokClient(
        http, base_url=BASE_URL, client_key=CLIENT_KEY, client_secret=SecretStr(CLIENT_SECRET)
    )
    return client, http


def video_bytes(size: int) -> bytes:
    """Deterministic, position-dependent content, so a misplaced chunk changes the result."""
    pattern = bytes(range(251))  # a prime length: chunk boundaries never line up with the pattern
    return (pattern * (size // len(pattern) + 1))[:size]


class MemoryReader:
    """A VideoReader over bytes that yields bounded pieces and records what it handed out."""

    def __init__(self, data: bytes, *, piece_size: int = 65_536, content_type: str = "video/mp4") -> None:
        self._data = data
        self.piece_size = piece_size
        self._content_type = content_type
        self.yielded = 0
        self.streams: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def content_type(self) -> str:
        return self._content_type

    async def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        self.streams.append((offset, length))
        end = offset + length
        pos = offset
        while pos < end:
            piece = self._data[pos : min(end, pos + self.piece_size)]
            self.yielded += len(piece)
            yield piece
            pos += len(piece)


@dataclass
class FakeUploadServer:
    """TikTok's upload endpoint as §3.1 describes it, with scripted faults per request.

    `faults` is consumed one entry per PUT: None (behave), "500"/"502"/"503", "drop_before_store"
    (connection dies, nothing kept), "drop_after_store" (chunk kept, response lost), "403", "404".
    `inclusive` chooses how the progress Content-Range is written (N = last index, or N = count).
    """

    video_size: int
    faults: list[str | None] = field(default_factory=list)
    inclusive: bool = True
    reader: MemoryReader | None = None
    received: bytearray = field(default_factory=bytearray)
    requests: list[tuple[int, int, int]] = field(default_factory=list)  # (first, last, status)
    piece_sizes: list[int] = field(default_factory=list)
    read_ahead: list[int] = field(default_factory=list)  # bytes the reader was ahead at each piece
    headers_seen: list[httpx.Headers] = field(default_factory=list)
    bytes_seen: int = 0

    @property
    def progress(self) -> int:
        return len(self.received)

    def _range_header(self) -> str:
        end = self.progress - 1 if self.inclusive else self.progress
        return f"bytes 0-{max(end, 0)}/{self.video_size}"

    async def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "PUT"
        self.headers_seen.append(request.headers)
        first_s, last_s = request.headers["Content-Range"].removeprefix("bytes ").split("/")[0].split("-")
        first, last = int(first_s), int(last_s)
        body = bytearray()
        async for piece in request.stream:  # type: ignore[union-attr]  # the request body is async here
            self.piece_sizes.append(len(piece))
            if self.reader is not None:
                # What the reader handed out minus what arrived here: 0 means nothing was buffered.
                self.bytes_seen += len(piece)
                self.read_ahead.append(self.reader.yielded - self.bytes_seen)
            body.extend(piece)
        fault = self.faults.pop(0) if self.faults else None
        if fault == "drop_before_store":
            self.requests.append((first, last, 0))
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        if fault == "416":  # e.g. "another PUT of this upload is still in progress"
            self.requests.append((first, last, 416))
            return httpx.Response(416, headers={"Content-Range": self._range_header()})
        if fault == "429":
            self.requests.append((first, last, 429))
            return httpx.Response(429, headers={"Retry-After": "2"})
        if fault in ("500", "502", "503", "403", "404"):
            self.requests.append((first, last, int(fault)))
            return httpx.Response(int(fault), headers={"Content-Range": self._range_header()})
        assert int(request.headers["Content-Length"]) == len(body) == last - first + 1
        if first != self.progress:
            self.requests.append((first, last, 416))
            return httpx.Response(416, headers={"Content-Range": self._range_header()})
        self.received.extend(body)
        status = 201 if self.progress == self.video_size else 206
        self.requests.append((first, last, status))
        if fault == "drop_after_store":
            raise httpx.ReadError("connection reset while reading the response", request=request)
        return httpx.Response(status, headers={"Content-Range": self._range_header()})


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """A JSON response."""
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
