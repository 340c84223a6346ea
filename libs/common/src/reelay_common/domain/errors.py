"""The error tree. Each branch says what the caller should do.

ReelayError
├── RetryableError          try again later (429, 5xx, timeouts, broker or database hiccups)
│   ├── RateLimitedError    TikTok said 429 / rate_limit_exceeded; `retry_after` if known
│   ├── TransientTikTokError
│   ├── DatabaseUnavailableError  MongoDB did not answer (adapters.mongo.client.translate_errors)
│   ├── BrokerUnavailableError    Kafka did not connect or acknowledge (adapters.kafka.publisher)
│   └── StorageFullError    the blob store's budget (or disk) is full: try again once uploads drain
├── PermanentError          retrying cannot help: dead-letter, mark the upload failed
│   ├── InvalidInputError   bad request or record (validation, unknown account, SSRF, size)
│   ├── TikTokRejectedError TikTok refused the request for good (invalid_params, spam_risk...)
│   └── AuthExpiredError    the account's tokens are dead (revoked, refresh failed)
│       (also reachable as a PermanentError: only a reconnect fixes it)
├── UploadUrlExpiredError   the upload_url has expired (403 on PUT): init again
├── UploadOutOfSyncError    the server's progress differs from ours (416); carries it
└── SkipError               nothing to do: a duplicate or stale message"""

from __future__ import annotations

from typing import TypedDict, Unpack


class ErrorInfo(TypedDict, total=False):
    """What a ReelayError carries besides its message (the keywords of `ReelayError.__init__`)."""

    code: str | None
    log_id: str | None
    http_status: int | None


class ReelayError(Exception):
    """Root of every error Reelay raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        log_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.log_id = log_id
        self.http_status = http_status

    def detail(self) -> dict[str, str | int]:
        """The fields worth recording in history and logs (never secrets)."""
        out: dict[str, str | int] = {"error": type(self).__name__, "message": self.message}
        if self.code is not None:
            out["code"] = self.code
        if self.log_id is not None:
            out["log_id"] = self.log_id
        if self.http_status is not None:
            out["http_status"] = self.http_status
        return out


class RetryableError(ReelayError):
    """A failure that may succeed if tried again later."""


class RateLimitedError(RetryableError):
    """TikTok (or our own pacing) says: not now. Wait `retry_after` seconds if known."""

    def __init__(self, message: str, *, retry_after: float | None = None, **info: Unpack[ErrorInfo]) -> None:
        super().__init__(message, **info)
        self.retry_after = retry_after


class TransientTikTokError(RetryableError):
    """5xx, dropped connections, timeouts, internal_error."""


class PermanentError(ReelayError):
    """Retrying cannot help."""


class InvalidInputError(PermanentError):
    """The request or record is malformed, refers to something unknown, or is not allowed."""


class TikTokRejectedError(PermanentError):
    """TikTok refused the request for good (invalid_params, spam_risk_*, privacy mismatch...)."""


class AuthExpiredError(PermanentError):
    """The account's tokens no longer work and cannot be refreshed: the user must reconnect."""


class UploadUrlExpiredError(ReelayError):
    """PUT answered 403: the upload_url expired (1 h after init). A new init is needed."""


class UploadOutOfSyncError(ReelayError):
    """PUT answered 416 or the response was lost: resume from `server_offset`."""

    def __init__(self, message: str, *, server_offset: int | None, **info: Unpack[ErrorInfo]) -> None:
        super().__init__(message, **info)
        self.server_offset = server_offset


class SkipError(ReelayError):
    """Nothing to do: a duplicate or stale message. Commit and move on."""


class DatabaseUnavailableError(RetryableError):
    """MongoDB did not answer (connection loss, election, timeout); the caller may try again later.

    Raised only by `translate_errors`, for every Mongo adapter. A RetryableError, so the consumer
    loop retries and ingest answers 503; its own name says in logs and history that the database,
    not TikTok, was the trouble."""


class StorageFullError(RetryableError):
    """The blob store refused a file because its disk budget is used up; nothing of it was kept.

    Retryable: the budget frees as the uploader sends and deletes stored files. Ingest answers 507.
    """


class BrokerUnavailableError(RetryableError):
    """Kafka did not connect or did not acknowledge a message; the caller may try again later.

    Its own name, like DatabaseUnavailableError's, says that Reelay's own infrastructure, not the
    upload's source or TikTok, was the trouble: such waits never use up an upload's retry deadline."""
