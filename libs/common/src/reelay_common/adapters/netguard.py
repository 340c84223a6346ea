"""Refuses URLs that point into our own network (SSRF): loopback, link-local, private, reserved.

Checked after DNS resolution (a public name can resolve to 127.0.0.1) and again on every redirect
by whoever follows it. `allow_private=True` exists for local development and tests only.

A check alone is not enough: the HTTP client's connector would resolve the name a second time to
connect, and a name whose answer changes in between (DNS rebinding) would pass the check with a
public address and connect to 127.0.0.1. `adapters.guarded_http` closes that gap: its connector's
resolver (`PinnedResolver`) answers only addresses that passed `public_addresses`, and those are
the ones connected to."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from reelay_common.domain.errors import InvalidInputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# host, port -> every address the host resolves to (raises InvalidInputError when it does not).
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

URL_NOT_PUBLIC = "url_not_public"


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return is_public_address(ip.ipv4_mapped)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidInputError(
            f"the video URL's host {host!r} does not resolve", code="url_unresolvable"
        ) from exc
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def ensure_public_url(url: str, *, allow_private: bool = False) -> None:
    """Raise InvalidInputError unless `url` is http(s) and every address of its host is public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidInputError("the video URL must be http or https", code="url_scheme")
    if not parts.hostname:
        raise InvalidInputError("the video URL has no host", code="url_host")
    if parts.username or parts.password:
        raise InvalidInputError("the video URL must not carry credentials", code="url_credentials")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await public_addresses(parts.hostname, port)


async def public_addresses(host: str, port: int, *, resolver: Resolver | None = None) -> list[IPAddress]:
    """The addresses of `host` (an IP literal is its own); InvalidInputError unless all are public.

    `resolver` defaults to this module's `resolve`, looked up at each call."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        addresses = await (resolver or resolve)(host, port)
    if not addresses or not all(is_public_address(ip) for ip in addresses):
        raise InvalidInputError(
            "the video URL points at a loopback, link-local, private or reserved address",
            code=URL_NOT_PUBLIC,
        )
    return addresses


# What ensure_public_url's refusals say of a callback URL (same checks, the callback's own codes).
_CALLBACK_REFUSALS = {
    "url_scheme": "the callback URL must be https",
    "url_host": "the callback URL has no host",
    "url_credentials": "the callback URL must not carry credentials",
    "url_unresolvable": "the callback URL's host does not resolve",
    URL_NOT_PUBLIC: "the callback URL points at a loopback, link-local, private or reserved address",
}


async def ensure_callback_url(url: str, *, allow_private: bool = False) -> None:
    """Raise InvalidInputError (code `callback_<reason>`) unless `url` is https (http only with
    `allow_private`, for development and tests) and every address of its host is public."""
    allowed = ("https", "http") if allow_private else ("https",)
    reason: str | None = None
    if urlsplit(url).scheme not in allowed:
        reason = "url_scheme"
    else:
        try:
            await ensure_public_url(url, allow_private=allow_private)
        except InvalidInputError as exc:
            reason = exc.code or URL_NOT_PUBLIC
    if reason is not None:
        raise InvalidInputError(
            _CALLBACK_REFUSALS.get(reason, "the callback URL is refused"), code=f"callback_{reason}"
        )
