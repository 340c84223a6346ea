"""What ingest decides about an account's life: connect it through TikTok's OAuth, show it, and
lose it (a DELETE, or TikTok's authorization.removed). docs/architecture.md, "The account lifecycle".

Nothing here knows FastAPI, Mongo or httpx: the routes decode HTTP into these calls. Keys are the
tenant-scoped account ids (`reelay_common.domain.tenancy.scoped`); a connect's `state` carries the
tenant, so the callback needs no API key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reelay_common.domain.errors import ReelayError
from reelay_common.domain.messages import BlobSource
from reelay_common.domain.oauth import (
    ACCOUNT_DISCONNECTED,
    CONSENT_DENIED,
    CONSENT_FAILED,
    EXCHANGE_FAILED,
    STATE_INVALID,
    PendingConnect,
    authorize_url,
    new_code_verifier,
    new_state_token,
)
from reelay_common.domain.records import AccountRecord, AccountStatus, Change
from reelay_common.domain.states import UploadState
from reelay_common.domain.tenancy import DEFAULT_TENANT, SCOPE_SEPARATOR, scoped, split_scoped
from reelay_common.domain.tiktok import CreatorInfo, TokenGrant
from reelay_common.logging import get_logger
from reelay_common.ports import (
    AccountDirectory,
    AccountStore,
    BlobStore,
    CreatorInfoCache,
    OAuthStateStore,
    Recorder,
    TikTokApi,
    TikTokOAuth,
    UploadStore,
)

from reelay_ingest.errors import ConflictError, ConnectFailed, NotFoundError, RequestRejected

log = get_logger(__name__)

# TikTok's authorization.removed reasons (API reference §8).
REMOVAL_REASONS = {
    "0": "unknown",
    "1": "user_disconnected",
    "2": "account_deleted",
    "3": "age_changed",
    "4": "banned",
    "5": "developer_revoked",
}
# The states of an upload TikTok has nothing of yet: a disconnect fails them.
BEFORE_TIKTOK = (UploadState.SCHEDULED, UploadState.ACCEPTED)
MAX_UPLOADS_FAILED = 1000  # per state and disconnect; a disconnect again fails the rest


@dataclass(frozen=True)
class OAuthPolicy:
    """What the settings decide of a connect."""

    client_key: str
    authorize_base: str
    redirect_uri: str | None
    default_scopes: tuple[str, ...]
    state_ttl_seconds: float = 600.0
    pkce: bool = False


@dataclass(frozen=True)
class Lifecycle:
    """The ports an account's lifecycle works with."""

    accounts: AccountDirectory
    states: OAuthStateStore
    oauth: TikTokOAuth
    uploads: UploadStore
    recorder: Recorder
    blobs: BlobStore
    policy: OAuthPolicy
    creator_infos: CreatorInfoCache | None = None


# ------------------------------------------------------------------------------------------ connect


@dataclass(frozen=True)
class Started:
    """A connect waiting for the user's consent."""

    account_id: str
    authorize_url: str
    state_expires_at: datetime


async def start_connect(
    tenant_id: str, account_id: str, scopes: list[str] | None, deps: Lifecycle
) -> Started:
    """A fresh state bound to (tenant, account), kept hashed, and TikTok's authorize URL with it."""
    policy = deps.policy
    if policy.redirect_uri is None:
        raise RequestRejected(
            "OAuth is not configured: set INGEST_OAUTH_REDIRECT_URI (or INGEST_PUBLIC_BASE_URL)",
            code="oauth_not_configured",
        )
    asked = tuple(dict.fromkeys(scopes)) if scopes else policy.default_scopes
    state = new_state_token()
    verifier = new_code_verifier() if policy.pkce else None
    expires_at = datetime.now(UTC) + timedelta(seconds=policy.state_ttl_seconds)
    pending = PendingConnect(
        tenant_id=tenant_id,
        account_id=account_id,
        scopes=asked,
        redirect_uri=policy.redirect_uri,
        expires_at=expires_at,
        code_verifier=verifier,
    )
    await deps.states.put(state, pending)
    url = authorize_url(
        policy.authorize_base,
        client_key=policy.client_key,
        scopes=asked,
        redirect_uri=policy.redirect_uri,
        state=state,
        code_verifier=verifier,
    )
    log.info("account_connect_started", tenant_id=tenant_id, account_id=account_id, scopes=list(asked))
    return Started(account_id=account_id, authorize_url=url, state_expires_at=expires_at)


@dataclass(frozen=True)
class Callback:
    """What TikTok's redirect brought back (or a client that captured it)."""

    state: str | None
    code: str | None = None
    error: str | None = None
    error_description: str | None = None


@dataclass(frozen=True)
class Connected:
    """A completed connect: the account as stored, its tenant, and creator_info as first read."""

    tenant_id: str
    account_id: str
    record: AccountRecord
    creator_info: CreatorInfo | None


def _state_refused() -> ConnectFailed:
    # One answer for forged, replayed, expired, another tenant's and another account's states.
    return ConnectFailed(
        "the OAuth state is unknown, used already or expired; start the connect again "
        "(POST /v1/accounts/{account_id}/connect)",
        code=STATE_INVALID,
    )


async def complete_connect(
    callback: Callback, deps: Lifecycle, *, tenant_id: str | None = None, account_id: str | None = None
) -> Connected:
    """Consume the state, exchange the code, read creator_info and store the account.

    `tenant_id` and `account_id` (POST .../connect/complete) must be the state's own, else the
    state is refused exactly as a forged one, and left for its owner. Every refusal stores nothing.
    """
    if not callback.state:
        raise _state_refused()
    pending = await deps.states.take(callback.state, tenant_id=tenant_id, account_id=account_id)
    if pending is None:
        raise _state_refused()
    bound = {"tenant_id": pending.tenant_id, "account_id": pending.account_id}
    if callback.error is not None:
        denied = callback.error == "access_denied"
        log.info("account_connect_refused_by_user", error=callback.error, **bound)
        raise ConnectFailed(
            "the TikTok user declined the authorization"
            if denied
            else f"TikTok did not authorize: {callback.error}",
            code=CONSENT_DENIED if denied else CONSENT_FAILED,
            extra={"tiktok_error": callback.error, **bound},
        )
    if not callback.code:
        raise ConnectFailed("the callback has no code", code=EXCHANGE_FAILED, extra=bound)
    try:
        grant = await deps.oauth.exchange_code(
            callback.code, redirect_uri=pending.redirect_uri, code_verifier=pending.code_verifier
        )
    except ReelayError as exc:
        log.warning("account_connect_exchange_failed", code=exc.code, log_id=exc.log_id, **bound)
        raise ConnectFailed(
            f"TikTok refused the authorization code: {exc.message}",
            code=EXCHANGE_FAILED,
            extra={"tiktok_error": exc.code, "log_id": exc.log_id, **bound},
        ) from exc
    key = scoped(pending.tenant_id, pending.account_id)
    existing = await deps.accounts.get(key)
    if existing is not None and existing.open_id is not None and existing.open_id != grant.open_id:
        # Re-pointing an account at another TikTok user would post to the wrong profile.
        raise ConflictError(
            f"account {pending.account_id!r} is connected to another TikTok user; disconnect it first",
            code="account_open_id_mismatch",
            extra={"account_id": pending.account_id},
        )
    info = await _first_creator_info(grant, key, deps)
    record = await deps.accounts.upsert_tokens(key, grant, requested_scopes=list(pending.scopes))
    log.info(
        "account_connected",
        scopes=record.scopes,
        missing_scopes=record.missing_scopes,
        open_id=grant.open_id,
        **bound,
    )
    return Connected(pending.tenant_id, pending.account_id, record, info)


async def _first_creator_info(grant: TokenGrant, key: str, deps: Lifecycle) -> CreatorInfo | None:
    """creator_info with the new token (kept for the account's first direct posts); None when TikTok
    does not answer it (no video.publish granted, say): the connect stands either way."""
    try:
        info = await deps.oauth.creator_info(grant.access_token)
    except ReelayError as exc:
        log.info("account_creator_info_unread", code=exc.code)
        return None
    if deps.creator_infos is not None:

        async def known() -> CreatorInfo:
            return info

        await deps.creator_infos.get_or_fetch(key, known)
    return info


# --------------------------------------------------------------------------------------------- keep


@dataclass(frozen=True)
class LiveCreatorInfo:
    """creator_info as TikTok answers it now, or why it could not be asked."""

    info: CreatorInfo | None
    unavailable: dict[str, Any] | None = None


async def get_account(tenant_id: str, account_id: str, accounts: AccountStore) -> AccountRecord:
    """The tenant's account; NotFoundError (like an unknown one) for another tenant's."""
    record = await accounts.get(scoped(tenant_id, account_id))
    if record is None:
        raise NotFoundError(f"account {account_id!r} is not registered", code="unknown_account")
    return record


async def live_creator_info(
    record: AccountRecord, tiktok: TikTokApi, cache: CreatorInfoCache | None
) -> LiveCreatorInfo:
    """The account's creator_info through the shared cache; None with the reason when it cannot be
    asked (not connected) or TikTok does not answer."""
    if record.status is not AccountStatus.CONNECTED:
        return LiveCreatorInfo(
            None, {"code": f"account_{record.status.value}", "message": f"the account is {record.status}"}
        )
    key = record.account_id

    async def fetch() -> CreatorInfo:
        return await tiktok.creator_info(key)

    try:
        if cache is None:
            return LiveCreatorInfo(await fetch())
        return LiveCreatorInfo(await cache.get_or_fetch(key, fetch))
    except ReelayError as exc:
        return LiveCreatorInfo(None, {"code": exc.code or type(exc).__name__, "message": exc.message})


async def list_accounts(tenant_id: str, deps: Lifecycle, *, limit: int = 500) -> list[AccountRecord]:
    """The tenant's accounts, by account id."""
    prefix = None if tenant_id == DEFAULT_TENANT else f"{tenant_id}{SCOPE_SEPARATOR}"
    return await deps.accounts.list_keys(prefix=prefix, limit=limit)


def local_id(record: AccountRecord) -> str:
    """The client's own id of a stored account."""
    return split_scoped(record.account_id)[1]


# --------------------------------------------------------------------------------------------- lose


@dataclass(frozen=True)
class Disconnected:
    """A disconnect: the account as it is now, and the uploads it failed."""

    record: AccountRecord
    failed_uploads: list[str]
    revoked: bool


async def disconnect(
    key: str, deps: Lifecycle, *, reason: str, revoke: bool, detail: dict[str, Any] | None = None
) -> Disconnected:
    """Revoke at TikTok (when asked; a failed revoke is logged, the disconnect happens anyway),
    mark `disconnected`, delete the tokens, and fail the uploads TikTok has nothing of yet."""
    revoked = False
    if revoke:
        token = await deps.accounts.access_token_of(key)
        if token is not None:
            try:
                await deps.oauth.revoke(token)
                revoked = True
            except ReelayError as exc:
                log.warning("account_revoke_failed", account_id=key, code=exc.code, log_id=exc.log_id)
    await deps.accounts.mark_disconnected(key, reason=reason)
    failed = await _fail_pending_uploads(key, reason, deps, detail or {})
    record = await get_account(*split_scoped(key), deps.accounts)
    log.info(
        "account_disconnected", account_id=key, reason=reason, revoked=revoked, failed_uploads=len(failed)
    )
    return Disconnected(record, failed, revoked)


async def _fail_pending_uploads(key: str, reason: str, deps: Lifecycle, detail: dict[str, Any]) -> list[str]:
    failed: list[str] = []
    for state in BEFORE_TIKTOK:
        for upload in await deps.uploads.list(account_id=key, state=state, limit=MAX_UPLOADS_FAILED):
            change = Change(
                UploadState.FAILED,
                source="ingest",
                detail={
                    "code": ACCOUNT_DISCONNECTED,
                    "message": f"the account was disconnected ({reason}) before TikTok had the upload",
                    "reason": reason,
                    **detail,
                },
            )
            done = await deps.recorder.record(upload.request_id, change)
            if done is None:
                continue  # it moved on meanwhile (the uploader's token check refuses it)
            failed.append(upload.request_id)
            if isinstance(done.source, BlobSource):
                await deps.blobs.delete(done.source.blob_id)
    return failed


async def account_removed(open_id: str, tiktok_reason: str | None, deps: Lifecycle) -> list[Disconnected]:
    """TikTok's authorization.removed: every account bound to `open_id` (whatever its tenant) is
    disconnected with TikTok's reason, as a DELETE would (no revoke: TikTok ended it already).
    Idempotent: an account disconnected already is left as it is (webhooks come at least once)."""
    reason = f"tiktok_{REMOVAL_REASONS.get(tiktok_reason or '0', 'unknown')}"
    done = []
    for record in await deps.accounts.find_by_open_id(open_id):
        if record.status is AccountStatus.DISCONNECTED:
            continue
        done.append(
            await disconnect(
                record.account_id,
                deps,
                reason=reason,
                revoke=False,
                detail={"tiktok_reason": tiktok_reason},
            )
        )
    return done
