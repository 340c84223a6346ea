"""The HTTP transport for every request to a user-given URL: connections pinned to checked addresses.

httpx resolves a URL's host itself when it connects, so a check made before (`netguard`) could be
undone by a name whose DNS answer changes in between (DNS rebinding: public at the check,
127.0.0.1 at the connection). Here the network backend (httpcore's extension point for opening
connections) resolves the name once, refuses unless every address is public, and connects to one
of those very addresses. The URL is left as it was, so the Host header and the TLS server name
(SNI, and the certificate's check) are still the name's. Every connection, so every redirect hop,
goes through it.

httpx offers no resolver setting, and SSRF wrappers such as safehttpx offer a GET, not a transport;
a network backend is the seam httpcore itself provides, and httpx's transport keeps its API.

The same seam reads a video at the speed of the wire: httpcore asks its stream for 64 KiB at a time
(`READ_NUM_BYTES`), while asyncio hands the socket's data over in pieces of up to 256 KiB, which
anyio then splits and copies again for each 64 KiB read. Every connection here reads whatever has
arrived, up to `RECEIVE_BYTES` (`BulkReadStream`): a 200 MB download took 0.27-0.44 s of CPU at
64 KiB and 0.15-0.17 s this way (docs/design.md, "Video URLs: one GET, read in bulk").
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any, Final

import httpcore
import httpx

from reelay_common.adapters.netguard import URL_NOT_PUBLIC, Resolver, public_addresses
from reelay_common.domain.errors import InvalidInputError

RECEIVE_BYTES: Final = 1024 * 1024


class BulkReadStream(httpcore.AsyncNetworkStream):
    """A network stream whose reads take up to `RECEIVE_BYTES` of what has arrived.

    httpcore hands each read's bytes to h11 whole, whatever their length, so a read larger than the
    64 KiB asked for only means fewer, larger events on the way to the body.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max(max_bytes, RECEIVE_BYTES), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        return BulkReadStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class BulkReadBackend(httpcore.AsyncNetworkBackend):
    """A network backend (by default httpcore's own) whose connections are `BulkReadStream`s.

    TCP only: no transport here is given a unix socket (httpcore's base refuses one).
    """

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(  # the signature is httpcore's
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return BulkReadStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to public addresses, and to the very addresses it checked.

    httpcore hands `connect_tcp` the URL's host; TLS is started afterwards on the returned stream
    with the URL's host as server name, so pinning the address changes neither SNI nor Host.
    """

    def __init__(
        self, *, resolver: Resolver | None = None, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._resolver = resolver
        self._inner = BulkReadBackend(inner)

    async def connect_tcp(  # the signature is httpcore's
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # InvalidInputError is no httpcore error: httpx lets it through unchanged, so a refused
        # address reaches the caller as the permanent refusal it is, not as a retryable failure.
        addresses = await public_addresses(host, port, resolver=self._resolver)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # the next vetted address may answer
        assert failure is not None  # public_addresses never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise InvalidInputError("a user-given URL may not reach a unix socket", code=URL_NOT_PUBLIC)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class BackendTransport(httpx.AsyncHTTPTransport):
    """An httpx transport over a given httpcore network backend.

    httpx's transport takes no network backend, so the connection pool it built is replaced by one
    built the same way with `backend` (the pool is httpcore's public API; the attribute holding it
    is httpx's). No proxy: a proxy would connect to itself, not to an address the backend chose (a
    client given a transport takes no proxy from the environment either).
    """

    def __init__(self, backend: httpcore.AsyncNetworkBackend, *, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's
        ssl_context = httpx.create_ssl_context()
        super().__init__(verify=ssl_context, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class GuardedTransport(BackendTransport):
    """An httpx transport whose every connection goes through `PinnedNetworkBackend`."""

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        super().__init__(PinnedNetworkBackend(resolver=resolver, inner=inner), limits=limits)


def guarded_transport(
    *, allow_private: bool = False, resolver: Resolver | None = None
) -> httpx.AsyncBaseTransport:
    """The transport for every request to a user-given URL: pinned to public addresses, unless
    `allow_private` (local development and tests) lets it reach anything. Either reads in bulk."""
    if allow_private:
        return BackendTransport(BulkReadBackend())
    return GuardedTransport(resolver=resolver)
