"""The HTTP transport for every request to a user-given URL: httpx's API over aiohttp's connections,
pinned to the addresses the SSRF guard checked.

**Pinned.** A client resolves a URL's host itself when it connects, so a check made before
(`netguard`) could be undone by a name whose DNS answer changes in between (DNS rebinding: public
at the check, 127.0.0.1 at the connection). Here the connector's resolver (`PinnedResolver`,
aiohttp's extension point for name lookups) resolves the name once, refuses unless every address
is public, and hands the connector those very addresses to connect to. An IP literal is checked
before the request is sent (aiohttp does not resolve literals; they cannot rebind). The URL is
left as it was, so the Host header and the TLS server name (SNI, and the certificate's check) are
still the name's. Every connection, so every redirect hop, goes through it.

**aiohttp underneath.** A video download is the uploader's biggest CPU cost after the PUTs, and
aiohttp parses HTTP in C: 1 GB read through `UrlVideoReader` cost 0.31-0.34 s of CPU this way
against 0.96-1.04 s over httpx's own transport (httpcore, h11 and anyio in Python), from the same
server (docs/design.md, "Video URLs"). The callers keep httpx's API (`httpx.AsyncClient`,
`httpx.Response`, httpx's errors), so the reader, the callback sender and their tests are the
same whichever transport is under them. httpx-aiohttp, the library transport for this, reads
the body in fixed 16 KiB pieces (60,000 Python-level iterations per GB, with copies to cut them)
and maps every lost connection to a connect timeout; a download must not be cut up, and a body
that broke off must read as one, so the transport is this module's.

No proxy from the environment (a proxy would connect to itself, not to an address the resolver
chose), no cookies kept, no decompression (the callers ask for identity encoding: a compressed
body would make Content-Length and ranges count different bytes).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Final

import aiohttp
import httpx
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from reelay_common.adapters.netguard import Resolver, public_addresses

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
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        for theirs, ours in _ERRORS:
            if isinstance(exc, theirs):
                if issubclass(ours, httpx.TransportError):
                    raise ours(str(exc) or type(exc).__name__, request=request) from exc
                raise ours(str(exc) or type(exc).__name__) from exc
        raise  # every ClientError matched the last row; kept for the type checker


class PinnedResolver(AbstractResolver):
    """Resolves a name once and answers only its public addresses (InvalidInputError otherwise).

    The connector connects to exactly the addresses a resolver answers, so these are the ones
    connected to. `resolver` is the DNS behind it: `netguard.resolve` by default, looked up at
    each call (as `public_addresses` does).
    """

    def __init__(self, resolver: Resolver | None = None) -> None:
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        # InvalidInputError is no OSError: aiohttp lets it through unchanged (and so does httpx),
        # so a refused address reaches the caller as the permanent refusal it is.
        addresses = await public_addresses(host, port, resolver=self._resolver)
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in addresses
        ]

    async def close(self) -> None:
        return None


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
    """An httpx transport whose connections are aiohttp's, looked up by `resolver`
    (aiohttp's threaded `getaddrinfo` when None), TLS verified against `ssl_context` (httpx's default,
    certifi's roots, when None). One session, made on first use (in the loop)."""

    def __init__(
        self,
        *,
        resolver: AbstractResolver | None = None,
        limits: httpx.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._resolver = resolver
        self._ssl = ssl_context or httpx.create_ssl_context()  # httpx's default: certifi's roots
        self._limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's
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
            trust_env=False,
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
        with _as_httpx_errors(request):
            response = await self._session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),  # as httpx encoded it: signed URLs stay signed
                headers=headers,
                data=_request_body(request),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),  # httpx's write timeout has no aiohttp twin
                ),
            )
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


def _request_body(request: httpx.Request) -> bytes | AsyncIterator[bytes] | None:
    try:
        return request.content or None
    except httpx.RequestNotRead:  # a streamed body: handed on piece by piece
        return _pieces(request)


async def _pieces(request: httpx.Request) -> AsyncIterator[bytes]:
    stream = request.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    async for piece in stream:
        yield piece


class GuardedTransport(AiohttpTransport):
    """Connects only to public addresses, the very ones it checked (`PinnedResolver`).

    `resolver` is the pinned lookup: a `PinnedResolver` over the system's DNS by default (tests
    give one over their own DNS, or one that also routes the checked address somewhere)."""

    def __init__(
        self,
        *,
        resolver: PinnedResolver | None = None,
        limits: httpx.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(resolver=resolver or PinnedResolver(), limits=limits, ssl_context=ssl_context)

    async def check(self, url: httpx.URL) -> None:
        # A literal never reaches the resolver: checked here (it cannot rebind). A name passes
        # through as it is: the resolver checks it when it connects. InvalidInputError if refused.
        try:
            ipaddress.ip_address(url.host)
        except ValueError:
            return
        await public_addresses(url.host, url.port or (443 if url.scheme == "https" else 80))


def guarded_transport(
    *, allow_private: bool = False, resolver: Resolver | None = None
) -> httpx.AsyncBaseTransport:
    """The transport for every request to a user-given URL: pinned to public addresses, unless
    `allow_private` (local development and tests) lets it reach anything. `resolver`: the DNS."""
    if allow_private:
        return AiohttpTransport()
    return GuardedTransport(resolver=PinnedResolver(resolver))
