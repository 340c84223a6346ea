"""Scheduled uploads (publish_at) and cancelling an upload TikTok has nothing of yet."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from reelay_common.domain.errors import TikTokRejectedError
from reelay_common.domain.messages import BlobSource
from reelay_common.domain.records import Change
from reelay_common.domain.states import UploadState

from tests.unit.ingest.ingest_fakes import IngestApp, inbox_fields, mp4_bytes, url_body

S = UploadState


def soon(seconds: float = 3600) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


class TestScheduling:
    async def test_a_future_publish_at_holds_the_upload_as_scheduled(self, ingest: IngestApp) -> None:
        at = soon()

        resp = await ingest.post_json(url_body(request_id="s-1", publish_at=at))

        assert resp.status_code == 202, resp.text
        assert resp.json()["state"] == "scheduled"
        record = await ingest.uploads.get("s-1")
        assert record is not None
        assert record.state is S.SCHEDULED
        assert record.publish_at == datetime.fromisoformat(at).replace(
            microsecond=datetime.fromisoformat(at).microsecond // 1000 * 1000
        )
        # `scheduled` announced; the command waits in the outbox for its time.
        assert [m.state for m in ingest.announced()] == [S.SCHEDULED]
        assert ingest.requested() == []
        [waiting] = record.outbox
        assert waiting.kind == "upload_requested"
        assert waiting.due_at == record.publish_at
        shown = (await ingest.client.get("/v1/uploads/s-1", headers=ingest.auth)).json()
        assert (shown["state"], shown["publish_at"] is not None) == ("scheduled", True)

    async def test_the_relay_queues_it_when_its_time_comes(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(request_id="s-2", publish_at=soon(1.5)))
        assert resp.status_code == 202, resp.text
        await ingest.relay_round()
        assert ingest.requested() == []  # not yet

        await asyncio.sleep(1.6)
        await ingest.relay_round()

        assert [m.request_id for m, _ in ingest.requested()] == ["s-2"]
        [(command, _)] = ingest.requested()
        assert command.publish_at is not None
        assert [(m.state, m.source) for m in ingest.announced()] == [
            (S.SCHEDULED, "ingest"),
            (S.ACCEPTED, "scheduler"),
        ]
        record = await ingest.uploads.get("s-2")
        assert record is not None
        assert (record.state, record.outbox) == (S.ACCEPTED, [])

    async def test_a_scheduled_file_is_kept_until_then(self, ingest: IngestApp) -> None:
        resp = await ingest.post_file(
            mp4_bytes(50_000), fields=inbox_fields(request_id="s-3", publish_at=soon())
        )
        assert resp.status_code == 202, resp.text
        record = await ingest.uploads.get("s-3")
        assert record is not None
        assert record.state is S.SCHEDULED
        assert isinstance(record.source, BlobSource)
        assert record.source.blob_id in ingest.blobs.blobs

    @pytest.mark.parametrize(
        "publish_at",
        [
            (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            (datetime.now(UTC) + timedelta(days=31)).isoformat(),
        ],
        ids=["past", "beyond-the-horizon"],
    )
    async def test_a_time_not_to_come_or_too_far_is_refused(self, ingest: IngestApp, publish_at: str) -> None:
        resp = await ingest.post_json(url_body(request_id="s-bad", publish_at=publish_at))

        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "invalid_publish_at"
        assert await ingest.uploads.get("s-bad") is None

    async def test_a_time_without_a_timezone_is_refused(self, ingest: IngestApp) -> None:
        naive = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat()

        resp = await ingest.post_json(url_body(request_id="s-naive", publish_at=naive))

        assert resp.status_code == 422, resp.text
        assert "publish_at" in resp.text
        assert await ingest.uploads.get("s-naive") is None


class TestCancel:
    async def cancel(self, ingest: IngestApp, request_id: str) -> tuple[int, dict[str, object]]:
        resp = await ingest.client.delete(f"/v1/uploads/{request_id}", headers=ingest.auth)
        return resp.status_code, resp.json()

    async def test_cancels_a_scheduled_upload_which_then_never_goes_out(self, ingest: IngestApp) -> None:
        # Far enough ahead that it is still to come when ingest checks it, on a loaded machine too.
        await ingest.post_json(url_body(request_id="c-1", publish_at=soon(1.5)))

        status, body = await self.cancel(ingest, "c-1")

        assert (status, body["state"]) == (200, "cancelled"), body
        await asyncio.sleep(1.6)
        await ingest.relay_round()
        assert ingest.requested() == []
        assert [m.state for m in ingest.announced()] == [S.SCHEDULED, S.CANCELLED]
        record = await ingest.uploads.get("c-1")
        assert record is not None
        assert (record.state, record.outbox) == (S.CANCELLED, [])

    async def test_cancels_a_queued_upload_before_its_init(self, ingest: IngestApp) -> None:
        await ingest.post_json(url_body(request_id="c-2"))

        status, body = await self.cancel(ingest, "c-2")

        assert (status, body["state"]) == (200, "cancelled")
        assert body["history"][-1]["detail"]["code"] == "cancelled"

    async def test_cancelling_twice_answers_the_cancelled_upload(self, ingest: IngestApp) -> None:
        await ingest.post_json(url_body(request_id="c-3", publish_at=soon()))
        await self.cancel(ingest, "c-3")

        status, body = await self.cancel(ingest, "c-3")

        assert (status, body["state"]) == (200, "cancelled")
        assert [m.state for m in ingest.announced()].count(S.CANCELLED) == 1

    async def test_deletes_the_stored_file_of_a_cancelled_upload(self, ingest: IngestApp) -> None:
        await ingest.post_file(mp4_bytes(50_000), fields=inbox_fields(request_id="c-4", publish_at=soon()))

        status, _ = await self.cancel(ingest, "c-4")

        assert status == 200
        assert ingest.blobs.blobs == {}

    async def test_once_tiktok_has_it_cancel_is_refused_with_its_state(self, ingest: IngestApp) -> None:
        await ingest.post_json(url_body(request_id="c-5"))
        await ingest.uploads.transition("c-5", Change(S.UPLOADING, source="uploader"))

        status, body = await self.cancel(ingest, "c-5")

        assert status == 409
        error = body["error"]
        assert isinstance(error, dict)
        assert (error["code"], error["detail"]) == (
            "not_cancellable",
            {"request_id": "c-5", "state": "uploading"},
        )

    async def test_a_pull_tiktok_is_downloading_is_cancelled_at_tiktok(self, ingest: IngestApp) -> None:
        body = url_body(request_id="c-6")
        body["pull_from_url"] = body.pop("video_url").replace("http://", "https://")
        assert (await ingest.post_json(body)).status_code == 202
        for target, fields in ((S.UPLOADING, {"publish_id": "p_pull_1"}), (S.UPLOADED, {})):
            await ingest.uploads.transition("c-6", Change(target, source="uploader", set_fields=fields))

        resp = await ingest.client.delete("/v1/uploads/c-6", headers=ingest.auth)

        assert resp.status_code == 202, resp.text
        assert resp.json()["state"] == "uploaded"  # until TikTok's failure webhook (publish_cancelled)
        assert ingest.tiktok.cancels == ["p_pull_1"]

    async def test_tiktoks_refusal_to_cancel_is_a_409_with_its_code(self, ingest: IngestApp) -> None:
        body = url_body(request_id="c-7")
        body["pull_from_url"] = body.pop("video_url").replace("http://", "https://")
        await ingest.post_json(body)
        for target, fields in ((S.UPLOADING, {"publish_id": "p_pull_2"}), (S.PROCESSING, {})):
            await ingest.uploads.transition("c-7", Change(target, source="uploader", set_fields=fields))
        ingest.tiktok.cancel_errors["p_pull_2"] = TikTokRejectedError(
            "The publish can no longer be cancelled", code="publish_not_cancellable"
        )

        status, body_out = await self.cancel(ingest, "c-7")

        assert status == 409
        error = body_out["error"]
        assert isinstance(error, dict)
        assert error["code"] == "not_cancellable"
        assert error["detail"] == {
            "request_id": "c-7",
            "state": "processing",
            "tiktok_error": "publish_not_cancellable",
        }

    async def test_an_unknown_upload_is_404(self, ingest: IngestApp) -> None:
        status, body = await self.cancel(ingest, "nope")
        assert status == 404
        error = body["error"]
        assert isinstance(error, dict)
        assert error["code"] == "unknown_upload"


class TestCounted:
    @pytest.mark.parametrize(("publish_at", "state"), [(None, "accepted"), (3600.0, "scheduled")])
    async def test_a_new_upload_counts_its_first_state(
        self, ingest: IngestApp, publish_at: float | None, state: str
    ) -> None:
        labels = {"state": state, "source": "ingest"}
        before = REGISTRY.get_sample_value("reelay_upload_state_transitions_total", labels) or 0.0
        extra = {"publish_at": soon(publish_at)} if publish_at is not None else {}

        await ingest.post_json(url_body(request_id=f"n-{state}", **extra))
        await ingest.post_json(url_body(request_id=f"n-{state}", **extra))  # a replay counts nothing

        after = REGISTRY.get_sample_value("reelay_upload_state_transitions_total", labels)
        assert after == before + 1
