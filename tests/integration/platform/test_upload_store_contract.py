"""One UploadStore contract for the fake and the real Mongo store (docs/architecture.md, "Habits" 8)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.mongo.client import ensure_indexes
from reelay_common.adapters.mongo.uploads import MongoUploadStore
from reelay_common.domain.messages import UploadRequested
from reelay_common.domain.records import CallbackDelivery, Change
from reelay_common.domain.states import UploadState
from reelay_common.ports import UploadStore
from reelay_testing.stores import FakeUploadStore

S = UploadState


@pytest.fixture
async def indexed_db(mongo_db: AsyncDatabase[dict[str, Any]]) -> AsyncDatabase[dict[str, Any]]:
    await ensure_indexes(mongo_db)
    return mongo_db


@pytest.fixture(params=["memory", "mongo"])
def store(request: pytest.FixtureRequest) -> UploadStore:
    """The fake and the real store: every test below runs against both."""
    if request.param == "memory":
        return FakeUploadStore()
    return MongoUploadStore(request.getfixturevalue("indexed_db"))


def cmd(n: int = 1, *, account: str = "acct-1", mode: str = "direct") -> UploadRequested:
    data: dict[str, Any] = {
        "request_id": f"req-{n}",
        "account_id": account,
        "mode": mode,
        "source": {"kind": "url", "url": "https://videos.example.com/a.mp4"},
    }
    if mode == "direct":
        data["post_info"] = {"privacy_level": "SELF_ONLY", "title": "t"}
    return UploadRequested.model_validate(data)


def at(seconds: float) -> datetime:
    return datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


class TestCreate:
    async def test_inserts_an_accepted_upload_with_its_first_history_entry(self, store: UploadStore) -> None:
        record, created = await store.create(cmd(), source="ingest")
        assert created
        assert (record.request_id, record.account_id, record.mode, record.state) == (
            "req-1",
            "acct-1",
            "direct",
            S.ACCEPTED,
        )
        assert record.post_info is not None
        assert record.post_info.privacy_level == "SELF_ONLY"
        assert [(h.state, h.source) for h in record.history] == [(S.ACCEPTED, "ingest")]
        assert record.created_at.tzinfo is not None
        assert await store.get("req-1") == record

    async def test_keeps_when_the_client_asked(self, store: UploadStore) -> None:
        request = cmd()
        record, _ = await store.create(request, source="ingest")
        assert record.requested_at is not None
        assert abs(record.requested_at - request.requested_at) < timedelta(milliseconds=1)
        assert await store.get("req-1") == record

    async def test_is_idempotent_on_request_id(self, store: UploadStore) -> None:
        first, _ = await store.create(cmd(), source="ingest")
        await store.transition("req-1", Change(S.UPLOADING, source="uploader"))
        again, created = await store.create(cmd(), source="uploader")
        assert not created
        assert again.state is S.UPLOADING
        assert again.created_at == first.created_at
        assert len(again.history) == 2

    async def test_concurrent_creates_make_one_document(self, store: UploadStore) -> None:
        results = await asyncio.gather(*(store.create(cmd(), source="uploader") for _ in range(8)))
        assert sum(created for _, created in results) == 1
        assert len(await store.list()) == 1

    async def test_stores_datetimes_as_utc_and_reads_them_back_equal(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        expires = datetime(2030, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
        moved = await store.transition(
            "req-1", Change(S.UPLOADING, source="uploader", set_fields={"upload_url_expires_at": expires})
        )
        assert moved is not None
        fetched = await store.get("req-1")
        assert fetched is not None
        assert fetched.upload_url_expires_at == expires
        assert fetched.upload_url_expires_at.utcoffset() == timedelta(0)


class TestTransition:
    async def test_moves_forward_and_records_history_and_fields(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        moved = await store.transition(
            "req-1",
            Change(
                S.UPLOADING,
                source="uploader",
                detail={"log_id": "L1"},
                set_fields={"publish_id": "p-1", "video_size": 10},
            ),
        )
        assert moved is not None
        assert (moved.state, moved.publish_id, moved.video_size) == (S.UPLOADING, "p-1", 10)
        assert [(h.state, h.source, h.detail) for h in moved.history] == [
            (S.ACCEPTED, "ingest", {}),
            (S.UPLOADING, "uploader", {"log_id": "L1"}),
        ]
        assert moved.updated_at >= moved.created_at

    async def test_may_skip_intermediate_states(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        assert await store.transition("req-1", Change(S.PROCESSING, source="webhook")) is not None

    async def test_never_moves_back(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        await store.transition("req-1", Change(S.PROCESSING, source="poller"))
        assert await store.transition("req-1", Change(S.UPLOADED, source="uploader")) is None
        record = await store.get("req-1")
        assert record is not None
        assert record.state is S.PROCESSING
        assert [h.state for h in record.history] == [S.ACCEPTED, S.PROCESSING]

    async def test_a_duplicate_event_changes_nothing(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        await store.transition("req-1", Change(S.PUBLISHED, source="webhook", set_fields={"post_ids": ["a"]}))
        before = await store.get("req-1")
        assert (
            await store.transition(
                "req-1", Change(S.PUBLISHED, source="poller", set_fields={"post_ids": ["b"]})
            )
            is None
        )
        assert await store.get("req-1") == before

    async def test_a_late_failure_never_overrides_a_publish(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        await store.transition("req-1", Change(S.PUBLISHED, source="webhook"))
        assert await store.transition("req-1", Change(S.FAILED, source="poller")) is None
        record = await store.get("req-1")
        assert record is not None
        assert record.state is S.PUBLISHED

    async def test_unconfirmed_may_still_learn_the_real_outcome(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        await store.transition("req-1", Change(S.UNCONFIRMED, source="poller"))
        moved = await store.transition("req-1", Change(S.PUBLISHED, source="webhook"))
        assert moved is not None
        assert moved.state is S.PUBLISHED

    async def test_of_an_unknown_upload_is_refused(self, store: UploadStore) -> None:
        assert await store.transition("nope", Change(S.UPLOADING, source="uploader")) is None
        assert await store.get("nope") is None

    async def test_many_concurrent_transitions_to_one_target_have_exactly_one_winner(
        self, store: UploadStore
    ) -> None:
        await store.create(cmd(), source="ingest")
        results = await asyncio.gather(
            *(
                store.transition("req-1", Change(S.UPLOADING, source="uploader", detail={"worker": i}))
                for i in range(20)
            )
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        record = await store.get("req-1")
        assert record is not None
        assert [h.state for h in record.history] == [S.ACCEPTED, S.UPLOADING]

    async def test_racing_terminal_outcomes_leave_exactly_one(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        targets = [S.PUBLISHED, S.FAILED, S.INBOX_DELIVERED] * 5
        results = await asyncio.gather(
            *(store.transition("req-1", Change(t, source="webhook")) for t in targets)
        )
        assert sum(r is not None for r in results) == 1
        record = await store.get("req-1")
        assert record is not None
        assert len(record.history) == 2

    @pytest.mark.parametrize("field", ["state", "history", "_id", "created_at"])
    async def test_refuses_to_set_store_managed_fields_and_writes_nothing(
        self, store: UploadStore, field: str
    ) -> None:
        await store.create(cmd(), source="ingest")
        before = await store.get("req-1")
        with pytest.raises(ValueError, match="managed by the store"):
            await store.transition("req-1", Change(S.UPLOADING, source="uploader", set_fields={field: "x"}))
        assert await store.get("req-1") == before

    async def test_refuses_unknown_fields_and_writes_nothing(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        before = await store.get("req-1")
        with pytest.raises(ValueError, match="unknown upload fields"):
            await store.transition(
                "req-1", Change(S.UPLOADING, source="uploader", set_fields={"publishid": "typo"})
            )
        assert await store.get("req-1") == before


class TestCheckpoint:
    async def test_sets_fields_without_a_state_change(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        await store.transition("req-1", Change(S.UPLOADING, source="uploader"))
        record = await store.checkpoint(
            "req-1", {"publish_id": "p-1", "upload_url": "https://u", "uploaded_bytes": 5}
        )
        assert record is not None
        assert (record.state, record.publish_id, record.upload_url, record.uploaded_bytes) == (
            S.UPLOADING,
            "p-1",
            "https://u",
            5,
        )
        assert len(record.history) == 2

    async def test_with_expect_state_only_applies_in_that_state(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        await store.transition("req-1", Change(S.UPLOADED, source="uploader"))
        assert await store.checkpoint("req-1", {"uploaded_bytes": 1}, expect_state=S.UPLOADING) is None
        record = await store.get("req-1")
        assert record is not None
        assert record.uploaded_bytes == 0

    async def test_of_an_unknown_upload_returns_none(self, store: UploadStore) -> None:
        assert await store.checkpoint("nope", {"uploaded_bytes": 1}) is None

    async def test_refuses_the_state_field(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        with pytest.raises(ValueError, match="managed by the store"):
            await store.checkpoint("req-1", {"state": "published"})


class TestQueries:
    async def test_lists_newest_first_filtered_by_account_and_state(self, store: UploadStore) -> None:
        for n, account in [(1, "a"), (2, "b"), (3, "a"), (4, "a")]:
            await store.create(cmd(n, account=account), source="ingest")
            await asyncio.sleep(0.005)  # distinct created_at at millisecond precision
        await store.transition("req-3", Change(S.UPLOADING, source="uploader"))
        assert [r.request_id for r in await store.list(account_id="a")] == ["req-4", "req-3", "req-1"]
        assert [r.request_id for r in await store.list(account_id="a", state=S.ACCEPTED)] == [
            "req-4",
            "req-1",
        ]
        assert [r.request_id for r in await store.list(state=S.UPLOADING)] == ["req-3"]
        assert [r.request_id for r in await store.list(limit=2)] == ["req-4", "req-3"]
        assert await store.list(account_id="nobody") == []

    @pytest.mark.parametrize("limit", [0, -1, 1001])
    async def test_list_refuses_a_silly_limit(self, store: UploadStore, limit: int) -> None:
        with pytest.raises(ValueError, match="limit"):
            await store.list(limit=limit)

    async def test_finds_an_upload_by_publish_id(self, store: UploadStore) -> None:
        await store.create(cmd(1), source="ingest")
        await store.create(cmd(2), source="ingest")
        await store.checkpoint("req-2", {"publish_id": "v_pub_2"})
        found = await store.find_by_publish_id("v_pub_2")
        assert found is not None
        assert found.request_id == "req-2"
        assert await store.find_by_publish_id("v_pub_x") is None


class TestPolling:
    async def test_claims_only_due_untracked_or_expired_leases(self, store: UploadStore) -> None:
        await store.create(cmd(1), source="ingest")
        await store.create(cmd(2), source="ingest")
        await store.create(cmd(3), source="ingest")
        await store.schedule_poll("req-1", at(10), attempts=0)
        await store.schedule_poll("req-2", at(5), attempts=0)
        # req-3 is not tracked (no poll_next_at): never claimed.
        assert await store.claim_due_poll(at(0), 30) is None
        first = await store.claim_due_poll(at(20), 30)
        second = await store.claim_due_poll(at(20), 30)
        assert first is not None
        assert second is not None
        assert (first.request_id, second.request_id) == ("req-2", "req-1")  # earliest due first
        assert first.poll_lease_until == at(50)
        assert await store.claim_due_poll(at(21), 30) is None  # both leased
        again = await store.claim_due_poll(at(51), 30)  # a lease that expired is free again
        assert again is not None
        assert again.request_id == "req-2"

    async def test_schedule_poll_releases_the_lease(self, store: UploadStore) -> None:
        await store.create(cmd(1), source="ingest")
        await store.schedule_poll("req-1", at(0), attempts=0)
        assert await store.claim_due_poll(at(1), 300) is not None
        await store.schedule_poll("req-1", at(5), attempts=1)
        record = await store.get("req-1")
        assert record is not None
        assert (record.poll_next_at, record.poll_attempts, record.poll_lease_until) == (at(5), 1, None)
        assert await store.claim_due_poll(at(6), 300) is not None

    @pytest.mark.parametrize("terminal", [S.FAILED, S.INBOX_DELIVERED, S.UNCONFIRMED])
    async def test_never_claims_finished_uploads(self, store: UploadStore, terminal: S) -> None:
        await store.create(cmd(1), source="ingest")
        await store.schedule_poll("req-1", at(0), attempts=0)
        await store.transition("req-1", Change(terminal, source="webhook"))
        assert await store.claim_due_poll(at(1), 30) is None

    async def test_claims_a_published_upload_only_while_it_is_watched_for_post_ids(
        self, store: UploadStore
    ) -> None:
        await store.create(cmd(1), source="ingest")
        await store.transition(
            "req-1", Change(S.PUBLISHED, source="poller", set_fields={"poll_next_at": at(0)})
        )
        claimed = await store.claim_due_poll(at(1), 30)
        assert claimed is not None
        assert claimed.state is S.PUBLISHED
        await store.checkpoint("req-1", {"poll_next_at": None, "poll_lease_until": None})
        assert await store.claim_due_poll(at(100), 30) is None

    async def test_concurrent_claims_lease_each_upload_exactly_once(self, store: UploadStore) -> None:
        for n in range(5):
            await store.create(cmd(n), source="ingest")
            await store.schedule_poll(f"req-{n}", at(n), attempts=0)
        claims = await asyncio.gather(*(store.claim_due_poll(at(100), 60) for _ in range(20)))
        claimed = [c.request_id for c in claims if c is not None]
        assert sorted(claimed) == [f"req-{n}" for n in range(5)]

    async def test_a_claim_racing_a_transition_loses_neither_write(self, store: UploadStore) -> None:
        for n in range(10):
            await store.create(cmd(n), source="ingest")
            await store.schedule_poll(f"req-{n}", at(0), attempts=0)
        await asyncio.gather(
            *(store.claim_due_poll(at(1), 60) for _ in range(10)),
            *(store.transition(f"req-{n}", Change(S.PROCESSING, source="webhook")) for n in range(10)),
        )
        for n in range(10):
            record = await store.get(f"req-{n}")
            assert record is not None
            assert record.state is S.PROCESSING
            assert [h.state for h in record.history] == [S.ACCEPTED, S.PROCESSING]


def later() -> datetime:
    """A `now` far enough ahead that every upload written by a test has been quiet long enough."""
    return datetime.now(UTC) + timedelta(hours=1)


async def settle_some(store: UploadStore) -> None:
    """req-1 failed, req-2 published and no longer watched (settled); req-3 uploading, req-4
    published and still watched for its post ids (in flight)."""
    for n in range(1, 5):
        await store.create(cmd(n), source="ingest")
    await store.transition("req-1", Change(S.FAILED, source="uploader", detail={"code": "x"}))
    await store.transition(
        "req-2", Change(S.PUBLISHED, source="poller", set_fields={"publish_id": "v_pub_2"})
    )
    await store.transition("req-3", Change(S.UPLOADING, source="uploader"))
    await store.transition("req-4", Change(S.PUBLISHED, source="poller", set_fields={"poll_next_at": at(0)}))
    for n in range(1, 5):
        await sent(store, f"req-{n}")


async def sent(store: UploadStore, request_id: str) -> None:
    """What the upload owed Kafka was sent (as the relay settles it)."""
    record = await store.get(request_id)
    assert record is not None
    await store.settle_outbox(request_id, record.outbox, next_try_at=datetime.now(UTC))


class TestArchive:
    async def test_archives_settled_uploads_only_and_every_read_still_finds_them(
        self, store: UploadStore
    ) -> None:
        await settle_some(store)
        before = {n: await store.get(f"req-{n}") for n in range(1, 5)}
        assert await store.archive_settled(later(), grace_seconds=0) == 2
        assert await store.archive_settled(later(), grace_seconds=0) == 0  # each moves once
        assert {n: await store.get(f"req-{n}") for n in range(1, 5)} == before
        assert sorted(r.request_id for r in await store.list()) == ["req-1", "req-2", "req-3", "req-4"]
        assert [r.request_id for r in await store.list(state=S.FAILED)] == ["req-1"]
        found = await store.find_by_publish_id("v_pub_2")
        assert found is not None
        assert found.request_id == "req-2"
        # What is still in flight goes on as before: the watched one is claimable.
        claimed = await store.claim_due_poll(at(1), 30)
        assert claimed is not None
        assert claimed.request_id == "req-4"

    async def test_waits_out_the_grace_period(self, store: UploadStore) -> None:
        await settle_some(store)
        assert await store.archive_settled(datetime.now(UTC), grace_seconds=3600) == 0

    async def test_a_late_fact_about_an_archived_upload_is_kept(self, store: UploadStore) -> None:
        await settle_some(store)
        await store.archive_settled(later(), grace_seconds=0)
        updated = await store.checkpoint("req-2", {"post_ids": ["7300000000000000001"]})
        assert updated is not None
        assert updated.post_ids == ["7300000000000000001"]
        record = await store.get("req-2")
        assert record is not None
        assert record.post_ids == ["7300000000000000001"]
        # Terminal is terminal, archived or not.
        assert await store.transition("req-1", Change(S.PUBLISHED, source="webhook")) is None

    async def test_a_replayed_create_of_an_archived_upload_returns_it(self, store: UploadStore) -> None:
        await settle_some(store)
        await store.archive_settled(later(), grace_seconds=0)
        again, created = await store.create(cmd(1), source="ingest")
        assert not created
        assert again.state is S.FAILED
        assert await store.archive_settled(later(), grace_seconds=0) == 0
        assert len(await store.list()) == 4

    async def test_concurrent_archive_runs_move_each_upload_once(self, store: UploadStore) -> None:
        for n in range(10):
            await store.create(cmd(n), source="ingest")
            await store.transition(f"req-{n}", Change(S.FAILED, source="uploader"))
            await sent(store, f"req-{n}")
        moved = await asyncio.gather(*(store.archive_settled(later(), grace_seconds=0) for _ in range(4)))
        assert sum(moved) == 10
        assert len(await store.list()) == 10

    async def test_a_write_racing_the_archive_move_is_not_lost(self, store: UploadStore) -> None:
        for n in range(10):
            await store.create(cmd(n), source="ingest")
            await store.transition(f"req-{n}", Change(S.PUBLISHED, source="poller"))
            await sent(store, f"req-{n}")
        await asyncio.gather(
            store.archive_settled(later(), grace_seconds=0),
            *(store.checkpoint(f"req-{n}", {"post_ids": [str(7300000000000000000 + n)]}) for n in range(10)),
        )
        await store.archive_settled(later(), grace_seconds=0)  # whatever a late write held back
        for n in range(10):
            record = await store.get(f"req-{n}")
            assert record is not None
            assert record.post_ids == [str(7300000000000000000 + n)]


class TestOutbox:
    async def test_a_new_upload_owes_its_accepted_announcement_and_with_enqueue_its_command(
        self, store: UploadStore
    ) -> None:
        plain, _ = await store.create(cmd(1), source="uploader")
        queued, _ = await store.create(cmd(2), source="ingest", enqueue=True, lease_seconds=30)
        assert [(e.kind, e.state, e.source) for e in plain.outbox] == [("status", S.ACCEPTED, "uploader")]
        assert [e.kind for e in queued.outbox] == ["status", "upload_requested"]
        assert plain.outbox_due_at is not None
        assert plain.outbox_lease_until is None
        assert queued.outbox_lease_until is not None  # its creator sends it
        assert await store.get("req-2") == queued

    async def test_each_transition_appends_its_announcement_in_order(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        for target in (S.UPLOADING, S.UPLOADED):
            await store.transition("req-1", Change(target, source="uploader"))
        await store.transition("req-1", Change(S.UPLOADING, source="uploader"))  # refused: nothing owed
        record = await store.get("req-1")
        assert record is not None
        assert [e.state for e in record.outbox] == [S.ACCEPTED, S.UPLOADING, S.UPLOADED]
        assert len({e.id for e in record.outbox}) == 3

    async def test_one_process_at_a_time_holds_an_outbox(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        now = datetime.now(UTC)
        leased = await store.lease_outbox("req-1", now, 30)
        assert leased is not None
        assert [e.state for e in leased.outbox] == [S.ACCEPTED]
        assert await store.lease_outbox("req-1", now, 30) is None
        assert await store.claim_due_outbox(now + timedelta(seconds=1), 30) is None
        # Once the holder's lease runs out, another may take over.
        assert await store.lease_outbox("req-1", now + timedelta(seconds=31), 30) is not None
        assert await store.lease_outbox("nope", now, 30) is None

    async def test_settling_removes_exactly_what_was_sent(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        leased = await store.lease_outbox("req-1", datetime.now(UTC), 30)
        assert leased is not None
        # Appended while the holder sends: kept, and due when the holder says.
        await store.transition("req-1", Change(S.UPLOADING, source="uploader"))
        retry = at(60)
        after = await store.settle_outbox("req-1", leased.outbox, next_try_at=retry)
        assert after is not None
        assert [e.state for e in after.outbox] == [S.UPLOADING]
        assert (after.outbox_due_at, after.outbox_lease_until) == (retry, None)
        done = await store.settle_outbox("req-1", after.outbox, next_try_at=retry)
        assert done is not None
        assert (done.outbox, done.outbox_due_at, done.outbox_lease_until) == ([], None, None)
        assert await store.lease_outbox("req-1", datetime.now(UTC), 30) is None  # nothing owed

    async def test_claims_only_due_outboxes_earliest_first_and_each_once(self, store: UploadStore) -> None:
        for n in range(1, 4):
            await store.create(cmd(n), source="ingest")
        await store.settle_outbox("req-2", [], next_try_at=at(100))  # backed off
        await sent(store, "req-3")  # owes nothing
        claims = await asyncio.gather(*(store.claim_due_outbox(at(10), 3600) for _ in range(4)))
        assert sorted(c.request_id for c in claims if c is not None) == ["req-1"]
        later_claim = await store.claim_due_outbox(at(101), 30)
        assert later_claim is not None
        assert later_claim.request_id == "req-2"

    async def test_an_announcement_left_to_its_writer_waits_for_the_relay(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        await sent(store, "req-1")
        moved = await store.transition(
            "req-1", Change(S.UPLOADING, source="uploader", announce_after=timedelta(seconds=60))
        )
        assert moved is not None
        assert moved.outbox_due_at is not None
        assert moved.outbox_due_at - moved.history[-1].at == timedelta(seconds=60)
        now = datetime.now(UTC)
        assert await store.claim_due_outbox(now, 30) is None  # no relay takes it before its time
        claimed = await store.claim_due_outbox(now + timedelta(seconds=61), 30)  # the writer died
        assert claimed is not None
        assert [e.state for e in claimed.outbox] == [S.UPLOADING]

    async def test_the_writer_drains_what_it_left_for_later_at_once(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        await sent(store, "req-1")
        await store.transition(
            "req-1", Change(S.UPLOADING, source="uploader", announce_after=timedelta(seconds=60))
        )
        leased = await store.lease_outbox("req-1", datetime.now(UTC), 30)
        assert leased is not None
        assert [e.state for e in leased.outbox] == [S.UPLOADING]
        # The next change is due at once, and the one before it goes first.
        await store.settle_outbox("req-1", [], next_try_at=datetime.now(UTC) + timedelta(seconds=60))
        moved = await store.transition("req-1", Change(S.UPLOADED, source="uploader"))
        assert moved is not None
        assert moved.outbox_due_at == moved.history[-1].at
        claimed = await store.claim_due_outbox(datetime.now(UTC) + timedelta(seconds=1), 30)
        assert claimed is not None
        assert [e.state for e in claimed.outbox] == [S.UPLOADING, S.UPLOADED]

    async def test_counts_the_uploads_that_still_owe_kafka(self, store: UploadStore) -> None:
        for n in range(1, 4):
            await store.create(cmd(n), source="ingest")
        assert await store.count_owing() == 3
        await sent(store, "req-2")
        assert await store.count_owing() == 2

    async def test_an_upload_that_still_owes_kafka_is_not_archived(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        await store.transition("req-1", Change(S.FAILED, source="uploader"))
        assert await store.archive_settled(later(), grace_seconds=0) == 0
        await sent(store, "req-1")
        assert await store.archive_settled(later(), grace_seconds=0) == 1


class TestPostIds:
    async def test_merges_new_ids_once_and_announces_them(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        await store.transition("req-1", Change(S.PUBLISHED, source="poller"))
        await sent(store, "req-1")
        first = await store.add_post_ids("req-1", ["p1", "p2"], source="webhook")
        assert first is not None
        assert first.post_ids == ["p1", "p2"]
        assert [(e.state, e.source) for e in first.outbox] == [(S.PUBLISHED, "webhook")]
        assert await store.add_post_ids("req-1", ["p2", "p1"], source="poller") is None
        again = await store.add_post_ids("req-1", ["p2", "p3"], source="poller")
        assert again is not None
        assert again.post_ids == ["p1", "p2", "p3"]
        assert await store.add_post_ids("nope", ["p1"], source="poller") is None

    async def test_concurrent_writers_lose_no_id(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        await store.transition("req-1", Change(S.PUBLISHED, source="poller"))
        await asyncio.gather(*(store.add_post_ids("req-1", [f"p{n}"], source="webhook") for n in range(8)))
        record = await store.get("req-1")
        assert record is not None
        assert sorted(record.post_ids) == [f"p{n}" for n in range(8)]

    async def test_an_archived_upload_learns_its_ids_and_owes_their_announcement(
        self, store: UploadStore
    ) -> None:
        await settle_some(store)
        await store.archive_settled(later(), grace_seconds=0)
        updated = await store.add_post_ids("req-2", ["p1"], source="webhook")
        assert updated is not None
        assert updated.post_ids == ["p1"]
        claimed = await store.claim_due_outbox(later(), 30)
        assert claimed is not None
        assert claimed.request_id == "req-2"
        assert (await store.find_in_flight("req-2")) is not None


class TestInFlightCollection:
    """What makes the hot paths follow the work in flight on the real store (not a port promise)."""

    async def test_settled_uploads_leave_the_in_flight_collection_for_uploads(
        self, indexed_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        store = MongoUploadStore(indexed_db)
        await settle_some(store)
        assert await indexed_db["uploads_in_flight"].count_documents({}) == 4
        assert await indexed_db["uploads"].count_documents({}) == 0
        await store.archive_settled(later(), grace_seconds=0)
        assert await indexed_db["uploads_in_flight"].count_documents({}) == 2
        archived = {d["_id"] async for d in indexed_db["uploads"].find({}, {"_id": 1})}
        assert archived == {"req-1", "req-2"}
        assert await store.find_in_flight("req-1") is None
        assert await store.find_in_flight("req-3") is not None

    async def test_a_request_id_claimed_by_a_writer_that_died_before_its_insert_is_usable(
        self, indexed_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        store = MongoUploadStore(indexed_db)
        await indexed_db["uploads_ids"].insert_one({"_id": "req-1"})  # claimed, then the process died
        record, created = await store.create(cmd(), source="ingest")
        assert created
        assert record.state is S.ACCEPTED
        again, created_again = await store.create(cmd(), source="ingest")
        assert (again.request_id, created_again) == ("req-1", False)

    async def test_request_ids_stored_before_the_claims_existed_are_claimed_at_start(
        self, indexed_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        store = MongoUploadStore(indexed_db)
        await settle_some(store)
        await store.archive_settled(later(), grace_seconds=0)
        await indexed_db["uploads_ids"].delete_many({})  # as an older Reelay left the database
        await ensure_indexes(indexed_db)
        ids = {d["_id"] async for d in indexed_db["uploads_ids"].find({})}
        assert ids == {"req-1", "req-2", "req-3", "req-4"}
        again, created = await store.create(cmd(1), source="ingest")  # archived: a replay
        assert not created
        assert again.state is S.FAILED


def delivery(state: UploadState, seconds: float, **fields: Any) -> CallbackDelivery:
    """A callback of `state`, last tried `seconds` after the first attempt."""
    return CallbackDelivery(state=state, first_attempt_at=at(0), last_attempt_at=at(seconds), **fields)


class TestRecordCallback:
    async def test_keeps_each_states_callback_from_its_first_attempt_to_its_end(
        self, store: UploadStore
    ) -> None:
        await store.create(cmd(), source="ingest")
        await store.record_callback("req-1", delivery(S.ACCEPTED, 0, attempts=1, last_status=500))
        await store.record_callback("req-1", delivery(S.ACCEPTED, 2, attempts=2, last_error="timeout"))
        done = delivery(S.ACCEPTED, 5, attempts=3, last_status=204, outcome="delivered", delivered_at=at(5))
        after = await store.record_callback("req-1", done)
        assert after is not None
        assert after.callbacks == {S.ACCEPTED: done}
        assert after.state is S.ACCEPTED  # no state change, no history entry
        assert len(after.history) == 1
        again = await store.get("req-1")
        assert again is not None
        assert again.callbacks == {S.ACCEPTED: done}

    async def test_a_finished_callback_is_never_overwritten(self, store: UploadStore) -> None:
        await store.create(cmd(), source="ingest")
        failed = delivery(S.ACCEPTED, 0, attempts=1, last_status=404, outcome="failed", gave_up_at=at(0))
        assert await store.record_callback("req-1", failed) is not None
        assert await store.record_callback("req-1", delivery(S.ACCEPTED, 1, attempts=2)) is None
        # Another state's callback is its own.
        other = await store.record_callback("req-1", delivery(S.UPLOADING, 1, attempts=1))
        assert other is not None
        assert other.callbacks == {S.ACCEPTED: failed, S.UPLOADING: delivery(S.UPLOADING, 1, attempts=1)}

    async def test_an_unknown_upload_records_nothing(self, store: UploadStore) -> None:
        assert await store.record_callback("nope", delivery(S.ACCEPTED, 0)) is None

    async def test_an_archived_uploads_callback_is_recorded_where_it_now_lives(
        self, store: UploadStore
    ) -> None:
        await settle_some(store)
        await store.archive_settled(later(), grace_seconds=0)
        done = delivery(S.FAILED, 1, attempts=1, last_status=200, outcome="delivered", delivered_at=at(1))
        assert await store.record_callback("req-1", done) is not None
        record = await store.get("req-1")
        assert record is not None
        assert record.callbacks == {S.FAILED: done}


class TestTenants:
    """Two tenants' equal ids are two uploads; the default tenant's keys are the ids themselves."""

    async def test_the_same_request_id_of_two_tenants_is_two_uploads(self, store: UploadStore) -> None:
        a, created_a = await store.create(cmd().model_copy(update={"tenant_id": "team-a"}), source="ingest")
        b, created_b = await store.create(cmd().model_copy(update={"tenant_id": "team-b"}), source="ingest")
        assert created_a
        assert created_b
        assert (a.request_id, a.account_id, a.tenant_id) == ("team-a~req-1", "team-a~acct-1", "team-a")
        assert (b.client_request_id, b.client_account_id, b.tenant_id) == ("req-1", "acct-1", "team-b")
        assert await store.get("req-1") is None  # and the default tenant has none
        default, created = await store.create(cmd(), source="ingest")
        assert created
        assert (default.request_id, default.account_id, default.tenant_id) == ("req-1", "acct-1", "default")
        request = a.request()
        assert (request.request_id, request.account_id, request.tenant_id) == ("req-1", "acct-1", "team-a")

    async def test_a_listing_of_one_tenant_holds_its_uploads_only(self, store: UploadStore) -> None:
        await store.create(cmd(1), source="ingest")
        await store.create(cmd(2).model_copy(update={"tenant_id": "team-a"}), source="ingest")
        await store.create(cmd(3).model_copy(update={"tenant_id": "team-b"}), source="ingest")
        assert [r.request_id for r in await store.list(tenant_id="team-a")] == ["team-a~req-2"]
        assert [r.request_id for r in await store.list(tenant_id="default")] == ["req-1"]
        assert [r.request_id for r in await store.list(tenant_id="team-a", account_id="team-a~acct-1")] == [
            "team-a~req-2"
        ]
        assert await store.list(tenant_id="team-a", account_id="acct-1") == []
        assert await store.list(tenant_id="team-c") == []


async def test_the_default_tenants_listing_includes_documents_written_before_tenants(
    indexed_db: AsyncDatabase[dict[str, Any]],
) -> None:
    store = MongoUploadStore(indexed_db)
    await store.create(cmd(1), source="ingest")
    await store.create(cmd(2).model_copy(update={"tenant_id": "team-a"}), source="ingest")
    # A document as an earlier Reelay wrote it: no tenant_id at all.
    await indexed_db["uploads_in_flight"].update_one({"_id": "req-1"}, {"$unset": {"tenant_id": ""}})
    assert "tenant_id" not in (await indexed_db["uploads_in_flight"].find_one({"_id": "req-1"}) or {})
    [legacy] = await store.list(tenant_id="default")
    assert (legacy.request_id, legacy.tenant_id) == ("req-1", "default")
    assert [r.request_id for r in await store.list(tenant_id="team-a")] == ["team-a~req-2"]
