"""The learnt poll schedule: the processing-time estimator, the polls it plans, and the poller
following them (first poll where TikTok usually finishes, backoff outside, today's schedule with
nothing learnt, webhooks and store failures never making it wrong)."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace
from datetime import timedelta

import pytest
from reelay_common.domain.errors import DatabaseUnavailableError
from reelay_common.domain.messages import TikTokWebhookReceived, VideoUploaded
from reelay_common.domain.profiles import (
    ALL_ACCOUNTS,
    BINS,
    UNKNOWN_SIZE_CLASS,
    LearnedSchedule,
    ProcessingProfile,
    size_class,
)
from reelay_common.domain.states import UploadState
from reelay_status_poller.handlers import handle_publish_event
from reelay_status_poller.learning import next_offset
from reelay_testing.stores import FakePollProfiles

from tests.unit.poller.poller_fakes import ACCOUNT, POLICY, PollerWorld, status

PUB = "v_pub_file~v2-1.1"
SCHEDULE = LearnedSchedule(max_gap=8.0, min_observations=5)


def learnt(*seconds: float) -> ProcessingProfile:
    profile = ProcessingProfile()
    for s in seconds:
        profile = profile.observe(s, s)
    return profile


class TestSizeClass:
    def test_is_the_log2_of_the_bytes(self) -> None:
        assert size_class(1) == "log2:0"
        assert size_class(1 << 20) == "log2:20"
        assert size_class((1 << 21) - 1) == "log2:20"
        assert size_class(1 << 21) == "log2:21"

    def test_an_unknown_size_is_its_own_class(self) -> None:
        assert size_class(None) == UNKNOWN_SIZE_CLASS
        assert size_class(0) == UNKNOWN_SIZE_CLASS


class TestProcessingProfile:
    def test_quantiles_follow_the_observations(self) -> None:
        rng = random.Random(7)
        times = [20.0 * math.exp(rng.gauss(0, 0.3)) for _ in range(400)]
        profile = ProcessingProfile()
        for t in times:
            profile = profile.observe(t, t)
        # Exponentially weighted over the last ~32: the median of a lognormal(20 s, 0.3) within a bin or two.
        assert 15.0 < profile.quantile(0.5) < 26.0
        assert profile.quantile(0.05) < profile.quantile(0.5) < profile.quantile(0.97)

    def test_a_poll_interval_is_spread_not_put_at_the_poll(self) -> None:
        # Every publish finished somewhere in (10 s, 30 s]: the median is inside, not at 30 s.
        profile = ProcessingProfile()
        for _ in range(20):
            profile = profile.observe(10.0, 30.0)
        assert 17.0 < profile.quantile(0.5) < 23.0
        assert profile.quantile(0.99) <= 32.0  # 30 s lies in the bin [26.9, 32) s

    def test_follows_a_drift_in_processing_time(self) -> None:
        profile = learnt(*([10.0] * 50))
        assert profile.quantile(0.5) < 12
        for _ in range(100):
            profile = profile.observe(40.0, 40.0)
        assert 35 < profile.quantile(0.5) < 45

    def test_stays_bounded_however_much_it_sees(self) -> None:
        profile = ProcessingProfile()
        rng = random.Random(1)
        for _ in range(2000):
            t = rng.uniform(0.1, 50_000.0)
            profile = profile.observe(t, t * 1.5)
        assert len(profile.weights) <= BINS
        assert profile.count == 2000
        assert sum(profile.weights.values()) == pytest.approx(1.0, abs=1e-4)  # less what was pruned

    def test_survives_its_stored_form(self) -> None:
        profile = learnt(3.0, 9.0, 27.0)
        again = ProcessingProfile.from_document(profile.to_document())
        assert again == profile

    @pytest.mark.parametrize(("low", "high"), [(-1.0, 2.0), (5.0, 4.0), (0.0, math.inf), (math.nan, 1.0)])
    def test_a_bad_observation_is_refused(self, low: float, high: float) -> None:
        with pytest.raises(ValueError, match="observation"):
            ProcessingProfile().observe(low, high)

    def test_a_stored_bin_out_of_range_is_refused(self) -> None:
        with pytest.raises(ValueError, match="out of range"):
            ProcessingProfile.from_document({"weights": {str(BINS): 1.0}, "count": 1})

    def test_an_empty_profile_has_no_quantile(self) -> None:
        with pytest.raises(ValueError, match="empty"):
            ProcessingProfile().quantile(0.5)


class TestLearnedSchedule:
    def test_is_not_trusted_before_enough_observations(self) -> None:
        assert not SCHEDULE.trusts(None)
        assert not SCHEDULE.trusts(learnt(20, 20, 20, 20))
        assert SCHEDULE.trusts(learnt(20, 20, 20, 20, 20))

    def test_polls_cover_the_learnt_window_at_most_max_gap_apart(self) -> None:
        profile = learnt(*[14, 16, 18, 20, 20, 22, 24, 26, 30])
        offsets = SCHEDULE.planned_offsets(profile, cap=60)
        assert offsets[0] == pytest.approx(min(profile.quantile(SCHEDULE.low) + 8, profile.quantile(0.5)))
        assert offsets[-1] >= profile.quantile(SCHEDULE.high)
        assert all(b - a <= 8 + 1e-9 for a, b in itertools.pairwise(offsets))

    def test_a_far_window_is_reached_in_waits_no_longer_than_the_cap(self) -> None:
        profile = learnt(*([300.0] * 10))
        offsets = SCHEDULE.planned_offsets(profile, cap=60)
        gaps = [b - a for a, b in itertools.pairwise([0.0, *offsets])]
        assert max(gaps) <= 60 + 1e-9
        assert offsets[0] == 60

    def test_refuses_settings_that_cannot_plan(self) -> None:
        with pytest.raises(ValueError, match="max_gap"):
            LearnedSchedule(max_gap=0)
        with pytest.raises(ValueError, match="window"):
            LearnedSchedule(low=0.9, high=0.5)

    def test_after_the_plan_the_backoff_takes_over_never_waiting_past_the_cap(self) -> None:
        def after_poll_at(elapsed: float) -> float:
            return next_offset(
                [20.0, 28.0],
                elapsed,
                last_polled=elapsed,
                min_interval=2,
                max_interval=60,
                backoff=POLICY.interval,
            )

        assert after_poll_at(0.0) == 20.0
        assert after_poll_at(20.0) == 28.0
        # Past the plan: 28 + 2, + 3, + 4.5 ...
        assert after_poll_at(28.0) == 30.0
        assert after_poll_at(30.0) == 33.0
        assert 5000.0 < after_poll_at(5000.0) <= 5060.0

    def test_a_planned_poll_missed_while_nobody_polled_is_made_at_once(self) -> None:
        # Tracking started 25 s into processing (a lagging consumer): the poll planned at 20 s is due.
        assert (
            next_offset([20.0, 28.0], 25.0, min_interval=2, max_interval=60, backoff=POLICY.interval) == 25.0
        )
        # Polled at 21 s, now 25 s: nothing was missed since, the next is at 28 s.
        assert (
            next_offset(
                [20.0, 28.0], 25.0, last_polled=21.0, min_interval=2, max_interval=60, backoff=POLICY.interval
            )
            == 28.0
        )


def video_uploaded(request_id: str = "req-1") -> VideoUploaded:
    return VideoUploaded(request_id=request_id, account_id=ACCOUNT, publish_id=PUB, mode="direct")


@pytest.fixture
def profiles(poller: PollerWorld) -> FakePollProfiles:
    kept = FakePollProfiles()
    poller.deps = replace(poller.deps, profiles=kept, learning=SCHEDULE)
    return kept


async def track(poller: PollerWorld, request_id: str = "req-1") -> None:
    await poller.uploaded(request_id, publish_id=PUB, privacy="SELF_ONLY")
    await handle_publish_event(video_uploaded(request_id), poller.deps)


class TestPollerLearning:
    async def test_with_nothing_learnt_the_schedule_is_todays(
        self, poller: PollerWorld, profiles: FakePollProfiles
    ) -> None:
        poller.tiktok.script(PUB, status("PROCESSING_UPLOAD"))
        await track(poller)
        started = poller.clock()
        assert (await poller.get()).poll_next_at == started  # at once, as today

        await poller.poll_when_due()
        assert (await poller.get()).poll_next_at == started + timedelta(seconds=POLICY.interval(0))

    async def test_a_settling_poll_teaches_the_interval_since_the_previous_poll(
        self, poller: PollerWorld, profiles: FakePollProfiles
    ) -> None:
        poller.tiktok.script(
            PUB, status("PROCESSING_UPLOAD"), status("PROCESSING_UPLOAD"), status("PUBLISH_COMPLETE")
        )
        await track(poller)
        for _ in range(3):
            await poller.poll_when_due()
        assert (await poller.get()).state is UploadState.PUBLISHED
        # Polled at 0, 2 and 5 s: TikTok finished in (2, 5] s; noted for the account and for all.
        klass = size_class(None)
        # (From the `uploaded` history entry, which the store stamps a few ms after the clock's start.)
        assert profiles.observations == [
            (ACCOUNT, klass, pytest.approx(2.0, abs=0.1), pytest.approx(5.0, abs=0.1)),
            (ALL_ACCOUNTS, klass, pytest.approx(2.0, abs=0.1), pytest.approx(5.0, abs=0.1)),
        ]

    async def test_a_publish_done_at_the_first_poll_teaches_since_processing_began(
        self, poller: PollerWorld, profiles: FakePollProfiles
    ) -> None:
        poller.tiktok.script(PUB, status("PUBLISH_COMPLETE"))
        await track(poller)
        poller.clock.advance(7)  # the first poll comes late (a busy poller): TikTok is done
        await poller.poll_when_due()
        # Not "after tracking started": TikTok may have finished before the poller even tracked it.
        _account, _klass, low, high = profiles.observations[0]
        assert low == 0.0
        assert high == pytest.approx(7.0, abs=0.1)

    async def test_once_learnt_the_first_poll_waits_for_the_learnt_window(
        self, poller: PollerWorld, profiles: FakePollProfiles
    ) -> None:
        for _ in range(6):
            await profiles.observe(ACCOUNT, size_class(None), 20.0, 20.0)
        poller.tiktok.script(PUB, status("PROCESSING_UPLOAD"), status("PUBLISH_COMPLETE"))
        await track(poller)
        started = poller.clock()
        first = (await poller.get()).poll_next_at
        assert first is not None
        assert timedelta(seconds=8) < first - started <= timedelta(seconds=POLICY.max_interval)

        await poller.poll_when_due()
        second = (await poller.get()).poll_next_at
        assert second is not None
        assert second - first <= timedelta(seconds=SCHEDULE.max_gap)
        await poller.poll_when_due()
        assert (await poller.get()).state is UploadState.PUBLISHED
        assert poller.tiktok.calls[PUB] == 2

    async def test_a_thin_account_profile_borrows_every_accounts(
        self, poller: PollerWorld, profiles: FakePollProfiles
    ) -> None:
        for _ in range(6):
            await profiles.observe(ALL_ACCOUNTS, size_class(None), 30.0, 30.0)
        await track(poller)
        first = (await poller.get()).poll_next_at
        assert first is not None
        assert first - poller.clock() > timedelta(seconds=8)

    async def test_learning_off_keeps_todays_schedule_whatever_was_learnt(
        self, poller: PollerWorld, profiles: FakePollProfiles
    ) -> None:
        for _ in range(6):
            await profiles.observe(ACCOUNT, size_class(None), 20.0, 20.0)
        poller.deps = replace(poller.deps, learning=None)
        await track(poller)
        assert (await poller.get()).poll_next_at == poller.clock()

    async def test_a_terminal_webhook_teaches_when_tiktok_said_it_finished(
        self, poller: PollerWorld, profiles: FakePollProfiles
    ) -> None:
        await track(poller)
        started = poller.clock()
        poller.clock.advance(12)
        event = TikTokWebhookReceived.model_validate(
            {
                "event": "post.publish.complete",
                "create_time": int(started.timestamp()) + 10,
                "publish_id": PUB,
            }
        )
        await handle_publish_event(event, poller.deps)

        assert (await poller.get()).state is UploadState.PUBLISHED
        account, _klass, low, high = profiles.observations[0]
        assert account == ACCOUNT
        assert 9.0 <= low <= 10.0 <= high <= 11.0

    async def test_an_unreadable_profile_store_falls_back_to_the_backoff(self, poller: PollerWorld) -> None:
        class Broken(FakePollProfiles):
            async def get(self, account_id: str, size_class: str) -> ProcessingProfile | None:
                raise DatabaseUnavailableError("mongo is down")

            async def observe(
                self, account_id: str, size_class: str, low: float, high: float
            ) -> ProcessingProfile:
                raise DatabaseUnavailableError("mongo is down")

        poller.deps = replace(poller.deps, profiles=Broken(), learning=SCHEDULE)
        poller.tiktok.script(PUB, status("PROCESSING_UPLOAD"), status("PUBLISH_COMPLETE"))
        await track(poller)
        assert (await poller.get()).poll_next_at == poller.clock()
        await poller.poll_when_due()
        await poller.poll_when_due()
        assert (await poller.get()).state is UploadState.PUBLISHED
