"""A publish TikTok just created is recorded despite a database hiccup: forgotten, the retry would
init a second, orphan publish that counts against the creator's daily post cap (found by
`make chaos`: FerretDB restarted right after an init)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reelay_common.domain.errors import DatabaseUnavailableError
from reelay_common.domain.records import UploadRecord
from reelay_common.domain.states import UploadState
from reelay_testing.stores import FakeUploadStore
from reelay_uploader.handlers import handle_upload_requested

from tests.unit.uploader.test_upload_handler import direct, make_world


class LosesTheFirstInitCheckpoint(FakeUploadStore):
    """The in-memory store, whose first write of a new publish_id fails as a lost server does."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = 0

    async def checkpoint(
        self, request_id: str, fields: Mapping[str, Any], *, expect_state: UploadState | None = None
    ) -> UploadRecord | None:
        if "publish_id" in fields and not self.failed:
            self.failed += 1
            raise DatabaseUnavailableError("server selection timed out")
        return await super().checkpoint(request_id, fields, expect_state=expect_state)


async def test_the_checkpoint_of_a_new_publish_is_retried_and_tiktok_inits_once() -> None:
    store = LosesTheFirstInitCheckpoint()
    world = make_world(uploads=store)

    await handle_upload_requested(direct(), world.deps)

    assert store.failed == 1
    assert len(world.tiktok.inits) == 1, "a second publish was initialised"
    record = await world.uploads.get("req-1")
    assert record is not None
    assert record.state is UploadState.UPLOADED
    assert record.publish_id is not None
