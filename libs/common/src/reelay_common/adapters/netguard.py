"""Refuses URLs that point into our own network (SSRF): loopback, link-local, private, reserved.

Checked after DNS resolution (a public name can resolve to 127.0.0.1) and again on every redirect
by whoever follows it. `allow_private=True` exists for local development and tests only."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from reelay_common.domain.errors import InvalidInputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    for ip in await resolve(parts.hostname, port):
        if not is_public_address(ip):
            raise InvalidInputError(
                "the video URL points at a loopback, link-local, private or reserved address",
                code="url_not_public",
            )


# What ensure_public_url's refusals say of a callback URL (same checks, the callback's own codes).
_CALLBACK_REFUSALS = {
    "url_scheme": "the callback URL must be https",
    "url_host": "the callback URL has no host",
    "url_credentials": "the callback URL must not carry credentials",
    "url_unresolvable": "the callback URL's host does not resolve",
    "url_not_public": "the callback URL points at a loopback, link-local, private or reserved address",
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
            reason = exc.code or "url_not_public"
    if reason is not None:
        raise InvalidInputError(
            _CALLBACK_REFUSALS.get(reason, "the callback URL is refused"), code=f"callback_{reason}"
        )
