"""The HTTP routes: decode the request, call a handler, encode its outcome. No decisions here."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from reelay_common.domain.messages import (
    BlobSource,
    PullFromUrlSource,
    UploadRequested,
    UrlSource,
    VideoSource,
)
from reelay_common.domain.states import UploadState
from reelay_common.logging import bind_learned, get_logger
from reelay_common.readiness import check_readiness

from reelay_ingest.context import AppContext
from reelay_ingest.deps import IngestDeps
from reelay_ingest.errors import (
    NotFoundError,
    RequestRejected,
    TooLargeError,
    UnsupportedMediaError,
)
from reelay_ingest.formstream import FormField, FormFile, MultipartStream
from reelay_ingest.handlers import (
    Accepted,
    RegisterAccount,
    UploadTarget,
    accept_upload,
    cancel_upload,
    check_upload_target,
    pass_on_webhook,
    register_account,
)
from reelay_ingest.media import checked_stream, video_content_type
from reelay_ingest.schemas import (
    UPLOAD_FORM_SCHEMA,
    AccountRegistration,
    AccountView,
    ErrorBody,
    Health,
    Readiness,
    UploadAccepted,
    UploadByUrl,
    UploadForm,
    UploadList,
    UploadTargetFields,
    UploadView,
    WebhookAck,
)
from reelay_ingest.tenancy import Tenant, TenantDep, context_of, current_tenant
from reelay_ingest.webhooks import parse_webhook, verify_signature

log = get_logger(__name__)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
MAX_JSON_BYTES = 1024 * 1024
MAX_WEBHOOK_BYTES = 64 * 1024
# Room for the multipart boundaries, part headers and text fields around the file itself.
FORM_OVERHEAD_BYTES = 1024 * 1024
FORM_FIELDS = frozenset(UploadForm.model_fields)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody} for s in statuses}


ContextDep = Annotated[AppContext, Depends(context_of)]


api = APIRouter(prefix="/v1", dependencies=[Depends(current_tenant)], responses=_errors(401))
hooks = APIRouter(prefix="/v1", tags=["webhooks"])
ops = APIRouter(tags=["operations"])


def _status_url(request: Request, context: AppContext, request_id: str) -> str:
    base = context.settings.status_base() or str(request.base_url).rstrip("/")
    return f"{base}/v1/uploads/{request_id}"


def _resolve_request_id(given: str | None, header: str | None) -> str:
    if given is not None and header is not None and given != header:
        raise RequestRejected(
            "request_id in the body and the Idempotency-Key header differ; send one, or the same",
            code="request_id_mismatch",
        )
    return given or header or str(uuid.uuid4())


def _validation_error(exc: ValidationError, *prefix: str) -> RequestValidationError:
    errors = [{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
    return RequestValidationError(errors)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(f"the body is larger than {limit} bytes", code="too_large")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise TooLargeError(f"the body is larger than {limit} bytes", code="too_large")
    return bytes(body)


# ----------------------------------------------------------------------------------------- uploads

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/UploadByUrl"}},
            "multipart/form-data": {"schema": UPLOAD_FORM_SCHEMA},
        },
    }
}


@api.post(
    "/uploads",
    status_code=202,
    response_model=UploadAccepted,
    tags=["uploads"],
    summary="Submit a video for publishing",
    openapi_extra=_UPLOAD_BODY,
    responses=_errors(400, 404, 409, 413, 415, 422, 429, 503, 507),
)
async def submit_upload(
    request: Request,
    response: Response,
    context: ContextDep,
    tenant: TenantDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", max_length=128, pattern=ID_PATTERN)
    ] = None,
) -> UploadAccepted:
    """Accept a video for an account: by URL (JSON) or as a file (multipart/form-data, field `file`).

    The upload is validated (account registered and connected, URL public, media type and size,
    privacy level offered by the creator for direct posts), stored as `accepted`, and queued on
    Kafka; only after Kafka's acknowledgement does this answer **202** with the status URL.

    `request_id` (body/form field, else the `Idempotency-Key` header, else generated) makes the call
    idempotent: the same request again answers 202 with the current state (`replayed: true`), a
    different request under the same id answers 409. If Kafka does not acknowledge, the upload is
    marked `failed` (`enqueue_failed`) and the answer is 503; send it again with a new request_id.

    Errors: 400 body not JSON / broken multipart; 401 API key; 404 unknown account; 409 request_id
    conflict; 413 too large; 415 not JSON/multipart, or not MP4/MOV/WebM; 422 validation (field
    paths in `detail`), URL not public, privacy level not offered; 429 TikTok pacing; 503 Kafka or
    TikTok unavailable; 507 the blob store's disk budget is used up (a file; retry later).
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        accepted = await _upload_from_json(request, tenant, context.deps, idempotency_key)
    elif media_type == "multipart/form-data":
        accepted = await _upload_from_form(request, tenant, context.deps, idempotency_key)
    else:
        raise UnsupportedMediaError(
            "send application/json (a video URL) or multipart/form-data (a file)",
            code="unsupported_content_type",
            extra={"content_type": media_type or None},
        )
    record = accepted.record
    if not accepted.replayed:
        context.metrics.uploads_accepted.labels(record.mode, record.source.kind).inc()
    status_url = _status_url(request, context, record.client_request_id)
    response.headers["Location"] = status_url
    return UploadAccepted(
        request_id=record.client_request_id,
        state=record.state,
        status_url=status_url,
        replayed=accepted.replayed,
    )


async def _upload_from_json(
    request: Request, tenant: Tenant, deps: IngestDeps, idempotency_key: str | None
) -> Accepted:
    raw = await _read_body(request, MAX_JSON_BYTES)
    try:
        body = UploadByUrl.model_validate_json(raw)
    except ValidationError as exc:
        raise _validation_error(exc, "body") from exc
    request_id = _resolve_request_id(body.request_id, idempotency_key)
    bind_learned(request_id=request_id, account_id=body.account_id)
    source: VideoSource = (
        UrlSource(url=body.video_url)
        if body.video_url is not None
        else PullFromUrlSource(url=str(body.pull_from_url))
    )
    return await accept_upload(_command(request_id, tenant, body, source), deps)


# What a JSON body and a form both say of an upload, under the command's own names.
_REQUEST_FIELDS = frozenset({"account_id", "mode", "post_info", "publish_at", "callback_url"})


def _command(
    request_id: str, tenant: Tenant, request: UploadByUrl | UploadForm, source: VideoSource
) -> UploadRequested:
    """The command a JSON body or a form asks for, of `tenant`, with its video's `source`."""
    said = {name: getattr(request, name) for name in _REQUEST_FIELDS}
    return UploadRequested(request_id=request_id, tenant_id=tenant.id, source=source, **said)


def _form_model(model: type[BaseModel], fields: dict[str, str]) -> Any:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise _validation_error(exc, "body") from exc


def _early_target(fields: dict[str, str], tenant: Tenant) -> UploadTarget | None:
    # With the text fields before the file, the request is refused before a byte is stored.
    if "account_id" not in fields or "mode" not in fields:
        return None
    if fields["mode"] == "direct" and "post_info" not in fields:
        return None  # post_info may still follow the file
    target = cast(UploadTargetFields, _form_model(UploadTargetFields, fields))
    return UploadTarget(
        account_id=target.account_id, mode=target.mode, post_info=target.post_info, tenant_id=tenant.id
    )


@dataclass(frozen=True)
class _StoredFile:
    """The form's file, stored; and the target checked before it was, if the fields came first."""

    blob: BlobSource
    checked: UploadTarget | None


async def _upload_from_form(
    request: Request, tenant: Tenant, deps: IngestDeps, idempotency_key: str | None
) -> Accepted:
    policy = deps.policy
    declared = request.headers.get("content-length")
    limit = policy.max_upload_bytes + FORM_OVERHEAD_BYTES
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(
            f"the video is larger than the limit of {policy.max_upload_bytes} bytes", code="too_large"
        )
    stream = MultipartStream(request.headers["content-type"], request.stream())
    fields: dict[str, str] = {}
    stored: _StoredFile | None = None
    request_id: str | None = None
    try:
        async for part in stream.parts():
            if isinstance(part, FormField):
                _add_field(fields, part)
                continue
            stored = await _store_file(part, fields, stored, tenant, deps)
        if stored is None:
            raise RequestRejected("the form has no file part named 'file'", code="file_missing")
        form = cast(UploadForm, _form_model(UploadForm, fields))
        request_id = _resolve_request_id(form.request_id, idempotency_key)
        learned = {"request_id": request_id}
        if stored.checked is None:  # else account_id was learnt already, from the fields before the file
            learned["account_id"] = form.account_id
        bind_learned(**learned)
        accepted = await accept_upload(
            _command(request_id, tenant, form, stored.blob), deps, checked=stored.checked
        )
    except BaseException:
        if stored is not None and not await _may_be_kept(stored.blob, request_id, deps):
            await _discard(stored.blob, deps)
        raise
    if accepted.record.source != stored.blob:  # a replay: the earlier request's file is the one kept
        await _discard(stored.blob, deps)
    return accepted


def _add_field(fields: dict[str, str], part: FormField) -> None:
    if part.name not in FORM_FIELDS:
        raise RequestRejected(
            f"unknown form field {part.name!r}; expected {', '.join(sorted(FORM_FIELDS))} and file",
            code="unknown_field",
        )
    if part.name in fields:
        raise RequestRejected(f"form field {part.name!r} is given twice", code="duplicate_field")
    fields[part.name] = part.value


async def _store_file(
    part: FormFile, fields: dict[str, str], stored: _StoredFile | None, tenant: Tenant, deps: IngestDeps
) -> _StoredFile:
    """Check what can be checked, then stream the file into the blob store."""
    if part.name != "file":
        raise RequestRejected(
            f"unexpected file part {part.name!r}; the video goes in 'file'", code="unknown_field"
        )
    if stored is not None:
        raise RequestRejected("send exactly one file", code="duplicate_field")
    content_type = video_content_type(part.content_type, part.filename)
    target = _early_target(fields, tenant)
    if target is not None:
        bind_learned(account_id=target.account_id)
        await check_upload_target(target, deps)
    body = await checked_stream(part.chunks, content_type)
    saved = await deps.blobs.save(
        body, filename=part.filename, content_type=content_type, max_bytes=deps.policy.max_upload_bytes
    )
    return _StoredFile(blob=saved, checked=target)


async def _may_be_kept(blob: BlobSource, request_id: str | None, deps: IngestDeps) -> bool:
    """Whether a failed request's file may be the one its upload document names.

    accept_upload can fail after the document is stored (Mongo lost after the insert, or while
    the outbox is settled): the upload then exists, its command may already be on Kafka, and a
    replay answers 202 for it. Deleting its file would make the uploader fail it `blob_not_found`
    (found by `make chaos`). When the store cannot say, the file is kept: an orphan file costs
    disk, a deleted one loses the upload.
    """
    if request_id is None:
        return False  # refused before the upload had an id: nothing was stored under it
    try:
        record = await asyncio.shield(deps.uploads.get(request_id))
    except Exception as exc:
        log.warning("blob_kept_unknown_upload", blob_id=blob.blob_id, error=type(exc).__name__)
        return True
    return record is not None and record.source == blob


async def _discard(blob: BlobSource, deps: IngestDeps) -> None:
    try:
        # Shielded: a cancelled request must still not leave its file behind.
        await asyncio.shield(deps.blobs.delete(blob.blob_id))
    except Exception as exc:
        log.warning("blob_discard_failed", blob_id=blob.blob_id, error=type(exc).__name__)


@api.get(
    "/uploads/{request_id}",
    response_model=UploadView,
    tags=["uploads"],
    summary="The state of one upload",
    responses=_errors(404, 422),
)
async def get_upload(
    context: ContextDep,
    tenant: TenantDep,
    request_id: Annotated[str, Path(max_length=128, pattern=ID_PATTERN)],
) -> UploadView:
    """The upload's state, TikTok's publish_id and post ids, and its history of state changes
    (each with time, source and detail such as TikTok's fail_reason)."""
    bind_learned(request_id=request_id)
    # Another tenant's request_id is another key: not found, exactly like an unknown one.
    record = await context.deps.uploads.get(tenant.key(request_id))
    if record is None:
        raise NotFoundError(f"no upload with request_id {request_id!r}", code="unknown_upload")
    return UploadView.of(record)


@api.delete(
    "/uploads/{request_id}",
    response_model=UploadView,
    tags=["uploads"],
    summary="Cancel an upload TikTok has nothing of yet, or a PULL_FROM_URL download in progress",
    responses={
        202: {"model": UploadView, "description": "TikTok was asked to cancel its download"},
        **_errors(404, 409, 422),
    },
)
async def delete_upload(
    context: ContextDep,
    tenant: TenantDep,
    response: Response,
    request_id: Annotated[str, Path(max_length=128, pattern=ID_PATTERN)],
) -> UploadView:
    """Cancel a scheduled upload, or one still `accepted` (queued, or waiting for its init or in it;
    a publish whose init the cancel overtook never gets a byte): 200, it ends `cancelled`
    (announced like every change, and its stored file deleted). A PULL_FROM_URL upload
    TikTok is still downloading: 202, TikTok is asked to cancel and the upload ends `failed` with
    `publish_cancelled` when it confirms. Otherwise 409 `not_cancellable` with its state.
    Cancelling a cancelled upload answers it again."""
    bind_learned(request_id=request_id)
    done = await cancel_upload(tenant.key(request_id), context.deps)
    if done.asked_tiktok:
        response.status_code = 202
    return UploadView.of(done.record)


@api.get(
    "/uploads", response_model=UploadList, tags=["uploads"], summary="List uploads", responses=_errors(422)
)
async def list_uploads(
    context: ContextDep,
    tenant: TenantDep,
    account_id: Annotated[str | None, Query(max_length=128, pattern=ID_PATTERN)] = None,
    state: UploadState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> UploadList:
    """The tenant's uploads, newest first, optionally of one account and/or in one state."""
    records = await context.deps.uploads.list(
        tenant_id=tenant.id,
        account_id=tenant.key(account_id) if account_id is not None else None,
        state=state,
        limit=limit,
    )
    items = [UploadView.of(r) for r in records]
    return UploadList(items=items, count=len(items))


# ---------------------------------------------------------------------------------------- accounts


@api.post(
    "/accounts",
    status_code=201,
    response_model=AccountView,
    tags=["accounts"],
    summary="Register an account with TikTok tokens",
    responses={
        200: {"model": AccountView, "description": "The account existed; its tokens were replaced."},
        **_errors(400, 409, 422),
    },
)
async def create_account(
    body: AccountRegistration, response: Response, context: ContextDep, tenant: TenantDep
) -> AccountView:
    """Register an account (201), or replace the tokens of an existing one (200), from a TikTok
    OAuth token response. Tokens are encrypted at rest and never returned. An account_id already
    bound to another TikTok user (open_id) answers 409."""
    bind_learned(account_id=body.account_id)
    record, created = await register_account(
        RegisterAccount(account_id=tenant.key(body.account_id), grant=body.grant()),
        context.deps,
    )
    if not created:
        response.status_code = 200
    return AccountView.of(record)


# ---------------------------------------------------------------------------------------- webhooks


@hooks.post(
    "/webhooks/tiktok",
    response_model=WebhookAck,
    summary="TikTok webhook receiver",
    responses=_errors(400, 401, 413, 503),
)
async def tiktok_webhook(
    request: Request,
    context: ContextDep,
    signature: Annotated[str | None, Header(alias="TikTok-Signature")] = None,
) -> WebhookAck:
    """Receives TikTok's webhooks (no API key: verified by `TikTok-Signature`, an HMAC-SHA256 of
    `t + "." + raw body` under the app's client secret, with a timestamp tolerance).

    A verified `post.publish.*` or `authorization.removed` event is put on `reelay.publish.events`
    (keyed by the upload's account) and acknowledged with 200; other events are acknowledged and
    logged only. 401 for a missing, wrong or stale signature (nothing is published); 503 when
    Kafka does not acknowledge, so that TikTok retries.
    """
    raw = await _read_body(request, MAX_WEBHOOK_BYTES)
    try:
        verify_signature(
            signature,
            raw,
            context.settings.tiktok_client_secret.get_secret_value(),
            now=time.time(),
            tolerance=context.deps.policy.webhook_tolerance_seconds,
        )
    except Exception:
        context.metrics.webhooks.labels("rejected").inc()
        raise
    event = parse_webhook(raw)
    message = await pass_on_webhook(event, context.deps)
    context.metrics.webhooks.labels("published" if message is not None else "ignored").inc()
    return WebhookAck(event=event.event, published=message is not None)


# -------------------------------------------------------------------------------------- operations


@ops.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """200 while the process serves requests."""
    return Health()


@ops.get("/readyz", response_model=Readiness, summary="Readiness", responses={503: {"model": Readiness}})
async def readyz(context: ContextDep, response: Response) -> Readiness:
    """200 when MongoDB answers a ping and the Kafka producer sees the cluster, else 503."""
    outcome = await check_readiness(context.ready_checks)
    response.status_code = 200 if outcome.ready else 503
    return Readiness(status="ready" if outcome.ready else "not_ready", checks=outcome.checks)


@ops.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(context: ContextDep) -> Response:
    """Prometheus text exposition: requests by route and status, uploads accepted, webhooks."""
    return Response(context.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")
