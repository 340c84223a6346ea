"""OAuth (§1, §2.1): authorize redirect, token (code and refresh grants, rotation), revoke."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import structlog
from aiohttp import web
from multidict import MultiDictProxy

from tiktok_sandbox.core import Sandbox
from tiktok_sandbox.state import KNOWN_SCOPES, AuthCode, new_log_id

log = structlog.get_logger("tiktok_sandbox")


class OAuthError(Exception):
    """A flat OAuth error: `{"error", "error_description", "log_id"}`."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class OAuthApi:
    """The OAuth endpoints; no envelope, flat bodies, `client_key` (never `client_id`)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        self.settings = sandbox.settings

    def routes(self) -> list[web.RouteDef]:
        """OAuth routes at TikTok's paths."""
        return [
            web.get("/v2/auth/authorize/", self.authorize),
            web.post("/v2/oauth/token/", self.token),
            web.post("/v2/oauth/revoke/", self.revoke),
        ]

    def _error(self, endpoint: str, err: OAuthError) -> web.Response:
        self.sb.state.stats.respond(endpoint, self.settings.oauth_error_status, err.error, err.description)
        log.info("oauth_rejected", endpoint=endpoint, error=err.error, detail=err.description)
        return web.json_response(
            {"error": err.error, "error_description": err.description, "log_id": new_log_id()},
            status=self.settings.oauth_error_status,
        )

    # ------------------------------------------------------------ authorize

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        """Stand-in for TikTok's consent page: the chosen sandbox user consents at once.

        `sandbox_user` (open_id or username) picks the user, default SANDBOX_DEFAULT_USERNAME;
        `sandbox_deny=1` plays a user who cancels (error=access_denied).
        """
        state = self.sb.state
        state.stats.call("oauth_authorize")
        q = request.query
        redirect_uri = q.get("redirect_uri", "")
        parts = urlsplit(redirect_uri)
        # Problems with the client or the redirect target cannot be redirected: they are shown.
        if q.get("client_key") != self.settings.client_key:
            return self._page(400, "invalid_client", "client_key is missing or unknown")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return self._page(400, "invalid_request", "redirect_uri must be an absolute URL")
        if self.settings.redirect_uris and redirect_uri not in self.settings.redirect_uris:
            return self._page(400, "invalid_request", "redirect_uri is not registered for this client")
        params: dict[str, str] = {}
        if "state" in q:
            params["state"] = q["state"]
        scopes = [s for s in q.get("scope", "").split(",") if s]
        user = state.find_user(q.get("sandbox_user", "") or self.settings.default_username)
        if q.get("response_type") != "code":
            params.update(error="unsupported_response_type", error_description="response_type must be code")
        elif not scopes or any(s not in KNOWN_SCOPES for s in scopes):
            params.update(error="invalid_scope", error_description="scope is missing or unknown")
        elif user is None:
            return self._page(400, "invalid_request", "sandbox_user is unknown")
        elif q.get("sandbox_deny") == "1":
            params.update(error="access_denied", error_description="The user denied the authorization")
        else:
            challenge = q.get("code_challenge") or None
            if challenge is not None and q.get("code_challenge_method", "S256") != "S256":
                params.update(error="invalid_request", error_description="code_challenge_method must be S256")
            else:
                granted = frozenset(scopes) & user.scopes
                # Real codes end with characters that must be URL-encoded ("*!…"), which catches
                # clients that forget to decode the query string.
                code = secrets.token_urlsafe(32) + "*!" + str(secrets.randbelow(9000) + 1000) + ".va"
                state.codes[code] = AuthCode(
                    code=code,
                    open_id=user.open_id,
                    scopes=granted,
                    redirect_uri=redirect_uri,
                    code_challenge=challenge,
                    expires_at=state.now() + self.settings.auth_code_ttl_seconds,
                )
                params.update(code=code, scopes=",".join(sorted(granted)))
        if "error" in params:
            state.stats.respond("oauth_authorize", 302, params["error"], params.get("error_description", ""))
        query = "&".join(p for p in (parts.query, urlencode(params)) if p)
        location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        raise web.HTTPFound(location)

    def _page(self, status: int, error: str, description: str) -> web.Response:
        self.sb.state.stats.respond("oauth_authorize", status, error, description)
        return web.Response(status=status, text=f"{error}: {description}\n")

    # ------------------------------------------------------------ token

    async def _form(self, request: web.Request) -> MultiDictProxy[Any]:
        if request.content_type != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "Content-Type must be application/x-www-form-urlencoded")
        return await request.post()

    def _check_client(self, form: MultiDictProxy[Any]) -> None:
        key = form.get("client_key")
        if not key:
            if form.get("client_id"):
                raise OAuthError("invalid_request", "client_key is required (TikTok does not read client_id)")
            raise OAuthError("invalid_request", "client_key is required")
        if not hmac.compare_digest(str(key), self.settings.client_key):
            raise OAuthError("invalid_client", "client_key is unknown")
        secret = str(form.get("client_secret", ""))
        if not hmac.compare_digest(secret.encode(), self.settings.client_secret.get_secret_value().encode()):
            raise OAuthError("invalid_client", "client_secret is wrong")

    async def token(self, request: web.Request) -> web.StreamResponse:
        """`POST /v2/oauth/token/`: authorization_code and refresh_token grants."""
        state = self.sb.state
        await state.arrive("oauth_token")
        try:
            if state.faults.take_error("oauth_token"):
                raise OAuthError("server_error", "Injected fault")
            if state.faults.take_rate_limit("oauth_token"):
                raise OAuthError("temporarily_unavailable", "Injected fault")
            form = await self._form(request)
            self._check_client(form)
            grant = form.get("grant_type")
            if not grant:
                raise OAuthError("invalid_request", "grant_type is required")
            state.stats.call(f"oauth_token:{grant}")
            if grant == "authorization_code":
                body = self._grant_code(form)
            elif grant == "refresh_token":
                body = self._grant_refresh(form)
            else:
                raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
        except OAuthError as err:
            return self._error("oauth_token", err)
        state.stats.respond("oauth_token", 200, "ok")
        log.info("tokens_issued", open_id=body["open_id"], grant_type=grant)
        return web.json_response(body)

    def _grant_code(self, form: MultiDictProxy[Any]) -> dict[str, Any]:
        state = self.sb.state
        code = _required(form, "code")
        auth = state.codes.get(code)
        if auth is None or auth.used or state.now() >= auth.expires_at:
            raise OAuthError("invalid_grant", "Authorization code is expired or invalid")
        if form.get("redirect_uri") != auth.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
        if auth.code_challenge is not None and not _pkce_matches(
            _required(form, "code_verifier"), auth.code_challenge
        ):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        auth.used = True
        if auth.open_id not in state.users:
            raise OAuthError("invalid_grant", "The user no longer exists")
        return state.issue_tokens(auth.open_id, auth.scopes)

    def _grant_refresh(self, form: MultiDictProxy[Any]) -> dict[str, Any]:
        state = self.sb.state
        rt = state.refresh_tokens.get(_required(form, "refresh_token"))
        if (
            rt is None
            or rt.used
            or rt.revoked
            or state.now() >= rt.expires_at
            or rt.open_id not in state.users
        ):
            raise OAuthError("invalid_grant", "Refresh token is invalid or expired.")
        rt.used = True  # rotation: this refresh token dies the moment a new one is issued
        return state.issue_tokens(rt.open_id, rt.scopes)

    # ------------------------------------------------------------ revoke

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        """`POST /v2/oauth/revoke/`: kills every token of the user; fires authorization.removed (5)."""
        state = self.sb.state
        state.stats.call("oauth_revoke")
        try:
            if state.faults.take_error("oauth_revoke"):
                raise OAuthError("server_error", "Injected fault")
            form = await self._form(request)
            self._check_client(form)
            token = str(form.get("token", ""))
            if not token:
                raise OAuthError("invalid_request", "token is required")
            at = state.access_tokens.get(token)
            if at is None or at.revoked:
                raise OAuthError("invalid_request", "token is invalid")
        except OAuthError as err:
            return self._error("oauth_revoke", err)
        self.sb.revoke(at.open_id, reason=5)
        state.stats.respond("oauth_revoke", 200, "ok")
        log.info("tokens_revoked", open_id=at.open_id)
        return web.json_response({})


def _required(form: MultiDictProxy[Any], name: str) -> str:
    """The form field `name`, or invalid_request when it is missing or empty."""
    value = str(form.get(name, ""))
    if not value:
        raise OAuthError("invalid_request", f"{name} is required")
    return value


def _pkce_matches(verifier: str, challenge: str) -> bool:
    """S256; TikTok's desktop docs describe a hex digest, RFC 7636 base64url; both are accepted."""
    digest = hashlib.sha256(verifier.encode()).digest()
    b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return hmac.compare_digest(b64, challenge) or hmac.compare_digest(digest.hex(), challenge.lower())
