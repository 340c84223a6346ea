"""Specification of the ingest service against real Kafka and FerretDB, with the TikTok sandbox."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

from reelay_common.adapters.blobs.gridfs import GridFSBlobStore
from reelay_common.adapters.mongo.uploads import MongoUploadStore
from reelay_common.domain.messages import (
    BlobSource,
    PublishStatusChanged,
    TikTokWebhookReceived,
    UploadRequested,
)
from reelay_common.domain.states import UploadState
from reelay_testing.kafka import read_topic, topic_size
from reelay_testing.waiting import eventually
from tiktok_sandbox.media import iter_sample_mp4
from tiktok_sandbox.webhooks import event_body, signature_header

from tests.integration.ingest.ingest_world import IngestWorld
from tests.support import reader_sha256

MB = 1_000_000


class _Video:
    """A sample MP4 of `size` bytes, readable like a file (httpx streams it in 64 KiB pieces)."""

    def __init__(self, size: int) -> None:
        self._pieces: Iterator[bytes] = iter_sample_mp4(size)
        self._buffer = b""
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece
        out, self._buffer = (self._buffer, b"") if n < 0 else (self._buffer[:n], self._buffer[n:])
        self.digest.update(out)
        return out


async def stored_uploads(db: Any) -> int:
    """Uploads stored anywhere: in flight and in history (nothing may be, after a refusal)."""
    return sum([await db[name].count_documents({}) for name in ("uploads", "uploads_in_flight")])


async def blob_sha256(world: IngestWorld, source: BlobSource) -> str:
    return await reader_sha256(await GridFSBlobStore(world.db).open(source))


class TestStreamedUpload:
    async def test_a_file_lands_in_gridfs_byte_identical_and_its_request_on_the_topic(
        self, world: IngestWorld
    ) -> None:
        account_id = await world.connect_account()
        video = _Video(6 * MB)

        resp = await world.http.post(
            "/v1/uploads",
            headers={**world.auth, "Idempotency-Key": "it-file-1"},
            data={
                "account_id": account_id,
                "mode": "direct",
                "post_info": json.dumps({"privacy_level": "SELF_ONLY"}),
            },
            files={"file": ("sample.mp4", video, "video/mp4")},  # type: ignore[dict-item]  # a file-like object
        )

        assert resp.status_code == 202, resp.text
        assert resp.json()["status_url"] == f"{world.base_url}/v1/uploads/it-file-1"
        [requested] = await read_topic(world.bootstrap, world.settings.topic_upload_requested, until=1)
        message = UploadRequested.model_validate_json(requested.value)
        assert requested.key == account_id.encode()
        assert (message.request_id, message.account_id, message.mode) == ("it-file-1", account_id, "direct")
        assert isinstance(message.source, BlobSource)
        assert message.source.size == 6 * MB
        assert await topic_size(world.bootstrap, world.settings.topic_upload_requested) == 1
        assert await blob_sha256(world, message.source) == video.digest.hexdigest()

        record = await MongoUploadStore(world.db).get("it-file-1")
        assert record is not None
        assert record.state is UploadState.ACCEPTED
        [announced] = await read_topic(world.bootstrap, world.settings.topic_publish_status, until=1)
        assert PublishStatusChanged.model_validate_json(announced.value).state is UploadState.ACCEPTED

    async def test_a_replay_with_the_same_file_keeps_one_blob(self, world: IngestWorld) -> None:
        account_id = await world.connect_account()
        for _ in range(2):
            resp = await world.http.post(
                "/v1/uploads",
                headers={**world.auth, "Idempotency-Key": "it-replay"},
                data={"account_id": account_id, "mode": "inbox"},
                files={"file": ("a.mp4", _Video(1 * MB), "video/mp4")},  # type: ignore[dict-item]  # file-like
            )
            assert resp.status_code == 202, resp.text

        assert resp.json()["replayed"] is True
        assert await world.db["videos.files"].count_documents({}) == 1


class TestRefusals:
    async def test_a_privacy_level_the_creator_lacks_changes_nothing_anywhere(
        self, world: IngestWorld
    ) -> None:
        account_id = await world.connect_account(private=True)

        resp = await world.http.post(
            "/v1/uploads",
            headers=world.auth,
            data={
                "account_id": account_id,
                "mode": "direct",
                "post_info": json.dumps({"privacy_level": "PUBLIC_TO_EVERYONE"}),
            },
            files={"file": ("a.mp4", _Video(2 * MB), "video/mp4")},  # type: ignore[dict-item]  # file-like
        )

        assert resp.status_code == 422, resp.text
        assert set(resp.json()["error"]["detail"]["offered"]) == {
            "FOLLOWER_OF_CREATOR",
            "MUTUAL_FOLLOW_FRIENDS",
            "SELF_ONLY",
        }
        assert await stored_uploads(world.db) == 0
        assert await world.db["videos.files"].count_documents({}) == 0
        assert await world.db["videos.chunks"].count_documents({}) == 0
        assert await topic_size(world.bootstrap, world.settings.topic_upload_requested) == 0

    async def test_an_oversize_file_leaves_no_partial_blob(
        self, kafka_bootstrap_servers: str, mongodb_uri: str, mongo_db: Any
    ) -> None:
        from tests.integration.ingest.ingest_world import ingest_world

        async with ingest_world(
            kafka_bootstrap_servers, mongodb_uri, mongo_db, max_upload_bytes=3 * MB
        ) as world:
            account_id = await world.connect_account()
            resp = await world.http.post(
                "/v1/uploads",
                headers=world.auth,
                data={"account_id": account_id, "mode": "inbox"},
                files={"file": ("a.mp4", _Video(int(3.5 * MB)), "video/mp4")},  # type: ignore[dict-item]  # file-like
            )

            assert resp.status_code == 413, resp.text
            assert await world.db["videos.files"].count_documents({}) == 0
            assert await world.db["videos.chunks"].count_documents({}) == 0
            assert await stored_uploads(world.db) == 0


class TestWebhooksThroughKafka:
    async def test_a_webhook_signed_like_tiktok_reaches_the_events_topic(self, world: IngestWorld) -> None:
        account_id = await world.connect_account()
        resp = await world.http.post(
            "/v1/uploads",
            headers={**world.auth, "Idempotency-Key": "it-hook"},
            json={"account_id": account_id, "mode": "inbox", "video_url": "https://151.101.1.1/v.mp4"},
        )
        assert resp.status_code == 202, resp.text
        await MongoUploadStore(world.db).checkpoint("it-hook", {"publish_id": "v_inbox_file~v2.1"})
        # The sandbox's own signer: an independent reading of TikTok's scheme.
        body = event_body(
            client_key="dev-client-key",
            event="post.publish.inbox_delivered",
            open_id="someone",
            content={"publish_id": "v_inbox_file~v2.1", "publish_type": "INBOX_SHARE"},
            create_time=int(time.time()),
        )

        resp = await world.http.post(
            "/v1/webhooks/tiktok",
            content=body,
            headers={"TikTok-Signature": signature_header("dev-client-secret", body)},
        )

        assert resp.status_code == 200, resp.text
        [event] = await read_topic(world.bootstrap, world.settings.topic_publish_events, until=1)
        message = TikTokWebhookReceived.model_validate_json(event.value)
        assert event.key == account_id.encode()
        assert (message.event, message.publish_id, message.account_id) == (
            "post.publish.inbox_delivered",
            "v_inbox_file~v2.1",
            account_id,
        )

    async def test_a_webhook_with_a_bad_signature_publishes_nothing(self, world: IngestWorld) -> None:
        body = event_body(
            client_key="k",
            event="post.publish.complete",
            open_id="o",
            content={"publish_id": "p"},
            create_time=int(time.time()),
        )

        resp = await world.http.post(
            "/v1/webhooks/tiktok", content=body, headers={"TikTok-Signature": signature_header("wrong", body)}
        )

        assert resp.status_code == 401
        assert await topic_size(world.bootstrap, world.settings.topic_publish_events) == 0


class TestOperations:
    async def test_readyz_reports_mongo_and_kafka(self, world: IngestWorld) -> None:
        resp = await world.http.get("/readyz")

        assert resp.status_code == 200, resp.text
        assert resp.json() == {"status": "ready", "checks": {"mongo": True, "kafka": True}}

    async def test_an_account_s_tokens_are_encrypted_at_rest(self, world: IngestWorld) -> None:
        account_id = await world.connect_account()
        doc = await world.db["accounts"].find_one({"_id": account_id})

        assert doc is not None
        assert "act." not in json.dumps(doc, default=str)
        assert "rft." not in json.dumps(doc, default=str)
        view = (await world.http.get(f"/v1/accounts/{account_id}", headers=world.auth)).json()
        assert view["status"] == "connected"
        assert "video.publish" in view["scopes"]


class TestClientGoesAway:
    async def test_a_client_that_disconnects_mid_file_leaves_nothing_behind(self, world: IngestWorld) -> None:
        import asyncio
        from urllib.parse import urlsplit

        account_id = await world.connect_account()
        boundary = "gone"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="account_id"\r\n\r\n{account_id}'
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="mode"\r\n\r\ninbox'
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        partial = b"".join(iter_sample_mp4(3 * MB))  # of a declared 8 MB body
        url = urlsplit(world.base_url)
        auth = f"Authorization: {world.auth['Authorization']}"
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            writer.write(
                (
                    "POST /v1/uploads HTTP/1.1\r\n"
                    f"Host: {url.netloc}\r\n{auth}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    f"Content-Length: {8 * MB}\r\n\r\n"
                ).encode()
                + head
                + partial
            )
            await writer.drain()
            await asyncio.sleep(0.5)  # let the server take in what was sent before the line drops
        finally:
            writer.close()
            del reader

        async def disconnect_seen() -> bool:
            metrics = (await world.http.get("/metrics")).text
            return 'reelay_ingest_rejections_total{code="client_disconnected"} 1.0' in metrics

        # The driver buffers GridFS chunks before inserting them; abort drops those and any written.
        await eventually(disconnect_seen, timeout=60, what="ingest to notice the disconnect")
        assert await world.db["videos.chunks"].count_documents({}) == 0
        assert await world.db["videos.files"].count_documents({}) == 0
        assert await stored_uploads(world.db) == 0
        assert await topic_size(world.bootstrap, world.settings.topic_upload_requested) == 0
