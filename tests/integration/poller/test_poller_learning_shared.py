"""The learnt poll schedule on a real Mongo-wire server: one PollProfiles contract for the fake and
the Mongo store, and two status-poller instances (each its own client, as two replicas are) sharing
what either learnt, concurrently, and keeping it across a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.mongo.client import connect
from reelay_common.adapters.mongo.poll_profiles import MongoPollProfiles
from reelay_common.domain.messages import UrlSource
from reelay_common.domain.profiles import ALL_ACCOUNTS, LearnedSchedule, size_class
from reelay_common.domain.records import UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.ports import PollProfiles
from reelay_status_poller.handlers import PollPolicy
from reelay_status_poller.learning import observe_terminal, plan_next_poll
from reelay_testing.stores import FakePollProfiles

KLASS = size_class(3 << 20)
SCHEDULE = LearnedSchedule(max_gap=8.0, min_observations=5)
POLICY = PollPolicy()


@pytest.fixture(params=["memory", "mongo"])
def profiles(request: pytest.FixtureRequest) -> PollProfiles:
    """The fake and the real store: every contract test below runs against both."""
    if request.param == "memory":
        return FakePollProfiles()
    return MongoPollProfiles(request.getfixturevalue("mongo_db"))


async def test_nothing_is_known_before_an_observation(profiles: PollProfiles) -> None:
    assert await profiles.get("acct", KLASS) is None


async def test_an_observation_is_kept_per_account_and_size_class(profiles: PollProfiles) -> None:
    after = await profiles.observe("acct", KLASS, 18.0, 22.0)
    assert after.count == 1
    assert await profiles.get("acct", KLASS) == after
    assert await profiles.get("acct", size_class(1 << 10)) is None
    assert await profiles.get("other", KLASS) is None


async def test_concurrent_observations_are_all_kept(profiles: PollProfiles) -> None:
    await asyncio.gather(*(profiles.observe("acct", KLASS, 10.0 + i, 11.0 + i) for i in range(12)))
    kept = await profiles.get("acct", KLASS)
    assert kept is not None
    assert kept.count == 12


async def test_a_bad_observation_is_refused_and_changes_nothing(profiles: PollProfiles) -> None:
    with pytest.raises(ValueError, match="observation"):
        await profiles.observe("acct", KLASS, 5.0, 1.0)
    assert await profiles.get("acct", KLASS) is None


def tracked(request_id: str, started: datetime) -> UploadRecord:
    return UploadRecord.model_validate(
        {
            "_id": request_id,
            "account_id": "acct",
            "mode": "direct",
            "source": UrlSource(url="https://videos.example.com/a.mp4"),
            "state": UploadState.PROCESSING,
            "created_at": started,
            "updated_at": started,
            "publish_id": f"v_pub_file~{request_id}",
            "video_size": 3 << 20,
            "tracking_started_at": started,
        }
    )


async def plan(profiles: PollProfiles, record: UploadRecord, now: datetime) -> datetime | None:
    return await plan_next_poll(
        record,
        now,
        profiles=profiles,
        schedule=SCHEDULE,
        min_interval=POLICY.min_interval,
        max_interval=POLICY.max_interval,
        backoff=POLICY.interval,
    )


async def test_two_poller_instances_share_what_either_learnt_and_a_restart_keeps_it(
    mongodb_uri: str, mongo_db: AsyncDatabase[dict[str, Any]]
) -> None:
    first, second = (connect(mongodb_uri, app_name=f"poller-{n}") for n in (1, 2))
    try:
        a, b = (MongoPollProfiles(client[mongo_db.name]) for client in (first, second))
        now = datetime.now(UTC)
        fresh = tracked("req-new", now)
        assert await plan(b, fresh, now) is None  # nothing learnt: today's backoff

        # Both replicas see publishes settle at once, about 20 s after tracking started.
        async def settle(store: MongoPollProfiles, n: int) -> None:
            started = now - timedelta(seconds=30)
            record = tracked(f"req-{n}", started)
            await observe_terminal(
                store, record, after=started + timedelta(seconds=19), by=started + timedelta(seconds=21)
            )

        await asyncio.gather(*(settle(a if n % 2 else b, n) for n in range(10)))

        for store in (a, b):
            for account in ("acct", ALL_ACCOUNTS):
                kept = await store.get(account, KLASS)
                assert kept is not None
                assert kept.count == 10  # every observation of both replicas, none lost
        from_a, from_b = await plan(a, fresh, now), await plan(b, fresh, now)
        assert from_a is not None
        assert from_a == from_b
        # The first poll waits for the learnt window instead of polling at once.
        assert timedelta(seconds=8) < from_a - now < timedelta(seconds=30)
    finally:
        await first.close()
        await second.close()

    restarted = connect(mongodb_uri, app_name="poller-restarted")
    try:
        store = MongoPollProfiles(restarted[mongo_db.name])
        kept = await store.get("acct", KLASS)
        assert kept is not None
        assert kept.count == 10
        assert await plan(store, fresh, now) == from_a
    finally:
        await restarted.close()


async def test_the_mongo_store_keeps_one_small_document_per_account_and_class(
    mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    store = MongoPollProfiles(mongo_db)
    for i in range(200):
        await store.observe("acct", KLASS, float(i % 40), float(i % 40) + 2.0)
    docs = await mongo_db["poll_profiles"].find().to_list(None)
    assert [d["_id"] for d in docs] == [f"acct|{KLASS}"]
    assert docs[0]["count"] == 200
    assert docs[0]["version"] == 200
    assert len(docs[0]["weights"]) <= 62
