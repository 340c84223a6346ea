"""TikTok's Content Posting API as typed HTTP calls: one method per endpoint, errors mapped to the tree.

Data endpoints answer with an envelope (`{"data": ..., "error": {"code", "message", "log_id"}}`);
success is `error.code == "ok"` and nothing else (creator_info reports failures with HTTP 200).
OAuth endpoints answer flat bodies; a failure is any body with an `error` key, whatever the HTTP
status. Every httpx exception is translated here, at the boundary. Tokens are never logged.

Error mapping (see errors.py for the tree):
- 5xx, `internal_error`, timeouts, dropped connections      -> TransientTikTokError
- 429, `rate_limit_exceeded`                               -> RateLimitedError (retry_after)
- 401 `access_token_invalid`                               -> AccessTokenInvalidError (refresh once)
- `scope_not_authorized`; OAuth `invalid_grant`...         -> AuthExpiredError
- anything else TikTok refuses                             -> TikTokRejectedError"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from reelay_common.domain.errors import (
    AuthExpiredError,
    InvalidInputError,
    RateLimitedError,
    ReelayError,
    TikTokRejectedError,
    TransientTikTokError,
    UploadOutOfSyncError,
    UploadUrlExpiredError,
)
from reelay_common.domain.messages import PostInfo
from reelay_common.domain.rules import parse_content_range
from reelay_common.domain.tiktok import (
    CreatorInfo,
    InitResult,
    PublishStatus,
    PutResult,
    SourceInfo,
    TokenGrant,
)
from reelay_common.logging import get_logger
from reelay_common.metrics import TIKTOK_UPLOADED_BYTES, observe_tiktok_call
from reelay_common.settings import CommonSettings

log = get_logger("reelay_common.adapters.tiktok.client")

M = TypeVar("M", bound=BaseModel)


PATH_CREATOR_INFO: Final = "/v2/post/publish/creator_info/query/"


PATH_VIDEO_INIT: Final = "/v2/post/publish/video/init/"


PATH_INBOX_INIT: Final = "/v2/post/publish/inbox/video/init/"


PATH_STATUS_FETCH: Final = "/v2/post/publish/status/fetch/"


PATH_CANCEL: Final = "/v2/post/publish/cancel/"


PATH_OAUTH_TOKEN: Final = "/v2/oauth/token/"  # noqa: S105  # an endpoint path, not a secret


PATH_OAUTH_REVOKE: Final = "/v2/oauth/revoke/"


_JSON_CONTENT_TYPE: Final = "application/json; charset=UTF-8"


# The metrics' endpoint label of chunk PUTs: the upload URL itself is opaque and unbounded.
ENDPOINT_VIDEO_UPLOAD: Final = "video_upload"

# Envelope codes that say "the token itself is refused": the gateway refreshes once on this one.
_ACCESS_TOKEN_INVALID: Final = "access_token_invalid"  # noqa: S105  # an error code, not a secret


_AUTH_CODES: Final = frozenset({"scope_not_authorized"})


# OAuth error values that mean "try again later" rather than "this will never work".
_OAUTH_TRANSIENT: Final = frozenset({"server_error", "temporarily_unavailable"})


# OAuth error values that mean the grant (code or refresh token) is dead: the user must reconnect.
_OAUTH_AUTH: Final = frozenset({"invalid_grant", "access_denied"})


_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/\d+\s*$", re.IGNORECASE)


class AccessTokenInvalidError(AuthExpiredError):
    """401 `access_token_invalid`: the access token was refused. The gateway refreshes once and
    retries; if it escapes, it is an AuthExpiredError (the grant is gone)."""


class _BodyLengthError(Exception):
    """The reader yielded more or fewer bytes than the Content-Length we declared."""


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date); None if absent/bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def progress_from_content_range(value: str | None, *, sent_last: int | None = None) -> int | None:
    """Bytes the server holds, from a PUT response's `Content-Range: bytes 0-N/TOTAL`.

    The reference writes `0-{UPLOADED_BYTES}` but does not say whether N is a count or an inclusive
    index (§3.1), so we cross-check: when N equals the last byte we just sent, it is an inclusive
    index (progress N+1); when it equals one past it, it is a count (progress N). Otherwise we read
    it as HTTP does (inclusive); the uploader snaps the result to a chunk boundary, trying N too.
    """
    if value is not None and _UNSATISFIED_RANGE.match(value):
        return 0  # `bytes */TOTAL` (RFC 9110): no range stored yet
    parsed = parse_content_range(value)
    if parsed is None:
        return None
    first, last, total = parsed
    if first != 0:
        return None
    counted = sent_last is not None and last == sent_last + 1
    progress = last if counted else last + 1
    if total is not None:
        progress = min(progress, total)
    return progress


class TikTokClient:
    """Raw typed HTTP to TikTok: one method per endpoint, responses parsed, errors mapped."""

    def __init__(
        self, http: httpx.AsyncClient, *, base_url: str, client_key: str, client_secret: SecretStr
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._client_key = client_key
        self._client_secret = client_secret

    @classmethod
    def from_settings(cls, http: httpx.AsyncClient, settings: CommonSettings) -> TikTokClient:
        """The client for the TikTok endpoint and app credentials in `settings`."""
        return cls(
            http,
            base_url=settings.tiktok_api_base_url,
            client_key=settings.tiktok_client_key,
            client_secret=settings.tiktok_client_secret,
        )

    # ---- data endpoints (envelope) -------------------------------------------------------------

    async def creator_info(self, access_token: str) -> CreatorInfo:
        """POST creator_info/query: the creator's nickname, privacy options and interaction settings."""
        data = await self._post_envelope(PATH_CREATOR_INFO, access_token, None)
        return _parse(CreatorInfo, data, PATH_CREATOR_INFO)

    async def init_direct_post(
        self, access_token: str, post_info: PostInfo, source_info: SourceInfo
    ) -> InitResult:
        """POST video/init (Direct Post): returns publish_id (and upload_url for FILE_UPLOAD)."""
        body = {
            "post_info": post_info.model_dump(mode="json", exclude_none=True),
            "source_info": source_info.model_dump(mode="json", exclude_none=True),
        }
        data = await self._post_envelope(PATH_VIDEO_INIT, access_token, body)
        return _parse(InitResult, data, PATH_VIDEO_INIT)

    async def init_inbox(self, access_token: str, source_info: SourceInfo) -> InitResult:
        """POST inbox/video/init: upload to the creator's inbox as a draft."""
        body = {"source_info": source_info.model_dump(mode="json", exclude_none=True)}
        data = await self._post_envelope(PATH_INBOX_INIT, access_token, body)
        return _parse(InitResult, data, PATH_INBOX_INIT)

    async def fetch_status(self, access_token: str, publish_id: str) -> PublishStatus:
        """POST status/fetch: where the publish is (processing, complete, failed...)."""
        data = await self._post_envelope(PATH_STATUS_FETCH, access_token, {"publish_id": publish_id})
        return _parse(PublishStatus, data, PATH_STATUS_FETCH)

    async def cancel(self, access_token: str, publish_id: str) -> None:
        """POST cancel: best effort, PULL_FROM_URL downloads only."""
        await self._post_envelope(PATH_CANCEL, access_token, {"publish_id": publish_id})

    # ---- OAuth (flat bodies, form-encoded, `client_key` not `client_id`) ----------------------

    async def exchange_code(
        self, code: str, *, redirect_uri: str, code_verifier: str | None = None
    ) -> TokenGrant:
        """POST oauth/token with grant_type=authorization_code."""
        fields = {"code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            fields["code_verifier"] = code_verifier
        return await self._token("authorization_code", fields)

    async def refresh_token(self, refresh_token: str) -> TokenGrant:
        """POST oauth/token with grant_type=refresh_token (TikTok rotates the refresh token)."""
        return await self._token("refresh_token", {"refresh_token": refresh_token})

    async def revoke(self, access_token: str) -> None:
        """POST oauth/revoke: end the user's authorisation of this app."""
        await self._post_oauth(PATH_OAUTH_REVOKE, self._client_form(token=access_token), grant_type=None)

    async def _token(self, grant_type: str, fields: Mapping[str, str]) -> TokenGrant:
        """POST oauth/token for `grant_type` with the grant's own `fields`."""
        form = self._client_form(grant_type=grant_type, **fields)
        body = await self._post_oauth(PATH_OAUTH_TOKEN, form, grant_type=grant_type)
        return _parse(TokenGrant, body, PATH_OAUTH_TOKEN)

    def _client_form(self, **fields: str) -> dict[str, str]:
        """An OAuth form: this app's credentials (`client_key`, not `client_id`) and `fields`."""
        return {
            "client_key": self._client_key,
            "client_secret": self._client_secret.get_secret_value(),
            **fields,
        }

    # ---- the chunk PUT --------------------------------------------------------------------------

    async def put_chunk(
        self,
        upload_url: str,
        *,
        first: int,
        last: int,
        total: int,
        content_type: str,
        body: AsyncIterable[bytes],
    ) -> PutResult:
        """PUT one chunk (bytes first..last inclusive of total), streaming `body`; no Authorization.
        Counted and timed as the endpoint `video_upload`; the bytes count as uploaded once TikTok
        acknowledged them (201 or 206).

        201/206 return a PutResult; 403 raises UploadUrlExpiredError, 416 UploadOutOfSyncError with
        the server's progress, 5xx and lost connections TransientTikTokError, 400/404 TikTokRejectedError.
        `body` is closed before this returns or raises, however far the transport read it.
        """
        with observe_tiktok_call(ENDPOINT_VIDEO_UPLOAD):
            if not 0 <= first <= last < total:
                raise InvalidInputError(
                    f"invalid chunk range {first}-{last}/{total}", code="invalid_chunk_range"
                )
            length = last - first + 1
            headers = {
                "Content-Type": content_type,
                "Content-Length": str(length),
                "Content-Range": f"bytes {first}-{last}/{total}",
            }
            content = _exactly(body, length)
            try:
                response = await self._send_chunk(upload_url, content, headers)
            finally:
                # A PUT cut short leaves the body where the transport stopped reading it: closed
                # here, the video reader's file or connection is let go of now, not by the GC.
                await _close_body(content)
            result = _chunk_result(response, sent_last=last)
        TIKTOK_UPLOADED_BYTES.inc(last - first + 1)
        return result

    async def _send_chunk(
        self, upload_url: str, content: AsyncIterator[bytes], headers: Mapping[str, str]
    ) -> httpx.Response:
        try:
            return await self._http.put(upload_url, content=content, headers=headers)
        except _BodyLengthError as exc:
            raise InvalidInputError(str(exc), code="source_size_mismatch") from exc
        except httpx.TimeoutException as exc:
            raise TransientTikTokError("timed out during chunk upload", code="timeout") from exc
        except httpx.TransportError as exc:
            # Dropped connection or lost response: the chunk may or may not have landed.
            raise TransientTikTokError(
                f"connection failed during chunk upload: {type(exc).__name__}", code="connection_error"
            ) from exc

    # ---- plumbing -------------------------------------------------------------------------------

    async def _post_envelope(
        self, path: str, access_token: str, body: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {access_token}", "Content-Type": _JSON_CONTENT_TYPE}
        content = json.dumps(body).encode() if body is not None else b""
        with observe_tiktok_call(path):
            response = await self._send("POST", path, headers=headers, content=content)
            return _unwrap_envelope(response, path)

    async def _post_oauth(
        self, path: str, form: Mapping[str, str], *, grant_type: str | None
    ) -> dict[str, Any]:
        with observe_tiktok_call(path):
            response = await self._send("POST", path, data=form)
            return _unwrap_oauth(response, path, grant_type=grant_type)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        url = self._base_url + path
        try:
            return await self._http.request(method, url, headers=headers, content=content, data=data)
        except httpx.TimeoutException as exc:
            raise TransientTikTokError(f"timed out calling {path}", code="timeout") from exc
        except httpx.TransportError as exc:
            raise TransientTikTokError(
                f"connection failed calling {path}: {type(exc).__name__}", code="connection_error"
            ) from exc


def _chunk_result(response: httpx.Response, *, sent_last: int) -> PutResult:
    """What TikTok answered a chunk PUT whose last byte was `sent_last`, or the error it means."""
    status = response.status_code
    progress = progress_from_content_range(response.headers.get("Content-Range"), sent_last=sent_last)
    log_id = _log_id_from(response)
    if status in (201, 206):
        return PutResult(status_code=status, server_progress=progress)
    if status == 416:
        raise UploadOutOfSyncError(
            "chunk range does not match the server's progress",
            server_offset=progress,
            code="range_not_satisfiable",
            log_id=log_id,
            http_status=status,
        )
    if status == 403:
        raise UploadUrlExpiredError(
            "upload_url expired (1 h after init)",
            code="upload_url_expired",
            log_id=log_id,
            http_status=403,
        )
    if status == 429:
        raise RateLimitedError(
            "chunk upload rate limited",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            code="rate_limit_exceeded",
            log_id=log_id,
            http_status=status,
        )
    if status >= 500:
        raise TransientTikTokError(
            f"chunk upload failed with HTTP {status}",
            code="server_error",
            log_id=log_id,
            http_status=status,
        )
    if status == 404:
        raise TikTokRejectedError(
            "no upload task for this upload_url", code="upload_not_found", log_id=log_id, http_status=404
        )
    # 400 means our headers or Content-Length were wrong: a bug, not something a retry fixes.
    raise TikTokRejectedError(
        f"chunk upload refused with HTTP {status}",
        code="bad_chunk_request",
        log_id=log_id,
        http_status=status,
    )


async def _exactly(body: AsyncIterable[bytes], length: int) -> AsyncGenerator[bytes, None]:
    """Pass `body` through piece by piece, refusing to send more or fewer than `length` bytes;
    `body` is closed with it."""
    sent = 0
    try:
        async for piece in body:
            sent += len(piece)
            if sent > length:
                raise _BodyLengthError(f"video reader yielded more than the {length} bytes of the chunk")
            if piece:
                yield piece
    finally:
        await _close_body(body)
    if sent != length:
        raise _BodyLengthError(f"video reader yielded {sent} bytes for a chunk of {length}")


async def _close_body(body: AsyncIterable[bytes]) -> None:
    """Close a body generator, unless the transport is inside it right now: then the transport's
    own end (its writer cancelled with the connection) runs it to its end."""
    close = getattr(body, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except RuntimeError as exc:
        if "already running" not in str(exc):
            raise
        log.debug("chunk_body_close_left_to_transport")


def _log_id_from(response: httpx.Response) -> str | None:
    # TikTok echoes the log id in a header on some responses; the body wins when both are there.
    value: str | None = response.headers.get("x-tt-logid") or response.headers.get("log_id")
    return value


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _unwrap_envelope(response: httpx.Response, path: str) -> dict[str, Any]:
    """The `data` of a successful envelope, or the mapped error."""
    status = response.status_code
    body = _json_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        raise _error_without_envelope(response, path)
    code: str = error["code"]
    message = str(error.get("message") or "")
    log_id = error.get("log_id") or error.get("logid") or _log_id_from(response)
    log_id = str(log_id) if log_id else None
    if code == "ok" and 200 <= status < 300:
        data = body.get("data") if isinstance(body, dict) else None
        return data if isinstance(data, dict) else {}
    exc = map_envelope_error(
        code, message or f"{path} failed", http_status=status, log_id=log_id, headers=response.headers
    )
    log.warning("tiktok_call_failed", path=path, http_status=status, code=code, log_id=log_id)
    raise exc


def map_envelope_error(
    code: str,
    message: str,
    *,
    http_status: int,
    log_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> ReelayError:
    """The error a data endpoint's `error.code` (and HTTP status) stands for."""
    if code == "rate_limit_exceeded" or http_status == 429:
        retry_after = parse_retry_after((headers or {}).get("Retry-After"))
        return RateLimitedError(
            message, retry_after=retry_after, code=code, log_id=log_id, http_status=http_status
        )
    if code == _ACCESS_TOKEN_INVALID:
        return AccessTokenInvalidError(message, code=code, log_id=log_id, http_status=http_status)
    if code in _AUTH_CODES or http_status == 401:
        return AuthExpiredError(message, code=code, log_id=log_id, http_status=http_status)
    if code == "internal_error" or http_status >= 500:
        return TransientTikTokError(message, code=code, log_id=log_id, http_status=http_status)
    if code == "ok":
        # "ok" with a non-2xx status contradicts itself: treat it like an unexplained failure.
        return TikTokRejectedError(message, code="unexpected_status", log_id=log_id, http_status=http_status)
    # invalid_param / invalid_params, spam_risk_*, privacy_level_option_mismatch,
    # url_ownership_unverified, unaudited_client_*, reached_active_user_cap, invalid_publish_id...
    return TikTokRejectedError(message, code=code, log_id=log_id, http_status=http_status)


def _error_without_envelope(response: httpx.Response, path: str) -> ReelayError:
    """A response with no parsable envelope: judge it by its HTTP status alone."""
    status = response.status_code
    log_id = _log_id_from(response)
    if status == 429:
        return RateLimitedError(
            f"{path} rate limited",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            code="rate_limit_exceeded",
            log_id=log_id,
            http_status=status,
        )
    if status == 401:
        return AccessTokenInvalidError(
            f"{path} refused the access token", code=_ACCESS_TOKEN_INVALID, log_id=log_id, http_status=401
        )
    # A gateway's HTML 5xx or a truncated 2xx body behaves like a dropped connection.
    if status >= 500 or 200 <= status < 300:
        return TransientTikTokError(
            f"{path} answered HTTP {status} without a TikTok envelope",
            code="bad_response",
            log_id=log_id,
            http_status=status,
        )
    return TikTokRejectedError(
        f"{path} answered HTTP {status} without a TikTok envelope",
        code="bad_response",
        log_id=log_id,
        http_status=status,
    )


def _unwrap_oauth(response: httpx.Response, path: str, *, grant_type: str | None) -> dict[str, Any]:
    """A flat OAuth body, or the mapped error (detected by the `error` key, whatever the status)."""
    status = response.status_code
    body = _json_body(response)
    if isinstance(body, dict) and body.get("error"):
        code = str(body["error"])
        message = str(body.get("error_description") or f"{path} failed: {code}")
        log_id = body.get("log_id") or _log_id_from(response)
        exc = map_oauth_error(code, message, http_status=status, log_id=str(log_id) if log_id else None)
        if isinstance(exc, RateLimitedError):
            exc.retry_after = parse_retry_after(response.headers.get("Retry-After"))
        log.warning("tiktok_oauth_failed", path=path, grant_type=grant_type, http_status=status, code=code)
        raise exc
    if not isinstance(body, dict):
        raise _error_without_envelope(response, path)
    if status >= 300:
        raise _error_without_envelope(response, path)
    return body


def map_oauth_error(code: str, message: str, *, http_status: int, log_id: str | None = None) -> ReelayError:
    """The error an OAuth `error` value (and HTTP status) stands for."""
    if http_status == 429:
        return RateLimitedError(message, code=code, log_id=log_id, http_status=http_status)
    if code in _OAUTH_TRANSIENT or http_status >= 500:
        return TransientTikTokError(message, code=code, log_id=log_id, http_status=http_status)
    if code in _OAUTH_AUTH:
        return AuthExpiredError(message, code=code, log_id=log_id, http_status=http_status)
    # invalid_client, invalid_request, unauthorized_client, unsupported_grant_type, invalid_scope...:
    # our configuration or request is wrong; a retry cannot help.
    return TikTokRejectedError(message, code=code, log_id=log_id, http_status=http_status)


def _parse(model: type[M], data: Mapping[str, Any], path: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # TikTok said "ok" but the body is not what the reference promises: nothing to retry.
        raise TikTokRejectedError(
            f"{path} returned an unexpected body: {exc.error_count()} validation error(s)",
            code="unexpected_body",
        ) from exc
