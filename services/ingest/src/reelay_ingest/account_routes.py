"""The account routes: connect through TikTok's OAuth, show, list and disconnect (handlers in
`reelay_ingest.lifecycle`; docs/architecture.md, "The account lifecycle").

`GET /v1/oauth/callback` is where TikTok sends the user's browser back: it has no API key (the
`state` names the tenant and account) and answers a small HTML page, or JSON when asked for it.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from reelay_common.logging import bind_learned

from reelay_ingest.context import AppContext
from reelay_ingest.errors import ConnectFailed, RequestRejected
from reelay_ingest.lifecycle import (
    Callback,
    Connected,
    Lifecycle,
    complete_connect,
    disconnect,
    get_account,
    list_accounts,
    live_creator_info,
    start_connect,
)
from reelay_ingest.problems import problem_of
from reelay_ingest.schemas import (
    AccountList,
    AccountView,
    ConnectCompletion,
    ConnectRequest,
    ConnectStarted,
    CreatorInfoUnavailable,
    CreatorInfoView,
    DisconnectedView,
    ErrorBody,
)
from reelay_ingest.tenancy import TenantDep, context_of, current_tenant

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
AccountIdPath = Annotated[str, Path(max_length=128, pattern=ID_PATTERN)]
ContextDep = Annotated[AppContext, Depends(context_of)]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody} for s in statuses}


def _page_or_json(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/json": {"schema": {"$ref": schema_ref}},
        },
    }


accounts = APIRouter(
    prefix="/v1", tags=["accounts"], dependencies=[Depends(current_tenant)], responses=_errors(401)
)
oauth_callback = APIRouter(prefix="/v1", tags=["accounts"])


def _lifecycle(context: AppContext) -> Lifecycle:
    if context.deps.lifecycle is None:
        raise RequestRejected("account connections are not served here", code="oauth_not_configured")
    return context.deps.lifecycle


@accounts.get("/accounts", response_model=AccountList, summary="The tenant's accounts")
async def list_tenant_accounts(
    context: ContextDep, tenant: TenantDep, limit: Annotated[int, Query(ge=1, le=500)] = 500
) -> AccountList:
    """Every account of the caller's tenant, by account_id (no live creator_info: see one account)."""
    items = [AccountView.of(r) for r in await list_accounts(tenant.id, _lifecycle(context), limit=limit)]
    return AccountList(items=items, count=len(items))


@accounts.get(
    "/accounts/{account_id}", response_model=AccountView, summary="One account", responses=_errors(404, 422)
)
async def show_account(context: ContextDep, tenant: TenantDep, account_id: AccountIdPath) -> AccountView:
    """The account's status (`connected`, `reauth_required`, `disconnected`), scopes granted and
    missing, token expiry times, and TikTok's live creator_info (privacy options, max duration,
    whether the creator can post now), null with the reason when TikTok cannot be asked."""
    bind_learned(account_id=account_id)
    deps = context.deps
    record = await get_account(tenant.id, account_id, deps.accounts)
    live = await live_creator_info(record, deps.tiktok, deps.creator_infos)
    return AccountView.of(
        record,
        creator_info=CreatorInfoView.of(live.info) if live.info is not None else None,
        creator_info_unavailable=(
            CreatorInfoUnavailable.model_validate(live.unavailable) if live.unavailable is not None else None
        ),
    )


@accounts.post(
    "/accounts/{account_id}/connect",
    response_model=ConnectStarted,
    summary="Start connecting an account through TikTok's OAuth",
    responses=_errors(400, 422),
)
async def connect_account(
    context: ContextDep,
    tenant: TenantDep,
    account_id: AccountIdPath,
    body: Annotated[ConnectRequest | None, Body()] = None,
) -> ConnectStarted:
    """Answers TikTok's authorize URL (client_key, the scopes, response_type=code, the configured
    redirect_uri and a random, single-use `state` bound to this tenant and account, valid until
    `state_expires_at`; PKCE for desktop/mobile clients). Send the user there; TikTok brings them
    back to `GET /v1/oauth/callback`, or the client posts what it captured to `.../connect/complete`.
    Connecting an account again (after reauth_required or a disconnect) is the same call."""
    bind_learned(account_id=account_id)
    scopes = list(body.scopes) if body is not None and body.scopes else None
    started = await start_connect(tenant.id, account_id, scopes, _lifecycle(context))
    return ConnectStarted(
        account_id=started.account_id,
        authorize_url=started.authorize_url,
        state_expires_at=started.state_expires_at,
    )


@accounts.post(
    "/accounts/{account_id}/connect/complete",
    response_model=AccountView,
    summary="Complete a connect with the code and state a client captured",
    responses=_errors(400, 409, 422),
)
async def complete_account_connect(
    context: ContextDep, tenant: TenantDep, account_id: AccountIdPath, body: ConnectCompletion
) -> AccountView:
    """Exchange the `code` (the state must be this tenant's for this account: any other answers
    400 `oauth_state_invalid`, exactly as a forged one) and store the account."""
    bind_learned(account_id=account_id)
    connected = await complete_connect(
        Callback(state=body.state, code=body.code),
        _lifecycle(context),
        tenant_id=tenant.id,
        account_id=account_id,
    )
    return _connected_view(connected)


@accounts.delete(
    "/accounts/{account_id}",
    response_model=DisconnectedView,
    summary="Disconnect an account",
    responses=_errors(404, 422),
)
async def disconnect_account(
    context: ContextDep, tenant: TenantDep, account_id: AccountIdPath
) -> DisconnectedView:
    """Revokes the authorization at TikTok (a failed revoke is logged; the disconnect happens
    anyway), marks the account `disconnected`, deletes its tokens, and fails its uploads TikTok has
    nothing of yet (scheduled, accepted) with `account_disconnected`. Again: answered as it is."""
    bind_learned(account_id=account_id)
    deps = _lifecycle(context)
    record = await get_account(tenant.id, account_id, deps.accounts)
    done = await disconnect(record.account_id, deps, reason="disconnected", revoke=True)
    view = AccountView.of(done.record)
    return DisconnectedView(**view.model_dump(), failed_uploads=done.failed_uploads, revoked=done.revoked)


@oauth_callback.get(
    "/oauth/callback",
    summary="TikTok's OAuth redirect (browser-facing, no API key)",
    response_class=HTMLResponse,
    responses={
        200: _page_or_json("#/components/schemas/AccountView", "The account is connected."),
        **{
            status: _page_or_json("#/components/schemas/ErrorBody", "Nothing was connected.")
            for status in (400, 409, 422)
        },
    },
)
async def oauth_redirect(
    request: Request,
    context: ContextDep,
    state: Annotated[str | None, Query(max_length=512)] = None,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    error: Annotated[str | None, Query(max_length=128)] = None,
    error_description: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """Where TikTok sends the user back (`code` + `state`, or `error`, say `access_denied`). The
    state names the tenant and account. A forged, replayed, expired state, a declined consent and a
    refused code each answer 400 with a code and store nothing. HTML, or JSON when Accept asks."""
    wants_json = _wants_json(request)
    try:
        connected = await complete_connect(
            Callback(state=state, code=code, error=error, error_description=error_description),
            _lifecycle(context),
        )
    except (ConnectFailed, RequestRejected) as exc:
        problem = problem_of(exc)
        if wants_json:
            return problem.response()
        return _page(problem.status, "The account was not connected", f"{problem.message} ({problem.code})")
    view = _connected_view(connected)
    if wants_json:
        return JSONResponse(view.model_dump(mode="json"))
    missing = f" Not granted: {', '.join(view.missing_scopes)}." if view.missing_scopes else ""
    return _page(
        200,
        "Account connected",
        f"TikTok account {connected.account_id} is connected with {', '.join(view.scopes)}.{missing} "
        "You can close this page.",
    )


def _connected_view(connected: Connected) -> AccountView:
    info = connected.creator_info
    return AccountView.of(
        connected.record, creator_info=CreatorInfoView.of(info) if info is not None else None
    )


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _page(status: int, title: str, text: str) -> HTMLResponse:
    body = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Reelay: {html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status)
