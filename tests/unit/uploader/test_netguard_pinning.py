"""The SSRF guard pins connections: a URL connects to the very address that passed the check.

A name whose DNS answer changes between the check and the connection (DNS rebinding) reaches
nothing; a public name still works, with its own Host header and TLS server name. A real HTTP
server on loopback stands in for "the internet": a test resolver below the guard's check routes
the public test address to it (no real network is used), and a test DNS answers names.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import trustme
from aiohttp.abc import ResolveResult
from reelay_common.adapters import netguard
from reelay_common.adapters.callbacks import HttpCallbackSender, callback_sender
from reelay_common.adapters.guarded_http import GuardedTransport, PinnedResolver, guarded_transport
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


class Internet(PinnedResolver):
    """The guard's lookup, and the network below it. The connector connects to exactly the
    addresses its resolver answers: those the guard vetted are recorded as dialled, and PUBLIC is
    routed to the loopback server; anything else is connected as answered (so an address that got
    past the guard would really arrive)."""

    def __init__(self, resolver: netguard.Resolver | None = None) -> None:
        super().__init__(resolver)
        self.dialled: list[tuple[str, int]] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        vetted = await super().resolve(host, port, family)
        self.dialled.extend((answer["host"], port) for answer in vetted)
        return [
            ResolveResult(**{**answer, "host": "127.0.0.1"}) if answer["host"] == str(PUBLIC) else answer
            for answer in vetted
        ]


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
        internet = Internet()
        async with httpx.AsyncClient(transport=GuardedTransport(resolver=internet)) as http:
            with pytest.raises(InvalidInputError) as err:
                await UrlVideoReader.open(http, url.format(port=server.port))
    assert err.value.code == "url_not_public"
    return server, internet


class TestPinnedConnections:
    async def test_a_public_name_is_fetched_from_the_address_that_was_checked(self, dns: Dns) -> None:
        async with serving() as server:
            internet = Internet()
            url = f"http://video.example:{server.port}/v.mp4"
            async with (
                httpx.AsyncClient(transport=GuardedTransport(resolver=internet)) as http,
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
            internet = Internet()
            url = f"https://rebind.example:{server.port}/hook"
            async with httpx.AsyncClient(transport=GuardedTransport(resolver=internet)) as http:
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
            dns = Dns({"inside.example": [[PUBLIC, ipaddress.ip_address("10.0.0.7")]]})
            internet = Internet(dns)
            transport = GuardedTransport(resolver=internet)
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


async def test_https_keeps_the_names_server_name_and_host_header() -> None:
    # A real TLS server on loopback with a certificate for video.example only: the handshake and
    # the certificate's check pass only if the client asks for that name, while the TCP
    # connection goes to the checked address.
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("video.example").configure_cert(server_context)
    server_names: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = listener.sockets[0].getsockname()[1]
    internet = Internet(Dns({"video.example": [[PUBLIC]]}))
    async with (
        listener,
        httpx.AsyncClient(transport=GuardedTransport(resolver=internet, ssl_context=client_context)) as http,
    ):
        response = await http.get(f"https://video.example:{port}/v.mp4")
    assert response.text == "ok"
    assert internet.dialled == [(str(PUBLIC), port)]  # TCP to the checked address ...
    assert server_names == ["video.example"]  # ... TLS (SNI, certificate check) for the name
    assert f"\r\nHost: video.example:{port}\r\n".encode() in heads[0]


def test_the_uploaders_transport_is_pinned() -> None:
    # What production builds: the pinned resolver under the guarded transport, unless allowed.
    assert isinstance(guarded_transport(), GuardedTransport)
    assert not isinstance(guarded_transport(allow_private=True), GuardedTransport)
