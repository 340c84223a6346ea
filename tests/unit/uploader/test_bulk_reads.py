"""Downloads read in bulk: every read of a source connection asks for RECEIVE_BYTES, not httpcore's
64 KiB, and the body still arrives byte for byte (plain and pinned transports alike)."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpcore
import httpx
from reelay_common.adapters.guarded_http import (
    RECEIVE_BYTES,
    BackendTransport,
    BulkReadBackend,
    GuardedTransport,
    guarded_transport,
)
from reelay_common.adapters.netguard import IPAddress

BODY = os.urandom(3 * RECEIVE_BYTES + 12345)


@asynccontextmanager
async def serving(body: bytes) -> AsyncIterator[int]:
    """A loopback HTTP/1.1 server answering every request with `body`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


PUBLIC = ipaddress.ip_address("93.184.216.34")  # a public address no test ever really reaches


@dataclass
class CountingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backend to loopback (whatever address it is given: the test's "internet"),
    recording what every read of its streams asked for."""

    asked: list[int] = field(default_factory=list)
    inner: httpcore.AsyncNetworkBackend = field(default_factory=httpcore.AnyIOBackend)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return CountingStream(await self.inner.connect_tcp("127.0.0.1", port, timeout=timeout), self.asked)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class CountingStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, asked: list[int]) -> None:
        self._inner, self._asked = inner, asked

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._asked.append(max_bytes)
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def download(transport: httpx.AsyncBaseTransport, url: str) -> bytes:
    """The sha256 of the body `url` answers through `transport`."""
    digest, size = hashlib.sha256(), 0
    async with httpx.AsyncClient(transport=transport) as http, http.stream("GET", url) as response:
        async for piece in response.aiter_raw():
            digest.update(piece)
            size += len(piece)
    assert size == len(BODY)
    return digest.digest()


WANTED = hashlib.sha256(BODY).digest()


class TestBulkReads:
    async def test_every_read_asks_for_receive_bytes(self) -> None:
        counting = CountingBackend()
        async with serving(BODY) as port:
            got = await download(BackendTransport(BulkReadBackend(counting)), f"http://127.0.0.1:{port}/v")
        assert got == WANTED
        assert counting.asked, "the download read nothing"
        assert set(counting.asked) == {RECEIVE_BYTES}

    async def test_without_it_httpcore_asks_for_64_kib(self) -> None:
        # What the wrapper changes (if this fails, httpcore changed its read size: measure again).
        counting = CountingBackend()
        async with serving(BODY) as port:
            got = await download(BackendTransport(counting), f"http://127.0.0.1:{port}/v")
        assert got == WANTED
        assert set(counting.asked) == {64 * 1024}

    async def test_the_transport_for_private_urls_downloads_the_body_whole(self) -> None:
        async with serving(BODY) as port:
            got = await download(guarded_transport(allow_private=True), f"http://127.0.0.1:{port}/v")
        assert got == WANTED

    async def test_the_pinned_transport_reads_in_bulk(self) -> None:
        counting = CountingBackend()

        async def dns(host: str, port: int) -> list[IPAddress]:
            return [PUBLIC]

        async with serving(BODY) as port:
            got = await download(
                GuardedTransport(resolver=dns, inner=counting), f"http://video.example:{port}/v"
            )
        assert got == WANTED
        assert set(counting.asked) == {RECEIVE_BYTES}
