"""The ingest API's request and response bodies (their docstrings are the OpenAPI text)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Json,
    SecretStr,
    field_validator,
    model_validator,
)
from reelay_common.domain.messages import (
    AccountId,
    BlobSource,
    CallbackUrl,
    PostInfo,
    RequestId,
    StateSource,
    UploadMode,
)
from reelay_common.domain.records import AccountRecord, CallbackDelivery, CallbackOutcome, UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.domain.tiktok import CreatorInfo, TokenGrant

# The patterns of UrlSource and PullFromUrlSource (a host right after the scheme): a URL the edge
# accepts must make a valid message, else the request would be a 500 instead of a 422.
HttpUrl = Annotated[
    str,
    Field(
        min_length=8,
        max_length=2048,
        pattern=r"^https?://[^/?#\s]+",
        examples=["https://cdn.example.com/v.mp4"],
    ),
]
HttpsUrl = Annotated[str, Field(min_length=9, max_length=2048, pattern=r"^https://[^/?#\s]+")]


CALLBACK_URL_TEXT = (
    "https URL to POST every state change of the upload to, signed with Reelay-Signature "
    "(docs/architecture.md, Callbacks); its host must be public."
)


def _check_mode(mode: UploadMode, post_info: PostInfo | None) -> None:
    if mode == "direct" and post_info is None:
        raise ValueError("post_info (with privacy_level) is required when mode is 'direct'")
    if mode == "inbox" and post_info is not None:
        raise ValueError("post_info is only for mode 'direct'; inbox uploads take none")


class UploadByUrl(BaseModel):
    """Publish a video found at a URL (JSON body of `POST /v1/uploads`).

    Give exactly one of `video_url` (Reelay downloads it and sends it to TikTok in chunks) or
    `pull_from_url` (TikTok downloads it itself; https on a domain verified for the app).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "account_id": "acme-main",
                    "mode": "direct",
                    "video_url": "https://cdn.example.com/launch.mp4",
                    "post_info": {"privacy_level": "SELF_ONLY", "title": "Launch day #acme"},
                    "request_id": "launch-2026-11-24",
                }
            ]
        },
    )

    account_id: AccountId
    mode: UploadMode
    video_url: HttpUrl | None = None
    pull_from_url: HttpsUrl | None = None
    post_info: PostInfo | None = Field(
        default=None, description="Required for mode 'direct', absent for mode 'inbox'."
    )
    request_id: RequestId | None = Field(
        default=None,
        description="Identifies the upload end to end; else the Idempotency-Key header; else generated.",
    )
    publish_at: AwareDatetime | None = Field(
        default=None,
        description="Publish later: a timezone-aware time in the future, within the configured "
        "horizon. The upload is held (state `scheduled`) and sent to TikTok then.",
    )
    callback_url: CallbackUrl | None = Field(default=None, description=CALLBACK_URL_TEXT)

    @model_validator(mode="after")
    def _consistent(self) -> UploadByUrl:
        if (self.video_url is None) == (self.pull_from_url is None):
            raise ValueError("give exactly one of video_url or pull_from_url")
        _check_mode(self.mode, self.post_info)
        return self


class UploadTargetFields(BaseModel):
    """The form fields that say where a streamed file goes (checked before its bytes are stored)."""

    model_config = ConfigDict(extra="ignore")

    account_id: AccountId
    mode: UploadMode
    post_info: Json[PostInfo] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> UploadTargetFields:
        _check_mode(self.mode, self.post_info)
        return self


class UploadForm(UploadTargetFields):
    """The text fields of a multipart `POST /v1/uploads` (the file itself is the part `file`)."""

    model_config = ConfigDict(extra="forbid")

    request_id: RequestId | None = None
    publish_at: AwareDatetime | None = None
    callback_url: CallbackUrl | None = None


# The multipart body as OpenAPI shows it; the route parses it as a stream, not through a model.
UPLOAD_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["account_id", "mode", "file"],
    "properties": {
        "account_id": {"type": "string", "description": "A registered, connected account."},
        "mode": {"type": "string", "enum": ["direct", "inbox"]},
        "post_info": {
            "type": "string",
            "description": "PostInfo as a JSON string; required for mode 'direct'.",
            "examples": ['{"privacy_level": "SELF_ONLY", "title": "Launch day"}'],
        },
        "request_id": {"type": "string", "description": "Else the Idempotency-Key header; else generated."},
        "publish_at": {
            "type": "string",
            "format": "date-time",
            "description": "Publish later (ISO 8601 with a UTC offset); the file is kept until then.",
        },
        "callback_url": {"type": "string", "description": CALLBACK_URL_TEXT},
        "file": {
            "type": "string",
            "format": "binary",
            "description": "The video: video/mp4, video/quicktime or video/webm. Send the text "
            "fields before the file so a refusal comes before the upload.",
        },
    },
}


class UploadAccepted(BaseModel):
    """The upload is stored and queued; follow it at `status_url`."""

    request_id: str
    state: UploadState
    status_url: str
    replayed: bool = Field(description="True when this request_id had been accepted before.")


class HistoryView(BaseModel):
    """One state change: when, by whom (ingest, uploader, poller, webhook) and TikTok's detail."""

    state: UploadState
    at: datetime
    source: StateSource
    detail: dict[str, Any] = Field(default_factory=dict)


class SourceView(BaseModel):
    """Where the video comes from (URLs are not echoed: they may carry signed credentials)."""

    kind: Literal["url", "pull_from_url", "blob"]
    size: int | None = None
    content_type: str | None = None
    filename: str | None = None


class CallbackView(BaseModel):
    """The callback of one state change: attempts so far and how they ended (`last_status` is the
    receiver's HTTP status, `last_error` what went wrong without one, such as a timeout)."""

    state: UploadState
    outcome: CallbackOutcome
    attempts: int
    last_status: int | None = None
    last_error: str | None = None
    first_attempt_at: datetime
    last_attempt_at: datetime
    delivered_at: datetime | None = None
    gave_up_at: datetime | None = None

    @classmethod
    def of(cls, delivery: CallbackDelivery) -> CallbackView:
        """The view of a recorded callback."""
        return cls.model_validate(delivery.model_dump())


class UploadView(BaseModel):
    """The state of one upload."""

    request_id: str
    account_id: str
    mode: UploadMode
    state: UploadState
    source: SourceView
    post_info: PostInfo | None = None
    publish_at: datetime | None = None
    publish_id: str | None = None
    post_ids: list[str] = Field(default_factory=list)
    video_size: int | None = None
    uploaded_bytes: int = 0
    history: list[HistoryView]
    callbacks: list[CallbackView] = Field(
        default_factory=list, description="Deliveries to the callback URL, one per state, in order."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: UploadRecord) -> UploadView:
        """The view of a stored upload."""
        src = record.source
        source = (
            SourceView(kind="blob", size=src.size, content_type=src.content_type, filename=src.filename)
            if isinstance(src, BlobSource)
            else SourceView(kind=src.kind)
        )
        return cls(
            # The client's own ids: its tenant is the caller's (docs/architecture.md, "Tenants").
            request_id=record.client_request_id,
            account_id=record.client_account_id,
            mode=record.mode,
            state=record.state,
            source=source,
            post_info=record.post_info,
            publish_at=record.publish_at,
            publish_id=record.publish_id,
            post_ids=list(record.post_ids),
            video_size=record.video_size,
            uploaded_bytes=record.uploaded_bytes,
            history=[
                HistoryView(state=h.state, at=h.at, source=h.source, detail=h.detail) for h in record.history
            ],
            callbacks=[
                CallbackView.of(c)
                for c in sorted(record.callbacks.values(), key=lambda c: c.first_attempt_at)
            ],
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class UploadList(BaseModel):
    """Uploads, newest first."""

    items: list[UploadView]
    count: int


# Ten years: far beyond any lifetime TikTok has issued (2 h / 24 h access, 180 / 365 days refresh).
MAX_TOKEN_LIFETIME_SECONDS = 10 * 365 * 24 * 3600


class AccountRegistration(BaseModel):
    """Register an account with tokens obtained from TikTok's OAuth (the oauth/token response).

    The tokens are stored encrypted and never returned.
    """

    model_config = ConfigDict(extra="forbid")

    account_id: AccountId
    open_id: Annotated[str, Field(min_length=1, max_length=256)]
    access_token: SecretStr = Field(min_length=1)
    refresh_token: SecretStr = Field(min_length=1)
    # Bounded so that "now + lifetime" stays a date a store can keep (TikTok's are hours and days).
    expires_in: int = Field(
        gt=0,
        le=MAX_TOKEN_LIFETIME_SECONDS,
        description="Seconds the access token lives, from TikTok's response.",
    )
    refresh_expires_in: int = Field(
        gt=0, le=MAX_TOKEN_LIFETIME_SECONDS, description="Seconds the refresh token lives."
    )
    scope: str | list[str] = Field(
        description="Granted scopes, comma-separated as TikTok sends them, or a list.",
        examples=["user.info.basic,video.publish,video.upload"],
    )

    @field_validator("scope")
    @classmethod
    def _scopes_named(cls, v: str | list[str]) -> str | list[str]:
        if not _split_scopes(v):
            raise ValueError("at least one scope is needed (video.publish and/or video.upload)")
        return v

    @property
    def scopes(self) -> list[str]:
        """The granted scopes as a list."""
        return _split_scopes(self.scope)

    def grant(self) -> TokenGrant:
        """The tokens as the grant TikTok's oauth/token answered (scopes comma-separated)."""
        return TokenGrant(
            open_id=self.open_id,
            access_token=self.access_token.get_secret_value(),
            refresh_token=self.refresh_token.get_secret_value(),
            expires_in=self.expires_in,
            refresh_expires_in=self.refresh_expires_in,
            scope=",".join(self.scopes),
        )


def _split_scopes(scope: str | list[str]) -> list[str]:
    items = scope.split(",") if isinstance(scope, str) else scope
    return [s.strip() for s in items if s.strip()]


class CreatorInfoView(BaseModel):
    """What TikTok's creator_info says now: what the creator may post, and how."""

    creator_username: str | None
    creator_nickname: str | None
    privacy_level_options: list[str]
    max_video_post_duration_sec: int | None
    comment_disabled: bool
    duet_disabled: bool
    stitch_disabled: bool
    can_post: bool = Field(description="TikTok answered creator_info: the creator can post now.")

    @classmethod
    def of(cls, info: CreatorInfo) -> CreatorInfoView:
        """The view of TikTok's creator_info."""
        return cls(
            creator_username=info.creator_username,
            creator_nickname=info.creator_nickname,
            privacy_level_options=[str(p) for p in info.privacy_level_options],
            max_video_post_duration_sec=info.max_video_post_duration_sec,
            comment_disabled=info.comment_disabled,
            duet_disabled=info.duet_disabled,
            stitch_disabled=info.stitch_disabled,
            can_post=True,
        )


class CreatorInfoUnavailable(BaseModel):
    """Why creator_info could not be read (TikTok's code, or the account's status)."""

    code: str
    message: str


class AccountView(BaseModel):
    """An account: its status, scopes and token lifetimes (never the tokens)."""

    account_id: str
    open_id: str | None
    status: Literal["connected", "reauth_required", "disconnected"] = Field(
        description="connected; reauth_required (a refresh was refused: connect it again); "
        "disconnected (DELETE, or TikTok's authorization.removed; tokens deleted)."
    )
    scopes: list[str] = Field(description="The scopes the user granted.")
    missing_scopes: list[str] = Field(
        default_factory=list, description="Scopes the last connect asked for that were not granted."
    )
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None
    disconnect_reason: str | None = Field(
        None, description="Why it was disconnected: `disconnected` (DELETE) or `tiktok_<reason>`."
    )
    disconnected_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    creator_info: CreatorInfoView | None = Field(
        None, description="Live creator_info (single account views); null with the reason when unavailable."
    )
    creator_info_unavailable: CreatorInfoUnavailable | None = None

    @classmethod
    def of(cls, record: AccountRecord, **live: Any) -> AccountView:
        """The view of a stored account (keyed by the client's own id), with `live` creator_info."""
        return cls(
            account_id=record.client_account_id,
            open_id=record.open_id,
            status=record.status.value,
            scopes=list(record.scopes),
            missing_scopes=record.missing_scopes,
            access_expires_at=record.access_expires_at,
            refresh_expires_at=record.refresh_expires_at,
            disconnect_reason=record.disconnect_reason,
            disconnected_at=record.disconnected_at,
            created_at=record.created_at,
            updated_at=record.updated_at,
            **live,
        )


class AccountList(BaseModel):
    """The tenant's accounts, by account_id."""

    items: list[AccountView]
    count: int


Scope = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.]+$")]


class ConnectRequest(BaseModel):
    """Start connecting an account; `scopes` default to the configured INGEST_OAUTH_SCOPES."""

    model_config = ConfigDict(extra="forbid")

    scopes: list[Scope] | None = Field(None, min_length=1, max_length=16)


class ConnectStarted(BaseModel):
    """Send the user to `authorize_url`; TikTok brings them back to the redirect_uri with the state."""

    account_id: str
    authorize_url: str
    state_expires_at: datetime


class ConnectCompletion(BaseModel):
    """The `code` and `state` TikTok's redirect carried, for clients that capture it themselves."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=2048)
    state: str = Field(min_length=1, max_length=512)


class DisconnectedView(AccountView):
    """The account as disconnected, and the uploads the disconnect failed."""

    failed_uploads: list[str]
    revoked: bool = Field(description="TikTok confirmed the revoke (a failed revoke is logged only).")


class ErrorInfo(BaseModel):
    """What went wrong: a stable `code`, a sentence for people, and structured detail."""

    code: str
    message: str
    detail: Any | None = None


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer has this body."""

    error: ErrorInfo


class WebhookAck(BaseModel):
    """TikTok's webhook was verified and handled."""

    received: bool = True
    event: str
    published: bool = Field(description="False for events Reelay does not act on (acknowledged only).")


class Health(BaseModel):
    """The process is alive."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether every dependency answers (Mongo, Kafka)."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, bool]
