"""Every error becomes `{"error": {"code", "message", "detail"?}}` with one HTTP status per kind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from reelay_common.domain.errors import (
    AuthExpiredError,
    InvalidInputError,
    RateLimitedError,
    ReelayError,
    RetryableError,
    StorageFullError,
    TikTokRejectedError,
)
from reelay_common.domain.oauth import ACCOUNT_DISCONNECTED, ACCOUNT_REAUTH_REQUIRED
from reelay_common.logging import get_logger
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from reelay_ingest.errors import (
    ConflictError,
    ConnectFailed,
    MalformedRequestError,
    NotFoundError,
    RequestRejected,
    SignatureError,
    TooLargeError,
    UnavailableError,
    UnsupportedMediaError,
)
from reelay_ingest.observe import IngestMetrics

log = get_logger(__name__)

_CODE_OF_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
    507: "storage_full",
}


class Unauthorized(Exception):
    """No or a wrong API key on a /v1 route."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Problem:
    """An HTTP error answer before it is rendered."""

    status: int
    code: str
    message: str
    detail: Any | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> JSONResponse:
        """The JSON response carrying this problem."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return JSONResponse({"error": body}, status_code=self.status, headers=self.headers or None)


def _status_of(exc: InvalidInputError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, TooLargeError) or exc.code == "too_large":
        return 413
    if isinstance(exc, UnsupportedMediaError) or exc.code == "unsupported_media_type":
        return 415
    if isinstance(exc, MalformedRequestError | ConnectFailed):
        return 400
    return 422


def _field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # The offending input is never echoed: it may be a token (POST /v1/accounts).
    return [
        {
            "field": ".".join(str(p) for p in err.get("loc", ())),
            "message": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in errors
    ]


def _whole_body_unparsable(err: Any) -> bool:
    # ("body",) from our own parsing, ("body", <offset>) from FastAPI's; a JSON-string field that
    # does not parse (multipart post_info) is an ordinary field error: 422 with its path.
    loc = tuple(err.get("loc", ()))
    return err.get("type") == "json_invalid" and (
        loc == ("body",) or (len(loc) == 2 and isinstance(loc[1], int))
    )


def _retry_after(seconds: float | None, default: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds if seconds is not None else default)))}


def problem_of(exc: Exception) -> Problem:
    """The status, code and message an exception deserves."""
    if isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        if any(_whole_body_unparsable(e) for e in errors):
            return Problem(400, "malformed_json", "the request body is not valid JSON")
        return Problem(
            422, "validation_failed", "the request does not match the schema", _field_errors(errors)
        )
    if isinstance(exc, ClientDisconnect):
        # Nobody reads this answer; it exists so the disconnect is counted and logged as such.
        return Problem(400, "client_disconnected", "the client went away before the body was complete")
    if isinstance(exc, Unauthorized):
        return Problem(401, "unauthorized", exc.message, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, SignatureError):
        return Problem(401, exc.code or "signature_invalid", exc.message)
    if isinstance(exc, StarletteHTTPException):
        code = _CODE_OF_STATUS.get(exc.status_code, "http_error")
        return Problem(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))
    if isinstance(exc, AuthExpiredError) and exc.code in (ACCOUNT_REAUTH_REQUIRED, ACCOUNT_DISCONNECTED):
        # The account was just found unusable (a refresh refused, say): as a stored status would be.
        return Problem(
            409,
            exc.code,
            f"{exc.message}; connect it again with POST /v1/accounts/{{account_id}}/connect",
            {"log_id": exc.log_id},
        )
    if isinstance(exc, AuthExpiredError):
        return Problem(
            422,
            "account_reauth_required",
            "the account's TikTok authorization no longer works; connect it again",
            {"tiktok_code": exc.code, "log_id": exc.log_id},
        )
    if isinstance(exc, TikTokRejectedError):
        return Problem(
            422,
            "tiktok_rejected",
            f"TikTok refused: {exc.message}",
            {"tiktok_code": exc.code, "log_id": exc.log_id},
        )
    if isinstance(exc, InvalidInputError):
        extra = exc.extra if isinstance(exc, RequestRejected) else None
        return Problem(_status_of(exc), exc.code or "invalid_input", exc.message, extra or None)
    if isinstance(exc, UnavailableError):
        return Problem(
            503, exc.code or "unavailable", exc.message, exc.extra or None, _retry_after(exc.retry_after, 5)
        )
    if isinstance(exc, RateLimitedError):
        headers = _retry_after(exc.retry_after, 5)
        return Problem(
            429,
            "rate_limited",
            "TikTok's per-account limit is reached for now; try again later",
            {"retry_after_seconds": int(headers["Retry-After"])},
            headers,
        )
    if isinstance(exc, StorageFullError):
        # 507, not 413: the video is within the limit; the store is full until queued uploads drain.
        return Problem(507, "storage_full", exc.message, headers=_retry_after(None, 60))
    if isinstance(exc, RetryableError):
        return Problem(
            503,
            "upstream_unavailable",
            "a dependency is unavailable; try again",
            headers=_retry_after(None, 5),
        )
    return Problem(500, "internal_error", "an unexpected error occurred")


def _allowed_methods(request: Request) -> str:
    # Starlette's 405 names the methods of the first route on the path only; RFC 9110 wants all of
    # the resource's (GET and POST /v1/uploads are two routes). Each method is asked of the router.
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]
    return ", ".join(allowed)


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def install_error_handlers(app: FastAPI, metrics: IngestMetrics) -> None:
    """Answer every exception with its Problem, counting each answer's code."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        problem = problem_of(exc)
        if problem.status == 405:
            problem.headers["Allow"] = _allowed_methods(request)
        metrics.rejections.labels(problem.code).inc()
        if problem.status >= 500:
            log.error(
                "request_failed",
                status=problem.status,
                code=problem.code,
                error=type(exc).__name__,
                exc_info=problem.status == 500,
            )
        else:
            log.info("request_refused", status=problem.status, code=problem.code)
        return problem.response()

    # ReelayError is registered on its own so Starlette's ExceptionMiddleware answers it; only
    # the catch-all Exception handler runs in the outer ServerErrorMiddleware (which re-raises).
    kinds = (
        RequestValidationError,
        StarletteHTTPException,
        Unauthorized,
        ClientDisconnect,
        ReelayError,
        Exception,
    )
    for kind in kinds:
        app.add_exception_handler(kind, handle)
