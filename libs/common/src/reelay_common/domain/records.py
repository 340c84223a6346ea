"""What Reelay keeps in MongoDB: the `uploads` and `accounts` documents, as typed records."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from reelay_common.domain.messages import PostInfo, StateSource, UploadMode, UploadRequested, VideoSource
from reelay_common.domain.states import UploadState
from reelay_common.domain.tenancy import DEFAULT_TENANT, scoped, split_scoped


@dataclass(frozen=True)
class _FieldRole:
    """A role of an `UploadRecord` field, carried in its `Annotated` metadata."""

    name: str


# Written by the store alone (at creation, by a transition): no caller may set it.
STORE_MANAGED = _FieldRole("store_managed")
# A fact learnt after the outcome: absent from a new document until it is learnt.
LEARNT_LATER = _FieldRole("learnt_later")


@dataclass(frozen=True)
class Change:
    """One state change asked of an upload: the state to move to, who says so, its history detail
    (TikTok's fail_reason, log_id...) and the fields set in the same guarded update.

    `announce_after`: how long the relay loop leaves the announcement to its writer (the outbox
    is due then, not at once); the writer's own drain may send it any time before.
    """

    target: UploadState
    source: StateSource
    detail: Mapping[str, Any] | None = None
    set_fields: Mapping[str, Any] | None = None
    announce_after: timedelta | None = None

    def fields(self) -> dict[str, Any]:
        """A copy of the fields to set with the move (empty when none)."""
        return dict(self.set_fields or {})

    def outbox_due_at(self, now: datetime) -> datetime:
        """When the relay loop may send the change's announcement, written `now`."""
        return now + self.announce_after if self.announce_after is not None else now

    def history_entry(self, at: datetime) -> dict[str, Any]:
        """The history entry the change appends, made `at` (a store converts it as it stores it)."""
        return {
            "state": self.target.value,
            "at": at,
            "source": self.source,
            "detail": dict(self.detail or {}),
        }


class HistoryEntry(BaseModel):
    """One transition of an upload: when, by whom, and TikTok's detail (fail_reason, log_id...)."""

    model_config = ConfigDict(extra="ignore")

    state: UploadState
    at: datetime
    source: StateSource
    detail: dict[str, Any] = Field(default_factory=dict)


OutboxKind = Literal["status", "upload_requested"]


class OutboxEntry(BaseModel):
    """A message an upload still owes Kafka, written in the same update as the change it announces.

    `status`: announce the upload's `state` on `reelay.publish.status` (built from the document
    when it is sent, so it carries the history entry's detail and the post ids known then).
    `upload_requested`: queue the upload on `reelay.upload.requested` (ingest's accept).
    The relay sends a document's entries in order and removes exactly those it sent
    (docs/architecture.md, promise 1).
    """

    model_config = ConfigDict(extra="ignore")

    id: str
    kind: OutboxKind
    state: UploadState | None = None
    source: StateSource | None = None
    at: datetime
    # Not to be sent before this (a scheduled upload's command waits for its publish_at).
    due_at: datetime | None = None

    @classmethod
    def status(cls, state: UploadState, *, source: StateSource, at: datetime) -> OutboxEntry:
        """Announce `state` (reached by `source` at `at`)."""
        return cls(id=uuid.uuid4().hex, kind="status", state=state, source=source, at=at)

    @classmethod
    def upload_requested(cls, *, at: datetime, due_at: datetime | None = None) -> OutboxEntry:
        """Queue the upload's command for the uploader (not before `due_at`, when given)."""
        return cls(id=uuid.uuid4().hex, kind="upload_requested", at=at, due_at=due_at)


CallbackOutcome = Literal["pending", "delivered", "failed"]


class CallbackDelivery(BaseModel):
    """The callback of one state of an upload: its attempts so far and how they ended.

    `pending` while it is being tried (a retry is due); `delivered` once the receiver answered 2xx;
    `failed` when it refused (a 4xx other than 408/429, a redirect, a URL that is not public) or the
    retries ran out (`gave_up_at`)."""

    model_config = ConfigDict(extra="ignore")

    state: UploadState
    outcome: CallbackOutcome = "pending"
    attempts: int = 0
    first_attempt_at: datetime
    last_attempt_at: datetime
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    gave_up_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """Whether nothing more will be tried (delivered or failed)."""
        return self.outcome != "pending"


# The fields of UploadRequested an upload keeps under the same names (and `requested_at`); its ids
# are kept scoped to its tenant.
_KEPT_OF_REQUEST = ("mode", "source", "post_info", "publish_at", "callback_url")


class UploadRecord(BaseModel):
    """The `uploads` document: one per request_id of a tenant.

    `request_id` (`_id`) and `account_id` are the stored keys, `tenancy.scoped(tenant_id, id)` of
    the client's own ids (the ids themselves for the default tenant, so documents written before
    tenants keep their keys); every service works with these. What goes back to the client (the
    API's views, `reelay.publish.status`, callbacks) carries `client_request_id` /
    `client_account_id` and `tenant_id` (docs/architecture.md, "Tenants").
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    request_id: Annotated[str, STORE_MANAGED] = Field(alias="_id")
    account_id: str
    # Absent from documents written before tenants: those are the default tenant's.
    tenant_id: Annotated[str, STORE_MANAGED] = DEFAULT_TENANT
    mode: UploadMode
    source: VideoSource
    post_info: PostInfo | None = None
    # When to start it (UploadRequested.publish_at): held in `scheduled` until then.
    publish_at: datetime | None = None
    callback_url: str | None = None
    # When the client asked (UploadRequested.requested_at); absent only from hand-made documents.
    requested_at: Annotated[datetime | None, STORE_MANAGED] = None
    state: Annotated[UploadState, STORE_MANAGED]
    history: Annotated[list[HistoryEntry], STORE_MANAGED] = Field(default_factory=list)
    created_at: Annotated[datetime, STORE_MANAGED]
    updated_at: Annotated[datetime, STORE_MANAGED]
    # Checkpointed before the first PUT so a redelivery resumes instead of initialising again.
    publish_id: str | None = None
    upload_url: str | None = None
    upload_url_expires_at: datetime | None = None
    video_size: int | None = None
    chunk_size: int | None = None
    total_chunk_count: int | None = None
    uploaded_bytes: int = 0
    init_attempts: int = 0
    # When the first attempt that failed retryably began (the uploader's retry deadline counts from
    # it; stored, so a restart or redelivery does not reset it).
    retrying_since: datetime | None = None
    post_ids: list[str] = Field(default_factory=list)
    # Status tracking, owned by the status-poller.
    poll_next_at: datetime | None = None
    poll_attempts: int = 0
    poll_lease_until: datetime | None = None
    tracking_started_at: datetime | None = None
    # When TikTok last answered a poll without a terminal status: a terminal status seen next is
    # known to have come between that poll and the next (what the learnt schedule observes).
    poll_last_at: datetime | None = None
    # The W3C trace context tracking started in (traceparent, tracestate): each poll continues it.
    trace_context: dict[str, str] | None = None
    # The callbacks of its states, by state (UploadStore.record_callback, the callbacks consumer).
    callbacks: Annotated[dict[UploadState, CallbackDelivery], STORE_MANAGED] = Field(default_factory=dict)
    # Facts learnt after the outcome (status-poller), not states: the user posted an inbox draft
    # (PUBLISH_COMPLETE of an inbox upload); TikTok withdrew the public post.
    user_posted_draft_at: Annotated[datetime | None, LEARNT_LATER] = None
    no_longer_public_at: Annotated[datetime | None, LEARNT_LATER] = None
    # What the upload still owes Kafka (the outbox): appended by the same update as the change,
    # removed by the relay once Kafka took it. `outbox_due_at` is set while entries wait (when the
    # relay should try next); `outbox_lease_until` while one process is sending them.
    outbox: Annotated[list[OutboxEntry], STORE_MANAGED] = Field(default_factory=list)
    outbox_due_at: Annotated[datetime | None, STORE_MANAGED] = None
    outbox_lease_until: Annotated[datetime | None, STORE_MANAGED] = None

    @classmethod
    def new(
        cls, cmd: UploadRequested, *, source: StateSource, now: datetime, enqueue: bool = False
    ) -> UploadRecord:
        """A new upload, its first history entry by `source` at `now`: `accepted`, or `scheduled`
        when its publish_at is still to come.

        Its outbox announces that state, and queues the command: with `enqueue` (ingest's accept;
        an uploader that creates the record has the command from Kafka already), and for a scheduled
        upload always, due at its publish_at.
        """
        scheduled = cmd.publish_at is not None and cmd.publish_at > now
        state = UploadState.SCHEDULED if scheduled else UploadState.ACCEPTED
        outbox = [OutboxEntry.status(state, source=source, at=now)]
        if scheduled or enqueue:
            outbox.append(OutboxEntry.upload_requested(at=now, due_at=cmd.publish_at if scheduled else None))
        return cls(
            **{name: getattr(cmd, name) for name in _KEPT_OF_REQUEST},
            request_id=scoped(cmd.tenant_id, cmd.request_id),
            account_id=scoped(cmd.tenant_id, cmd.account_id),
            tenant_id=cmd.tenant_id,
            requested_at=cmd.requested_at,
            state=state,
            history=[HistoryEntry(state=state, at=now, source=source)],
            created_at=now,
            updated_at=now,
            outbox=outbox,
            outbox_due_at=now,
        )

    def request(self) -> UploadRequested:
        """The request this upload was accepted from, as of its creation (ingest sends it again)."""
        return UploadRequested(
            **{name: getattr(self, name) for name in _KEPT_OF_REQUEST},
            request_id=self.client_request_id,
            account_id=self.client_account_id,
            tenant_id=self.tenant_id,
            requested_at=self.created_at,
        )

    @property
    def client_request_id(self) -> str:
        """The request_id the client chose (the stored key without its tenant)."""
        return split_scoped(self.request_id)[1]

    @property
    def client_account_id(self) -> str:
        """The account_id the client chose (the stored key without its tenant)."""
        return split_scoped(self.account_id)[1]

    def new_document(self) -> dict[str, Any]:
        """The fields of a new document, by alias (`_id`); facts learnt later are left out."""
        return self.model_dump(by_alias=True, exclude=_fields_with(LEARNT_LATER))

    @classmethod
    def store_managed_fields(cls) -> frozenset[str]:
        """Names (and aliases) of the fields only the store writes."""
        managed = _fields_with(STORE_MANAGED)
        aliases = {info.alias for name, info in cls.model_fields.items() if name in managed and info.alias}
        return frozenset(managed | aliases)

    @classmethod
    def settable_fields(cls) -> frozenset[str]:
        """Names of the fields a caller may set through a transition or a checkpoint."""
        return frozenset(cls.model_fields) - cls.store_managed_fields()


def check_settable(fields: Mapping[str, Any]) -> None:
    """Refuse fields the store owns or does not know, with a clear error (every store, before it
    writes anything): which fields are whose is the record's word, through its field roles."""
    protected = sorted(set(fields) & UploadRecord.store_managed_fields())
    if protected:
        raise ValueError(f"these upload fields are managed by the store and cannot be set: {protected}")
    unknown = sorted(set(fields) - UploadRecord.settable_fields())
    if unknown:
        raise ValueError(f"unknown upload fields: {unknown} (add them to UploadRecord first)")


def _fields_with(role: _FieldRole) -> set[str]:
    """The names of the UploadRecord fields that carry `role`."""
    return {name for name, info in UploadRecord.model_fields.items() if role in info.metadata}


class AccountStatus(StrEnum):
    """Whether Reelay may act for a TikTok account (stored as the value)."""

    CONNECTED = "connected"
    REAUTH_REQUIRED = "reauth_required"  # a refresh ended in invalid_grant: the creator must reconnect
    DISCONNECTED = "disconnected"  # disconnected (DELETE, or authorization.removed); tokens deleted


# What documents written before the account lifecycle stored for a disconnected account: read as
# `disconnected` (nothing is rewritten; the next status change stores the new value).
LEGACY_STATUSES: dict[str, AccountStatus] = {"revoked": AccountStatus.DISCONNECTED}


def account_status(value: object) -> AccountStatus:
    """The status a stored value stands for (legacy `revoked` is `disconnected`)."""
    if isinstance(value, str) and value in LEGACY_STATUSES:
        return LEGACY_STATUSES[value]
    return AccountStatus(str(value) if value is not None else AccountStatus.CONNECTED)


class AccountRecord(BaseModel):
    """The `accounts` document. Tokens are stored encrypted (`*_enc`), never in clear.

    `account_id` (`_id`) is the stored key, `tenancy.scoped(tenant_id, the client's account_id)`.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    account_id: str = Field(alias="_id")
    # Absent from documents written before tenants: those are the default tenant's.
    tenant_id: str = DEFAULT_TENANT
    open_id: str | None = None
    scopes: list[str] = Field(default_factory=list)
    access_token_enc: str | None = None
    access_expires_at: datetime | None = None
    refresh_token_enc: str | None = None
    refresh_expires_at: datetime | None = None
    token_version: int = 0
    refresh_lock_until: datetime | None = None
    refresh_lock_owner: str | None = None
    status: Annotated[AccountStatus, BeforeValidator(account_status)] = AccountStatus.CONNECTED
    # The scopes the last connect asked for (the user may grant a subset: `scopes`).
    requested_scopes: list[str] = Field(default_factory=list)
    # Why and when it was disconnected (DELETE, or TikTok's authorization.removed reason).
    disconnect_reason: str | None = None
    disconnected_at: datetime | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def missing_scopes(self) -> list[str]:
        """The asked-for scopes the user did not grant."""
        return [s for s in self.requested_scopes if s not in self.scopes]

    @property
    def client_account_id(self) -> str:
        """The account_id the client chose (the stored key without its tenant)."""
        return split_scoped(self.account_id)[1]
