"""A file streamed into ingest lands in the configured blob store (REELAY_BLOB_STORE): local files
or S3 (a real SeaweedFS), byte-identical, named in the request; a full local budget answers 507."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from reelay_common.adapters.blobs import open_blob_store
from reelay_common.domain.messages import BlobSource, UploadRequested
from reelay_testing.kafka import read_topic

from tests.integration.ingest.ingest_world import ingest_world
from tests.integration.ingest.test_ingest_service import MB, _Video, stored_uploads
from tests.support import reader_sha256


@pytest.fixture(params=["local", "s3"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "local":
        return {"blob_store": "local", "blob_dir": tmp_path / "blobs"}
    s3: dict[str, str] = request.getfixturevalue("s3_settings")
    return {
        "blob_store": "s3",
        "s3_endpoint_url": s3["endpoint_url"],
        "s3_bucket": s3["bucket"],
        "s3_prefix": f"it-ingest/{tmp_path.name}/",
        "s3_access_key_id": s3["access_key_id"] or None,
        "s3_secret_access_key": s3["secret_access_key"] or None,
    }


async def stored_sha256(settings: Any, db: Any, source: BlobSource) -> str:
    async with AsyncExitStack() as stack:
        store = await open_blob_store(settings, stack, db=db)
        return await reader_sha256(await store.open(source))


class TestConfiguredStore:
    async def test_a_streamed_file_lands_in_the_configured_store_byte_identical(
        self, kafka_bootstrap_servers: str, mongodb_uri: str, mongo_db: Any, store_settings: dict[str, Any]
    ) -> None:
        async with ingest_world(kafka_bootstrap_servers, mongodb_uri, mongo_db, **store_settings) as world:
            account_id = await world.connect_account()
            video = _Video(6 * MB)
            resp = await world.http.post(
                "/v1/uploads",
                headers=world.auth,
                data={"account_id": account_id, "mode": "inbox"},
                files={"file": ("sample.mp4", video, "video/mp4")},  # type: ignore[dict-item]  # file-like
            )
            assert resp.status_code == 202, resp.text
            [requested] = await read_topic(world.bootstrap, world.settings.topic_upload_requested, until=1)
            source = UploadRequested.model_validate_json(requested.value).source
            assert isinstance(source, BlobSource)
            assert source.store == store_settings["blob_store"]
            assert source.sha256 == video.digest.hexdigest()
            assert await stored_sha256(world.settings, mongo_db, source) == video.digest.hexdigest()
            assert await mongo_db["videos.chunks"].count_documents({}) == 0  # nothing went to GridFS


class TestLocalBudget:
    async def test_a_file_past_the_disk_budget_is_507_and_leaves_nothing(
        self, kafka_bootstrap_servers: str, mongodb_uri: str, mongo_db: Any, tmp_path: Path
    ) -> None:
        root = tmp_path / "blobs"
        async with ingest_world(
            kafka_bootstrap_servers,
            mongodb_uri,
            mongo_db,
            blob_store="local",
            blob_dir=root,
            blob_max_bytes=2 * MB,
        ) as world:
            account_id = await world.connect_account()
            resp = await world.http.post(
                "/v1/uploads",
                headers=world.auth,
                data={"account_id": account_id, "mode": "inbox"},
                files={"file": ("a.mp4", _Video(3 * MB), "video/mp4")},  # type: ignore[dict-item]  # file-like
            )
            assert resp.status_code == 507, resp.text
            assert resp.json()["error"]["code"] == "storage_full"
            assert "Retry-After" in resp.headers
            assert list(root.iterdir()) == []
            assert await stored_uploads(mongo_db) == 0
