"""httpx's API over aiohttp's connections (`http_transport.AiohttpTransport`), against real loopback
servers: bodies arrive byte for byte both ways, the request target is sent as httpx encoded it,
aiohttp's failures surface as the httpx errors the callers catch, and connections are reused only
when their body was read to the end."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from reelay_common.adapters.http_transport import RECEIVE_BYTES, AiohttpTransport

BODY = os.urandom(3 * RECEIVE_BYTES + 12345)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Served"], Awaitable[None]]


@dataclass
class Served:
    """What a loopback server saw: each request's head and body, and how many connections."""

    port: int = 0
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader, served: Served) -> bytes:
    """One request off the connection (head and body, Content-Length or chunked): its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    served.heads.append(head)
    fields = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
    }
    if b"content-length" in fields:
        served.bodies.append(await reader.readexactly(int(fields[b"content-length"])))
    elif fields.get(b"transfer-encoding") == b"chunked":
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # the last chunk's empty trailer
        served.bodies.append(bytes(body))
    else:
        served.bodies.append(b"")
    return head


@asynccontextmanager
async def serving(handle: Handler) -> AsyncIterator[Served]:
    served = Served()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.connections += 1
        try:
            await handle(reader, writer, served)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    served.port = server.sockets[0].getsockname()[1]
    try:
        yield served
    finally:
        server.close()
        await server.wait_closed()


async def keep_alive_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served) -> None:
    """Answers every request on a connection with BODY, keeping the connection open."""
    while True:
        head = await read_request(reader, served)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode())
        if not head.startswith(b"HEAD "):
            writer.write(BODY)
        await writer.drain()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served) -> None:
    await read_request(reader, served)
    writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    await writer.drain()


def client(**kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AiohttpTransport(), **kwargs)  # type: ignore[arg-type]


async def test_a_streamed_body_arrives_byte_for_byte_in_pieces_as_received() -> None:
    async with (
        serving(keep_alive_body) as served,
        client() as http,
        http.stream("GET", f"http://127.0.0.1:{served.port}/v.mp4") as response,
    ):
        pieces = [piece async for piece in response.aiter_raw()]
    assert hashlib.sha256(b"".join(pieces)).digest() == hashlib.sha256(BODY).digest()
    assert response.headers["content-length"] == str(len(BODY))
    assert max(len(piece) for piece in pieces) <= RECEIVE_BYTES
    # pieces as they arrived, not cut into small fixed sizes: far fewer than 16 KiB pieces would be
    assert len(pieces) < len(BODY) // (16 * 1024)


async def test_a_streamed_request_body_with_a_length_is_sent_with_that_length() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for at in range(0, len(BODY), 100_000):
            yield BODY[at : at + 100_000]

    async with serving(echo) as served, client() as http:
        response = await http.put(
            f"http://127.0.0.1:{served.port}/up",
            content=pieces(),
            headers={
                "Content-Length": str(len(BODY)),
                "Content-Range": f"bytes 0-{len(BODY) - 1}/{len(BODY)}",
            },
        )
    assert response.status_code == 204
    head = served.heads[0].lower()
    assert f"content-length: {len(BODY)}\r\n".encode() in head
    assert b"transfer-encoding" not in head
    assert f"content-range: bytes 0-{len(BODY) - 1}/{len(BODY)}\r\n".encode() in head
    assert served.bodies[0] == BODY


async def test_a_streamed_request_body_of_unknown_length_is_sent_chunked() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b'{"a": '
        yield b"1}"

    async with serving(echo) as served, client() as http:
        await http.post(f"http://127.0.0.1:{served.port}/hook", content=pieces())
    assert b"transfer-encoding: chunked" in served.heads[0].lower()
    assert served.bodies[0] == b'{"a": 1}'


async def test_a_json_body_and_its_headers_go_as_httpx_wrote_them() -> None:
    async with serving(echo) as served, client() as http:
        await http.post(f"http://127.0.0.1:{served.port}/hook", json={"a": 1}, headers={"X-Sig": "t=1,v1=ab"})
    head = served.heads[0]
    assert b"Content-Type: application/json\r\n" in head
    assert b"X-Sig: t=1,v1=ab\r\n" in head
    assert head.lower().count(b"content-type:") == 1
    assert served.bodies[0] == b'{"a":1}'


async def test_no_header_is_added_that_httpx_did_not_write() -> None:
    async with serving(echo) as served, client() as http:
        await http.put(f"http://127.0.0.1:{served.port}/up", content=b"chunk")
    names = [line.partition(b":")[0].lower() for line in served.heads[0].split(b"\r\n")[1:] if line]
    assert b"content-type" not in names  # TikTok's PUT names its own; none is made up for it
    assert names.count(b"content-length") == 1
    assert served.bodies[0] == b"chunk"


async def test_the_request_target_is_sent_exactly_as_httpx_encoded_it() -> None:
    # a presigned URL: its signature covers the encoded query, so not one escape may change
    target = "/bucket/a%2Fb%20c.mp4?X-Amz-Credential=AK%2F20261203%2Fus-east-1&X-Amz-Signature=ab%2Bcd&e=f+g"
    async with serving(echo) as served, client() as http:
        await http.get(f"http://127.0.0.1:{served.port}{target}")
    assert served.heads[0].split(b"\r\n")[0] == f"GET {target} HTTP/1.1".encode()
    assert f"Host: 127.0.0.1:{served.port}\r\n".encode() in served.heads[0]


async def test_a_head_answer_keeps_repeated_headers_in_order_and_its_reason() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served) -> None:
        await read_request(reader, served)
        writer.write(
            b"HTTP/1.1 206 Partial Thing\r\nContent-Length: 99\r\nX-Part: one\r\nX-Part: two\r\n"
            b"Content-Encoding: gzip\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()

    async with serving(answer) as served, client() as http:
        response = await http.head(f"http://127.0.0.1:{served.port}/v")
    assert response.status_code == 206
    assert response.reason_phrase == "Partial Thing"
    assert response.headers.get_list("x-part") == ["one", "two"]
    assert response.headers["content-length"] == "99"
    assert response.content == b""


async def test_a_compressed_body_is_handed_on_undecoded() -> None:
    packed = gzip.compress(b"x" * 10_000)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served) -> None:
        await read_request(reader, served)
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(packed)}\r\nContent-Encoding: gzip\r\n"
            "Connection: close\r\n\r\n".encode()
            + packed
        )
        await writer.drain()

    async with (
        serving(answer) as served,
        client() as http,
        http.stream("GET", f"http://127.0.0.1:{served.port}/v") as response,
    ):
        raw = b"".join([piece async for piece in response.aiter_raw()])
    assert raw == packed  # the bytes Content-Length counted, for ranges to count the same


async def test_a_body_read_to_the_end_lets_its_connection_be_reused() -> None:
    async with serving(keep_alive_body) as served, client() as http:
        for _ in range(3):
            response = await http.get(f"http://127.0.0.1:{served.port}/v")
            assert response.content == BODY
    assert served.connections == 1
    assert len(served.heads) == 3


async def test_a_body_left_unread_closes_its_connection() -> None:
    async with serving(keep_alive_body) as served, client() as http:
        async with http.stream("GET", f"http://127.0.0.1:{served.port}/v") as response:
            await response.aiter_raw().__anext__()  # one piece, then the caller gives up
        again = await http.get(f"http://127.0.0.1:{served.port}/v")
    assert again.content == BODY  # not the rest of the first body
    assert served.connections == 2


async def test_a_refused_connection_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/v")


async def test_a_body_that_breaks_off_is_a_read_error() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served) -> None:
        await read_request(reader, served)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY[:500_000])
        await writer.drain()  # and the connection closes, 500,000 bytes in

    got = bytearray()

    async def download(http: httpx.AsyncClient, url: str) -> None:
        async with http.stream("GET", url) as response:
            async for piece in response.aiter_raw():
                got.extend(piece)

    async with serving(answer) as served, client() as http:
        with pytest.raises(httpx.ReadError):
            await download(http, f"http://127.0.0.1:{served.port}/v")
    assert got == BODY[: len(got)]
    assert len(got) <= 500_000


@pytest.mark.parametrize(
    "answer_bytes",
    [b"", b"HTTP/1.1 two hundred\r\n\r\n"],
    ids=["closed-before-any-answer", "garbled-answer"],
)
async def test_a_lost_or_garbled_answer_is_a_protocol_error(answer_bytes: bytes) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served) -> None:
        await read_request(reader, served)
        writer.write(answer_bytes)  # nothing (the connection just closes), or no HTTP
        await writer.drain()

    async with serving(answer) as served, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"http://127.0.0.1:{served.port}/v")


async def test_a_server_that_stalls_is_a_read_timeout() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served) -> None:
        await read_request(reader, served)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await writer.drain()
        await asyncio.sleep(5)

    async with serving(answer) as served, client(timeout=httpx.Timeout(10.0, read=0.2)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"http://127.0.0.1:{served.port}/v")  # headers came; the body stalls
        with pytest.raises(httpx.ReadTimeout):
            async with http.stream("GET", f"http://127.0.0.1:{served.port}/v") as response:
                await response.aread()


async def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served) -> None:
        await read_request(reader, served)
        await asyncio.sleep(5)

    async with serving(answer) as served, client(timeout=httpx.Timeout(10.0, read=0.2)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"http://127.0.0.1:{served.port}/v")


@pytest.mark.parametrize(
    ("url", "error"),
    [("ftp://127.0.0.1/v", httpx.UnsupportedProtocol), ("http://[::1/v", httpx.InvalidURL)],
)
async def test_a_url_it_cannot_send_to_is_refused_as_httpx_refuses_it(
    url: str, error: type[Exception]
) -> None:
    async with client() as http:
        with pytest.raises(error):
            await http.get(url)


async def test_closing_the_client_closes_its_connections() -> None:
    transport = AiohttpTransport()
    async with serving(keep_alive_body) as served:
        async with httpx.AsyncClient(transport=transport) as http:
            assert (await http.get(f"http://127.0.0.1:{served.port}/v")).content == BODY
        async with httpx.AsyncClient(transport=transport) as http:  # a closed transport opens afresh
            assert (await http.get(f"http://127.0.0.1:{served.port}/v")).content == BODY
        await transport.aclose()
    assert served.connections == 2


async def big_body(size: int = 64 * 1024 * 1024, piece: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """Far more than the sockets' buffers hold: a peer that stops reading stops the writes."""
    block = b"\x00" * piece
    for _ in range(size // piece):
        yield block


async def test_a_peer_that_stops_reading_the_body_is_a_write_timeout() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served) -> None:
        served.heads.append(await reader.readuntil(b"\r\n\r\n"))
        await asyncio.sleep(10)  # and never reads the body

    size = 64 * 1024 * 1024
    async with serving(answer) as served, client(timeout=httpx.Timeout(10.0, write=0.3)) as http:
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.WriteTimeout):
            await http.put(
                f"http://127.0.0.1:{served.port}/up",
                content=big_body(size),
                headers={"Content-Length": str(size)},
            )
        assert asyncio.get_running_loop().time() - started < 5  # not the server's 10 s, nor forever
    assert len(served.heads) == 1


async def test_a_slow_source_of_the_body_is_no_write_timeout() -> None:
    async def slow() -> AsyncIterator[bytes]:
        for piece in (b"a" * 1000, b"b" * 1000, b"c" * 1000):
            await asyncio.sleep(0.3)  # the video's own source taking its time (a slow URL)
            yield piece

    async with serving(echo) as served, client(timeout=httpx.Timeout(10.0, write=0.1)) as http:
        response = await http.put(
            f"http://127.0.0.1:{served.port}/up", content=slow(), headers={"Content-Length": "3000"}
        )
    assert response.status_code == 204
    assert served.bodies[0] == b"a" * 1000 + b"b" * 1000 + b"c" * 1000


class SourceBroke(Exception):
    pass


async def test_an_error_of_the_bodys_own_source_is_raised_as_itself() -> None:
    async def breaking() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise SourceBroke("the video ended early")

    async with serving(echo) as served, client() as http:
        with pytest.raises(SourceBroke, match="ended early"):
            await http.put(
                f"http://127.0.0.1:{served.port}/up", content=breaking(), headers={"Content-Length": "5000"}
            )


async def test_proxies_from_the_environment_only_where_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(echo) as proxy, serving(echo) as target:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        url = f"http://127.0.0.1:{target.port}/v?sig=a%2Fb"
        async with httpx.AsyncClient(transport=AiohttpTransport(trust_env=True)) as http:
            await http.get(url)
        assert proxy.heads[0].split(b"\r\n")[0] == f"GET {url} HTTP/1.1".encode()  # through the proxy
        async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
            await http.get(url)
        assert len(proxy.heads) == 1  # not trusted: straight to the target
        assert target.heads[0].split(b"\r\n")[0] == b"GET /v?sig=a%2Fb HTTP/1.1"


async def test_a_body_goes_on_after_an_early_answer_until_the_answer_ends() -> None:
    size, watched = 64 * 1024 * 1024, 32 * 1024 * 1024  # far past what sockets buffer
    got = asyncio.get_running_loop().create_future()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served) -> None:
        served.heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")  # answers first, then reads
        await writer.drain()
        received, ended = 0, False
        while piece := await reader.read(256 * 1024):
            received += len(piece)
            if received >= watched and not ended:
                writer.write(b"ok")  # the answer ends half way through the body
                ended = True
        got.set_result(received)

    async with serving(answer) as served, client(timeout=httpx.Timeout(10.0, write=5.0)) as http:
        async with http.stream(
            "PUT",
            f"http://127.0.0.1:{served.port}/up",
            content=big_body(size),
            headers={"Content-Length": str(size)},
        ) as response:
            # the body goes on past the request's own end (and its write deadline's) meanwhile
            assert await asyncio.wait_for(response.aread(), 20) == b"ok"
        # and stops with the answer (httpx's own transport would have sent it all first)
        assert watched <= await asyncio.wait_for(got, 10) < size
