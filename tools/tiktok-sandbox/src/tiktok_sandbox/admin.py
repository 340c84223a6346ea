"""The operator and test API under /sandbox/: users, tokens, publishes, stats, faults, reset."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tiktok_sandbox.core import Sandbox
from tiktok_sandbox.faults import FaultRequest
from tiktok_sandbox.state import DEFAULT_SCOPES, KNOWN_SCOPES, Publish

M = TypeVar("M", bound=BaseModel)


def _scopes(v: list[str] | None) -> list[str] | None:
    if v is not None:
        unknown = sorted(set(v) - KNOWN_SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes: {unknown}")
    return v


class UserSpec(BaseModel):
    """Body of `POST /sandbox/users`."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    nickname: str | None = None
    open_id: str | None = Field(None, min_length=1, max_length=128)
    private_account: bool = False
    scopes: list[str] = Field(default_factory=lambda: list(DEFAULT_SCOPES))
    max_video_post_duration_sec: int | None = Field(None, ge=1)
    comment_disabled: bool = False
    duet_disabled: bool = False
    stitch_disabled: bool = False
    banned: bool = False

    _check_scopes = field_validator("scopes")(_scopes)


class UserPatch(BaseModel):
    """Body of `PATCH /sandbox/users/{open_id}`: any subset of the mutable fields."""

    model_config = ConfigDict(extra="forbid")

    nickname: str | None = None
    private_account: bool | None = None
    scopes: list[str] | None = None
    max_video_post_duration_sec: int | None = Field(None, ge=1)
    comment_disabled: bool | None = None
    duet_disabled: bool | None = None
    stitch_disabled: bool | None = None
    banned: bool | None = None

    _check_scopes = field_validator("scopes")(_scopes)


class TokenSpec(BaseModel):
    """Optional body of `POST /sandbox/users/{open_id}/tokens`."""

    model_config = ConfigDict(extra="forbid")

    scopes: list[str] | None = None

    _check_scopes = field_validator("scopes")(_scopes)


class DraftAction(BaseModel):
    """Body of `POST /sandbox/publishes/{publish_id}/draft`."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["post", "delete"]


def _problem(status: int, message: str, errors: Any = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if errors is not None:
        body["details"] = errors
    return web.json_response(body, status=status)


async def _json(request: web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()
    if optional and not raw.strip():
        return {}
    try:
        return await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text='{"error": "the body is not valid JSON"}', content_type="application/json"
        ) from exc


async def _parsed(request: web.Request, model: type[M], what: str, *, optional: bool = False) -> M:
    """The JSON body as `model`, or HTTP 400 `{"error": what, "details": [...]}`."""
    try:
        return model.model_validate(await _json(request, optional=optional))
    except ValidationError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": what, "details": exc.errors(include_url=False, include_context=False)}),
            content_type="application/json",
        ) from exc


class AdminApi:
    """Inspection and control; not part of TikTok, unauthenticated (bind it to a private address)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    def routes(self) -> list[web.RouteDef]:
        """All /sandbox/ routes and /healthz."""
        return [
            web.get("/healthz", self.healthz),
            web.get("/sandbox/users", self.list_users),
            web.post("/sandbox/users", self.create_user),
            web.get("/sandbox/users/{open_id}", self.get_user),
            web.patch("/sandbox/users/{open_id}", self.patch_user),
            web.get("/sandbox/users/{open_id}/tokens", self.list_tokens),
            web.post("/sandbox/users/{open_id}/tokens", self.issue_tokens),
            web.get("/sandbox/publishes", self.list_publishes),
            web.get("/sandbox/publishes/{publish_id}", self.get_publish),
            web.post("/sandbox/publishes/{publish_id}/draft", self.draft),
            web.get("/sandbox/stats", self.stats),
            web.get("/sandbox/faults", self.get_faults),
            web.put("/sandbox/faults", self.put_faults),
            web.get("/sandbox/webhooks", self.webhooks),
            web.post("/sandbox/reset", self.reset),
        ]

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness."""
        return web.json_response({"status": "ok"})

    async def list_users(self, request: web.Request) -> web.Response:
        """Every sandbox user."""
        return web.json_response({"users": [u.to_json() for u in self.sb.state.users.values()]})

    async def create_user(self, request: web.Request) -> web.Response:
        """Create a creator account; 409 when the open_id is taken."""
        spec = await _parsed(request, UserSpec, "invalid user")
        state = self.sb.state
        if spec.open_id is not None and spec.open_id in state.users:
            return _problem(409, f"open_id {spec.open_id} exists")
        user = state.add_user(
            username=spec.username,
            nickname=spec.nickname,
            private_account=spec.private_account,
            scopes=frozenset(spec.scopes),
            max_video_post_duration_sec=spec.max_video_post_duration_sec,
            comment_disabled=spec.comment_disabled,
            duet_disabled=spec.duet_disabled,
            stitch_disabled=spec.stitch_disabled,
            banned=spec.banned,
            open_id=spec.open_id,
        )
        return web.json_response(user.to_json(), status=201)

    def _user(self, request: web.Request) -> Any:
        user = self.sb.state.users.get(request.match_info["open_id"])
        if user is None:
            raise web.HTTPNotFound(text='{"error": "unknown open_id"}', content_type="application/json")
        return user

    async def get_user(self, request: web.Request) -> web.Response:
        """One user."""
        return web.json_response(self._user(request).to_json())

    async def patch_user(self, request: web.Request) -> web.Response:
        """Change a user (e.g. make the account private, ban it, drop a scope)."""
        user = self._user(request)
        patch = await _parsed(request, UserPatch, "invalid patch")
        for name, value in patch.model_dump(exclude_none=True).items():
            setattr(user, name, frozenset(value) if name == "scopes" else value)
        return web.json_response(user.to_json())

    async def list_tokens(self, request: web.Request) -> web.Response:
        """A user's access and refresh tokens with their state."""
        user = self._user(request)
        state = self.sb.state
        now = state.now()
        access = [
            {
                "access_token": t.token,
                "scopes": sorted(t.scopes),
                "expires_at": t.expires_at,
                "expired": now >= t.expires_at,
                "revoked": t.revoked,
            }
            for t in state.access_tokens.values()
            if t.open_id == user.open_id
        ]
        refresh = [
            {
                "refresh_token": t.token,
                "expires_at": t.expires_at,
                "used": t.used,
                "revoked": t.revoked,
            }
            for t in state.refresh_tokens.values()
            if t.open_id == user.open_id
        ]
        return web.json_response({"access_tokens": access, "refresh_tokens": refresh})

    async def issue_tokens(self, request: web.Request) -> web.Response:
        """Shortcut past the OAuth dance: a token pair for the user, as oauth/token returns it."""
        user = self._user(request)
        spec = await _parsed(request, TokenSpec, "invalid token request", optional=True)
        scopes = frozenset(spec.scopes) if spec.scopes is not None else user.scopes
        return web.json_response(self.sb.state.issue_tokens(user.open_id, scopes))

    async def list_publishes(self, request: web.Request) -> web.Response:
        """Publishes, filterable by open_id, sha256, status, mode."""
        q = request.query
        pubs: list[Publish] = [
            p
            for p in self.sb.state.publishes.values()
            if all(
                q.get(key) is None or q.get(key) == value
                for key, value in (
                    ("open_id", p.open_id),
                    ("sha256", p.sha256),
                    ("status", p.status),
                    ("mode", p.mode),
                )
            )
        ]
        return web.json_response({"count": len(pubs), "publishes": [p.to_json() for p in pubs]})

    async def get_publish(self, request: web.Request) -> web.Response:
        """One publish with every chunk attempt."""
        pub = self.sb.state.publishes.get(request.match_info["publish_id"])
        if pub is None:
            return _problem(404, "unknown publish_id")
        return web.json_response(pub.to_json())

    async def draft(self, request: web.Request) -> web.Response:
        """Play the creator acting on an inbox draft: `{"action": "post" | "delete"}`."""
        pub = self.sb.state.publishes.get(request.match_info["publish_id"])
        if pub is None:
            return _problem(404, "unknown publish_id")
        action = (await _parsed(request, DraftAction, "invalid draft action")).action
        if pub.mode != "inbox" or pub.status != "SEND_TO_USER_INBOX" or pub.handled:
            return _problem(409, "only an unhandled draft in the creator's inbox can be acted on")
        self.sb.handle_draft(pub, action)
        return web.json_response(pub.to_json())

    async def stats(self, request: web.Request) -> web.Response:
        """Calls per endpoint, violations by code, publishes per user, injected faults."""
        state = self.sb.state
        per_user: dict[str, dict[str, int]] = {}
        for p in state.publishes.values():
            row = per_user.setdefault(p.open_id, {"inits": 0, "complete": 0, "published": 0, "failed": 0})
            row["inits"] += 1
            row["complete"] += int(p.complete)
            row["published"] += int(p.status in ("PUBLISH_COMPLETE", "SEND_TO_USER_INBOX"))
            row["failed"] += int(p.status == "FAILED")
        s = state.stats
        return web.json_response(
            {
                "calls": dict(s.calls),
                "violations": dict(s.violations),
                "responses": dict(s.responses),
                "recent_violations": [
                    {
                        "at": v.at,
                        "endpoint": v.endpoint,
                        "code": v.code,
                        "status": v.status,
                        "detail": v.detail,
                    }
                    for v in s.recent
                ],
                "publishes": per_user,
                "faults_injected": dict(state.faults.injected),
                "webhooks": {
                    "sent": len(self.sb.webhooks.deliveries),
                    "delivered": sum(d.delivered for d in self.sb.webhooks.deliveries),
                },
            }
        )

    async def get_faults(self, request: web.Request) -> web.Response:
        """The standing fault configuration, with what is left of each burst."""
        faults = self.sb.state.faults
        return web.json_response({**faults.config.model_dump(), "put_count": faults.put_count})

    async def put_faults(self, request: web.Request) -> web.Response:
        """Replace the fault configuration; `revoke_tokens` acts once, now."""
        req = await _parsed(request, FaultRequest, "invalid faults")
        state = self.sb.state
        unknown = [o for o in req.revoke_tokens if o not in state.users]
        if unknown:
            return _problem(404, f"unknown open_id(s): {unknown}")
        state.faults.set(req.config())
        for open_id in req.revoke_tokens:
            self.sb.revoke(open_id, reason=req.revoke_reason)
        return web.json_response(state.faults.config.model_dump())

    async def webhooks(self, request: web.Request) -> web.Response:
        """Every event the sandbox emitted and its delivery attempts."""
        return web.json_response({"deliveries": [d.to_json() for d in self.sb.webhooks.deliveries]})

    async def reset(self, request: web.Request) -> web.Response:
        """Back to a fresh start (the default user keeps its open_id)."""
        self.sb.state.reset()
        self.sb.webhooks.deliveries.clear()
        return web.json_response({"status": "reset"})
