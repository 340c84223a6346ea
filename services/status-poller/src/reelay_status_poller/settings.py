"""Typed settings of the status-poller (env prefix `POLLER_`, shared fields unprefixed)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from reelay_common.settings import CommonSettings

# A placeholder that works for a laptop and is refused when REELAY_ENV=prod.
DEV_CALLBACK_SECRET = "dev-callback-secret"  # noqa: S105  # a documented placeholder, refused in prod


class PollerSettings(CommonSettings):
    """How the status-poller consumes publish events and paces status/fetch polls."""

    model_config = SettingsConfigDict(env_prefix="POLLER_", extra="ignore", populate_by_name=True)

    consumer_group: str = Field("reelay-status-poller", min_length=1)
    # Adaptive schedule: the first poll waits min_interval, each next one backoff_factor times
    # longer, never more than max_interval.
    min_interval_seconds: float = Field(2.0, gt=0)
    max_interval_seconds: float = Field(60.0, gt=0)
    backoff_factor: float = Field(1.5, ge=1.0)
    # The learnt schedule (docs/design.md, "A poll schedule that learns"): from the processing times
    # seen per account and size class (Mongo `poll_profiles`), polls at most learned_max_gap apart
    # where TikTok usually finishes, the backoff above outside; off, the backoff alone.
    learn_schedule: bool = True
    learned_max_gap_seconds: float = Field(8.0, gt=0)
    learn_min_observations: int = Field(5, ge=1)
    # Without a terminal TikTok status this long after tracking started, the upload is `unconfirmed`.
    give_up_after_seconds: float = Field(7200.0, gt=0)
    # A published PUBLIC_TO_EVERYONE direct post gets its post ids only after moderation
    # (about a minute, sometimes hours): keep polling slowly this long to collect them.
    post_id_watch_seconds: float = Field(600.0, ge=0)
    # A claimed poll is leased this long; a poll that takes longer is abandoned (see scheduler).
    lease_seconds: float = Field(30.0, gt=0)
    scheduler_concurrency: int = Field(4, ge=1, le=256)
    # How long the scheduler sleeps when nothing is due (it wakes at once on stop).
    idle_sleep_seconds: float = Field(0.5, gt=0, le=30)
    # Settled uploads leave the in-flight collection for `uploads` once quiet this long (late facts
    # within it stay cheap writes), checked every archive_interval_seconds.
    archive_grace_seconds: float = Field(60.0, ge=0)
    archive_interval_seconds: float = Field(5.0, gt=0, le=3600)
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(9102, ge=0, le=65535)
    shutdown_grace_seconds: float = Field(20.0, ge=0)
    # Callbacks (docs/architecture.md, "Callbacks"): the consumer of reelay.publish.status that POSTs
    # each state change, signed with callback_secret, to the upload's callback_url (else the default).
    callback_consumer_group: str = Field("reelay-callbacks", min_length=1)
    callback_secret: SecretStr = SecretStr(DEV_CALLBACK_SECRET)
    callback_default_url: str | None = Field(None, max_length=2048)
    # Lets callback URLs be http and point at loopback/private addresses: for development and tests only.
    callback_allow_private_urls: bool = False
    callback_timeout_seconds: float = Field(10.0, gt=0, le=120)
    # Retries (timeouts, connection errors, 408, 429, 5xx) go on this long after the first attempt.
    callback_retry_seconds: float = Field(3600.0, ge=0)
    callback_backoff_initial_seconds: float = Field(1.0, gt=0)
    callback_backoff_max_seconds: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _intervals_ordered(self) -> PollerSettings:
        if self.min_interval_seconds > self.max_interval_seconds:
            raise ValueError("POLLER_MIN_INTERVAL_SECONDS must not exceed POLLER_MAX_INTERVAL_SECONDS")
        return self

    @model_validator(mode="after")
    def _callbacks_usable(self) -> PollerSettings:
        if self.environment == "prod" and self.callback_secret.get_secret_value() == DEV_CALLBACK_SECRET:
            raise ValueError("POLLER_CALLBACK_SECRET must be set in prod (the dev placeholder is refused)")
        url = self.callback_default_url
        schemes = ("https://", "http://") if self.callback_allow_private_urls else ("https://",)
        if url is not None and not url.startswith(schemes):
            raise ValueError("POLLER_CALLBACK_DEFAULT_URL must be an https URL")
        return self
