"""Typed settings of the ingest API (env prefix `INGEST_`, shared fields unprefixed)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from reelay_common.domain.messages import MAX_VIDEO_BYTES
from reelay_common.domain.oauth import authorize_base_for
from reelay_common.settings import DEV_API_KEY, CommonSettings


class IngestSettings(CommonSettings):
    """How the ingest API listens, whom it lets in and what it accepts."""

    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Bearer keys accepted on /v1 (comma-separated in the environment, so keys can be rotated by
    # listing the new one beside the old). The dev key is refused when REELAY_ENV=prod.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=lambda: [SecretStr(DEV_API_KEY)])
    # How long a tenant's key, once looked up, is trusted without reading it again: a revoked key
    # keeps working on a replica for up to this long (docs/architecture.md, "Tenants"); 0 reads
    # it on every request.
    api_key_cache_seconds: float = Field(10.0, ge=0)
    max_upload_bytes: int = Field(MAX_VIDEO_BYTES, gt=0, le=MAX_VIDEO_BYTES)
    # Lets video URLs point at loopback/private addresses: for local development and tests only.
    allow_private_urls: bool = False
    webhook_tolerance_seconds: float = Field(300.0, gt=0)
    # Where clients reach this API, for the status URLs in responses; the request's own base URL
    # is used when unset.
    public_base_url: AnyHttpUrl | None = None
    # For direct posts, ask TikTok's creator_info which privacy levels the creator offers and
    # refuse the others up front (TikTok would refuse them at init with privacy_level_option_mismatch).
    check_creator_info: bool = True
    # How long one creator_info answer serves an account's direct posts, shared by every replica
    # (TikTok allows 20 creator_info calls a minute per account); 0 asks TikTok every time.
    creator_info_cache_seconds: float = Field(60.0, ge=0)
    # How long an accept waits for Kafka to take its UploadRequested before answering 202 anyway
    # (the command waits in the upload's outbox and the relay sends it once Kafka is back).
    accept_wait_seconds: float = Field(0.5, gt=0)
    # How far ahead publish_at may be (a scheduled upload is held in Mongo, its file in the blob store).
    schedule_horizon_seconds: float = Field(30 * 24 * 3600.0, gt=0)
    # How long a webhook waits for Kafka before answering 503 (TikTok then retries it).
    enqueue_timeout_seconds: float = Field(15.0, gt=0)
    shutdown_grace_seconds: float = Field(20.0, ge=0)
    # Connecting accounts through TikTok's OAuth (docs/architecture.md, "The account lifecycle").
    # Where TikTok sends the user back: registered with the app, sent byte-identical at oauth/token.
    # Unset: this API's own /v1/oauth/callback under public_base_url (connect refuses without either).
    oauth_redirect_uri: str | None = None
    # The scopes a connect asks for when its body names none (comma-separated in the environment).
    oauth_scopes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["user.info.basic", "video.publish", "video.upload"]
    )
    # How long a connect's `state` stays good (single use either way).
    oauth_state_ttl_seconds: float = Field(600.0, gt=0, le=3600)
    # `desktop` and `mobile` clients add PKCE (S256) as TikTok requires; `web` uses the state alone.
    oauth_client_type: Literal["web", "desktop", "mobile"] = "web"
    # TikTok's consent page; unset: www.tiktok.com for the real API, else TIKTOK_API_BASE_URL
    # (the sandbox serves both).
    oauth_authorize_base_url: str | None = None

    @field_validator("api_keys", "oauth_scopes", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    def oauth_redirect(self) -> str | None:
        """The redirect_uri of a connect: OAUTH_REDIRECT_URI, else the callback under public_base_url."""
        if self.oauth_redirect_uri is not None:
            return self.oauth_redirect_uri
        base = self.status_base()
        return f"{base}/v1/oauth/callback" if base is not None else None

    def oauth_authorize_base(self) -> str:
        """Where TikTok's consent page is (see oauth_authorize_base_url)."""
        if self.oauth_authorize_base_url is not None:
            return self.oauth_authorize_base_url.rstrip("/")
        return authorize_base_for(self.tiktok_api_base_url)

    @model_validator(mode="after")
    def _keys_usable(self) -> IngestSettings:
        if not self.api_keys:
            raise ValueError("INGEST_API_KEYS must name at least one key")
        if self.environment == "prod" and any(k.get_secret_value() == DEV_API_KEY for k in self.api_keys):
            raise ValueError("INGEST_API_KEYS must not contain the dev key in prod")
        return self

    def status_base(self) -> str | None:
        """`public_base_url` without its trailing slash, or None when unset."""
        return str(self.public_base_url).rstrip("/") if self.public_base_url is not None else None
