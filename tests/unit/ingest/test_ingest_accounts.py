"""Specification of /v1/accounts: register with TikTok tokens, read back, never see a token again."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from tests.unit.ingest.ingest_fakes import IngestApp

ACCESS = "act.1234567890abcdefSECRET"
REFRESH = "rft.abcdef1234567890SECRET"


def registration(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account_id": "brand-x",
        "open_id": "open-brand-x",
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "expires_in": 7200,
        "refresh_expires_in": 15552000,
        "scope": "user.info.basic,video.publish,video.upload",
    }
    body.update(overrides)
    return body


class TestRegisterAccount:
    async def test_registers_with_201_and_never_echoes_tokens(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post("/v1/accounts", json=registration(), headers=ingest.auth)

        assert resp.status_code == 201, resp.text
        view = resp.json()
        assert view["account_id"] == "brand-x"
        assert view["status"] == "connected"
        assert view["scopes"] == ["user.info.basic", "video.publish", "video.upload"]
        assert view["access_expires_at"]
        assert view["refresh_expires_at"]
        assert ACCESS not in resp.text
        assert REFRESH not in resp.text
        assert ingest.accounts.tokens["brand-x"] == (ACCESS, REFRESH)

    async def test_reads_back_status_scopes_and_expiry_without_tokens(self, ingest: IngestApp) -> None:
        await ingest.client.post(
            "/v1/accounts", json=registration(scope=["video.upload"]), headers=ingest.auth
        )

        resp = await ingest.client.get("/v1/accounts/brand-x", headers=ingest.auth)

        assert resp.status_code == 200
        assert resp.json()["scopes"] == ["video.upload"]
        assert ACCESS not in resp.text
        assert REFRESH not in resp.text
        assert "token" not in "".join(resp.json().keys())

    async def test_registering_again_for_the_same_user_replaces_the_tokens_with_200(
        self, ingest: IngestApp
    ) -> None:
        await ingest.client.post("/v1/accounts", json=registration(), headers=ingest.auth)

        resp = await ingest.client.post(
            "/v1/accounts", json=registration(access_token="act.new"), headers=ingest.auth
        )

        assert resp.status_code == 200
        assert ingest.accounts.tokens["brand-x"][0] == "act.new"

    async def test_an_account_id_bound_to_another_tiktok_user_is_409(self, ingest: IngestApp) -> None:
        await ingest.client.post("/v1/accounts", json=registration(), headers=ingest.auth)

        resp = await ingest.client.post(
            "/v1/accounts",
            json=registration(open_id="someone-else", access_token="act.other"),
            headers=ingest.auth,
        )

        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "account_open_id_mismatch"
        assert ingest.accounts.tokens["brand-x"][0] == ACCESS

    async def test_a_registered_account_can_upload_at_once(self, ingest: IngestApp) -> None:
        await ingest.client.post("/v1/accounts", json=registration(), headers=ingest.auth)

        resp = await ingest.post_json(
            {"account_id": "brand-x", "mode": "inbox", "video_url": "https://151.101.1.1/v.mp4"}
        )

        assert resp.status_code == 202, resp.text

    async def test_an_unknown_account_is_404(self, ingest: IngestApp) -> None:
        resp = await ingest.client.get("/v1/accounts/nobody", headers=ingest.auth)

        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "unknown_account"


class TestRefusedRegistrations:
    async def test_missing_fields_are_422_and_the_tokens_are_not_echoed(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post(
            "/v1/accounts", json=registration(open_id=None, expires_in="soon"), headers=ingest.auth
        )

        assert resp.status_code == 422
        fields = {d["field"] for d in resp.json()["error"]["detail"]}
        assert fields == {"body.open_id", "body.expires_in"}
        assert ACCESS not in resp.text
        assert REFRESH not in resp.text
        assert "brand-x" not in ingest.accounts.records

    async def test_no_scope_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post("/v1/accounts", json=registration(scope=" , "), headers=ingest.auth)

        assert resp.status_code == 422
        assert "brand-x" not in ingest.accounts.records

    async def test_non_positive_lifetimes_are_422(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post("/v1/accounts", json=registration(expires_in=0), headers=ingest.auth)

        assert resp.status_code == 422
        assert "brand-x" not in ingest.accounts.records

    async def test_an_unknown_field_is_422(self, ingest: IngestApp) -> None:
        resp = await ingest.client.post(
            "/v1/accounts", json=registration(client_secret="x"), headers=ingest.auth
        )

        assert resp.status_code == 422


class TestSecretsStaySecret:
    async def test_no_log_line_carries_a_token_or_the_api_key(self, ingest: IngestApp) -> None:
        with capture_logs() as logs:
            await ingest.client.post("/v1/accounts", json=registration(), headers=ingest.auth)
            await ingest.client.post("/v1/accounts", json=registration(open_id=None), headers=ingest.auth)
            await ingest.client.get("/v1/accounts/brand-x", headers={"Authorization": "Bearer wrong"})

        text = repr(logs)
        assert logs, "the requests were logged"
        for secret in (ACCESS, REFRESH, "unit-test-key", "wrong"):
            assert secret not in text
