"""The SSRF guard pins connections: a URL connects to the very address that passed the check.

A name whose DNS answer changes between the check and the connection (DNS rebinding) reaches
nothing; a public name still works, with its own Host header and TLS server name. A real HTTP
server on loopback stands in for "the internet": a test network backend routes the public test
address to it (no real network is used), and a test resolver plays DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpcore
import httpx
import pytest
from reelay_common.adapters import netguard
from reelay_common.adapters.callbacks import HttpCallbackSender, callback_sender
from reelay_common.adapters.guarded_http import GuardedTransport, guarded_transport
from reelay_common.adapters.netguard import IPAddress
from reelay_common.adapters.url_reader import UrlVideoReader
from reelay_common.domain.callbacks import CallbackAnswer
from reelay_common.domain.errors import InvalidInputError

VIDEO = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(range(256)) * 64
PUBLIC = ipaddress.ip_address("93.184.216.34")  # a public address no test ever really reaches
LOOPBACK = ipaddress.ip_address("127.0.0.1")


@dataclass
class Dns:
    """A test resolver: fixed answers per name, or a sequence (the last answer then sticks)."""

    answers: dict[str, list[list[IPAddress]]]
    asked: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        sequence = self.answers[host]
        return sequence.pop(0) if len(sequence) > 1 else sequence[0]


def rebinding_dns() -> Dns:
    """`video.example` is public; `rebind.example` answers public once, then loopback."""
    return Dns({"video.example": [[PUBLIC]], "rebind.example": [[PUBLIC], [LOOPBACK]]})


@dataclass
class Server:
    """A tiny HTTP/1.1 server on loopback: serves VIDEO at /v.mp4, redirects /hop to `hop_to`."""

    port: int = 0
    hop_to: str = ""
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        method, path, _ = head.split(b"\r\n", 1)[0].split(b" ")
        if path == b"/hop":
            writer.write(
                f"HTTP/1.1 302 Found\r\nLocation: {self.hop_to}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
        else:
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {len(VIDEO)}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            if method == b"GET":
                writer.write(VIDEO)
        await writer.drain()
        writer.close()


@asynccontextmanager
async def serving() -> AsyncIterator[Server]:
    server = Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


class Network(httpcore.AsyncNetworkBackend):
    """A test network below the guard: a subclass says only how it `dial`s."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self.dial(host, port, timeout)

    async def dial(self, host: str, port: int, timeout: float | None) -> httpcore.AsyncNetworkStream:
        raise NotImplementedError


@dataclass
class Internet(Network):
    """The network below the guard: routes PUBLIC to the loopback server, connects anything else
    as asked (so a connection to 127.0.0.1 that got past the guard would really arrive)."""

    server: Server
    dialled: list[tuple[str, int]] = field(default_factory=list)
    inner: httpcore.AsyncNetworkBackend = field(default_factory=httpcore.AnyIOBackend)

    async def dial(self, host: str, port: int, timeout: float | None) -> httpcore.AsyncNetworkStream:
        self.dialled.append((host, port))
        target = "127.0.0.1" if host == str(PUBLIC) else host
        return await self.inner.connect_tcp(target, port, timeout=timeout)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Dns:
    """The guard's resolver, for the check (ensure_public_url) and the connection alike."""
    fake = rebinding_dns()
    monkeypatch.setattr(netguard, "resolve", fake)
    return fake


async def open_refused(url: str, *, hop_to: str = "") -> tuple[Server, Internet]:
    """Open `url` (`{port}`: the server's) with UrlVideoReader through the guard, which must
    refuse it as not public; the server and the network below, to see what reached them."""
    async with serving() as server:
        server.hop_to = hop_to.format(port=server.port)
        internet = Internet(server)
        async with httpx.AsyncClient(transport=GuardedTransport(inner=internet)) as http:
            with pytest.raises(InvalidInputError) as err:
                await UrlVideoReader.open(http, url.format(port=server.port))
    assert err.value.code == "url_not_public"
    return server, internet


class TestPinnedConnections:
    async def test_a_public_name_is_fetched_from_the_address_that_was_checked(self, dns: Dns) -> None:
        async with serving() as server:
            internet = Internet(server)
            url = f"http://video.example:{server.port}/v.mp4"
            async with (
                httpx.AsyncClient(transport=GuardedTransport(inner=internet)) as http,
                await UrlVideoReader.open(http, url) as reader,
            ):
                got = b"".join([piece async for piece in reader.stream(0, reader.size)])
        assert got == VIDEO
        assert set(internet.dialled) == {(str(PUBLIC), server.port)}  # the vetted address, never a name
        assert all(f"Host: video.example:{server.port}".encode() in r for r in server.requests)

    async def test_a_rebinding_name_reaches_nothing(self, dns: Dns) -> None:
        server, internet = await open_refused("http://rebind.example:{port}/v.mp4")
        assert dns.asked == ["rebind.example", "rebind.example"]  # checked public, then rebound
        assert internet.dialled == []
        assert server.requests == []

    async def test_a_redirect_to_a_rebinding_name_reaches_nothing(self, dns: Dns) -> None:
        server, internet = await open_refused(
            "http://video.example:{port}/hop", hop_to="http://rebind.example:{port}/v.mp4"
        )
        assert [r.split(b"\r\n", 1)[0] for r in server.requests] == [b"HEAD /hop HTTP/1.1"]
        assert internet.dialled == [(str(PUBLIC), server.port)]

    async def test_a_callback_to_a_rebinding_name_reaches_nothing(self, dns: Dns) -> None:
        async with serving() as server:
            internet = Internet(server)
            url = f"https://rebind.example:{server.port}/hook"
            async with httpx.AsyncClient(transport=GuardedTransport(inner=internet)) as http:
                answer = await HttpCallbackSender(http, "s3cret").send(url, b"{}", delivery_id="d")
        assert answer == CallbackAnswer("refused", error="callback_url_not_public")
        assert dns.asked == ["rebind.example", "rebind.example"]  # checked public, then rebound
        assert internet.dialled == []
        assert server.requests == []

    async def test_the_callback_senders_own_client_is_pinned(self, dns: Dns) -> None:
        # Unpinned, httpx would resolve the name itself (and fail here: a retry, not a refusal).
        async with callback_sender("s3cret", timeout_seconds=5) as sender:
            answer = await sender.send("https://rebind.example/hook", b"{}", delivery_id="d")
        assert answer == CallbackAnswer("refused", error="callback_url_not_public")
        assert dns.asked == ["rebind.example", "rebind.example"]

    async def test_the_guarded_transport_refuses_private_literals_and_names(self) -> None:
        async with serving() as server:
            internet = Internet(server)
            dns = Dns({"inside.example": [[PUBLIC, ipaddress.ip_address("10.0.0.7")]]})
            transport = GuardedTransport(resolver=dns, inner=internet)
            async with httpx.AsyncClient(transport=transport) as http:
                for url in (
                    f"http://127.0.0.1:{server.port}/v.mp4",
                    f"http://[::ffff:127.0.0.1]:{server.port}/v.mp4",
                    f"http://inside.example:{server.port}/v.mp4",  # one private answer of two
                ):
                    with pytest.raises(InvalidInputError) as err:
                        await http.get(url)
                    assert err.value.code == "url_not_public"
        assert internet.dialled == []
        assert server.requests == []

    async def test_allow_private_reaches_loopback(self) -> None:
        async with (
            serving() as server,
            httpx.AsyncClient(transport=guarded_transport(allow_private=True)) as http,
        ):
            response = await http.get(f"http://127.0.0.1:{server.port}/v.mp4")
        assert response.content == VIDEO


@dataclass
class TlsRecorder(Network):
    """A network that records what a TLS client sends: where it dials, the server name it starts
    TLS with, and the bytes of the request; it answers with a canned response."""

    dialled: list[str] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)

    async def dial(self, host: str, port: int, timeout: float | None) -> httpcore.AsyncNetworkStream:
        self.dialled.append(host)
        return _RecordingStream(self, [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])


class _RecordingStream(httpcore.AsyncMockStream):
    def __init__(self, recorder: TlsRecorder, buffer: list[bytes]) -> None:
        super().__init__(buffer)
        self._recorder = recorder

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._recorder.sent.append(buffer)

    async def start_tls(
        self, ssl_context: object, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        self._recorder.server_names.append(server_hostname)
        return self


async def test_https_keeps_the_names_server_name_and_host_header() -> None:
    recorder = TlsRecorder()
    dns = Dns({"video.example": [[PUBLIC]]})
    async with httpx.AsyncClient(transport=GuardedTransport(resolver=dns, inner=recorder)) as http:
        response = await http.get("https://video.example/v.mp4")
    assert response.text == "ok"
    assert recorder.dialled == [str(PUBLIC)]  # TCP to the checked address ...
    assert recorder.server_names == ["video.example"]  # ... TLS (SNI, certificate check) for the name
    assert b"\r\nHost: video.example\r\n" in b"".join(recorder.sent)
