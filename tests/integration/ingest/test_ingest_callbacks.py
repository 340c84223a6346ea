"""A request's callback_url on the real ingest service (real uvicorn, Kafka, FerretDB): kept on the
upload and its command when https and public; a target inside our network is refused before
anything is stored or queued (docs/architecture.md, "Callbacks")."""

from __future__ import annotations

import pytest
from reelay_common.adapters.mongo.uploads import MongoUploadStore
from reelay_common.domain.messages import UploadRequested
from reelay_testing.kafka import read_topic, topic_size

from tests.integration.ingest.ingest_world import IngestWorld
from tests.integration.ingest.test_ingest_service import stored_uploads

VIDEO = "https://151.101.1.1/v.mp4"  # IP literals: the SSRF guard resolves them without DNS
HOOK = "https://151.101.1.2/hooks/reelay"


class TestCallbackUrl:
    async def test_a_public_https_callback_is_kept_with_the_upload_and_queued(
        self, world: IngestWorld
    ) -> None:
        account_id = await world.connect_account()

        resp = await world.http.post(
            "/v1/uploads",
            headers={**world.auth, "Idempotency-Key": "it-cb"},
            json={"account_id": account_id, "mode": "inbox", "video_url": VIDEO, "callback_url": HOOK},
        )

        assert resp.status_code == 202, resp.text
        record = await MongoUploadStore(world.db).get("it-cb")
        assert record is not None
        assert record.callback_url == HOOK
        [requested] = await read_topic(world.bootstrap, world.settings.topic_upload_requested, until=1)
        assert UploadRequested.model_validate_json(requested.value).callback_url == HOOK
        view = (await world.http.get("/v1/uploads/it-cb", headers=world.auth)).json()
        assert view["callbacks"] == []

    @pytest.mark.parametrize(
        "url",
        ["https://127.0.0.1:8443/hook", "https://10.0.0.8/hook", "https://169.254.169.254/latest/meta-data"],
    )
    async def test_a_callback_into_our_own_network_is_refused_and_changes_nothing(
        self, world: IngestWorld, url: str
    ) -> None:
        account_id = await world.connect_account()

        resp = await world.http.post(
            "/v1/uploads",
            headers=world.auth,
            json={"account_id": account_id, "mode": "inbox", "video_url": VIDEO, "callback_url": url},
        )

        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "callback_url_not_public"
        assert await stored_uploads(world.db) == 0
        assert await topic_size(world.bootstrap, world.settings.topic_upload_requested) == 0
