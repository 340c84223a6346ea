"""Why ingest refuses a request. The routes map each class to one HTTP status.

InvalidInputError (reelay_common)   422  bad input: validation, URL not public, privacy level...
├── RequestRejected                 422  the same, carrying a client-facing `extra` mapping
│   ├── NotFoundError               404  unknown account or upload
│   ├── ConflictError               409  request_id reused with another payload, or spent
│   ├── TooLargeError               413  the video (or the JSON body) is over the limit
│   ├── UnsupportedMediaError       415  not an MP4 / MOV / WebM video, or not JSON / multipart
│   ├── MalformedRequestError       400  the body is not JSON / multipart at all
│   └── ConnectFailed               400  an OAuth connect that did not complete (state, consent, code)
RetryableError (reelay_common)
└── UnavailableError                503  Kafka did not acknowledge, TikTok unreachable: try again
SignatureError                      401  a webhook whose TikTok-Signature does not verify
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reelay_common.domain.errors import InvalidInputError, ReelayError, RetryableError


class RequestRejected(InvalidInputError):
    """Bad input, with a stable `code` and an optional `extra` mapping for the client."""

    def __init__(self, message: str, *, code: str, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, code=code)
        self.extra: dict[str, Any] = dict(extra or {})


class NotFoundError(RequestRejected):
    """The account or upload named in the request does not exist."""


class ConflictError(RequestRejected):
    """The request_id is already taken by a different request, or was spent by a failed one."""


class TooLargeError(RequestRejected):
    """The body is larger than allowed."""


class UnsupportedMediaError(RequestRejected):
    """The body or the video is of a type ingest does not take."""


class MalformedRequestError(RequestRejected):
    """The body cannot be parsed at all (not JSON, broken multipart)."""


class ConnectFailed(RequestRejected):
    """An OAuth callback that connects nothing: a bad state, a declined consent, a refused code."""


class UnavailableError(RetryableError):
    """A dependency (Kafka, TikTok) did not answer in time; the request changed nothing lasting."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        retry_after: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.extra: dict[str, Any] = dict(extra or {})


class SignatureError(ReelayError):
    """A webhook's TikTok-Signature is missing, malformed, wrong or too old."""
