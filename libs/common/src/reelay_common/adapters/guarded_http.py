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
"""

from __future__ import annotations

from collections.abc import Iterable

import httpcore
import httpx

from reelay_common.adapters.netguard import URL_NOT_PUBLIC, Resolver, public_addresses
from reelay_common.domain.errors import InvalidInputError


class PinnedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to public addresses, and to the very addresses it checked.

    httpcore hands `connect_tcp` the URL's host; TLS is started afterwards on the returned stream
    with the URL's host as server name, so pinning the address changes neither SNI nor Host.
    """

    def __init__(
        self, *, resolver: Resolver | None = None, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

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


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose every connection goes through `PinnedNetworkBackend`.

    httpx's transport takes no network backend, so the connection pool it built is replaced by one
    built the same way with the pinned backend (the pool is httpcore's public API; the attribute
    holding it is httpx's). No proxy: a proxy would connect to itself, not to the checked address
    (a client given a transport takes no proxy from the environment either).
    """

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's
        ssl_context = httpx.create_ssl_context()
        super().__init__(verify=ssl_context, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedNetworkBackend(resolver=resolver, inner=inner),
        )


def guarded_transport(
    *, allow_private: bool = False, resolver: Resolver | None = None
) -> httpx.AsyncBaseTransport:
    """The transport for every request to a user-given URL: pinned to public addresses, unless
    `allow_private` (local development and tests) lets it reach anything."""
    if allow_private:
        return httpx.AsyncHTTPTransport()
    return GuardedTransport(resolver=resolver)
