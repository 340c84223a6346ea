"""The HTTP transport for every request to a user-given URL (a video source, a team's callback):
`http_transport.AiohttpTransport`, pinned to the addresses the SSRF guard checked.

A client resolves a URL's host itself when it connects, so a check made before (`netguard`) could
be undone by a name whose DNS answer changes in between (DNS rebinding: public at the check,
127.0.0.1 at the connection). Here the connector's resolver (`PinnedResolver`, aiohttp's extension
point for name lookups) resolves the name once, refuses unless every address is public, and hands
the connector those very addresses to connect to. An IP literal is checked before the request is
sent (aiohttp does not resolve literals; they cannot rebind). The URL is left as it was, so the
Host header and the TLS server name (SNI, and the certificate's check) are still the name's. Every
connection, so every redirect hop, goes through it. No proxy from the environment: a proxy would
connect to itself, not to an address the resolver chose.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl

import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from reelay_common.adapters.http_transport import AiohttpTransport
from reelay_common.adapters.netguard import Resolver, public_addresses


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
