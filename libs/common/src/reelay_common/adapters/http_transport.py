"""httpx's API over aiohttp's connections: the transport under every byte Reelay moves over HTTP.

A URL upload's bytes cross HTTP twice in the uploader's one event loop: in from the source (a
GET), out to TikTok (the chunk PUTs). httpx's own transport parses HTTP in Python (httpcore, h11
and anyio); aiohttp parses it in C. Measured side by side (bench/RESULTS.md, docs/design.md
"HTTP underneath"): 1 GB read through `UrlVideoReader` costs 0.34-0.40 s of CPU over this
transport against 1.50-1.60 s over httpx's own, and the uploader's whole 1 GB URL upload 1.15 s
against 1.93-1.96 s with both legs on httpx's. The callers keep httpx's API (`httpx.AsyncClient`,
`httpx.Response`, httpx's errors), so the TikTok client, the URL reader, the callback sender and
their tests are the same whichever transport is under them.

httpx-aiohttp, the library transport for this, reads a body in fixed 16 KiB pieces (60,000
Python-level iterations per GB, with copies to cut them), maps every lost connection to a connect
timeout and has no write timeout; a download must not be cut up, a body that broke off must read
as one, and a PUT to a peer that stopped reading must end. So the transport is this module's:
- a response body is handed on in the pieces aiohttp received (up to RECEIVE_BYTES), uncopied;
- aiohttp's errors become httpx's (`_ERRORS`), and an error raised by a request body's own source
  (the video that broke off mid-PUT) is raised as itself, not as a lost connection;
- httpx's four timeouts: `pool` bounds getting a connection, `connect` the TCP and TLS handshake,
  `read` each wait for the peer's bytes (aiohttp's `sock_read`), `write` each piece of a request
  body handed to the socket (aiohttp has no such timeout: a deadline here, armed while a piece is
  being written, raises httpx.WriteTimeout);
- no decompression (a compressed body would make Content-Length and ranges count different bytes)
  and no cookies kept; proxies and CA bundles from the environment only where `trust_env` (never
  for a user-given URL: a proxy would connect to itself, not to the address that was checked).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Final

import aiohttp
import httpx
import yarl
from aiohttp.abc import AbstractResolver

RECEIVE_BYTES: Final = 1024 * 1024  # aiohttp's read buffer per connection (its default is 64 KiB)

# aiohttp's errors as httpx's, most specific first (the first match wins).
_ERRORS: Final[tuple[tuple[type[Exception], type[Exception]], ...]] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),  # SocketTimeoutError: sock_read ran out
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, unresolvable, TLS handshake
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),  # the body broke off, or its framing was bad
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # an unparsable response
    (aiohttp.InvalidURL, httpx.InvalidURL),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientOSError, httpx.ReadError),  # reset mid-exchange
    (aiohttp.ClientError, httpx.NetworkError),
)


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request, body: _RequestBody | None = None) -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        if body is not None and body.failure is not None:
            raise body.failure from exc  # the body's own source failed: its error, not the wire's
        for theirs, ours in _ERRORS:
            if isinstance(exc, theirs):
                if issubclass(ours, httpx.TransportError):
                    raise ours(str(exc) or type(exc).__name__, request=request) from exc
                raise ours(str(exc) or type(exc).__name__) from exc
        raise  # every ClientError matched the last row; kept for the type checker


class _RequestBody:
    """A request body handed to aiohttp piece by piece, each write watched by `write_timeout`.

    `deadline` is the asyncio timeout around the request: armed when a piece is handed over (aiohttp
    writes it and drains the socket before asking for the next), disarmed when the next is asked
    for, so the time the body's own source takes is not counted (as in httpx). An exception from the
    source is kept in `failure`: aiohttp reports it as a lost connection."""

    def __init__(self, source: httpx.AsyncByteStream, *, write_timeout: float | None) -> None:
        self._source = source
        self._write_timeout = write_timeout
        self.deadline: asyncio.Timeout | None = None
        self.failure: Exception | None = None

    @classmethod
    def of(cls, request: httpx.Request, *, write_timeout: float | None) -> _RequestBody | None:
        """The body of `request`, or None if it has none (a GET: aiohttp then sends no framing)."""
        try:
            content = request.content
        except httpx.RequestNotRead:  # a streamed body
            stream = request.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            return cls(stream, write_timeout=write_timeout)
        return cls(httpx.ByteStream(content), write_timeout=write_timeout) if content else None

    async def pieces(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            async for piece in self._source:
                if self.deadline is not None and self._write_timeout is not None:
                    self.deadline.reschedule(loop.time() + self._write_timeout)
                yield piece
                if self.deadline is not None:
                    self.deadline.reschedule(None)
        except Exception as exc:
            self.failure = exc
            raise


class _Body(httpx.AsyncByteStream):
    """A response body as aiohttp received it: each piece handed on whole, uncopied."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            while True:
                piece, _ = await self._response.content.readchunk()
                if not piece:
                    return
                yield piece

    async def aclose(self) -> None:
        # Back to the pool if the body was read to its end; a body left unread closes its
        # connection instead (aiohttp's rule for release, tested), never to be reused mid-body.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose connections are aiohttp's, looked up by `resolver` (aiohttp's
    threaded `getaddrinfo` when None), TLS verified against `ssl_context` (httpx's default when None:
    certifi's roots, or SSL_CERT_FILE / SSL_CERT_DIR), proxies from HTTP(S)_PROXY / NO_PROXY only if
    `trust_env`. One session, made on first use (in the loop); closed with the client."""

    def __init__(
        self,
        *,
        resolver: AbstractResolver | None = None,
        limits: httpx.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = False,
    ) -> None:
        self._resolver = resolver
        self._ssl = ssl_context or httpx.create_ssl_context()
        self._limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=self._resolver,
            use_dns_cache=False,  # every connection resolves (and, pinned, checks) afresh
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry,
            ssl=self._ssl,
        )
        return aiohttp.ClientSession(
            connector=connector,
            read_bufsize=RECEIVE_BYTES,
            auto_decompress=False,
            trust_env=self._trust_env,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Content-Type",),  # httpx sets every header it means to send
        )

    async def check(self, url: httpx.URL) -> None:
        """Refuse a request before it is sent (a subclass's policy); this one refuses nothing."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.check(request.url)
        if self._session is None:
            self._session = self._open_session()
        headers = [  # as httpx wrote them, names in their case
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() != b"transfer-encoding"  # aiohttp frames a body of unknown length itself
        ]
        timeout = request.extensions.get("timeout", {})
        body = _RequestBody.of(request, write_timeout=timeout.get("write"))
        with _as_httpx_errors(request, body):
            try:
                async with asyncio.timeout(None) as deadline:  # armed only while a piece is written
                    if body is not None:
                        body.deadline = deadline
                    try:
                        response = await self._session.request(
                            request.method,
                            yarl.URL(
                                str(request.url), encoded=True
                            ),  # as httpx encoded it: signed URLs stay signed
                            headers=headers,
                            data=body.pieces() if body is not None else None,
                            allow_redirects=False,
                            timeout=aiohttp.ClientTimeout(
                                total=None,
                                connect=timeout.get("pool"),
                                sock_connect=timeout.get("connect"),
                                sock_read=timeout.get("read"),
                            ),
                        )
                    finally:
                        if body is not None:
                            # A peer may answer before it has the whole body: what is still being
                            # written then is no longer watched by a deadline that has ended.
                            body.deadline = None
            except TimeoutError as exc:
                if not deadline.expired():
                    raise  # one of aiohttp's own (a ClientError too): mapped above
                raise httpx.WriteTimeout("timed out writing the request body", request=request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
