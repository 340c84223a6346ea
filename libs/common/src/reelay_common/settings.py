"""Typed settings shared by every service. Each service subclasses `CommonSettings` with its own
env prefix (INGEST_, UPLOADER_, POLLER_); the shared fields keep their unprefixed names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from reelay_common.domain.messages import (
    TOPIC_PUBLISH_EVENTS,
    TOPIC_PUBLISH_STATUS,
    TOPIC_UPLOAD_REQUESTED,
    BlobStoreKind,
)

# Placeholders that work for a laptop and are refused when REELAY_ENV=prod.
DEV_CLIENT_SECRET = "dev-client-secret"  # noqa: S105  # a documented placeholder, refused in prod
DEV_TOKEN_KEY = "ZGV2LW9ubHktcmVlbGF5LXRva2VuLWtleS0zMmJ5dGU="  # noqa: S105  # dev Fernet key, refused in prod
DEV_API_KEY = "dev-api-key"
MIB = 1024 * 1024
S3_MIN_PART_BYTES = 5 * MIB  # S3's smallest part (every part but the last)


class TopicSettings(BaseSettings):
    """Logging, Kafka and the topics: all that topic creation (`reelay-create-topics`, a Kubernetes
    Job) reads, so that no secret has to reach it. Env var names are given by each field's alias."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", validation_alias="REELAY_LOG_LEVEL"
    )
    log_format: Literal["auto", "json", "console"] = Field("auto", validation_alias="REELAY_LOG_FORMAT")

    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    topic_partitions: int = Field(6, ge=1, validation_alias="REELAY_TOPIC_PARTITIONS")
    topic_replication_factor: int = Field(1, ge=1, validation_alias="REELAY_TOPIC_REPLICATION_FACTOR")
    topic_upload_requested: str = Field(
        TOPIC_UPLOAD_REQUESTED, validation_alias="REELAY_TOPIC_UPLOAD_REQUESTED"
    )
    topic_publish_events: str = Field(TOPIC_PUBLISH_EVENTS, validation_alias="REELAY_TOPIC_PUBLISH_EVENTS")
    topic_publish_status: str = Field(TOPIC_PUBLISH_STATUS, validation_alias="REELAY_TOPIC_PUBLISH_STATUS")


class CommonSettings(TopicSettings):
    """Settings every service reads: the topic settings, and the rest of what they share."""

    # A refused value is not echoed in the error (pydantic shows the input by default): many of
    # these values are secrets (the token keys, the client secret, the Mongo URI's password).
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    environment: Literal["dev", "prod"] = Field("dev", validation_alias="REELAY_ENV")

    # The outbox relay (reelay_common.outbox): how long one send may wait for Kafka, how long a
    # process holds an upload's outbox while sending it, and how often it looks for what is due.
    outbox_send_timeout_seconds: float = Field(
        5.0, gt=0, validation_alias="REELAY_OUTBOX_SEND_TIMEOUT_SECONDS"
    )
    outbox_lease_seconds: float = Field(30.0, gt=0, validation_alias="REELAY_OUTBOX_LEASE_SECONDS")
    outbox_interval_seconds: float = Field(1.0, gt=0, validation_alias="REELAY_OUTBOX_INTERVAL_SECONDS")
    # Fault injection for the crash tests (reelay_common.faults): never set in a deployment.
    crash_before_send: Path | None = Field(None, validation_alias="REELAY_CRASH_BEFORE_SEND")

    mongodb_uri: SecretStr = Field(SecretStr("mongodb://127.0.0.1:27017"), validation_alias="MONGODB_URI")
    mongodb_database: str = Field("reelay", validation_alias="MONGODB_DATABASE")

    # Where files streamed into ingest wait for the uploader (reelay_common.adapters.blobs).
    # gridfs keeps everything in MongoDB (slow on FerretDB); local needs one directory that ingest
    # and the uploader both see (a shared volume in Kubernetes); s3 is the production choice.
    blob_store: BlobStoreKind = Field("gridfs", validation_alias="REELAY_BLOB_STORE")
    blob_dir: Path = Field(Path("/var/lib/reelay/blobs"), validation_alias="REELAY_BLOB_DIR")
    blob_max_bytes: int = Field(50 * 1024 * MIB, gt=0, validation_alias="REELAY_BLOB_MAX_BYTES")
    s3_bucket: str = Field("reelay-videos", min_length=3, validation_alias="REELAY_S3_BUCKET")
    s3_prefix: str = Field("videos/", validation_alias="REELAY_S3_PREFIX")
    # Unset: AWS itself (or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, which botocore reads).
    s3_endpoint_url: str | None = Field(None, validation_alias="S3_ENDPOINT_URL")
    # Unset: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.
    s3_region: str | None = Field(None, validation_alias="REELAY_S3_REGION")
    # Unset: the standard AWS credential chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the
    # shared config files, web identity in Kubernetes, the instance role).
    s3_access_key_id: str | None = Field(None, validation_alias="REELAY_S3_ACCESS_KEY_ID")
    s3_secret_access_key: SecretStr | None = Field(None, validation_alias="REELAY_S3_SECRET_ACCESS_KEY")
    s3_part_bytes: int = Field(
        8 * MIB, ge=S3_MIN_PART_BYTES, le=512 * MIB, validation_alias="REELAY_S3_PART_BYTES"
    )

    tiktok_api_base_url: str = Field("https://open.tiktokapis.com", validation_alias="TIKTOK_API_BASE_URL")
    tiktok_client_key: str = Field("dev-client-key", validation_alias="TIKTOK_CLIENT_KEY")
    tiktok_client_secret: SecretStr = Field(
        SecretStr(DEV_CLIENT_SECRET), validation_alias="TIKTOK_CLIENT_SECRET"
    )
    tiktok_timeout_seconds: float = Field(30.0, gt=0, validation_alias="TIKTOK_TIMEOUT_SECONDS")

    token_encryption_key: SecretStr = Field(
        SecretStr(DEV_TOKEN_KEY), validation_alias="REELAY_TOKEN_ENCRYPTION_KEY"
    )
    # Several keys, comma-separated, for a rotation (README "Rotating the token key"): the first
    # encrypts, every one decrypts. Unset: REELAY_TOKEN_ENCRYPTION_KEY is the only key.
    token_encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias="REELAY_TOKEN_ENCRYPTION_KEYS"
    )

    @field_validator("token_encryption_keys", mode="before")
    @classmethod
    def _split_token_keys(cls, v: Any) -> Any:
        # Empty is unset (what a compose file's `${VAR:-}` passes); commas alone are a mistake.
        if isinstance(v, str):
            keys = [k.strip() for k in v.split(",") if k.strip()]
            if v.strip() and not keys:
                raise ValueError("REELAY_TOKEN_ENCRYPTION_KEYS names no key (unset it, or list keys)")
            return keys
        return v

    def token_keys(self) -> list[SecretStr]:
        """The token keys in order, the one that encrypts first (validated when the settings load)."""
        return list(self.token_encryption_keys) or [self.token_encryption_key]

    def _token_keys_setting(self) -> str:
        """The variable the token keys come from, for error messages."""
        if self.token_encryption_keys:
            return "REELAY_TOKEN_ENCRYPTION_KEYS"
        return "REELAY_TOKEN_ENCRYPTION_KEY"

    @model_validator(mode="after")
    def _token_keys_well_formed(self) -> CommonSettings:
        # Every message names a key by its position, never by its value.
        keys = [k.get_secret_value() for k in self.token_keys()]
        name = self._token_keys_setting()
        for i, key in enumerate(keys):
            where = f"{name} entry {i + 1} of {len(keys)}" if len(keys) > 1 else name
            try:
                Fernet(key.encode())
            except (ValueError, TypeError):
                raise ValueError(
                    f"{where} must be 32 bytes, urlsafe base64-encoded (Fernet.generate_key())"
                ) from None
            if key in keys[:i]:
                raise ValueError(f"{where} repeats entry {keys.index(key) + 1}: list each key once")
        if (
            self.token_encryption_keys
            and "token_encryption_key" in self.model_fields_set
            and self.token_encryption_key.get_secret_value() not in keys
        ):
            # Two settings that disagree: refuse rather than guess which keys the operator meant.
            raise ValueError(
                "REELAY_TOKEN_ENCRYPTION_KEY is set but is not one of REELAY_TOKEN_ENCRYPTION_KEYS: "
                "list it there (or unset it)"
            )
        return self

    @model_validator(mode="after")
    def _no_placeholders_in_prod(self) -> CommonSettings:
        if self.environment == "prod":
            if self.tiktok_client_secret.get_secret_value() == DEV_CLIENT_SECRET:
                raise ValueError("TIKTOK_CLIENT_SECRET must be set in prod (the dev placeholder is refused)")
            if any(k.get_secret_value() == DEV_TOKEN_KEY for k in self.token_keys()):
                name = self._token_keys_setting()
                raise ValueError(f"{name} must be set in prod (the dev key is refused, in any position)")
        return self

    @model_validator(mode="after")
    def _s3_keys_in_pairs(self) -> CommonSettings:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set both REELAY_S3_ACCESS_KEY_ID and REELAY_S3_SECRET_ACCESS_KEY, or neither")
        return self
