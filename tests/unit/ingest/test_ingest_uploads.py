"""Specification of POST /v1/uploads when the input is good: stored, announced, queued, 202."""

from __future__ import annotations

import json

from reelay_common.domain.messages import BlobSource, PublishStatusChanged, UrlSource
from reelay_common.domain.records import Change
from reelay_common.domain.states import UploadState

from tests.unit.ingest.ingest_fakes import (
    ACCOUNT,
    PUBLIC_URL,
    TOPICS,
    IngestApp,
    direct_fields,
    inbox_fields,
    mp4_bytes,
    running,
    url_body,
)


class TestAcceptUploadByUrl:
    async def test_answers_202_after_publishing_exactly_one_request_keyed_by_account(
        self, ingest: IngestApp
    ) -> None:
        resp = await ingest.post_json(url_body(request_id="launch-1"))

        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert body == {
            "request_id": "launch-1",
            "state": "accepted",
            "status_url": "https://reelay.example.com/v1/uploads/launch-1",
            "replayed": False,
        }
        assert resp.headers["Location"] == body["status_url"]
        [(message, key)] = ingest.requested()
        assert key == ACCOUNT
        assert message.request_id == "launch-1"
        assert message.source == UrlSource(url=PUBLIC_URL)
        assert message.post_info is not None
        assert message.post_info.privacy_level == "SELF_ONLY"

    async def test_stores_the_upload_as_accepted_by_ingest(self, ingest: IngestApp) -> None:
        await ingest.post_json(url_body(request_id="launch-1"))

        record = await ingest.uploads.get("launch-1")
        assert record is not None
        assert record.state is UploadState.ACCEPTED
        assert [(e.state, e.source) for e in record.history] == [(UploadState.ACCEPTED, "ingest")]

    async def test_announces_accepted_on_the_status_topic_before_queueing(self, ingest: IngestApp) -> None:
        await ingest.post_json(url_body(request_id="launch-1"))

        topics = [t for t, _, _ in ingest.publisher.sent]
        assert topics == [TOPICS.publish_status, TOPICS.upload_requested]
        announced = ingest.publisher.sent[0][1]
        assert isinstance(announced, PublishStatusChanged)
        assert (announced.request_id, announced.state, announced.source) == ("launch-1", "accepted", "ingest")

    async def test_takes_the_request_id_from_the_idempotency_key_header(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(), **{"Idempotency-Key": "from-header-7"})

        assert resp.status_code == 202
        assert resp.json()["request_id"] == "from-header-7"
        assert await ingest.uploads.get("from-header-7") is not None

    async def test_generates_a_request_id_when_none_is_given(self, ingest: IngestApp) -> None:
        first = await ingest.post_json(url_body())
        second = await ingest.post_json(url_body())

        ids = {first.json()["request_id"], second.json()["request_id"]}
        assert len(ids) == 2
        assert len(ingest.requested()) == 2

    async def test_lets_tiktok_pull_a_url_itself(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(
            url_body(video_url=None, pull_from_url="https://151.101.1.1/v.mp4", mode="inbox", post_info=None)
        )

        assert resp.status_code == 202, resp.text
        [(message, _)] = ingest.requested()
        assert message.source.kind == "pull_from_url"

    async def test_does_not_ask_creator_info_for_inbox_uploads(self, ingest: IngestApp) -> None:
        resp = await ingest.post_json(url_body(mode="inbox", post_info=None))

        assert resp.status_code == 202
        assert ingest.tiktok.calls == []

    async def test_does_not_ask_creator_info_when_the_check_is_off(self) -> None:
        from tests.unit.ingest.ingest_fakes import make_settings, running

        async with running(make_settings(check_creator_info=False)) as ingest:
            ingest.tiktok.levels[ACCOUNT] = ["SELF_ONLY"]
            resp = await ingest.post_json(url_body(post_info={"privacy_level": "PUBLIC_TO_EVERYONE"}))

            assert resp.status_code == 202
            assert ingest.tiktok.calls == []


class TestIdempotentReplay:
    async def test_same_request_again_answers_202_with_the_existing_state(self, ingest: IngestApp) -> None:
        await ingest.post_json(url_body(request_id="r-1"))
        await ingest.uploads.transition("r-1", Change(UploadState.UPLOADING, source="uploader"))
        sent_before = len(ingest.publisher.sent)

        resp = await ingest.post_json(url_body(request_id="r-1"))

        assert resp.status_code == 202
        assert resp.json()["state"] == "uploading"
        assert resp.json()["replayed"] is True
        assert len(ingest.publisher.sent) == sent_before, "an upload already under way is not queued again"
        assert len(ingest.uploads.records) == 1

    async def test_replay_of_a_still_accepted_upload_answers_without_queueing_it_again(
        self, ingest: IngestApp
    ) -> None:
        # Whatever the first call still owed Kafka waits in the outbox: the replay need not send it.
        await ingest.post_json(url_body(request_id="r-1"))

        resp = await ingest.post_json(url_body(request_id="r-1"))

        assert resp.status_code == 202
        assert resp.json() | {"status_url": None} == {
            "request_id": "r-1",
            "state": "accepted",
            "status_url": None,
            "replayed": True,
        }
        assert [m.request_id for m, _ in ingest.requested()] == ["r-1"]
        assert len(ingest.uploads.records) == 1

    async def test_replay_through_the_header_is_the_same_request(self, ingest: IngestApp) -> None:
        await ingest.post_json(url_body(), **{"Idempotency-Key": "k-9"})

        resp = await ingest.post_json(url_body(), **{"Idempotency-Key": "k-9"})

        assert resp.status_code == 202
        assert resp.json()["replayed"] is True

    async def test_a_different_upload_under_a_used_request_id_is_refused_with_409(
        self, ingest: IngestApp
    ) -> None:
        await ingest.post_json(url_body(request_id="r-1"))
        sent_before = list(ingest.publisher.sent)
        stored_before = await ingest.uploads.get("r-1")

        resp = await ingest.post_json(
            url_body(request_id="r-1", post_info={"privacy_level": "PUBLIC_TO_EVERYONE"})
        )

        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "request_id_conflict"
        assert ingest.publisher.sent == sent_before
        assert await ingest.uploads.get("r-1") == stored_before

    async def test_a_replayed_file_keeps_only_the_first_copy(self, ingest: IngestApp) -> None:
        data = mp4_bytes(200_000)
        first = await ingest.post_file(data, fields=inbox_fields(request_id="f-1"))
        second = await ingest.post_file(data, fields=inbox_fields(request_id="f-1"))

        assert (first.status_code, second.status_code) == (202, 202)
        assert second.json()["replayed"] is True
        assert len(ingest.blobs.blobs) == 1
        record = await ingest.uploads.get("f-1")
        assert record is not None
        assert isinstance(record.source, BlobSource)
        assert record.source.blob_id in ingest.blobs.blobs

    async def test_a_different_file_under_a_used_request_id_is_refused_and_not_kept(
        self, ingest: IngestApp
    ) -> None:
        await ingest.post_file(mp4_bytes(200_000), fields=inbox_fields(request_id="f-1"))

        resp = await ingest.post_file(mp4_bytes(300_000), fields=inbox_fields(request_id="f-1"))

        assert resp.status_code == 409
        assert len(ingest.blobs.blobs) == 1


class TestKafkaDown:
    async def test_answers_202_and_the_command_waits_in_the_outbox(self, ingest: IngestApp) -> None:
        ingest.publisher.failing_topics.add(TOPICS.upload_requested)

        resp = await ingest.post_json(url_body(request_id="k-1"))

        assert resp.status_code == 202
        assert resp.json()["state"] == "accepted"
        record = await ingest.uploads.get("k-1")
        assert record is not None
        assert record.state is UploadState.ACCEPTED
        assert [e.kind for e in record.outbox] == ["upload_requested"]  # `accepted` was announced
        assert ingest.requested() == []

    async def test_the_relay_queues_it_once_kafka_is_back(self, ingest: IngestApp) -> None:
        ingest.publisher.failing_topics.update({TOPICS.upload_requested, TOPICS.publish_status})
        await ingest.post_json(url_body(request_id="k-2"))
        ingest.publisher.failing_topics.clear()

        await ingest.relay_round()

        assert [m.request_id for m, _ in ingest.requested()] == ["k-2"]
        assert [m.state for m in ingest.announced()] == [UploadState.ACCEPTED]
        record = await ingest.uploads.get("k-2")
        assert record is not None
        assert (record.outbox, record.outbox_due_at) == ([], None)

    async def test_an_upload_an_earlier_reelay_refused_says_to_use_a_new_request_id(
        self, ingest: IngestApp
    ) -> None:
        # Before the outbox, Reelay answered 503 and marked the upload failed with enqueue_failed.
        body = url_body(request_id="k-old")
        await ingest.post_json(body)
        await ingest.uploads.transition(
            "k-old", Change(UploadState.FAILED, source="ingest", detail={"code": "enqueue_failed"})
        )

        again = await ingest.post_json(body)

        assert again.status_code == 409
        assert again.json()["error"]["code"] == "request_id_spent"

    async def test_a_file_accepted_while_kafka_is_down_is_kept(self, ingest: IngestApp) -> None:
        ingest.publisher.failing_topics.add(TOPICS.upload_requested)

        resp = await ingest.post_file(mp4_bytes(100_000), fields=inbox_fields(request_id="k-3"))

        assert resp.status_code == 202
        record = await ingest.uploads.get("k-3")
        assert record is not None
        assert isinstance(record.source, BlobSource)
        assert record.source.blob_id in ingest.blobs.blobs


class TestABugIsNotKafka:
    async def test_a_bug_while_queueing_is_a_500_and_the_command_is_not_lost(self) -> None:
        async with running(raise_app_exceptions=False) as ingest:
            ingest.publisher.fail_with.append(TypeError("a bug, not a broker"))

            resp = await ingest.post_json(url_body(request_id="bug-1"))

            assert resp.status_code == 500
            assert resp.json()["error"]["code"] == "internal_error"
            record = await ingest.uploads.get("bug-1")
            assert record is not None
            # Not marked failed as if Kafka had refused it, and what it owes Kafka is still owed.
            assert record.state is UploadState.ACCEPTED
            assert [e.kind for e in record.outbox] == ["status", "upload_requested"]
            again = await ingest.post_json(url_body(request_id="bug-1"))
            assert again.status_code == 202
            assert again.json()["replayed"] is True


class TestAcceptUploadAsFile:
    async def test_streams_the_file_into_the_blob_store_and_queues_it(self, ingest: IngestApp) -> None:
        data = mp4_bytes(1_500_000)

        resp = await ingest.post_file(data, fields=direct_fields(request_id="file-1"), filename="launch.mp4")

        assert resp.status_code == 202, resp.text
        [(message, key)] = ingest.requested()
        assert key == ACCOUNT
        assert isinstance(message.source, BlobSource)
        assert (message.source.size, message.source.content_type, message.source.filename) == (
            len(data),
            "video/mp4",
            "launch.mp4",
        )
        assert ingest.blobs.blobs[message.source.blob_id] == (data, "video/mp4")

    async def test_fields_sent_before_the_file_are_checked_once_not_again_at_acceptance(
        self, ingest: IngestApp
    ) -> None:
        resp = await ingest.post_file(mp4_bytes(50_000), fields=direct_fields(request_id="file-once"))

        assert resp.status_code == 202, resp.text
        assert ingest.tiktok.calls == [ACCOUNT]  # creator_info asked before the file was stored, only

    async def test_takes_the_type_from_the_file_name_when_the_client_sends_octet_stream(
        self, ingest: IngestApp
    ) -> None:
        resp = await ingest.post_file(
            mp4_bytes(50_000), filename="clip.mov", content_type="application/octet-stream"
        )

        assert resp.status_code == 202, resp.text
        [(message, _)] = ingest.requested()
        assert isinstance(message.source, BlobSource)
        assert message.source.content_type == "video/quicktime"

    async def test_accepts_webm(self, ingest: IngestApp) -> None:
        webm = b"\x1a\x45\xdf\xa3" + bytes(40_000)

        resp = await ingest.post_file(webm, filename="clip.webm", content_type="video/webm")

        assert resp.status_code == 202, resp.text

    async def test_accepts_text_fields_after_the_file(self, ingest: IngestApp) -> None:
        data = mp4_bytes(20_000)
        boundary = "b0undary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
                "Content-Type: video/mp4\r\n\r\n"
            ).encode()
            + data
            + (
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="account_id"\r\n\r\n{ACCOUNT}'
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="mode"\r\n\r\ninbox'
                f"\r\n--{boundary}--\r\n"
            ).encode()
        )

        resp = await ingest.client.post(
            "/v1/uploads",
            content=body,
            headers={**ingest.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )

        assert resp.status_code == 202, resp.text
        [(message, _)] = ingest.requested()
        assert isinstance(message.source, BlobSource)
        assert ingest.blobs.blobs[message.source.blob_id][0] == data

    async def test_post_info_is_a_json_string_field(self, ingest: IngestApp) -> None:
        fields = direct_fields()
        fields["post_info"] = json.dumps({"privacy_level": "PUBLIC_TO_EVERYONE", "title": "Hi #reelay"})

        resp = await ingest.post_file(mp4_bytes(10_000), fields=fields)

        assert resp.status_code == 202, resp.text
        [(message, _)] = ingest.requested()
        assert message.post_info is not None
        assert message.post_info.title == "Hi #reelay"


class TestReadUploads:
    async def test_status_shows_state_history_and_tiktok_ids(self, ingest: IngestApp) -> None:
        await ingest.post_json(url_body(request_id="s-1"))
        await ingest.uploads.transition(
            "s-1",
            Change(UploadState.UPLOADING, source="uploader", set_fields={"publish_id": "v_pub_file~v2-1.1"}),
        )
        await ingest.uploads.transition(
            "s-1",
            Change(UploadState.PUBLISHED, source="poller", set_fields={"post_ids": ["7300000000000000001"]}),
        )

        resp = await ingest.client.get("/v1/uploads/s-1", headers=ingest.auth)

        assert resp.status_code == 200
        view = resp.json()
        assert view["state"] == "published"
        assert view["publish_id"] == "v_pub_file~v2-1.1"
        assert view["post_ids"] == ["7300000000000000001"]
        assert [(e["state"], e["source"]) for e in view["history"]] == [
            ("accepted", "ingest"),
            ("uploading", "uploader"),
            ("published", "poller"),
        ]
        assert view["source"] == {"kind": "url", "size": None, "content_type": None, "filename": None}
        assert PUBLIC_URL not in resp.text, "source URLs may carry signed credentials; never echoed"

    async def test_unknown_upload_is_404(self, ingest: IngestApp) -> None:
        resp = await ingest.client.get("/v1/uploads/nope", headers=ingest.auth)

        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "unknown_upload"

    async def test_lists_by_account_and_state(self, ingest: IngestApp) -> None:
        ingest.accounts.add_connected("other")
        await ingest.post_json(url_body(request_id="a-1"))
        await ingest.post_json(url_body(request_id="a-2"))
        await ingest.post_json(url_body(request_id="o-1", account_id="other"))
        await ingest.uploads.transition("a-2", Change(UploadState.UPLOADING, source="uploader"))

        mine = await ingest.client.get("/v1/uploads", params={"account_id": ACCOUNT}, headers=ingest.auth)
        accepted = await ingest.client.get(
            "/v1/uploads", params={"account_id": ACCOUNT, "state": "accepted"}, headers=ingest.auth
        )
        limited = await ingest.client.get("/v1/uploads", params={"limit": 1}, headers=ingest.auth)

        assert sorted(i["request_id"] for i in mine.json()["items"]) == ["a-1", "a-2"]
        assert [i["request_id"] for i in accepted.json()["items"]] == ["a-1"]
        assert limited.json()["count"] == 1

    async def test_list_refuses_an_unknown_state(self, ingest: IngestApp) -> None:
        resp = await ingest.client.get("/v1/uploads", params={"state": "done"}, headers=ingest.auth)

        assert resp.status_code == 422
        assert resp.json()["error"]["detail"][0]["field"] == "query.state"
