"""The TikTok Content Posting endpoints (§2-§7), with TikTok's envelope, statuses and checks."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from tiktok_sandbox.core import Sandbox
from tiktok_sandbox.faults import Endpoint
from tiktok_sandbox.plan import ChunkPlan, PlanError, validate_plan
from tiktok_sandbox.state import PRIVACY_LEVELS, AccessToken, Mode, Publish, User, new_log_id

log = structlog.get_logger("tiktok_sandbox")

_INT32_MAX = 2**31 - 1
_TITLE_MAX_UTF16 = 2200
_BOOL_FIELDS = (
    "disable_duet",
    "disable_stitch",
    "disable_comment",
    "brand_content_toggle",
    "brand_organic_toggle",
    "is_aigc",
)
CHUNK_SIZE_INVALID = "The chunk size is invalid"


class ApiError(Exception):
    """A documented TikTok error: HTTP status, error.code, message."""

    def __init__(self, status: int, code: str, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail or message


@dataclass
class Call:
    """One authenticated data-endpoint call."""

    request: web.Request
    token: AccessToken
    user: User
    body: dict[str, Any]


Handler = Callable[[Call], Awaitable[dict[str, Any]]]


def envelope(
    sandbox: Sandbox,
    endpoint: str,
    status: int,
    code: str,
    message: str,
    data: Any = None,
    *,
    detail: str = "",
) -> web.Response:
    """TikTok's `{"data", "error": {code, message, log_id}}` response; counts it in the stats."""
    log_id = new_log_id()
    sandbox.state.stats.respond(endpoint, status, code, detail or message)
    return web.json_response(
        {"data": {} if data is None else data, "error": {"code": code, "message": message, "log_id": log_id}},
        status=status,
        headers={"X-Tt-Logid": log_id},
    )


class TikTokApi:
    """Handlers for the data endpoints; each is wrapped by `_endpoint` for the shared checks."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        self.settings = sandbox.settings

    @property
    def _invalid(self) -> str:
        return self.settings.invalid_param_spelling

    def routes(self) -> list[web.RouteDef]:
        """The data endpoints at TikTok's paths."""
        s = self.settings
        return [
            web.post(
                "/v2/post/publish/creator_info/query/",
                self._endpoint(
                    "creator_info",
                    self.creator_info,
                    scopes=("video.publish",),
                    limit=s.rate_limit_creator_info,
                ),
            ),
            web.post(
                "/v2/post/publish/video/init/",
                self._endpoint(
                    "video_init",
                    self.video_init,
                    scopes=("video.publish",),
                    limit=s.rate_limit_init,
                    bucket="init",
                    needs_body=True,
                ),
            ),
            web.post(
                "/v2/post/publish/inbox/video/init/",
                self._endpoint(
                    "inbox_init",
                    self.inbox_init,
                    scopes=("video.upload",),
                    limit=s.rate_limit_init,
                    bucket="init",
                    needs_body=True,
                ),
            ),
            web.post(
                "/v2/post/publish/status/fetch/",
                self._endpoint(
                    "status_fetch",
                    self.status_fetch,
                    scopes=("video.publish", "video.upload"),
                    any_scope=True,
                    limit=s.rate_limit_status,
                    needs_body=True,
                ),
            ),
            web.post(
                "/v2/post/publish/cancel/",
                self._endpoint(
                    "cancel",
                    self.cancel,
                    scopes=("video.publish", "video.upload"),
                    any_scope=True,
                    limit=None,  # the cancel limit is not documented
                    needs_body=True,
                ),
            ),
        ]

    def _endpoint(
        self,
        name: Endpoint,
        handler: Handler,
        *,
        scopes: tuple[str, ...],
        limit: int | None,
        bucket: str | None = None,
        any_scope: bool = False,
        needs_body: bool = False,
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            sb = self.sb
            await sb.state.arrive(name)
            try:
                call = await self._admit(request, name, scopes, any_scope, limit, bucket or name, needs_body)
                data = await handler(call)
            except ApiError as err:
                if err.status < 500:
                    log.info(
                        "api_rejected", endpoint=name, code=err.code, status=err.status, detail=err.detail
                    )
                return envelope(sb, name, err.status, err.code, err.message, detail=err.detail)
            return envelope(sb, name, 200, "ok", "", data)

        return wrapped

    async def _admit(
        self,
        request: web.Request,
        name: Endpoint,
        scopes: tuple[str, ...],
        any_scope: bool,
        limit: int | None,
        bucket: str,
        needs_body: bool,
    ) -> Call:
        state = self.sb.state
        auth = request.headers.get("Authorization", "")
        scheme, _, raw = auth.partition(" ")
        token = state.valid_access_token(raw.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise ApiError(
                401, "access_token_invalid", "The access token is invalid or not found in the request."
            )
        granted = [s in token.scopes for s in scopes]
        if not (any(granted) if any_scope else all(granted)):
            raise ApiError(
                401,
                "scope_not_authorized",
                "The user did not authorize the scope required for this request: " + ",".join(scopes),
            )
        if state.faults.take_error(name):
            raise ApiError(500, "internal_error", "Something went wrong. Please try again later.")
        if state.faults.take_rate_limit(name) or (
            limit is not None and not state.admit(token.token, bucket, limit)
        ):
            raise ApiError(
                429, "rate_limit_exceeded", "The API rate limit was exceeded. Please try again later."
            )
        body: dict[str, Any] = {}
        raw_body = await request.read() if request.can_read_body else b""
        if needs_body or raw_body.strip():
            if request.content_type != "application/json":
                raise ApiError(400, self._invalid, "Content-Type must be application/json")
            try:
                parsed = json.loads(raw_body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise ApiError(400, self._invalid, "The request body is not valid JSON") from exc
            if not isinstance(parsed, dict):
                raise ApiError(400, self._invalid, "The request body must be a JSON object")
            body = parsed
        return Call(request=request, token=token, user=state.users[token.open_id], body=body)

    def _bad(self, message: str, detail: str = "") -> ApiError:
        return ApiError(400, self._invalid, message, detail=detail)

    # ------------------------------------------------------------ creator_info

    async def creator_info(self, call: Call) -> dict[str, Any]:
        """§5.2; some refusals come back with HTTP 200, as TikTok does."""
        user = call.user
        if user.banned:
            raise ApiError(
                200, "spam_risk_user_banned_from_posting", "The user is banned from making new posts."
            )
        if (
            len(self.sb.state.inits_within_day(open_id=user.open_id, mode="direct"))
            >= self.settings.direct_post_daily_cap
        ):
            raise ApiError(
                200, "spam_risk_too_many_posts", "The daily post cap from the API is reached for the user."
            )
        self._check_active_user_cap(user, status=200)
        return user.creator_info()

    # ------------------------------------------------------------ init

    async def video_init(self, call: Call) -> dict[str, Any]:
        """Direct Post init (§2, §3, §4, §5.1)."""
        post_info = call.body.get("post_info")
        if not isinstance(post_info, dict):
            raise self._bad("post_info is required")
        self._check_post_info(post_info)
        source_info = self._source_info(call.body)
        user = call.user
        privacy = post_info["privacy_level"]
        self._check_can_post(user)
        if not self.settings.audited and not (user.private_account and privacy == "SELF_ONLY"):
            raise ApiError(
                403,
                "unaudited_client_can_only_post_to_private_accounts",
                "Unaudited clients can only post to private accounts with SELF_ONLY visibility.",
            )
        self._check_active_user_cap(user)
        if privacy not in user.privacy_level_options():
            raise ApiError(
                403,
                "privacy_level_option_mismatch",
                "privacy_level is not one of the creator's privacy_level_options",
            )
        if (
            len(self.sb.state.inits_within_day(open_id=user.open_id, mode="direct"))
            >= self.settings.direct_post_daily_cap
        ):
            raise ApiError(
                403, "spam_risk_too_many_posts", "The daily post cap from the API is reached for the user."
            )
        return self._start(call, "direct", source_info, post_info)

    async def inbox_init(self, call: Call) -> dict[str, Any]:
        """Upload to the creator's inbox (§2): source_info only."""
        source_info = self._source_info(call.body)
        user = call.user
        self._check_can_post(user)
        self._check_active_user_cap(user)
        if self.sb.state.pending_shares(user.open_id) >= self.settings.pending_share_cap:
            raise ApiError(
                403,
                "spam_risk_too_many_pending_share",
                "The user has too many pending shares from the API in the last 24 hours.",
            )
        return self._start(call, "inbox", source_info, None)

    def _check_can_post(self, user: User) -> None:
        if user.banned:
            raise ApiError(
                403, "spam_risk_user_banned_from_posting", "The user is banned from making new posts."
            )

    def _check_active_user_cap(self, user: User, *, status: int = 403) -> None:
        cap = self.settings.active_user_cap if self.settings.audited else 5
        if not cap:
            return
        active = {open_id for _, open_id, _ in self.sb.state.inits_within_day()}
        if user.open_id not in active and len(active) >= cap:
            raise ApiError(
                status,
                "reached_active_user_cap",
                "The daily quota of active creators for this client is reached.",
            )

    def _check_post_info(self, post_info: dict[str, Any]) -> None:
        privacy = post_info.get("privacy_level")
        if not isinstance(privacy, str) or not privacy:
            raise self._bad("privacy_level is required")
        if privacy not in PRIVACY_LEVELS:
            raise self._bad(f"privacy_level {privacy!r} is invalid")
        title = post_info.get("title", "")
        if not isinstance(title, str):
            raise self._bad("title must be a string")
        # The limit counts UTF-16 code units: an emoji outside the BMP costs two.
        if len(title.encode("utf-16-le")) // 2 > _TITLE_MAX_UTF16:
            raise self._bad(f"title is longer than {_TITLE_MAX_UTF16} UTF-16 code units")
        for name in _BOOL_FIELDS:
            if name in post_info and not isinstance(post_info[name], bool):
                raise self._bad(f"{name} must be a boolean")
        ts = post_info.get("video_cover_timestamp_ms")
        if ts is not None and (not _is_int(ts) or not 0 <= ts <= _INT32_MAX):
            raise self._bad("video_cover_timestamp_ms must be an int32 >= 0")

    def _source_info(self, body: dict[str, Any]) -> _Source:
        source_info = body.get("source_info")
        if not isinstance(source_info, dict):
            raise self._bad("source_info is required")
        source = source_info.get("source")
        if source == "FILE_UPLOAD":
            fields = ("video_size", "chunk_size", "total_chunk_count")
            values = [source_info.get(f) for f in fields]
            ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
            if len(ints) != len(fields):
                raise self._bad(
                    CHUNK_SIZE_INVALID, detail="video_size, chunk_size, total_chunk_count must be integers"
                )
            try:
                return _Source(plan=validate_plan(*ints, rules=self.settings.chunk_rules))
            except PlanError as exc:
                raise self._bad(CHUNK_SIZE_INVALID, detail=str(exc)) from exc
        if source == "PULL_FROM_URL":
            url = source_info.get("video_url")
            if not isinstance(url, str) or not url:
                raise self._bad("video_url is required")
            parts = urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                raise self._bad("video_url must be an https URL")
            if not self._url_verified(url):
                raise ApiError(
                    403, "url_ownership_unverified", "The domain or URL prefix of video_url is not verified."
                )
            return _Source(video_url=url)
        raise self._bad("source must be FILE_UPLOAD or PULL_FROM_URL")

    def _url_verified(self, url: str) -> bool:
        """§4: a verified Domain covers itself and its subdomains; a URL prefix covers what starts with it."""
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        try:
            ipaddress.ip_address(host)
            return False  # properties are domains; an IP literal is never verified
        except ValueError:
            pass
        for domain in self.settings.verified_domains:
            d = domain.lower().strip(".")
            if host == d or host.endswith("." + d):
                return True
        return any(url.startswith(prefix) for prefix in self.settings.verified_url_prefixes)

    def _start(
        self, call: Call, mode: Mode, source: _Source, post_info: dict[str, Any] | None
    ) -> dict[str, Any]:
        state = self.sb.state
        if source.plan is not None:
            pub = state.new_publish(open_id=call.user.open_id, mode=mode, source="FILE_UPLOAD")
            pub.post_info = post_info
            pub.plan = source.plan
            upload_url = state.attach_upload(pub)
            log.info(
                "publish_initialised", publish_id=pub.publish_id, mode=mode, video_size=source.plan.video_size
            )
            return {"publish_id": pub.publish_id, "upload_url": upload_url}
        pub = state.new_publish(open_id=call.user.open_id, mode=mode, source="PULL_FROM_URL")
        pub.post_info = post_info
        pub.video_url = source.video_url
        self.sb.start_download(pub)
        log.info("publish_initialised", publish_id=pub.publish_id, mode=mode, source="PULL_FROM_URL")
        return {"publish_id": pub.publish_id}

    # ------------------------------------------------------------ status and cancel

    def _owned_publish(self, call: Call) -> Publish:
        publish_id = call.body.get("publish_id")
        if not isinstance(publish_id, str) or not publish_id:
            raise ApiError(400, "invalid_publish_id", "publish_id is required")
        pub = self.sb.state.publishes.get(publish_id)
        if pub is None:
            raise ApiError(400, "invalid_publish_id", "The publish_id does not exist")
        if pub.open_id != call.token.open_id:
            raise ApiError(
                400,
                "token_not_authorized_for_specified_publish_id",
                "The access token is not authorized for this publish_id",
            )
        return pub

    async def status_fetch(self, call: Call) -> dict[str, Any]:
        """§6 status of a publish the caller's user owns."""
        pub = self._owned_publish(call)
        pub.status_fetches += 1
        return pub.status_data(self.settings.post_id_json)

    async def cancel(self, call: Call) -> dict[str, Any]:
        """Best effort: only PULL_FROM_URL downloads that are not nearly done (§2)."""
        pub = self._owned_publish(call)
        nearly_done = pub.download_total is not None and pub.downloaded_bytes >= 0.9 * pub.download_total
        if (
            pub.source != "PULL_FROM_URL"
            or pub.status != "PROCESSING_DOWNLOAD"
            or nearly_done
            or pub.download_done
        ):
            raise ApiError(400, "publish_not_cancellable", "The publish can no longer be cancelled")
        if pub.task is not None:
            pub.task.cancel()
        self.sb.fail(pub, "publish_cancelled")
        return {}


@dataclass(frozen=True)
class _Source:
    """A validated source_info: a chunk plan or a pull URL."""

    plan: ChunkPlan | None = None
    video_url: str | None = None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
