"""Webhook events (§8): TikTok's body shape, the TikTok-Signature header, bounded retries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from tiktok_sandbox.settings import SandboxSettings

log = structlog.get_logger("tiktok_sandbox.webhooks")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256(client_secret, "<t>.<raw body>")."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `TikTok-Signature` header value: `t=<epoch>,s=<hex>`."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},s={sign(secret, t, body)}"


def event_body(
    *, client_key: str, event: str, open_id: str, content: dict[str, Any], create_time: int
) -> bytes:
    """The raw JSON body; `content` is itself a JSON string, as TikTok sends it."""
    return json.dumps(
        {
            "client_key": client_key,
            "event": event,
            "create_time": create_time,
            "user_openid": open_id,
            "content": json.dumps(content, separators=(",", ":")),
        },
        separators=(",", ":"),
    ).encode()


@dataclass
class Delivery:
    """One event and what happened when the sandbox tried to deliver it."""

    event: str
    open_id: str
    content: dict[str, Any]
    body: bytes
    attempts: list[int | str] = field(default_factory=list)  # HTTP status or error name per attempt
    delivered: bool = False

    def to_json(self) -> dict[str, Any]:
        """Inspection view."""
        return {
            "event": self.event,
            "open_id": self.open_id,
            "content": self.content,
            "body": self.body.decode(),
            "attempts": self.attempts,
            "delivered": self.delivered,
        }


class WebhookSender:
    """Posts events to SANDBOX_WEBHOOK_URL with TikTok's retry behaviour, bounded for a sandbox."""

    def __init__(self, settings: SandboxSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self.deliveries: list[Delivery] = []

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session set by `attach`; only available while the app runs."""
        if self._session is None:
            raise RuntimeError("the sandbox is not running")
        return self._session

    def attach(self, session: aiohttp.ClientSession | None) -> None:
        """Use this session for deliveries (None detaches at shutdown)."""
        self._session = session

    def build(self, event: str, open_id: str, content: dict[str, Any]) -> Delivery:
        """Record an event; the caller schedules `deliver` for it."""
        body = event_body(
            client_key=self._settings.client_key,
            event=event,
            open_id=open_id,
            content=content,
            create_time=int(time.time()),
        )
        delivery = Delivery(event=event, open_id=open_id, content=content, body=body)
        self.deliveries.append(delivery)
        return delivery

    async def deliver(self, delivery: Delivery) -> None:
        """Try until a 200 or the attempts run out; backoff doubles each time."""
        url = self._settings.webhook_url
        if not url:
            return
        secret = self._settings.client_secret.get_secret_value()
        backoff = self._settings.webhook_backoff_seconds
        timeout = aiohttp.ClientTimeout(total=self._settings.webhook_timeout_seconds)
        for attempt in range(1, self._settings.webhook_max_attempts + 1):
            headers = {
                "Content-Type": "application/json",
                # Signed per attempt, as TikTok stamps the time it sends.
                "TikTok-Signature": signature_header(secret, delivery.body),
            }
            try:
                async with self.session.post(
                    url, data=delivery.body, headers=headers, timeout=timeout
                ) as resp:
                    delivery.attempts.append(resp.status)
                    if resp.status == 200:
                        delivery.delivered = True
                        log.info("webhook_delivered", webhook_event=delivery.event, attempt=attempt)
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                delivery.attempts.append(type(exc).__name__)
            log.info(
                "webhook_attempt_failed",
                webhook_event=delivery.event,
                attempt=attempt,
                result=delivery.attempts[-1],
            )
            if attempt < self._settings.webhook_max_attempts:
                await asyncio.sleep(backoff)
                backoff *= 2
        log.warning("webhook_dropped", webhook_event=delivery.event, attempts=len(delivery.attempts))
