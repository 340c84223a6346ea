"""TikTok request and response bodies, parsed into typed models (API reference §2-§6)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reelay_common.domain.messages import PrivacyLevel

PublishStatusCode = Literal[
    "PROCESSING_UPLOAD", "PROCESSING_DOWNLOAD", "SEND_TO_USER_INBOX", "PUBLISH_COMPLETE", "FAILED"
]


class _TikTokModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class CreatorInfo(_TikTokModel):
    """creator_info/query `data` (§5.2)."""

    creator_avatar_url: str | None = None
    creator_username: str | None = None
    creator_nickname: str | None = None
    privacy_level_options: list[PrivacyLevel] = Field(default_factory=list)
    comment_disabled: bool = False
    duet_disabled: bool = False
    stitch_disabled: bool = False
    max_video_post_duration_sec: int | None = None


class FileUploadSourceInfo(_TikTokModel):
    """`source_info` for FILE_UPLOAD (§3)."""

    source: Literal["FILE_UPLOAD"] = "FILE_UPLOAD"
    video_size: int
    chunk_size: int
    total_chunk_count: int


class PullFromUrlSourceInfo(_TikTokModel):
    """`source_info` for PULL_FROM_URL (§4)."""

    source: Literal["PULL_FROM_URL"] = "PULL_FROM_URL"
    video_url: str


SourceInfo = FileUploadSourceInfo | PullFromUrlSourceInfo


class InitResult(_TikTokModel):
    """video/init and inbox/video/init `data`: `upload_url` only for FILE_UPLOAD."""

    publish_id: str
    upload_url: str | None = None


class PublishStatus(_TikTokModel):
    """status/fetch `data` (§6). Post ids exceed 2^53, so they are kept as strings."""

    status: PublishStatusCode
    fail_reason: str | None = None
    # Misspelled in the API itself; kept verbatim on the wire.
    publicaly_available_post_id: list[str] = Field(default_factory=list)
    uploaded_bytes: int | None = None
    downloaded_bytes: int | None = None

    @field_validator("publicaly_available_post_id", mode="before")
    @classmethod
    def _ids_as_strings(cls, v: object) -> object:
        if isinstance(v, list):
            return [str(x) for x in v]
        return v


class TokenGrant(_TikTokModel):
    """oauth/token success body (flat, no envelope)."""

    access_token: str
    expires_in: int
    open_id: str
    refresh_token: str
    refresh_expires_in: int
    scope: str = ""
    token_type: str = "Bearer"  # noqa: S105  # a token type name, not a secret

    @property
    def scopes(self) -> list[str]:
        """`scope` is comma-separated and may be a subset of what was asked."""
        return [s for s in self.scope.split(",") if s]


class PutResult(_TikTokModel):
    """What one chunk PUT (§3.1) answered: 201 (all received) or 206 (send the next), and the
    server's progress in bytes read from the response's `Content-Range`, if it sent one."""

    status_code: int
    server_progress: int | None = None
