"""Specification of tenancy at the API: each key sees its own tenant's accounts and uploads only, and
another tenant's id answers exactly as an unknown one (docs/architecture.md, "Tenants")."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from reelay_common.domain.messages import UploadRequested

from tests.unit.ingest.ingest_fakes import IngestApp, make_settings, running, url_body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def registration(account_id: str, open_id: str) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "open_id": open_id,
        "access_token": f"act.{open_id}",
        "refresh_token": f"rft.{open_id}",
        "expires_in": 7200,
        "refresh_expires_in": 15552000,
        "scope": "user.info.basic,video.publish,video.upload",
    }


async def tenant_key(ingest: IngestApp, tenant_id: str) -> str:
    if await ingest.tenants.get_tenant(tenant_id) is None:
        await ingest.tenants.create_tenant(tenant_id)
    _, new = await ingest.tenants.create_key(tenant_id)
    return new.key


async def answers(ingest: IngestApp, key: str, account_id: str, request_id: str) -> dict[str, Any]:
    """Everything a caller with `key` can learn of `account_id` and `request_id`: status and body."""
    client, auth = ingest.client, bearer(key)
    calls: dict[str, httpx.Response] = {
        "get_upload": await client.get(f"/v1/uploads/{request_id}", headers=auth),
        "cancel_upload": await client.delete(f"/v1/uploads/{request_id}", headers=auth),
        "get_account": await client.get(f"/v1/accounts/{account_id}", headers=auth),
        "post_for_account": await client.post(
            "/v1/uploads", json=url_body(account_id=account_id, request_id="probe-1"), headers=auth
        ),
        "list_of_account": await client.get("/v1/uploads", params={"account_id": account_id}, headers=auth),
    }
    return {name: (r.status_code, r.json()) for name, r in calls.items()}


class TestKeys:
    async def test_a_tenants_key_lets_it_in_and_a_revoked_or_forged_one_does_not(self) -> None:
        # No cache: a revocation shows on the next request (the cache's latency is KeyRing's test).
        async with running(make_settings(api_key_cache_seconds=0)) as ingest:
            key = await tenant_key(ingest, "team-a")
            assert (await ingest.client.get("/v1/uploads", headers=bearer(key))).status_code == 200
            key_id = key.split("_")[1]
            forged = f"rly_{key_id}_{'A' * 43}"
            resp = await ingest.client.get("/v1/uploads", headers=bearer(forged))
            assert (resp.status_code, resp.json()["error"]["code"]) == (401, "unauthorized")
            await ingest.tenants.revoke_key(key_id)
            resp = await ingest.client.get("/v1/uploads", headers=bearer(key))
            assert (resp.status_code, resp.json()["error"]["message"]) == (401, "the API key is not valid")

    async def test_the_configured_keys_are_the_default_tenants(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(request_id="plain-1"))
        assert resp.status_code == 202, resp.text
        # Stored exactly as before tenants: the ids are the keys.
        record = ingest.uploads.records["plain-1"]
        assert (record.tenant_id, record.account_id) == ("default", "acme-main")


class TestIsolation:
    async def test_another_tenants_ids_answer_exactly_as_unknown_ones(self, ingest: IngestApp) -> None:
        a, b = await tenant_key(ingest, "team-a"), await tenant_key(ingest, "team-b")
        before = await answers(ingest, b, "acct-a", "req-a")  # nothing exists anywhere yet
        assert {name: status for name, (status, _) in before.items()} == {
            "get_upload": 404,
            "cancel_upload": 404,
            "get_account": 404,
            "post_for_account": 404,
            "list_of_account": 200,
        }
        resp = await ingest.client.post(
            "/v1/accounts", json=registration("acct-a", "open-a"), headers=bearer(a)
        )
        assert resp.status_code == 201, resp.text
        resp = await ingest.client.post(
            "/v1/uploads", json=url_body(account_id="acct-a", request_id="req-a"), headers=bearer(a)
        )
        assert resp.status_code == 202, resp.text

        after = await answers(ingest, b, "acct-a", "req-a")
        assert after == before, "tenant B learns nothing of tenant A's account and upload"
        listing = (await ingest.client.get("/v1/uploads", headers=bearer(b))).json()
        assert listing == {"items": [], "count": 0}
        # A's own key still sees both, untouched by B's cancel.
        mine = await ingest.client.get("/v1/uploads/req-a", headers=bearer(a))
        assert (mine.status_code, mine.json()["state"]) == (200, "accepted")
        assert [
            u["request_id"]
            for u in (await ingest.client.get("/v1/uploads", headers=bearer(a))).json()["items"]
        ] == ["req-a"]
        # Nor does the default tenant's key see them.
        assert (await ingest.client.get("/v1/uploads/req-a", headers=ingest.auth)).status_code == 404

    async def test_registering_another_tenants_account_id_makes_ones_own(self, ingest: IngestApp) -> None:
        a, b = await tenant_key(ingest, "team-a"), await tenant_key(ingest, "team-b")
        await ingest.client.post("/v1/accounts", json=registration("shared", "open-a"), headers=bearer(a))
        # Another TikTok user under the same account_id: no 409, B's own account; A's is untouched.
        resp = await ingest.client.post(
            "/v1/accounts", json=registration("shared", "open-b"), headers=bearer(b)
        )
        assert resp.status_code == 201, resp.text
        assert resp.json()["account_id"] == "shared"
        a_view = (await ingest.client.get("/v1/accounts/shared", headers=bearer(a))).json()
        b_view = (await ingest.client.get("/v1/accounts/shared", headers=bearer(b))).json()
        assert (a_view["open_id"], b_view["open_id"]) == ("open-a", "open-b")
        assert set(ingest.accounts.records) >= {"team-a~shared", "team-b~shared"}
        assert ingest.accounts.records["team-b~shared"].tenant_id == "team-b"

    async def test_the_same_request_id_of_two_tenants_is_two_uploads_on_the_wire(
        self, ingest: IngestApp
    ) -> None:
        keys = {t: await tenant_key(ingest, t) for t in ("team-a", "team-b")}
        for tenant, key in keys.items():
            await ingest.client.post(
                "/v1/accounts", json=registration("shared", f"open-{tenant}"), headers=bearer(key)
            )
            resp = await ingest.client.post(
                "/v1/uploads", json=url_body(account_id="shared", request_id="launch"), headers=bearer(key)
            )
            assert resp.status_code == 202, resp.text
            assert resp.json()["request_id"] == "launch"
            assert resp.headers["Location"].endswith("/v1/uploads/launch")
        assert {"team-a~launch", "team-b~launch"} <= set(ingest.uploads.records)
        sent = sorted(ingest.requested(), key=lambda pair: pair[0].tenant_id)
        # The client's ids, its tenant, and the account's stored key as the Kafka key.
        assert [(m.request_id, m.account_id, m.tenant_id, k) for m, k in sent] == [
            ("launch", "shared", "team-a", "team-a~shared"),
            ("launch", "shared", "team-b", "team-b~shared"),
        ]
        announced = {(m.request_id, m.account_id, m.tenant_id, m.state.value) for m in ingest.announced()}
        assert announced == {
            ("launch", "shared", "team-a", "accepted"),
            ("launch", "shared", "team-b", "accepted"),
        }


def test_a_message_without_tenant_id_is_the_default_tenants() -> None:
    """A producer written before tenants sends no tenant_id; a bad one is refused."""
    old = UploadRequested.model_validate_json(
        '{"request_id": "r-1", "account_id": "acme-main", "mode": "inbox",'
        ' "source": {"kind": "url", "url": "https://videos.example/a.mp4"}}'
    )
    assert old.tenant_id == "default"
    with pytest.raises(ValidationError, match="tenant_id"):
        UploadRequested.model_validate({**old.model_dump(), "tenant_id": "Team A"})
