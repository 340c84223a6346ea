"""OAuth (§1, §2.1-2.2): the authorize (consent) page, token (code and refresh grants, rotation), revoke."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import structlog
from aiohttp import web
from multidict import MultiDictProxy

from tiktok_sandbox.core import Sandbox
from tiktok_sandbox.state import KNOWN_SCOPES, AuthCode, User, new_log_id

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
            web.post("/v2/auth/authorize/", self.consent),
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
        """`GET /v2/auth/authorize/`: TikTok's consent page, for a sandbox creator of your choice.

        The request is checked as TikTok does (client_key, a registered absolute redirect_uri: shown
        as an error page; response_type, scopes, PKCE method: redirected back as an `error`). The
        page then offers the sandbox creators and the scopes asked for, and Approve / Deny as a form
        POST to this path. Shortcuts for tests, consenting at once: `sandbox_user` (open_id or
        username), `sandbox_deny=1` (the user cancels), `sandbox_consent=auto` (the default user).
        """
        state = self.sb.state
        state.stats.call("oauth_authorize")
        q = request.query
        checked = self._check_authorize(q)
        if isinstance(checked, web.StreamResponse):
            return checked
        if not any(k in q for k in ("sandbox_user", "sandbox_deny")) and q.get("sandbox_consent") != "auto":
            return self._consent_page(q, checked)
        user = state.find_user(q.get("sandbox_user", "") or self.settings.default_username)
        if user is None:
            return self._page(400, "invalid_request", "sandbox_user is unknown")
        if q.get("sandbox_deny") == "1":
            return self._redirect(q, access_denied())
        return self._redirect(q, self._issue_code(q, user, checked))

    async def consent(self, request: web.Request) -> web.StreamResponse:
        """`POST /v2/auth/authorize/`: the consent page's Approve or Deny (form fields: the
        authorize parameters again, `sandbox_user`, the `granted_scope`s ticked, `decision`)."""
        state = self.sb.state
        state.stats.call("oauth_consent")
        if request.content_type != "application/x-www-form-urlencoded":
            return self._page(400, "invalid_request", "the consent form is form-encoded")
        form = await request.post()
        q = {k: str(v) for k, v in form.items() if k != "granted_scope"}
        checked = self._check_authorize(q)
        if isinstance(checked, web.StreamResponse):
            return checked
        decision = q.get("decision")
        if decision == "deny":
            return self._redirect(q, access_denied())
        if decision != "approve":
            return self._page(400, "invalid_request", "decision must be approve or deny")
        user = state.find_user(q.get("sandbox_user", ""))
        if user is None:
            return self._page(400, "invalid_request", "sandbox_user is unknown")
        ticked = {str(v) for v in form.getall("granted_scope", [])}
        if not ticked:
            return self._page(400, "invalid_request", "tick at least one scope, or deny")
        if not ticked <= set(checked):
            return self._page(400, "invalid_request", "granted_scope must be among the scopes asked for")
        return self._redirect(q, self._issue_code(q, user, [s for s in checked if s in ticked]))

    def _check_authorize(self, q: Mapping[str, str]) -> list[str] | web.StreamResponse:
        """The scopes asked for; or the error page / error redirect TikTok answers instead."""
        redirect_uri = q.get("redirect_uri", "")
        parts = urlsplit(redirect_uri)
        # Problems with the client or the redirect target cannot be redirected: they are shown.
        if q.get("client_key") != self.settings.client_key:
            return self._page(400, "invalid_client", "client_key is missing or unknown")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return self._page(400, "invalid_request", "redirect_uri must be an absolute URL")
        if self.settings.redirect_uris and redirect_uri not in self.settings.redirect_uris:
            return self._page(400, "invalid_request", "redirect_uri is not registered for this client")
        scopes = [s for s in q.get("scope", "").split(",") if s]
        if q.get("response_type") != "code":
            return self._redirect(
                q, {"error": "unsupported_response_type", "error_description": "response_type must be code"}
            )
        if not scopes or any(s not in KNOWN_SCOPES for s in scopes):
            return self._redirect(
                q, {"error": "invalid_scope", "error_description": "scope is missing or unknown"}
            )
        if q.get("code_challenge") and q.get("code_challenge_method", "S256") != "S256":
            return self._redirect(
                q, {"error": "invalid_request", "error_description": "code_challenge_method must be S256"}
            )
        return scopes

    def _issue_code(self, q: Mapping[str, str], user: User, scopes: list[str]) -> dict[str, str]:
        state = self.sb.state
        granted = frozenset(scopes) & user.scopes
        # Real codes end with characters that must be URL-encoded ("*!…"), which catches
        # clients that forget to decode the query string.
        code = secrets.token_urlsafe(32) + "*!" + str(secrets.randbelow(9000) + 1000) + ".va"
        state.codes[code] = AuthCode(
            code=code,
            open_id=user.open_id,
            scopes=granted,
            redirect_uri=q.get("redirect_uri", ""),
            code_challenge=q.get("code_challenge") or None,
            expires_at=state.now() + self.settings.auth_code_ttl_seconds,
        )
        log.info("authorization_granted", open_id=user.open_id, scopes=sorted(granted))
        return {"code": code, "scopes": ",".join(sorted(granted))}

    def _redirect(self, q: Mapping[str, str], params: dict[str, str]) -> web.StreamResponse:
        """Back to the redirect_uri with `params` and the client's `state`, unchanged."""
        if "error" in params:
            self.sb.state.stats.respond(
                "oauth_authorize", 302, params["error"], params.get("error_description", "")
            )
        if "state" in q:
            params = {**params, "state": q["state"]}
        parts = urlsplit(q.get("redirect_uri", ""))
        query = "&".join(p for p in (parts.query, urlencode(params)) if p)
        location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        raise web.HTTPFound(location)

    def _consent_page(self, q: Mapping[str, str], scopes: list[str]) -> web.Response:
        """The consent page: which creator consents, which scopes, Approve or Deny."""
        state = self.sb.state
        default = state.find_user(self.settings.default_username)
        hidden = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
            for k, v in q.items()
            if k in _AUTHORIZE_PARAMS
        )
        users = "".join(
            f'<option value="{escape(u.open_id)}"{" selected" if u is default else ""}>'
            f"{escape(u.username)} ({escape(u.nickname)})</option>"
            for u in state.users.values()
        )
        boxes = "".join(
            f'<label><input type="checkbox" name="granted_scope" value="{escape(s)}" checked> '
            f"{escape(s)}</label><br>"
            for s in scopes
        )
        body = (
            "<!doctype html><html><head><meta charset='utf-8'><title>TikTok sandbox: authorize</title>"
            "</head><body><h1>Authorize this app</h1>"
            f"<p>App <code>{escape(self.settings.client_key)}</code> asks to act for a TikTok creator.</p>"
            '<form method="post" action="/v2/auth/authorize/">'
            f'{hidden}<p><label>Creator <select name="sandbox_user">{users}</select></label></p>'
            f"<fieldset><legend>Scopes</legend>{boxes}</fieldset>"
            '<button type="submit" name="decision" value="approve">Approve</button> '
            '<button type="submit" name="decision" value="deny">Deny</button>'
            "</form></body></html>"
        )
        return web.Response(text=body, content_type="text/html")

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


# The authorize parameters the consent form carries back.
_AUTHORIZE_PARAMS = frozenset(
    {
        "client_key",
        "scope",
        "response_type",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
    }
)


def access_denied() -> dict[str, str]:
    """The redirect parameters of a user who declines."""
    return {"error": "access_denied", "error_description": "The user denied the authorization"}


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
