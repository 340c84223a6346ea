"""A request's callback_url (docs/architecture.md, "Callbacks"): kept on the upload and in the
command when it is https and public; refused clearly, with nothing stored or sent, otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from reelay_common.domain.records import CallbackDelivery
from reelay_common.domain.states import UploadState

from tests.unit.ingest.ingest_fakes import (
    IngestApp,
    inbox_fields,
    make_settings,
    mp4_bytes,
    running,
    url_body,
)
from tests.unit.ingest.test_ingest_bad_input import error_of

CALLBACK = "https://151.101.1.2/hooks/reelay"  # an IP literal: the SSRF guard resolves it without I/O


class TestAcceptedWithTheUpload:
    async def test_a_json_requests_callback_url_is_kept_and_queued(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(callback_url=CALLBACK, request_id="cb-1"))

        assert resp.status_code == 202
        record = ingest.uploads.records["cb-1"]
        assert record.callback_url == CALLBACK
        assert [m.callback_url for m, _ in ingest.requested()] == [CALLBACK]

    async def test_a_forms_callback_url_is_kept(self, ingest: IngestApp) -> None:
        fields = inbox_fields(callback_url=CALLBACK, request_id="cb-2")
        resp = await ingest.post_file(mp4_bytes(2048), fields=fields)

        assert resp.status_code == 202
        assert ingest.uploads.records["cb-2"].callback_url == CALLBACK

    async def test_no_callback_url_is_none(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(request_id="cb-3"))

        assert resp.status_code == 202
        assert ingest.uploads.records["cb-3"].callback_url is None
        view = (await ingest.client.get("/v1/uploads/cb-3", headers=ingest.auth)).json()
        assert view["callbacks"] == []


class TestRefused:
    @pytest.mark.parametrize(
        ("url", "code"),
        [
            ("https://127.0.0.1/hook", "callback_url_not_public"),
            ("https://10.1.2.3/hook", "callback_url_not_public"),
            ("https://169.254.169.254/latest", "callback_url_not_public"),
            ("https://[::1]/h", "callback_url_not_public"),
            ("http://151.101.1.2/hook", "callback_url_scheme"),
            ("https://u:p@151.101.1.2/hook", "callback_url_credentials"),
        ],
    )
    async def test_a_callback_that_is_not_https_to_a_public_host_is_refused(
        self, ingest: IngestApp, url: str, code: str
    ) -> None:
        resp = await ingest.post_json(url_body(callback_url=url))

        assert resp.status_code == 422
        assert error_of(resp)["code"] == code
        assert "callback URL" in error_of(resp)["message"]
        ingest.assert_nothing_changed()

    async def test_a_form_with_a_private_callback_keeps_no_file(self, ingest: IngestApp) -> None:
        fields = inbox_fields(callback_url="https://192.168.1.9/hook")
        resp = await ingest.post_file(mp4_bytes(2048), fields=fields)

        assert resp.status_code == 422
        assert error_of(resp)["code"] == "callback_url_not_public"
        ingest.assert_nothing_changed()

    async def test_not_a_url_at_all_is_a_validation_error(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(callback_url="ftp://example.com/x"))

        assert resp.status_code == 422
        assert error_of(resp)["code"] == "validation_failed"
        ingest.assert_nothing_changed()


class TestDevelopment:
    async def test_http_and_loopback_callbacks_pass_where_private_urls_are_allowed(self) -> None:
        async with running(make_settings(allow_private_urls=True)) as ingest:
            resp = await ingest.post_json(url_body(callback_url="http://127.0.0.1:9/h", request_id="dev"))

            assert resp.status_code == 202
            assert ingest.uploads.records["dev"].callback_url == "http://127.0.0.1:9/h"


class TestSeenInTheApi:
    async def test_get_lists_each_states_callback_in_order(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(callback_url=CALLBACK, request_id="cb-view"))
        assert resp.status_code == 202
        first = datetime(2030, 1, 1, tzinfo=UTC)
        later = first + timedelta(seconds=5)
        await ingest.uploads.record_callback(
            "cb-view",
            CallbackDelivery(
                state=UploadState.UPLOADING,
                attempts=1,
                first_attempt_at=later,
                last_attempt_at=later,
                last_error="timeout",
            ),
        )
        await ingest.uploads.record_callback(
            "cb-view",
            CallbackDelivery(
                state=UploadState.ACCEPTED,
                outcome="delivered",
                attempts=2,
                first_attempt_at=first,
                last_attempt_at=first + timedelta(seconds=1),
                last_status=204,
                delivered_at=first + timedelta(seconds=1),
            ),
        )

        view = (await ingest.client.get("/v1/uploads/cb-view", headers=ingest.auth)).json()

        assert [
            (c["state"], c["outcome"], c["attempts"], c["last_status"], c["last_error"])
            for c in view["callbacks"]
        ] == [("accepted", "delivered", 2, 204, None), ("uploading", "pending", 1, None, "timeout")]
        assert view["callbacks"][0]["delivered_at"] == "2030-01-01T00:00:01Z"
        assert view["callbacks"][1]["gave_up_at"] is None
        assert "callback_url" not in view  # a URL may carry a token: never echoed
