"""What the OpenAPI fuzzing (test_ingest_openapi_fuzz.py) found, kept as plain regression tests."""

from __future__ import annotations

import pytest
from reelay_ingest.schemas import MAX_TOKEN_LIFETIME_SECONDS

from tests.unit.ingest import ingest_fakes
from tests.unit.ingest.ingest_fakes import IngestApp


@pytest.mark.parametrize("field", ["expires_in", "refresh_expires_in"])
async def test_a_token_lifetime_past_any_date_is_refused_with_422_not_a_500(
    ingest: IngestApp, field: str
) -> None:
    # Found by schemathesis: expires_in=320245244919 overflowed "now + lifetime" (a 500).
    body = {
        "account_id": "fuzzed",
        "open_id": "open-fuzzed",
        "access_token": "act.x",
        "refresh_token": "rft.x",
        "expires_in": 86400,
        "refresh_expires_in": 86400 * 365,
        "scope": "video.publish",
        field: 320245244919,
    }
    response = await ingest.client.post("/v1/accounts", json=body, headers=ingest.auth)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert [d["field"] for d in error["detail"]] == [f"body.{field}"]
    assert "fuzzed" not in ingest.accounts.records

    body[field] = MAX_TOKEN_LIFETIME_SECONDS  # the largest accepted lifetime is stored
    response = await ingest.client.post("/v1/accounts", json=body, headers=ingest.auth)
    assert response.status_code == 201
    assert "fuzzed" in ingest.accounts.records


@pytest.mark.parametrize(
    ("path", "allowed"), [("/v1/uploads", "GET, POST"), ("/v1/uploads/some-id", "DELETE, GET")]
)
async def test_a_405_names_every_method_of_the_resource(ingest: IngestApp, path: str, allowed: str) -> None:
    # Found by schemathesis: OPTIONS /v1/uploads answered `Allow: POST` (the first route's only).
    response = await ingest.client.request("OPTIONS", path, headers=ingest.auth)
    assert response.status_code == 405
    assert response.headers["Allow"] == allowed
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("field", ["video_url", "pull_from_url"])
@pytest.mark.parametrize("url", ["https://\x85", "https:///v.mp4", "https:// space.example/v.mp4"])
async def test_a_url_without_a_host_is_refused_with_422_not_a_500(
    ingest: IngestApp, field: str, url: str
) -> None:
    # Found by schemathesis: pull_from_url "https://\x85" passed the body's pattern but not the
    # message's (no host after the scheme), a 500.
    body = {"account_id": ingest_fakes.ACCOUNT, "mode": "inbox", field: url}
    response = await ingest.post_json(body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert [d["field"] for d in error["detail"]] == [f"body.{field}"]
    ingest.assert_nothing_changed()
