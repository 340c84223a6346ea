"""The rules written once in reelay_common.domain.rules (and the stop-aware sleep of domain.timing)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from reelay_common.domain.errors import (
    BrokerUnavailableError,
    DatabaseUnavailableError,
    InvalidInputError,
    RateLimitedError,
    RetryableError,
    TransientTikTokError,
)
from reelay_common.domain.messages import UploadMode
from reelay_common.domain.rules import (
    SNIFF_BYTES,
    Backoff,
    StatusMeaning,
    check_privacy_level,
    parse_content_range,
    retry_deadline_passed,
    sniff_video_type,
    upload_state_for,
    uses_up_retry_deadline,
)
from reelay_common.domain.states import UploadState
from reelay_common.domain.tiktok import PublishStatusCode
from reelay_common.domain.timing import sleep_unless_stopped

MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"


class TestSniffing:
    @pytest.mark.parametrize(
        ("head", "expected"),
        [
            (MP4_HEAD, "video/mp4"),
            (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", "video/quicktime"),
            (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", "video/webm"),
            (b"GIF89a" + bytes(20), None),
            (b"", None),
        ],
    )
    def test_recognises_the_containers_tiktok_accepts(self, head: bytes, expected: str | None) -> None:
        assert sniff_video_type(head) == expected

    @pytest.mark.parametrize("atom", [b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"])
    def test_reads_an_old_quicktime_file_by_its_first_atom(self, atom: bytes) -> None:
        # skip and pnot are where the two former sniffers disagreed: ingest took them, URLs did not.
        assert sniff_video_type(b"\x00\x00\x00\x08" + atom + b"\x00\x00\x00\x00") == "video/quicktime"

    def test_an_ftyp_box_cut_before_its_brand_is_still_mp4(self) -> None:
        # Ingest took 8 bytes of box header as enough; the URL reader wanted the brand too.
        assert sniff_video_type(b"\x00\x00\x00\x18ftyp") == "video/mp4"

    @pytest.mark.parametrize("head", [b"\x00\x00\x00\x08mda", b"\x1a\x45\xdf", b"\x00\x00\x00\x08abcd"])
    def test_refuses_what_is_too_short_or_unknown(self, head: bytes) -> None:
        assert sniff_video_type(head) is None

    def test_needs_no_more_than_sniff_bytes(self) -> None:
        head = b"\x00\x00\x00\x14ftypqt  " + bytes(100)
        assert sniff_video_type(head[:SNIFF_BYTES]) == sniff_video_type(head) == "video/quicktime"


class TestContentRange:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("bytes 0-9/100", (0, 9, 100)),
            ("bytes 10-19/*", (10, 19, None)),
            ("  Bytes   0-99/100  ", (0, 99, 100)),
            ("BYTES 5-5/6", (5, 5, 6)),
        ],
    )
    def test_parses_first_last_and_total(self, value: str, expected: tuple[int, int, int | None]) -> None:
        assert parse_content_range(value) == expected

    @pytest.mark.parametrize(
        "value", [None, "", "bytes */100", "bytes 0-9", "items 0-9/100", "bytes -1-9/100", "bytes a-9/100"]
    )
    def test_gives_none_for_anything_else(self, value: str | None) -> None:
        assert parse_content_range(value) is None


class TestPrivacyLevel:
    def test_an_offered_level_passes(self) -> None:
        check_privacy_level("SELF_ONLY", ["PUBLIC_TO_EVERYONE", "SELF_ONLY"])

    def test_a_level_not_offered_is_refused_naming_it_and_the_offered_ones(self) -> None:
        with pytest.raises(InvalidInputError) as refused:
            check_privacy_level("PUBLIC_TO_EVERYONE", ["FOLLOWER_OF_CREATOR", "SELF_ONLY"])

        assert refused.value.code == "privacy_level_not_offered"
        assert "PUBLIC_TO_EVERYONE" in refused.value.message
        assert "FOLLOWER_OF_CREATOR, SELF_ONLY" in refused.value.message

    def test_a_creator_offered_nothing_is_told_so(self) -> None:
        with pytest.raises(InvalidInputError) as refused:
            check_privacy_level("SELF_ONLY", [])

        assert "the creator cannot post now" in refused.value.message


class TestUploadStateForTikTokStatus:
    @pytest.mark.parametrize(
        ("status", "mode", "expected"),
        [
            ("PROCESSING_UPLOAD", "direct", StatusMeaning(UploadState.PROCESSING)),
            ("PROCESSING_DOWNLOAD", "inbox", StatusMeaning(UploadState.PROCESSING)),
            ("PUBLISH_COMPLETE", "direct", StatusMeaning(UploadState.PUBLISHED)),
            ("PUBLISH_COMPLETE", "inbox", StatusMeaning(UploadState.INBOX_DELIVERED, user_posted_draft=True)),
            ("SEND_TO_USER_INBOX", "inbox", StatusMeaning(UploadState.INBOX_DELIVERED)),
            ("SEND_TO_USER_INBOX", "direct", StatusMeaning(UploadState.INBOX_DELIVERED)),
            ("FAILED", "direct", StatusMeaning(UploadState.FAILED)),
            ("FAILED", "inbox", StatusMeaning(UploadState.FAILED)),
        ],
    )
    def test_maps_each_status(
        self, status: PublishStatusCode, mode: UploadMode, expected: StatusMeaning
    ) -> None:
        assert upload_state_for(status, mode) == expected


class TestBackoff:
    def test_doubles_from_the_initial_delay_up_to_the_maximum(self) -> None:
        backoff = Backoff(0.5, 8.0)
        assert [backoff.delay(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]

    def test_grows_by_the_multiplier(self) -> None:
        backoff = Backoff(2.0, 60.0, multiplier=1.5)
        assert [backoff.delay(n) for n in range(4)] == [2.0, 3.0, 4.5, 6.75]

    def test_a_negative_attempt_waits_the_initial_delay(self) -> None:
        assert Backoff(0.5, 8.0).delay(-3) == 0.5

    def test_a_maximum_below_the_initial_delay_caps_even_the_first_wait(self) -> None:
        assert Backoff(5.0, 2.0).delay(0) == 2.0

    def test_thousands_of_attempts_stay_at_the_maximum(self) -> None:
        assert Backoff(0.5, 30.0).delay(100_000) == 30.0
        assert Backoff(0.0, 30.0).delay(100_000) == 0.0

    def test_delay_is_never_jittered(self) -> None:
        def refuse(low: float, high: float) -> float:
            raise AssertionError("delay() must not draw a random number")

        assert Backoff(1.0, 10.0, jitter=0.5, uniform=refuse).delay(2) == 4.0

    def test_jitter_spreads_by_the_fraction_either_way(self) -> None:
        drawn: list[tuple[float, float]] = []

        def highest(low: float, high: float) -> float:
            drawn.append((low, high))
            return high

        backoff = Backoff(1.0, 10.0, jitter=0.1, uniform=highest)
        assert backoff.sample(2) == pytest.approx(4.4)
        assert backoff.jittered(30.0) == pytest.approx(33.0)
        assert [(round(low, 9), round(high, 9)) for low, high in drawn] == [(0.9, 1.1)] * 2

    def test_without_jitter_no_random_number_is_drawn(self) -> None:
        def refuse(low: float, high: float) -> float:
            raise AssertionError("no jitter was asked for")

        backoff = Backoff(1.0, 10.0, uniform=refuse)
        assert backoff.sample(1) == 2.0
        assert backoff.jittered(7.0) == 7.0

    @pytest.mark.parametrize(
        ("initial", "maximum", "multiplier", "jitter"),
        [
            (-1.0, 1.0, 2.0, 0.0),
            (1.0, -1.0, 2.0, 0.0),
            (1.0, 2.0, 0.5, 0.0),
            (1.0, 2.0, 2.0, 1.0),
            (1.0, 2.0, 2.0, -0.1),
        ],
    )
    def test_refuses_settings_that_make_no_backoff(
        self, initial: float, maximum: float, multiplier: float, jitter: float
    ) -> None:
        with pytest.raises(ValueError, match="backoff"):
            Backoff(initial, maximum, multiplier, jitter)


class TestRetryDeadline:
    @pytest.mark.parametrize(
        ("error", "counts"),
        [
            (RetryableError("the source answered 503"), True),
            (TransientTikTokError("TikTok answered 502"), True),
            (RateLimitedError("rate_limit_exceeded", retry_after=30), False),
            (DatabaseUnavailableError("Mongo is electing"), False),
            (BrokerUnavailableError("Kafka did not acknowledge"), False),
        ],
    )
    def test_only_failures_of_the_source_or_tiktok_use_up_the_deadline(
        self, error: RetryableError, counts: bool
    ) -> None:
        assert uses_up_retry_deadline(error) is counts

    def test_the_deadline_passes_once_retrying_lasted_as_long_as_it(self) -> None:
        since = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        deadline = timedelta(hours=6)
        assert not retry_deadline_passed(since, since + deadline - timedelta(seconds=1), deadline)
        assert retry_deadline_passed(since, since + deadline, deadline)


class TestSleepUnlessStopped:
    async def test_sleeps_the_time_out_when_nobody_stops_it(self) -> None:
        stop = asyncio.Event()
        assert await sleep_unless_stopped(stop, 0.01) is False

    async def test_wakes_as_soon_as_stop_is_set(self) -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, stop.set)
        async with asyncio.timeout(2.0):
            assert await sleep_unless_stopped(stop, 60.0) is True

    async def test_returns_at_once_when_already_stopped(self) -> None:
        stop = asyncio.Event()
        stop.set()
        async with asyncio.timeout(2.0):
            assert await sleep_unless_stopped(stop, 60.0) is True
