"""OAuth (§2.1): authorize redirect, code exchange with PKCE, rotation, expiry, revoke, flat errors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

from tests.browser import consent, forms_of
from tests.integration.sandbox.sandbox_support import FAST, Api, code

CLIENT = {"client_key": "dev-client-key", "client_secret": "dev-client-secret"}
REDIRECT = "https://reelay.example/v1/accounts/oauth/callback"


async def _authorize(http: httpx.AsyncClient, **params: str) -> dict[str, list[str]]:
    query = {
        "client_key": "dev-client-key",
        "response_type": "code",
        "scope": "user.info.basic,video.publish,video.upload",
        "redirect_uri": REDIRECT,
        "state": "st-123",
        "sandbox_consent": "auto",
        **params,
    }
    resp = await http.get("/v2/auth/authorize/", params=query, follow_redirects=False)
    assert resp.status_code == 302, resp.text
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return parse_qs(urlsplit(location).query)


async def _token(http: httpx.AsyncClient, **form: str) -> httpx.Response:
    return await http.post("/v2/oauth/token/", data={**CLIENT, **form})


async def _code_grant(http: httpx.AsyncClient, **authorize: str) -> dict[str, Any]:
    q = await _authorize(http, **authorize)
    resp = await _token(http, grant_type="authorization_code", code=q["code"][0], redirect_uri=REDIRECT)
    body: dict[str, Any] = resp.json()
    return body


class TestAuthorize:
    async def test_redirects_back_with_code_scopes_and_state(self, http: httpx.AsyncClient) -> None:
        q = await _authorize(http)
        assert q["state"] == ["st-123"]
        assert q["scopes"] == ["user.info.basic,video.publish,video.upload"]
        assert "*!" in q["code"][0]  # decoded by parse_qs: it arrives percent-encoded

    async def test_picks_the_sandbox_user_by_query_param(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        other = sandbox.add_user("second")
        tokens = await _code_grant(http, sandbox_user="second")
        assert tokens["open_id"] == other.open_id

    async def test_user_denial_and_bad_scope_come_back_as_errors(self, http: httpx.AsyncClient) -> None:
        assert (await _authorize(http, sandbox_deny="1"))["error"] == ["access_denied"]
        assert (await _authorize(http, scope="video.everything"))["error"] == ["invalid_scope"]
        assert (await _authorize(http, response_type="token"))["error"] == ["unsupported_response_type"]

    async def test_unknown_client_is_not_redirected(self, http: httpx.AsyncClient) -> None:
        resp = await http.get(
            "/v2/auth/authorize/",
            params={
                "client_key": "other",
                "response_type": "code",
                "scope": "video.publish",
                "redirect_uri": REDIRECT,
            },
        )
        assert resp.status_code == 400

    async def test_unregistered_redirect_uri_is_not_redirected(self) -> None:
        async with (
            running_sandbox(**FAST, redirect_uris=["https://ok.example/cb"]) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            resp = await http.get(
                "/v2/auth/authorize/",
                params={
                    "client_key": "dev-client-key",
                    "response_type": "code",
                    "scope": "video.publish",
                    "redirect_uri": REDIRECT,
                },
            )
            assert resp.status_code == 400


class TestToken:
    async def test_code_exchange_returns_flat_tokens(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        body = await _code_grant(http)
        assert set(body) == {
            "access_token",
            "expires_in",
            "open_id",
            "refresh_token",
            "refresh_expires_in",
            "scope",
            "token_type",
        }
        assert body["access_token"].startswith("act.")
        assert body["open_id"] == sandbox.default_user.open_id
        assert body["expires_in"] == 7200
        assert body["token_type"] == "Bearer"
        assert (await Api(http, body["access_token"]).creator_info()).status_code == 200

    async def test_granted_scopes_may_be_a_subset(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        sandbox.add_user("narrow", scopes=["user.info.basic", "video.upload"])
        body = await _code_grant(http, sandbox_user="narrow")
        assert body["scope"] == "user.info.basic,video.upload"
        resp = await Api(http, body["access_token"]).creator_info()
        assert code(resp) == "scope_not_authorized"

    async def test_pkce_verifier_must_match(self, http: httpx.AsyncClient) -> None:
        verifier = "v" * 64
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        q = await _authorize(http, code_challenge=challenge, code_challenge_method="S256")
        wrong = await _token(
            http,
            grant_type="authorization_code",
            code=q["code"][0],
            redirect_uri=REDIRECT,
            code_verifier="x" * 64,
        )
        assert wrong.json()["error"] == "invalid_grant"
        q = await _authorize(http, code_challenge=challenge, code_challenge_method="S256")
        right = await _token(
            http,
            grant_type="authorization_code",
            code=q["code"][0],
            redirect_uri=REDIRECT,
            code_verifier=verifier,
        )
        assert right.json()["access_token"]

    @pytest.mark.parametrize(
        ("form", "error"),
        [
            ({"grant_type": "authorization_code", "code": "nope", "redirect_uri": REDIRECT}, "invalid_grant"),
            ({"grant_type": "authorization_code", "redirect_uri": REDIRECT}, "invalid_request"),
            ({"grant_type": "refresh_token", "refresh_token": "rft.nope"}, "invalid_grant"),
            ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
            (
                {"grant_type": "refresh_token", "refresh_token": "x", "client_secret": "wrong"},
                "invalid_client",
            ),
            ({"grant_type": "refresh_token", "refresh_token": "x", "client_key": "other"}, "invalid_client"),
        ],
        ids=[
            "unknown_code",
            "missing_code",
            "unknown_refresh",
            "unsupported_grant",
            "wrong_secret",
            "wrong_key",
        ],
    )
    async def test_flat_errors(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient, form: dict[str, str], error: str
    ) -> None:
        resp = await _token(http, **form)
        body = resp.json()
        assert body["error"] == error
        assert body["error_description"]
        assert body["log_id"]
        assert "data" not in body  # no envelope on OAuth
        assert resp.status_code == 200  # SANDBOX_OAUTH_ERROR_STATUS: invalid_grant was seen with 200
        assert sandbox.state.access_tokens == {}  # nothing was issued

    async def test_client_id_instead_of_client_key_is_refused(self, http: httpx.AsyncClient) -> None:
        form = {
            "client_id": "dev-client-key",
            "client_secret": "dev-client-secret",
            "grant_type": "refresh_token",
            "refresh_token": "x",
        }
        body = (await http.post("/v2/oauth/token/", data=form)).json()
        assert body["error"] == "invalid_request"
        assert "client_key" in body["error_description"]

    async def test_json_body_is_refused(self, http: httpx.AsyncClient) -> None:
        resp = await http.post(
            "/v2/oauth/token/", json={**CLIENT, "grant_type": "refresh_token", "refresh_token": "x"}
        )
        assert resp.json()["error"] == "invalid_request"

    async def test_code_is_single_use_and_bound_to_redirect_uri(self, http: httpx.AsyncClient) -> None:
        q = await _authorize(http)
        other_redirect = await _token(
            http, grant_type="authorization_code", code=q["code"][0], redirect_uri=REDIRECT + "/x"
        )
        assert other_redirect.json()["error"] == "invalid_grant"
        first = await _token(http, grant_type="authorization_code", code=q["code"][0], redirect_uri=REDIRECT)
        assert "access_token" in first.json()
        again = await _token(http, grant_type="authorization_code", code=q["code"][0], redirect_uri=REDIRECT)
        assert again.json()["error"] == "invalid_grant"

    async def test_oauth_error_status_is_configurable(self) -> None:
        async with (
            running_sandbox(**FAST, oauth_error_status=400) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            resp = await _token(http, grant_type="refresh_token", refresh_token="rft.nope")
            assert resp.status_code == 400


class TestRefreshRotation:
    async def test_each_refresh_rotates_and_the_old_token_dies(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        first = await _code_grant(http)
        second = (await _token(http, grant_type="refresh_token", refresh_token=first["refresh_token"])).json()
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]
        assert second["open_id"] == first["open_id"]
        stale = await _token(http, grant_type="refresh_token", refresh_token=first["refresh_token"])
        assert stale.json()["error"] == "invalid_grant"
        third = await _token(http, grant_type="refresh_token", refresh_token=second["refresh_token"])
        assert "access_token" in third.json()
        stats = (await http.get("/sandbox/stats")).json()
        assert stats["calls"]["oauth_token:refresh_token"] == 3
        assert stats["violations"]["invalid_grant"] == 1

    async def test_concurrent_refreshes_let_exactly_one_win(self, http: httpx.AsyncClient) -> None:
        tokens = await _code_grant(http)
        results = await asyncio.gather(
            *(
                _token(http, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
                for _ in range(5)
            )
        )
        outcomes = sorted("access_token" in r.json() for r in results)
        assert outcomes == [False, False, False, False, True]

    async def test_access_token_expires_after_its_ttl(self) -> None:
        async with (
            running_sandbox(**FAST, access_token_ttl_seconds=0.3) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            api = Api(http, sb.issue_tokens(sb.default_user.open_id)["access_token"])
            assert (await api.creator_info()).status_code == 200
            await asyncio.sleep(0.4)  # the TTL itself is what is under test
            resp = await api.creator_info()
            assert (resp.status_code, code(resp)) == (401, "access_token_invalid")

    async def test_refresh_token_expires_after_its_ttl(self) -> None:
        async with (
            running_sandbox(**FAST, refresh_token_ttl_seconds=0.3) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            tokens = sb.issue_tokens(sb.default_user.open_id)
            await asyncio.sleep(0.4)  # the TTL itself is what is under test
            resp = await _token(http, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
            assert resp.json()["error"] == "invalid_grant"


class TestRevoke:
    async def test_revoke_kills_access_and_refresh_tokens(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        tokens = await _code_grant(http)
        resp = await http.post("/v2/oauth/revoke/", data={**CLIENT, "token": tokens["access_token"]})
        assert resp.json() == {}
        denied = await Api(http, tokens["access_token"]).creator_info()
        assert (denied.status_code, code(denied)) == (401, "access_token_invalid")
        refresh = await _token(http, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert refresh.json()["error"] == "invalid_grant"

    async def test_revoke_of_an_unknown_token_is_refused(self, http: httpx.AsyncClient) -> None:
        resp = await http.post("/v2/oauth/revoke/", data={**CLIENT, "token": "act.nope"})
        assert resp.json()["error"] == "invalid_request"


def _authorize_url(sandbox: SandboxHandle, **params: str) -> str:
    query = {
        "client_key": "dev-client-key",
        "response_type": "code",
        "scope": "user.info.basic,video.publish,video.upload",
        "redirect_uri": REDIRECT,
        "state": "st-page",
        **params,
    }
    return f"{sandbox.base_url}/v2/auth/authorize/?{urlencode(query)}"


class TestConsentPage:
    """The authorize step a person (or a test driving it like a browser) goes through."""

    async def test_shows_a_form_with_the_creators_the_scopes_and_approve_or_deny(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        sandbox.add_user("pagecreator")
        page = await http.get(_authorize_url(sandbox))

        assert page.status_code == 200
        assert page.headers["Content-Type"].startswith("text/html")
        [form] = forms_of(page.text)
        assert (form.method, form.action) == ("post", "/v2/auth/authorize/")
        assert dict(form.hidden)["state"] == "st-page"
        assert {text.split(" ")[0] for _, text, _ in form.selects["sandbox_user"]} >= {"demo", "pagecreator"}
        assert [v for _, v, checked in form.checkboxes if checked] == [
            "user.info.basic",
            "video.publish",
            "video.upload",
        ]
        assert set(form.buttons) == {("decision", "approve"), ("decision", "deny")}

    async def test_approve_redirects_with_a_code_for_the_chosen_creator_and_ticked_scopes(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        chosen = sandbox.add_user("chosen")
        redirect = await consent(
            http, _authorize_url(sandbox), creator="chosen", grant={"video.publish"}, follow=False
        )

        assert redirect.status_code == 302
        q = parse_qs(urlsplit(redirect.headers["Location"]).query)
        assert (q["state"], q["scopes"]) == (["st-page"], ["video.publish"])
        tokens = (
            await _token(http, grant_type="authorization_code", code=q["code"][0], redirect_uri=REDIRECT)
        ).json()
        assert (tokens["open_id"], tokens["scope"]) == (chosen.open_id, "video.publish")

    async def test_deny_redirects_with_access_denied_and_the_state(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        redirect = await consent(http, _authorize_url(sandbox), decision="deny", follow=False)

        q = parse_qs(urlsplit(redirect.headers["Location"]).query)
        assert (q["error"], q["state"]) == (["access_denied"], ["st-page"])
        assert "code" not in q

    async def test_the_form_is_checked_again_like_the_page(
        self, sandbox: SandboxHandle, http: httpx.AsyncClient
    ) -> None:
        base = {
            "client_key": "dev-client-key",
            "response_type": "code",
            "scope": "video.publish",
            "redirect_uri": REDIRECT,
            "sandbox_user": sandbox.default_user.open_id,
            "decision": "approve",
        }
        posted = [
            {**base, "client_key": "other", "granted_scope": "video.publish"},
            {**base, "granted_scope": "video.upload"},  # not asked for
            {**base},  # nothing ticked
            {**base, "decision": "maybe", "granted_scope": "video.publish"},
            {**base, "sandbox_user": "nobody", "granted_scope": "video.publish"},
        ]
        for form in posted:
            resp = await http.post("/v2/auth/authorize/", data=form, follow_redirects=False)
            assert resp.status_code == 400, form
        assert not sandbox.state.codes, "no code was handed out"

    async def test_a_code_dies_after_its_lifetime(self) -> None:
        async with (
            running_sandbox(**FAST, auth_code_ttl_seconds=0.3) as sb,
            httpx.AsyncClient(base_url=sb.base_url) as http,
        ):
            redirect = await consent(http, _authorize_url(sb), follow=False)
            code_ = parse_qs(urlsplit(redirect.headers["Location"]).query)["code"][0]
            await asyncio.sleep(0.4)  # the lifetime itself is what is under test
            resp = await _token(http, grant_type="authorization_code", code=code_, redirect_uri=REDIRECT)
            assert resp.json()["error"] == "invalid_grant"
