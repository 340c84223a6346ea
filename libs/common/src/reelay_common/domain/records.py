"""What Reelay keeps in MongoDB: the `uploads` and `accounts` documents, as typed records."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reelay_common.domain.messages import PostInfo, StateSource, UploadMode, VideoSource
from reelay_common.domain.states import UploadState


class HistoryEntry(BaseModel):
    """One transition of an upload: when, by whom, and TikTok's detail (fail_reason, log_id...)."""

    model_config = ConfigDict(extra="ignore")

    state: UploadState
    at: datetime
    source: StateSource
    detail: dict[str, Any] = Field(default_factory=dict)


class UploadRecord(BaseModel):
    """The `uploads` document: one per request_id (`_id` = request_id)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    request_id: str = Field(alias="_id")
    account_id: str
    mode: UploadMode
    source: VideoSource
    post_info: PostInfo | None = None
    state: UploadState
    history: list[HistoryEntry] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    # Checkpointed before the first PUT so a redelivery resumes instead of initialising again.
    publish_id: str | None = None
    upload_url: str | None = None
    upload_url_expires_at: datetime | None = None
    video_size: int | None = None
    chunk_size: int | None = None
    total_chunk_count: int | None = None
    uploaded_bytes: int = 0
    init_attempts: int = 0
    post_ids: list[str] = Field(default_factory=list)
    # Status tracking, owned by the status-poller.
    poll_next_at: datetime | None = None
    poll_attempts: int = 0
    poll_lease_until: datetime | None = None
    tracking_started_at: datetime | None = None
    # Facts learnt after the outcome (status-poller), not states: the user posted an inbox draft
    # (PUBLISH_COMPLETE of an inbox upload); TikTok withdrew the public post.
    user_posted_draft_at: datetime | None = None
    no_longer_public_at: datetime | None = None
    # The last state announced on reelay.publish.status (StateRecorder): lets a retry re-announce a
    # transition whose announcement failed after the guarded update had already applied it.
    announced_state: UploadState | None = None


class AccountStatus(StrEnum):
    """Whether Reelay may act for a TikTok account (stored as the value)."""

    CONNECTED = "connected"
    REAUTH_REQUIRED = "reauth_required"  # a refresh ended in invalid_grant: the creator must reconnect
    REVOKED = "revoked"  # TikTok revoked the grant; the tokens are deleted


class AccountRecord(BaseModel):
    """The `accounts` document. Tokens are stored encrypted (`*_enc`), never in clear."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    account_id: str = Field(alias="_id")
    open_id: str | None = None
    scopes: list[str] = Field(default_factory=list)
    access_token_enc: str | None = None
    access_expires_at: datetime | None = None
    refresh_token_enc: str | None = None
    refresh_expires_at: datetime | None = None
    token_version: int = 0
    refresh_lock_until: datetime | None = None
    refresh_lock_owner: str | None = None
    status: AccountStatus = AccountStatus.CONNECTED
    created_at: datetime
    updated_at: datetime
