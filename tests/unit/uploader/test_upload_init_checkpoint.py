"""A new publish and the move to `uploading` are one write, made once TikTok created the publish.

- Recorded despite a database hiccup: forgotten, the retry would init a second, orphan publish
  that counts against the creator's daily post cap (found by `make chaos`: FerretDB restarted
  right after an init).
- A write that landed but whose answer was lost is recognised as ours, not as a lost race.
- A cancel that lands during the init wins: the publish never gets a byte, so it never posts.
- The first chunk goes out beside that write, but completes only once the write is durable; a
  write that fails for good leaves TikTok without a whole chunk.
- The `uploading` announcement is sent beside the chunks, not before them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from reelay_common.domain.errors import DatabaseUnavailableError
from reelay_common.domain.messages import PublishStatusChanged
from reelay_common.domain.records import Change, UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.ports import ChunkedUpload, ProgressCallback
from reelay_testing.stores import FakeUploadStore
from reelay_uploader import handlers
from reelay_uploader.handlers import handle_upload_requested

from tests.unit.uploader.test_upload_handler import BIG, FakeTikTok, PatternReader, direct, make_world


def _carries_a_new_publish(change: Change) -> bool:
    return change.target is UploadState.UPLOADING and "publish_id" in change.fields()


class LosesTheFirstInitCheckpoint(FakeUploadStore):
    """The in-memory store, whose first write of a new publish_id fails as a lost server does:
    before it is applied (`landed=False`) or after, its answer lost on the way back."""

    def __init__(self, *, landed: bool = False) -> None:
        super().__init__()
        self.landed = landed
        self.failed = 0

    async def transition(self, request_id: str, change: Change) -> UploadRecord | None:
        if not _carries_a_new_publish(change) or self.failed:
            return await super().transition(request_id, change)
        self.failed += 1
        if self.landed:
            await super().transition(request_id, change)
        raise DatabaseUnavailableError("server selection timed out")

    async def checkpoint(
        self, request_id: str, fields: Mapping[str, Any], *, expect_state: UploadState | None = None
    ) -> UploadRecord | None:
        assert "publish_id" not in fields, "a first publish is recorded with the move to uploading"
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


async def test_a_checkpoint_that_landed_with_its_answer_lost_is_taken_as_ours() -> None:
    store = LosesTheFirstInitCheckpoint(landed=True)
    world = make_world(uploads=store)

    await handle_upload_requested(direct(), world.deps)

    assert store.failed == 1
    assert len(world.tiktok.inits) == 1, "a second publish was initialised"
    [post] = world.tiktok.posts
    record = await world.uploads.get("req-1")
    assert record is not None
    assert (record.state, record.publish_id) == (UploadState.UPLOADED, post.publish_id)
    assert [h.state for h in record.history].count(UploadState.UPLOADING) == 1
    assert [e.state for e in world.status_events()] == [
        UploadState.ACCEPTED,
        UploadState.UPLOADING,
        UploadState.UPLOADED,
    ]


async def test_a_cancel_during_the_init_wins_and_not_a_byte_is_sent() -> None:
    world = make_world()
    created = world.tiktok.init_upload

    async def init_while_cancelled(*args: Any, **kwargs: Any) -> Any:
        # Ingest's cancel lands while TikTok creates the publish: the upload was still `accepted`.
        await world.uploads.transition("req-1", Change(UploadState.CANCELLED, source="ingest"))
        return await created(*args, **kwargs)

    world.tiktok.init_upload = init_while_cancelled  # type: ignore[method-assign]  # a hook on one fake

    await handle_upload_requested(direct(), world.deps)

    assert await world.state("req-1") is UploadState.CANCELLED
    assert world.tiktok.puts == []
    [publish] = world.tiktok.publishes.values()
    assert publish.received == 0  # a publish without a byte can never become a post
    assert world.tiktok.posts == []
    assert world.uploaded_events() == []


class HoldsTheInitCheckpoint(FakeUploadStore):
    """The in-memory store, whose write of a new publish waits for `release` (a slow server)."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def transition(self, request_id: str, change: Change) -> UploadRecord | None:
        if _carries_a_new_publish(change):
            self.holding.set()
            await self.release.wait()
        return await super().transition(request_id, change)


class CountingReader(PatternReader):
    """The video, counting the bytes it handed out (to the PUTs)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.handed = 0

    async def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        async for piece in super().stream(offset, length):
            self.handed += len(piece)
            yield piece


async def test_the_first_chunk_goes_out_beside_the_write_and_completes_only_after_it() -> None:
    store = HoldsTheInitCheckpoint()
    reader = CountingReader(BIG)
    world = make_world(uploads=store, reader=reader)

    handling = asyncio.create_task(handle_upload_requested(direct(), world.deps))
    await asyncio.wait_for(store.holding.wait(), 5)
    for _ in range(100):  # the first chunk's bytes go out while the write is in flight...
        if reader.handed >= 10_000_000:
            break
        await asyncio.sleep(0)
    assert reader.handed >= 10_000_000, "the first PUT waited for the write"
    await asyncio.sleep(0.05)
    [publish] = world.tiktok.publishes.values()
    assert world.tiktok.puts == []  # ...but no chunk is whole at TikTok before the write is durable
    assert publish.received == 0
    assert reader.handed == 10_000_000  # nothing of the second chunk either

    store.release.set()
    await asyncio.wait_for(handling, 5)
    assert await world.state("req-1") is UploadState.UPLOADED
    assert [first for _, first, _ in world.tiktok.puts] == [
        0,
        10_000_000,
        20_000_000,
        30_000_000,
        40_000_000,
        50_000_000,
    ]
    record = await world.uploads.get("req-1")
    assert record is not None
    assert record.publish_id == publish.publish_id


class NeverRecordsTheInit(FakeUploadStore):
    """The in-memory store, whose every write of a new publish fails (Mongo away for good)."""

    async def transition(self, request_id: str, change: Change) -> UploadRecord | None:
        if _carries_a_new_publish(change):
            raise DatabaseUnavailableError("server selection timed out")
        return await super().transition(request_id, change)


async def test_a_publish_that_cannot_be_recorded_never_gets_a_whole_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "INIT_CHECKPOINT_RETRY_SECONDS", 0.2)
    world = make_world(uploads=NeverRecordsTheInit())

    with pytest.raises(DatabaseUnavailableError):
        await handle_upload_requested(direct(), world.deps)

    [publish] = world.tiktok.publishes.values()
    assert world.tiktok.puts == []
    assert publish.received == 0  # the redelivery inits again; this publish can never post
    assert await world.state("req-1") is UploadState.ACCEPTED


class HoldsTheUploadingAnnouncement:
    """A Kafka that takes the `uploading` announcement only once TikTok has received a chunk."""

    def __init__(self, tiktok: FakeTikTok) -> None:
        self.chunk_arrived = asyncio.Event()
        self.upload_chunks = tiktok.upload_chunks

    async def chunks(self, upload: ChunkedUpload, *, on_progress: ProgressCallback | None = None) -> None:
        async def progress(confirmed: int) -> None:
            self.chunk_arrived.set()
            if on_progress is not None:
                await on_progress(confirmed)

        await self.upload_chunks(upload, on_progress=progress)

    def wrap(self, publish: Any) -> Any:
        async def held(topic: str, message: BaseModel, *, key: str) -> None:
            if isinstance(message, PublishStatusChanged) and message.state is UploadState.UPLOADING:
                await asyncio.wait_for(self.chunk_arrived.wait(), timeout=5)
            await publish(topic, message, key=key)

        return held


async def test_the_uploading_announcement_is_sent_beside_the_chunks_and_before_uploaded() -> None:
    world = make_world()
    hold = HoldsTheUploadingAnnouncement(world.tiktok)
    world.tiktok.upload_chunks = hold.chunks  # type: ignore[method-assign]  # a hook on one fake
    world.publisher.publish = hold.wrap(world.publisher.publish)  # type: ignore[method-assign]

    # Sent before the first PUT, the announcement would wait out the 5 s and fail the test.
    await asyncio.wait_for(handle_upload_requested(direct(), world.deps), timeout=4)

    assert await world.state("req-1") is UploadState.UPLOADED
    assert [e.state for e in world.status_events()] == [
        UploadState.ACCEPTED,
        UploadState.UPLOADING,
        UploadState.UPLOADED,
    ]


class CountsLeases(FakeUploadStore):
    """The in-memory store, counting outbox leases: one per drain that found something to send."""

    def __init__(self) -> None:
        super().__init__()
        self.leases = 0

    async def lease_outbox(self, request_id: str, now: Any, lease_seconds: float) -> UploadRecord | None:
        self.leases += 1
        return await super().lease_outbox(request_id, now, lease_seconds)


async def test_an_upload_done_within_the_linger_announces_uploading_with_uploaded() -> None:
    world = make_world(uploads=CountsLeases())
    assert isinstance(world.uploads, CountsLeases)
    upload_chunks = world.tiktok.upload_chunks

    async def wire_time(upload: ChunkedUpload, *, on_progress: ProgressCallback | None = None) -> None:
        await asyncio.sleep(0.05)  # the bytes take time: room for a drain beside them, were it due
        await upload_chunks(upload, on_progress=on_progress)

    world.tiktok.upload_chunks = wire_time  # type: ignore[method-assign]  # a hook on one fake

    await handle_upload_requested(direct(), world.deps)

    assert [e.state for e in world.status_events()] == [
        UploadState.ACCEPTED,
        UploadState.UPLOADING,
        UploadState.UPLOADED,
    ]
    # One drain (`uploaded`'s) sent both; nothing is left owed.
    assert world.uploads.leases == 1
    record = await world.uploads.get("req-1")
    assert record is not None
    assert record.outbox == []


async def test_an_upload_longer_than_the_linger_announces_uploading_while_it_runs(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(handlers, "UPLOADING_ANNOUNCE_LINGER_SECONDS", 0.05)
    world = make_world()
    announced = asyncio.Event()
    publish, upload_chunks = world.publisher.publish, world.tiktok.upload_chunks

    async def noted(topic: str, message: BaseModel, *, key: str) -> None:
        await publish(topic, message, key=key)
        if isinstance(message, PublishStatusChanged) and message.state is UploadState.UPLOADING:
            announced.set()

    async def slow_chunks(upload: ChunkedUpload, *, on_progress: ProgressCallback | None = None) -> None:
        # Meanwhile no relay loop takes the announcement: it is due once the linger is over.
        record = await world.uploads.get("req-1")
        for _ in range(100):  # the write recording the publish goes on beside the first PUT
            if record is not None and record.outbox_due_at is not None:
                break
            await asyncio.sleep(0)
            record = await world.uploads.get("req-1")
        assert record is not None
        assert record.outbox_due_at is not None
        assert record.outbox_due_at - record.history[-1].at == timedelta(seconds=0.05)
        # The bytes take until consumers were told `uploading` (or 2 s, failing the test).
        await asyncio.wait_for(announced.wait(), timeout=2)
        await upload_chunks(upload, on_progress=on_progress)

    world.publisher.publish = noted  # type: ignore[method-assign]  # hooks on two fakes
    world.tiktok.upload_chunks = slow_chunks  # type: ignore[method-assign]

    await handle_upload_requested(direct(), world.deps)

    assert await world.state("req-1") is UploadState.UPLOADED
    assert [e.state for e in world.status_events()] == [
        UploadState.ACCEPTED,
        UploadState.UPLOADING,
        UploadState.UPLOADED,
    ]
