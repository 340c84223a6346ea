"""Connecting an account through TikTok's OAuth (docs/architecture.md, "The account lifecycle").

Pure pieces: the authorize URL, the `state` that binds a consent to a tenant and an account, and
PKCE. TikTok's rules (docs/architecture.md, TikTok §2.1-2.2): `client_key` (not `client_id`),
comma-separated scopes, `response_type=code`, a `redirect_uri` byte-identical at oauth/token, and
for desktop and mobile apps PKCE S256.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import urlencode

AUTHORIZE_PATH: Final = "/v2/auth/authorize/"
# TikTok's consent page lives on www.tiktok.com, its API on open.tiktokapis.com.
TIKTOK_API_HOST: Final = "open.tiktokapis.com"
TIKTOK_AUTHORIZE_BASE: Final = "https://www.tiktok.com"
# Error codes of a connect that did not complete; each stores nothing.
STATE_INVALID: Final = "oauth_state_invalid"  # forged, replayed, expired, another tenant's or account's
CONSENT_DENIED: Final = "oauth_access_denied"
CONSENT_FAILED: Final = "oauth_authorize_failed"  # TikTok redirected with another error
EXCHANGE_FAILED: Final = "oauth_exchange_failed"
# What an upload of an account that can no longer post fails with (and a new one is refused with).
ACCOUNT_REAUTH_REQUIRED: Final = "account_reauth_required"
ACCOUNT_DISCONNECTED: Final = "account_disconnected"


def authorize_base_for(api_base_url: str) -> str:
    """Where the consent page is, given the configured TikTok API base: TikTok's own host for the
    real API, the same base otherwise (the sandbox serves both)."""
    base = api_base_url.rstrip("/")
    if base.split("://", 1)[-1].split("/", 1)[0] == TIKTOK_API_HOST:
        return TIKTOK_AUTHORIZE_BASE
    return base


def new_state_token() -> str:
    """A fresh `state`: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def state_hash(token: str) -> str:
    """What is stored of a `state` (so a database dump cannot be replayed at the callback)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_code_verifier() -> str:
    """A PKCE code_verifier: 64 characters of [A-Za-z0-9-_] (43-128 are allowed)."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    """The S256 code_challenge of `verifier` (RFC 7636: base64url of the SHA-256, unpadded)."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class PendingConnect:
    """A started connect, as kept until its callback: whose it is, what was asked, and until when.

    `code_verifier` is in clear here; the store keeps it encrypted."""

    tenant_id: str
    account_id: str  # the client's own id (unscoped)
    scopes: tuple[str, ...]
    redirect_uri: str
    expires_at: datetime
    code_verifier: str | None = None

    def __repr__(self) -> str:
        # Keep the verifier out of reprs and logs.
        return f"PendingConnect(tenant_id={self.tenant_id!r}, account_id={self.account_id!r})"


def authorize_url(
    authorize_base: str,
    *,
    client_key: str,
    scopes: tuple[str, ...],
    redirect_uri: str,
    state: str,
    code_verifier: str | None,
) -> str:
    """TikTok's authorize URL for one connect."""
    params = {
        "client_key": client_key,
        "scope": ",".join(scopes),
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "state": state,
    }
    if code_verifier is not None:
        params.update(code_challenge=code_challenge(code_verifier), code_challenge_method="S256")
    return f"{authorize_base.rstrip('/')}{AUTHORIZE_PATH}?{urlencode(params)}"
