"""Specification of the operational routes (/healthz, /readyz, /metrics), logging context and OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import structlog
from structlog.testing import capture_logs

from tests.unit.ingest.ingest_fakes import IngestApp, url_body


class TestProbes:
    async def test_healthz_is_200_without_a_key(self, ingest: IngestApp) -> None:
        resp = await ingest.client.get("/healthz")

        assert resp.status_code == 200
        assert resp.json() == {"status": "ok"}

    async def test_readyz_is_200_when_mongo_and_kafka_answer(self, ingest: IngestApp) -> None:
        resp = await ingest.client.get("/readyz")

        assert resp.status_code == 200
        assert resp.json() == {"status": "ready", "checks": {"mongo": True, "kafka": True}}

    async def test_readyz_is_503_naming_what_does_not_answer(self, ingest: IngestApp) -> None:
        ingest.ready["kafka"] = False

        resp = await ingest.client.get("/readyz")

        assert resp.status_code == 503
        assert resp.json() == {"status": "not_ready", "checks": {"mongo": True, "kafka": False}}


class TestMetrics:
    async def test_counts_requests_by_route_template_and_accepted_uploads(self, ingest: IngestApp) -> None:
        await ingest.post_json(url_body(request_id="m-1"))
        await ingest.post_json(url_body(request_id="m-1"))  # a replay is not a new acceptance
        await ingest.client.get("/v1/uploads/m-1", headers=ingest.auth)
        await ingest.client.get("/v1/uploads/unknown-1", headers=ingest.auth)

        text = (await ingest.client.get("/metrics")).text

        assert 'reelay_ingest_http_requests_total{method="POST",route="/v1/uploads",status="202"} 2.0' in text
        by_id = 'route="/v1/uploads/{request_id}"'
        assert f'reelay_ingest_http_requests_total{{method="GET",{by_id},status="404"}} 1.0' in text
        assert 'reelay_ingest_uploads_accepted_total{mode="direct",source_kind="url"} 1.0' in text
        assert 'reelay_ingest_rejections_total{code="unknown_upload"} 1.0' in text
        assert "m-1" not in text, "ids never become labels"


class TestLogContext:
    async def test_the_request_log_line_carries_request_and_account_ids(self, ingest: IngestApp) -> None:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await ingest.post_json(url_body(request_id="ctx-1"))

        [line] = [e for e in logs if e["event"] == "http_request"]
        assert (line["request_id"], line["account_id"], line["status"]) == ("ctx-1", "acme-main", 202)


class TestOpenApi:
    async def test_documents_both_upload_bodies_and_the_error_body(self, ingest: IngestApp) -> None:
        spec = (await ingest.client.get("/openapi.json")).json()

        upload = spec["paths"]["/v1/uploads"]["post"]
        content = upload["requestBody"]["content"]
        assert set(content) == {"application/json", "multipart/form-data"}
        assert content["application/json"]["schema"]["$ref"] == "#/components/schemas/UploadByUrl"
        schemas = spec["components"]["schemas"]
        assert {"UploadByUrl", "PostInfo", "ErrorBody", "UploadAccepted"} <= set(schemas)
        assert "Accept a video for an account" in upload["description"]
        assert set(upload["responses"]) >= {"202", "401", "404", "409", "413", "415", "422", "503"}
        assert "HTTPBearer" in spec["components"]["securitySchemes"]
        assert "security" not in spec["paths"]["/v1/webhooks/tiktok"]["post"]


class TestClientGoesAway:
    async def test_a_body_cut_off_mid_file_stores_nothing(self, ingest: IngestApp) -> None:
        from tests.unit.ingest.ingest_fakes import ACCOUNT, mp4_bytes

        async def cut_off() -> AsyncIterator[bytes]:
            boundary = "cut"
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="account_id"\r\n\r\n{ACCOUNT}'
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="mode"\r\n\r\ninbox'
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
                "Content-Type: video/mp4\r\n\r\n"
            ).encode() + mp4_bytes(50_000)
            raise ConnectionResetError("client went away")

        with pytest.raises(ConnectionResetError):
            await ingest.client.post(
                "/v1/uploads",
                content=cut_off(),
                headers={**ingest.auth, "Content-Type": "multipart/form-data; boundary=cut"},
            )

        ingest.assert_nothing_changed()
