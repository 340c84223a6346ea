"""Sandbox settings, read from SANDBOX_* environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tiktok_sandbox.faults import FaultConfig


class SandboxSettings(BaseSettings):
    """Everything an operator can tune; defaults mirror TikTok where TikTok documents a value."""

    model_config = SettingsConfigDict(env_prefix="SANDBOX_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8100
    # Base of the upload URLs handed out by init; defaults to http://{host}:{bound port}.
    public_base_url: str | None = None
    client_key: str = "dev-client-key"
    client_secret: SecretStr = SecretStr("dev-client-secret")
    # Registered redirect URIs for /v2/auth/authorize/; empty accepts any.
    redirect_uris: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # How long TikTok processes a publish once every byte is in: processing_delay_seconds plus
    # processing_seconds_per_mb for each MB (10^6 bytes) of the video, times a lognormal factor
    # exp(N(0, processing_spread)) drawn per publish (seeded by processing_seed, if set). The
    # defaults keep it a fixed 2 s.
    processing_delay_seconds: float = Field(2.0, ge=0)
    processing_seconds_per_mb: float = Field(0.0, ge=0)
    processing_spread: float = Field(0.0, ge=0, le=3)
    processing_seed: int | None = None
    moderation_delay_seconds: float = 1.0
    download_delay_seconds: float = 0.0
    upload_url_ttl_seconds: float = 3600.0
    access_token_ttl_seconds: float = 7200.0
    refresh_token_ttl_seconds: float = 15_552_000.0
    auth_code_ttl_seconds: float = 600.0

    webhook_url: str | None = None
    webhook_max_attempts: int = 5
    webhook_backoff_seconds: float = 0.5
    webhook_timeout_seconds: float = 5.0

    audited: bool = True
    invalid_param_spelling: Literal["invalid_params", "invalid_param"] = "invalid_params"
    # "safe": only plans inside the ranges that are valid under both readings of "MB" (§3);
    # "loose": 5 MiB..64 MiB chunks, final chunk up to 128 MiB (the generous reading).
    chunk_rules: Literal["safe", "loose"] = "safe"
    # §6 types post ids as int64; "number" emits JSON numbers > 2^53 so clients that parse them
    # as floats get caught, "string" emits them quoted.
    post_id_json: Literal["number", "string"] = "number"
    # OAuth error status is UNCONFIRMED; invalid_grant was seen with 200 in the field.
    oauth_error_status: int = 200

    direct_post_daily_cap: int = 15
    pending_share_cap: int = 5
    # Active creators per client per 24 h (set at audit); 0 = no cap. Unaudited clients get 5.
    active_user_cap: int = 0
    rate_limit_window_seconds: float = 60.0
    rate_limit_init: int = 6
    rate_limit_creator_info: int = 20
    rate_limit_status: int = 30

    # PULL_FROM_URL: verified properties of the app (§4).
    verified_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    verified_url_prefixes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # "download" fetches the URL (https, no redirects); "simulate" pretends a valid sample of
    # simulate_size bytes arrived, for staging where the media host is unreachable.
    pull_mode: Literal["download", "simulate"] = "download"
    pull_simulate_size: int = 1_000_000
    pull_timeout_seconds: float = 3600.0
    # Extra CA bundle to trust when downloading (e.g. an internal CA in staging).
    pull_ca_file: Path | None = None

    default_username: str = "demo"
    default_private_account: bool = False
    default_max_video_post_duration_sec: int = 600

    # Where uploads are assembled; unset = a temporary directory removed at shutdown.
    data_dir: Path | None = None
    keep_files: bool = False

    faults: FaultConfig = Field(default_factory=FaultConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("redirect_uris", "verified_domains", "verified_url_prefixes", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        """Lists come from the environment as JSON or comma-separated."""
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                return json.loads(v)
            return [item.strip() for item in v.split(",") if item.strip()]
        return v

    @field_validator("verified_url_prefixes")
    @classmethod
    def _prefixes(cls, v: list[str]) -> list[str]:
        """§4: a URL prefix is https:// + host + path ending in /."""
        bad = [p for p in v if not (p.startswith("https://") and p.endswith("/"))]
        if bad:
            raise ValueError(f"URL prefixes must start with https:// and end with /: {bad}")
        return v
