"""POSTs one signed callback to a team's URL over httpx and says how it went (never raises for
the receiver's sake): the URL checked public first, no redirects followed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx

from reelay_common.adapters.netguard import ensure_callback_url
from reelay_common.domain.callbacks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    CallbackAnswer,
    sign,
    verdict_of,
)
from reelay_common.domain.errors import InvalidInputError

USER_AGENT = "reelay-callbacks/1"


class HttpCallbackSender:
    """Sends callbacks signed with one secret (the `CallbackSender` of the status-poller)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        secret: str,
        *,
        allow_private: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._secret = secret
        self._allow_private = allow_private
        self._clock = clock

    async def send(self, url: str, body: bytes, *, delivery_id: str) -> CallbackAnswer:
        """One attempt: refused when the URL is not (or no longer) allowed, else the answer's verdict."""
        try:
            await ensure_callback_url(url, allow_private=self._allow_private)
        except InvalidInputError as exc:
            return CallbackAnswer("refused", error=exc.code or "callback_url_refused")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(self._secret, int(self._clock()), body),
            DELIVERY_HEADER: delivery_id,
        }
        try:
            response = await self._http.post(url, content=body, headers=headers, follow_redirects=False)
        except httpx.TimeoutException:
            return CallbackAnswer("retry", error="timeout")
        except httpx.TransportError as exc:
            return CallbackAnswer("retry", error=f"connection_error: {type(exc).__name__}")
        return verdict_of(response.status_code)


@asynccontextmanager
async def callback_sender(
    secret: str, *, timeout_seconds: float, allow_private: bool = False
) -> AsyncIterator[HttpCallbackSender]:
    """A sender with its own HTTP client (no redirects, `timeout_seconds` per attempt), closed on exit."""
    async with httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False) as http:
        yield HttpCallbackSender(http, secret, allow_private=allow_private)
