"""TikTok webhooks: signature verification over the raw body, and parsing (API reference §8)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from reelay_common.domain import callbacks as signing

from reelay_ingest.errors import MalformedRequestError, SignatureError

# The events ingest passes on; anything else is acknowledged and logged only.
KNOWN_EVENTS = frozenset(
    {
        "post.publish.failed",
        "post.publish.complete",
        "post.publish.inbox_delivered",
        "post.publish.publicly_available",
        "post.publish.no_longer_publicaly_available",  # misspelled in the API itself
        "authorization.removed",
    }
)


SIGNATURE_HEADER = "TikTok-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `TikTok-Signature` header TikTok would send for `body` at `timestamp`."""
    return signing.sign(secret, timestamp, body)


def verify_signature(header: str | None, body: bytes, secret: str, *, now: float, tolerance: float) -> None:
    """Raise SignatureError unless `header` signs the raw `body` with `secret` within `tolerance` s.

    TikTok signs as Reelay's callbacks do (t=<epoch>,s=<hex HMAC-SHA256 of "t.body">): one check."""
    try:
        signing.verify_signature(header, body, secret, now=now, tolerance=tolerance, name=SIGNATURE_HEADER)
    except signing.SignatureInvalid as exc:
        raise SignatureError(exc.message, code=exc.code) from exc


@dataclass(frozen=True)
class WebhookEvent:
    """One verified webhook, `content` parsed (it arrives as a JSON string inside the JSON)."""

    event: str
    create_time: int
    user_openid: str | None
    publish_id: str | None
    publish_type: str | None
    reason: str | None
    post_id: str | None

    @property
    def known(self) -> bool:
        """Whether ingest passes this event on (post.publish.*, authorization.removed)."""
        return self.event in KNOWN_EVENTS


def _opt_str(content: dict[str, Any], key: str) -> str | None:
    value = content.get(key)
    if value is None:
        return None
    # Post ids exceed 2^53 and authorization.removed reasons are ints: keep both as strings.
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise MalformedRequestError(f"webhook content field {key!r} is not a string", code="webhook_malformed")


def parse_webhook(body: bytes) -> WebhookEvent:
    """Parse a webhook body; MalformedRequestError when it is not TikTok's shape."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequestError("the webhook body is not JSON", code="webhook_malformed") from exc
    if not isinstance(payload, dict):
        raise MalformedRequestError("the webhook body is not a JSON object", code="webhook_malformed")
    event, create_time = payload.get("event"), payload.get("create_time")
    if not isinstance(event, str) or not event:
        raise MalformedRequestError("the webhook has no event name", code="webhook_malformed")
    if not isinstance(create_time, int) or isinstance(create_time, bool):
        raise MalformedRequestError("the webhook has no integer create_time", code="webhook_malformed")
    raw_content = payload.get("content")
    content: Any
    if raw_content is None or raw_content == "":
        content = {}
    elif isinstance(raw_content, str):
        try:
            content = json.loads(raw_content)
        except ValueError as exc:
            raise MalformedRequestError(
                "the webhook content is not a JSON string", code="webhook_malformed"
            ) from exc
    else:
        content = raw_content  # tolerated: an object instead of a string
    if not isinstance(content, dict):
        raise MalformedRequestError("the webhook content is not a JSON object", code="webhook_malformed")
    user_openid = payload.get("user_openid")
    return WebhookEvent(
        event=event,
        create_time=create_time,
        user_openid=user_openid if isinstance(user_openid, str) else None,
        publish_id=_opt_str(content, "publish_id"),
        publish_type=_opt_str(content, "publish_type"),
        reason=_opt_str(content, "reason"),
        post_id=_opt_str(content, "post_id"),
    )
