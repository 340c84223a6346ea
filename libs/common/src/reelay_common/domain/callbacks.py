"""Callbacks to a team's HTTPS endpoint: how a body is signed (and how a receiver verifies it), and
what the receiver's answer means for the delivery. Pure: no I/O, no clock.

The signature (docs/architecture.md, "Callbacks") is `Reelay-Signature: t=<unix seconds>,s=<hex>`,
where `s` is the lowercase hex HMAC-SHA256, keyed by the deployment's callback secret, of
`t + "." + ` the raw body bytes: the scheme TikTok uses for its own webhooks (API reference §8)."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final, Literal

from reelay_common.domain.errors import InvalidInputError

SIGNATURE_HEADER: Final = "Reelay-Signature"
# `<request_id>:<state>`: the same on every attempt of one delivery, so a receiver can drop repeats.
DELIVERY_HEADER: Final = "Reelay-Delivery"
# How far a receiver should let `t` stray from its own clock (each attempt is signed afresh).
DEFAULT_TOLERANCE_SECONDS: Final = 300.0

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_EPOCH = re.compile(r"^[0-9]{1,12}$")


class SignatureInvalid(InvalidInputError):
    """A signature header that is missing, malformed, does not match the body, or is too old."""


def signature_digest(secret: str, timestamp: int | str, body: bytes) -> str:
    """The lowercase hex HMAC-SHA256 of `"<timestamp>.<body>"` keyed by `secret`."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},s={signature_digest(secret, timestamp, body)}"


def verify_signature(
    header: str | None,
    body: bytes,
    secret: str,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    name: str = SIGNATURE_HEADER,
) -> int:
    """The signed timestamp, or SignatureInvalid (code signature_missing, signature_malformed,
    signature_mismatch, signature_expired) unless `header` signs the raw `body` with `secret`
    within `tolerance` seconds of `now`. Compared in constant time."""
    if not header:
        raise SignatureInvalid(f"the {name} header is missing", code="signature_missing")
    fields: dict[str, str] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    timestamp, given = fields.get("t", ""), fields.get("s", "")
    if not _EPOCH.match(timestamp) or not _HEX64.match(given):
        raise SignatureInvalid(f"the {name} header is malformed", code="signature_malformed")
    # Both sides are ASCII hex of equal length, as compare_digest needs for a constant-time answer.
    if not hmac.compare_digest(signature_digest(secret, timestamp, body), given.lower()):
        raise SignatureInvalid(f"the {name} does not match the body", code="signature_mismatch")
    if abs(now - int(timestamp)) > tolerance:
        raise SignatureInvalid(f"the {name} timestamp is outside the tolerance", code="signature_expired")
    return int(timestamp)


# What one attempt came to: taken, worth trying again, or refused for good.
Verdict = Literal["delivered", "retry", "refused"]


@dataclass(frozen=True)
class CallbackAnswer:
    """The outcome of one POST to a callback URL: its verdict, the HTTP status if one came, and an
    error code otherwise (timeout, connection_error, a refused URL's code...)."""

    verdict: Verdict
    status: int | None = None
    error: str | None = None


def verdict_of(status: int) -> CallbackAnswer:
    """What an HTTP answer means: 2xx delivered; 408, 429 and 5xx retried; anything else (other
    4xx, and 3xx, since redirects are never followed) refused for good."""
    if 200 <= status < 300:
        return CallbackAnswer("delivered", status=status)
    if status in (408, 429) or status >= 500:
        return CallbackAnswer("retry", status=status)
    error = "redirect_not_followed" if 300 <= status < 400 else "refused_by_receiver"
    return CallbackAnswer("refused", status=status, error=error)
