"""Specification of connecting, keeping and losing an account
(docs/architecture.md, "The account lifecycle"): ingest on real Kafka and FerretDB, TikTok's
OAuth played by the sandbox, the browser by httpx (tests.browser). Two tenants come from a
stand-in for the API key check (tenancy's own keys replace it), bound through the app's
dependency overrides."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from reelay_ingest import main as ingest_main
from reelay_ingest.problems import Unauthorized
from reelay_ingest.tenancy import Tenant, current_tenant
from tiktok_sandbox.webhooks import event_body, signature_header

from tests.browser import consent
from tests.integration.ingest.ingest_world import API_KEY, IngestWorld, ingest_world

KEY_A, KEY_B = "tenant-a-key", "tenant-b-key"
TENANT_OF_KEY = {API_KEY: "default", KEY_A: "tenant-a", KEY_B: "tenant-b"}
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
JSON = {"Accept": "application/json"}
ALL_SCOPES = ["user.info.basic", "video.publish", "video.upload"]
_bearer = HTTPBearer(auto_error=False)


async def _tenant_of_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Tenant:
    """The stand-in key check: three keys, three tenants."""
    if credentials is None or credentials.credentials not in TENANT_OF_KEY:
        raise Unauthorized("the API key is not valid")
    return Tenant(TENANT_OF_KEY[credentials.credentials])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def module_world(
    kafka_bootstrap_servers: str, mongodb_uri: str, mongo_client: AsyncMongoClient[dict[str, Any]]
) -> AsyncIterator[IngestWorld]:
    """Ingest with OAuth configured (its callback as redirect_uri) and two tenants, for the module
    (starting one costs seconds); `world` empties what the tests count before each."""
    real_create_app: Callable[..., FastAPI] = ingest_main.create_app

    def create_app(*args: Any, **kwargs: Any) -> FastAPI:
        app = real_create_app(*args, **kwargs)
        app.dependency_overrides[current_tenant] = _tenant_of_key
        return app

    name = f"reelay_test_{uuid.uuid4().hex[:12]}"
    port = _free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest_main, "create_app", create_app)
        try:
            async with ingest_world(
                kafka_bootstrap_servers,
                mongodb_uri,
                mongo_client[name],
                port=port,
                oauth_redirect_uri=f"http://127.0.0.1:{port}/v1/oauth/callback",
                allow_private_urls=True,
            ) as w:
                yield w
        finally:
            await mongo_client.drop_database(name)


@pytest.fixture
async def world(module_world: IngestWorld) -> IngestWorld:
    for name in ("accounts", "oauth_states", "creator_info"):
        await module_world.db[name].delete_many({})
    module_world.sandbox.set_faults()
    return module_world


async def _start(world: IngestWorld, account_id: str, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = await world.http.post(f"/v1/accounts/{account_id}/connect", headers=headers, json=body or None)
    assert resp.status_code == 200, resp.text
    started: dict[str, Any] = resp.json()
    return started


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def _captured_redirect(world: IngestWorld, authorize_url: str, **kwargs: Any) -> dict[str, str]:
    """Approve (or deny) at the sandbox and capture TikTok's redirect instead of following it."""
    redirect = await consent(world.http, authorize_url, follow=False, **kwargs)
    assert redirect.status_code == 302, redirect.text
    return _query(redirect.headers["Location"])


async def _connected(world: IngestWorld, account_id: str, headers: dict[str, str], **kwargs: Any) -> str:
    """Connect `account_id` through the whole browser round trip; the creator's open_id."""
    username = f"c{time.monotonic_ns() % 10**9}"
    user = world.sandbox.add_user(username)
    started = await _start(world, account_id, headers)
    page = await consent(world.http, started["authorize_url"], creator=username, **kwargs)
    assert page.status_code == 200, page.text
    return user.open_id


async def _nothing_stored(world: IngestWorld) -> None:
    assert await world.db["accounts"].count_documents({}) == 0


async def _state_refused(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 400, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == "oauth_state_invalid"
    return error


class TestConnect:
    async def test_the_authorize_url_is_tiktoks_with_a_single_use_state_stored_hashed(
        self, world: IngestWorld
    ) -> None:
        started = await _start(world, "acct-1", A, scopes=["video.publish", "user.info.basic"])

        url = urlsplit(started["authorize_url"])
        assert f"{url.scheme}://{url.netloc}" == world.sandbox.base_url, "the sandbox serves TikTok's page"
        assert url.path == "/v2/auth/authorize/"
        q = _query(started["authorize_url"])
        assert q["client_key"] == world.settings.tiktok_client_key
        assert q["scope"] == "video.publish,user.info.basic"
        assert q["response_type"] == "code"
        assert q["redirect_uri"] == f"{world.base_url}/v1/oauth/callback"
        assert "code_challenge" not in q, "a web client uses the state alone"
        assert len(q["state"]) >= 43
        [doc] = await world.db["oauth_states"].find().to_list(None)
        assert doc["tenant_id"] == "tenant-a"
        assert doc["account_id"] == "acct-1"
        assert q["state"] not in str(doc), "only the state's hash is stored"
        again = await _start(world, "acct-1", A)
        assert _query(again["authorize_url"])["state"] != q["state"]
        assert _query(again["authorize_url"])["scope"] == ",".join(ALL_SCOPES), "the configured default"

    async def test_the_browser_round_trip_connects_the_tenants_account(self, world: IngestWorld) -> None:
        open_id = await _connected(world, "acct-1", A)

        resp = await world.http.get("/v1/accounts/acct-1", headers=A)
        assert resp.status_code == 200, resp.text
        view = resp.json()
        assert view["status"] == "connected"
        assert view["open_id"] == open_id
        assert view["scopes"] == ALL_SCOPES
        assert view["missing_scopes"] == []
        assert view["access_expires_at"]
        assert view["refresh_expires_at"]
        assert view["creator_info"]["can_post"] is True
        assert "SELF_ONLY" in view["creator_info"]["privacy_level_options"]
        assert view["creator_info"]["max_video_post_duration_sec"] > 0
        [doc] = await world.db["accounts"].find().to_list(None)
        assert doc["_id"] == "tenant-a~acct-1", "stored under the tenant's key"
        [token] = [t for t in world.sandbox.state.access_tokens.values() if t.open_id == open_id]
        assert token.token not in str(doc), "the tokens are stored encrypted"
        assert await world.db["oauth_states"].count_documents({}) == 0, "the state was used up"

    async def test_the_callback_answers_json_when_asked(self, world: IngestWorld) -> None:
        world.sandbox.add_user("jsonuser")
        started = await _start(world, "acct-j", A)
        q = await _captured_redirect(world, started["authorize_url"], creator="jsonuser")

        resp = await world.http.get("/v1/oauth/callback", params=q, headers=JSON)

        assert resp.status_code == 200, resp.text
        assert resp.json()["account_id"] == "acct-j"
        assert resp.json()["status"] == "connected"

    async def test_a_subset_granted_says_which_scopes_are_missing(self, world: IngestWorld) -> None:
        await _connected(world, "acct-2", world.auth, grant={"user.info.basic", "video.publish"})

        view = (await world.http.get("/v1/accounts/acct-2", headers=world.auth)).json()
        assert view["scopes"] == ["user.info.basic", "video.publish"]
        assert view["missing_scopes"] == ["video.upload"]
        inbox = await world.http.post(
            "/v1/uploads",
            headers=world.auth,
            json={"account_id": "acct-2", "mode": "inbox", "video_url": "https://cdn.example.com/v.mp4"},
        )
        assert inbox.status_code == 422
        assert inbox.json()["error"]["code"] == "missing_scope"

    async def test_a_client_that_captures_the_redirect_completes_with_its_key(
        self, world: IngestWorld
    ) -> None:
        world.sandbox.add_user("capturer")
        started = await _start(world, "acct-3", A)
        q = await _captured_redirect(world, started["authorize_url"], creator="capturer")

        resp = await world.http.post(
            "/v1/accounts/acct-3/connect/complete", headers=A, json={"code": q["code"], "state": q["state"]}
        )

        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "connected"
        assert resp.json()["creator_info"]["creator_username"] == "capturer"

    async def test_pkce_for_a_desktop_client(
        self,
        kafka_bootstrap_servers: str,
        mongodb_uri: str,
        mongo_db: AsyncDatabase[dict[str, Any]],
    ) -> None:
        port = _free_port()
        async with ingest_world(
            kafka_bootstrap_servers,
            mongodb_uri,
            mongo_db,
            port=port,
            oauth_redirect_uri=f"http://127.0.0.1:{port}/v1/oauth/callback",
            oauth_client_type="desktop",
        ) as w:
            started = await _start(w, "acct-d", w.auth)
            q = _query(started["authorize_url"])
            assert q["code_challenge_method"] == "S256"
            [doc] = await w.db["oauth_states"].find().to_list(None)
            assert doc["code_verifier_enc"], "the verifier is kept, encrypted"
            page = await consent(w.http, started["authorize_url"])
            assert page.status_code == 200, page.text
            assert (await w.http.get("/v1/accounts/acct-d", headers=w.auth)).json()["status"] == "connected"


class TestBadCallbacks:
    """Each ends on a clear page or JSON error with a code, and stores nothing."""

    async def test_a_forged_state(self, world: IngestWorld) -> None:
        await _start(world, "acct-1", A)

        page = await world.http.get("/v1/oauth/callback", params={"state": "forged", "code": "x"})
        assert page.status_code == 400
        assert "oauth_state_invalid" in page.text
        assert page.headers["content-type"].startswith("text/html")
        await _state_refused(
            await world.http.get("/v1/oauth/callback", params={"state": "forged", "code": "x"}, headers=JSON)
        )
        await _state_refused(await world.http.get("/v1/oauth/callback", params={"code": "x"}, headers=JSON))
        await _nothing_stored(world)
        assert await world.db["oauth_states"].count_documents({}) == 1, "the real state is untouched"

    async def test_a_replayed_state(self, world: IngestWorld) -> None:
        world.sandbox.add_user("replayed")
        started = await _start(world, "acct-1", A)
        q = await _captured_redirect(world, started["authorize_url"], creator="replayed")
        first = await world.http.get("/v1/oauth/callback", params=q, headers=JSON)
        assert first.status_code == 200, first.text
        before = await world.db["accounts"].find_one({})

        await _state_refused(await world.http.get("/v1/oauth/callback", params=q, headers=JSON))

        assert await world.db["accounts"].find_one({}) == before, "the replay changed nothing"

    async def test_an_expired_state(self, world: IngestWorld) -> None:
        world.sandbox.add_user("late")
        started = await _start(world, "acct-1", A)
        q = await _captured_redirect(world, started["authorize_url"], creator="late")
        await world.db["oauth_states"].update_many({}, {"$set": {"expires_at": _past()}})

        await _state_refused(await world.http.get("/v1/oauth/callback", params=q, headers=JSON))

        await _nothing_stored(world)
        assert await world.db["oauth_states"].count_documents({}) == 0

    async def test_another_tenants_or_accounts_state_answers_as_a_forged_one(
        self, world: IngestWorld
    ) -> None:
        world.sandbox.add_user("owner")
        started = await _start(world, "acct-1", A)
        q = await _captured_redirect(world, started["authorize_url"], creator="owner")
        body = {"code": q["code"], "state": q["state"]}

        other_tenant = await world.http.post("/v1/accounts/acct-1/connect/complete", headers=B, json=body)
        other_account = await world.http.post("/v1/accounts/acct-9/connect/complete", headers=A, json=body)
        forged = await world.http.post(
            "/v1/accounts/acct-1/connect/complete", headers=A, json={**body, "state": "forged"}
        )

        for resp in (other_tenant, other_account):
            assert (await _state_refused(resp)) == (await _state_refused(forged))
        await _nothing_stored(world)
        mine = await world.http.post("/v1/accounts/acct-1/connect/complete", headers=A, json=body)
        assert mine.status_code == 200, "the state was left for its owner"

    async def test_a_denied_consent(self, world: IngestWorld) -> None:
        started = await _start(world, "acct-1", A)

        page = await consent(world.http, started["authorize_url"], decision="deny")

        assert page.status_code == 400
        assert "oauth_access_denied" in page.text
        await _nothing_stored(world)
        assert await world.db["oauth_states"].count_documents({}) == 0, "a denial uses the state up"

    async def test_a_code_tiktok_refuses(self, world: IngestWorld) -> None:
        started = await _start(world, "acct-1", A)
        state = _query(started["authorize_url"])["state"]

        resp = await world.http.get(
            "/v1/oauth/callback", params={"state": state, "code": "not-a-code"}, headers=JSON
        )

        assert resp.status_code == 400
        error = resp.json()["error"]
        assert error["code"] == "oauth_exchange_failed"
        assert error["detail"]["tiktok_error"] == "invalid_grant"
        await _nothing_stored(world)

    async def test_a_used_code_is_refused_by_tiktok(self, world: IngestWorld) -> None:
        world.sandbox.add_user("twice")
        first = await _start(world, "acct-1", A)
        q = await _captured_redirect(world, first["authorize_url"], creator="twice")
        assert (await world.http.get("/v1/oauth/callback", params=q, headers=JSON)).status_code == 200
        second = _query((await _start(world, "acct-2", A))["authorize_url"])["state"]

        resp = await world.http.get(
            "/v1/oauth/callback", params={"state": second, "code": q["code"]}, headers=JSON
        )

        assert resp.json()["error"]["code"] == "oauth_exchange_failed"
        assert await world.db["accounts"].count_documents({}) == 1


class TestTenants:
    async def test_another_tenants_account_answers_as_an_unknown_one(self, world: IngestWorld) -> None:
        await _connected(world, "acct-1", A)

        for method, path in (("GET", "/v1/accounts/acct-1"), ("DELETE", "/v1/accounts/acct-1")):
            theirs = await world.http.request(method, path, headers=B)
            unknown = await world.http.request(method, path.replace("acct-1", "acct-none"), headers=B)
            assert theirs.status_code == unknown.status_code == 404
            assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "unknown_account"
        listing = (await world.http.get("/v1/accounts", headers=B)).json()
        assert listing == {"items": [], "count": 0}
        assert [
            a["account_id"] for a in (await world.http.get("/v1/accounts", headers=A)).json()["items"]
        ] == ["acct-1"]
        assert (await world.http.get("/v1/accounts/acct-1", headers=A)).json()["status"] == "connected"

    async def test_connecting_the_same_id_in_another_tenant_makes_that_tenants_own(
        self, world: IngestWorld
    ) -> None:
        open_a = await _connected(world, "acct-1", A)
        open_b = await _connected(world, "acct-1", B)

        a = (await world.http.get("/v1/accounts/acct-1", headers=A)).json()
        b = (await world.http.get("/v1/accounts/acct-1", headers=B)).json()
        assert (a["open_id"], b["open_id"]) == (open_a, open_b)
        keys = sorted(d["_id"] for d in await world.db["accounts"].find().to_list(None))
        assert keys == ["tenant-a~acct-1", "tenant-b~acct-1"]


class TestDisconnect:
    async def test_delete_revokes_forgets_the_tokens_and_fails_what_tiktok_has_not(
        self, world: IngestWorld
    ) -> None:
        open_id = await _connected(world, "acct-1", world.auth)
        waiting = await _upload(world, "acct-1")
        resp = await world.http.delete("/v1/accounts/acct-1", headers=world.auth)

        assert resp.status_code == 200, resp.text
        view = resp.json()
        assert view["status"] == "disconnected"
        assert view["revoked"] is True
        assert view["failed_uploads"] == [waiting]
        assert all(t.revoked for t in world.sandbox.state.access_tokens.values() if t.open_id == open_id)
        doc = await world.db["accounts"].find_one({"_id": "acct-1"})
        assert doc is not None
        assert doc["access_token_enc"] is None
        assert doc["refresh_token_enc"] is None
        upload = (await world.http.get(f"/v1/uploads/{waiting}", headers=world.auth)).json()
        assert upload["state"] == "failed"
        assert upload["history"][-1]["detail"]["code"] == "account_disconnected"
        refused = await _post_upload(world, "acct-1")
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "account_disconnected"
        assert refused.json()["error"]["detail"]["reconnect"] == "POST /v1/accounts/acct-1/connect"
        shown = (await world.http.get("/v1/accounts/acct-1", headers=world.auth)).json()
        assert shown["creator_info"] is None
        assert shown["creator_info_unavailable"]["code"] == "account_disconnected"

    async def test_a_failed_revoke_still_disconnects(self, world: IngestWorld) -> None:
        await _connected(world, "acct-1", world.auth)
        world.sandbox.set_faults(error_burst={"oauth_revoke": 1})

        resp = await world.http.delete("/v1/accounts/acct-1", headers=world.auth)

        assert resp.status_code == 200
        assert resp.json()["status"] == "disconnected"
        assert resp.json()["revoked"] is False

    async def test_a_disconnected_account_connects_again(self, world: IngestWorld) -> None:
        open_id = await _connected(world, "acct-1", world.auth)
        await world.http.delete("/v1/accounts/acct-1", headers=world.auth)
        user = world.sandbox.state.users[open_id]

        started = await _start(world, "acct-1", world.auth)
        page = await consent(world.http, started["authorize_url"], creator=user.username)

        assert page.status_code == 200
        view = (await world.http.get("/v1/accounts/acct-1", headers=world.auth)).json()
        assert view["status"] == "connected"
        assert view["disconnect_reason"] is None

    async def test_authorization_removed_disconnects_with_tiktoks_reason(self, world: IngestWorld) -> None:
        open_id = await _connected(world, "acct-1", world.auth)
        waiting = await _upload(world, "acct-1")
        body = event_body(
            client_key=world.settings.tiktok_client_key,
            event="authorization.removed",
            open_id=open_id,
            content={"reason": 4},
            create_time=int(time.time()),
        )
        secret = world.settings.tiktok_client_secret.get_secret_value()

        for _ in range(2):  # at least once: the second delivery changes nothing
            resp = await world.http.post(
                "/v1/webhooks/tiktok",
                content=body,
                headers={"TikTok-Signature": signature_header(secret, body)},
            )
            assert resp.status_code == 200, resp.text

        view = (await world.http.get("/v1/accounts/acct-1", headers=world.auth)).json()
        assert view["status"] == "disconnected"
        assert view["disconnect_reason"] == "tiktok_banned"
        upload = (await world.http.get(f"/v1/uploads/{waiting}", headers=world.auth)).json()
        assert upload["state"] == "failed"
        detail = upload["history"][-1]["detail"]
        assert (detail["code"], detail["reason"], detail["tiktok_reason"]) == (
            "account_disconnected",
            "tiktok_banned",
            "4",
        )
        assert [h["state"] for h in upload["history"]].count("failed") == 1


async def _post_upload(world: IngestWorld, account_id: str) -> httpx.Response:
    return await world.http.post(
        "/v1/uploads",
        headers=world.auth,
        json={
            "account_id": account_id,
            "mode": "direct",
            "post_info": {"privacy_level": "SELF_ONLY"},
            # Scheduled: nothing consumes the topic here, so it waits, as a queued upload does.
            "publish_at": _future(),
            "video_url": f"{world.sandbox.base_url}/media/v.mp4",
        },
    )


async def _upload(world: IngestWorld, account_id: str) -> str:
    resp = await _post_upload(world, account_id)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["request_id"])


def _past() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=1)


def _future() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()
