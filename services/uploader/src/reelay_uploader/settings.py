"""The uploader's typed settings: the shared ones plus `UPLOADER_`-prefixed knobs."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from reelay_common.domain.messages import MAX_VIDEO_BYTES
from reelay_common.settings import CommonSettings


class UploaderSettings(CommonSettings):
    """Settings of `python -m reelay_uploader` (env vars `UPLOADER_*` plus the shared ones)."""

    model_config = SettingsConfigDict(env_prefix="UPLOADER_", extra="ignore", populate_by_name=True)

    consumer_group: str = "reelay-uploader"
    # A preference: the chunk planner clamps it into TikTok's safe range (API reference §3).
    chunk_size: int = Field(10_000_000, ge=5_242_880, le=64_000_000)
    # Lets video URLs point at loopback/private addresses. For local development and tests only.
    allow_private_urls: bool = False
    download_timeout_seconds: float = Field(60.0, gt=0)
    max_redirects: int = Field(5, ge=0, le=20)
    # Where sources without a Content-Length are spooled (None: the system temp directory).
    spool_dir: Path | None = None
    max_video_bytes: int = Field(MAX_VIDEO_BYTES, gt=0, le=MAX_VIDEO_BYTES)
    # Publishes created for one request before giving up (each expired, incomplete upload costs one).
    max_init_attempts: int = Field(3, ge=1, le=10)
    # upload_url lives 1 h; stop trusting it this long before, so a resume never starts on a dying URL.
    upload_url_margin_seconds: float = Field(300.0, ge=0, lt=3600)
    # How long one creator_info answer serves an account's direct posts (the cache ingest fills
    # too, shared by every replica); 0 asks TikTok before every direct post.
    creator_info_cache_seconds: float = Field(60.0, ge=0)
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(9101, ge=0, le=65535)
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    # Uploads of different accounts sharing a partition handled at once (each account one at a
    # time), so one account waiting out its rate-limit window holds up no other.
    max_in_flight_per_partition: int = Field(16, ge=1, le=256)
    # An upload whose source or TikTok keeps failing (5xx, refused connections) ends `failed` with
    # `retries_exhausted` this long after its first failed attempt. TikTok's rate limits and Mongo
    # or Kafka being away never count.
    retry_deadline_seconds: float = Field(21_600.0, gt=0)
