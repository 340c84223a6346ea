"""The chunk planner against every rule of the reference's §3, checked by an independent validator."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from reelay_common.domain.chunks import chunk_ranges, plan_chunks
from reelay_common.domain.errors import InvalidInputError
from reelay_common.domain.tiktok import FileUploadSourceInfo

FOUR_GB = 4_000_000_000  # the safe reading of "4 GB" (see chunks.py)
MIB = 1024 * 1024
# Written from the reference (§3 "MB ambiguity"), not imported from the planner.
SAFE_MIN_CHUNK = 5 * MIB
SAFE_MAX_CHUNK = 64 * 10**6
SAFE_MAX_SINGLE = 64 * 10**6
SAFE_MAX_FINAL = 128 * 10**6


def assert_plan_is_valid(video_size: int, plan: FileUploadSourceInfo) -> None:
    """Every §3 rule, under both readings of "MB"."""
    assert plan.source == "FILE_UPLOAD"
    assert plan.video_size == video_size
    count, size = plan.total_chunk_count, plan.chunk_size
    assert 1 <= count <= 1000
    assert count == video_size // size, "count is floor(video_size / chunk_size), never ceil"
    final = video_size - size * (count - 1)
    assert final >= size, "the remainder joins the last chunk"
    if count == 1:
        assert size == video_size
        assert video_size <= SAFE_MAX_SINGLE
    else:
        assert video_size > SAFE_MAX_SINGLE or video_size >= 2 * SAFE_MIN_CHUNK
        assert SAFE_MIN_CHUNK <= size <= SAFE_MAX_CHUNK
        assert final <= SAFE_MAX_FINAL
    if video_size < SAFE_MIN_CHUNK:
        assert count == 1, "files under 5 MB go whole"
    if video_size > SAFE_MAX_SINGLE:
        assert count >= 2, "files over 64 MB need several chunks"


def assert_ranges_tile_the_file(plan: FileUploadSourceInfo) -> None:
    ranges = chunk_ranges(plan)
    assert len(ranges) == plan.total_chunk_count
    expected_first = 0
    for i, (first, last) in enumerate(ranges):
        assert first == expected_first
        assert last >= first
        if i < len(ranges) - 1:
            assert last - first + 1 == plan.chunk_size
        expected_first = last + 1
    assert expected_first == plan.video_size


sizes = st.one_of(
    st.integers(min_value=1, max_value=FOUR_GB),
    st.sampled_from(
        [
            1,
            SAFE_MIN_CHUNK - 1,
            SAFE_MIN_CHUNK,
            SAFE_MIN_CHUNK + 1,
            10_000_000,
            SAFE_MAX_SINGLE - 1,
            SAFE_MAX_SINGLE,
            SAFE_MAX_SINGLE + 1,
            64 * MIB,
            100_000_000,
            127_999_999,
            128_000_000,
            128_000_001,
            FOUR_GB - 1,
            FOUR_GB,
        ]
    ),
)
preferences = st.one_of(
    st.just(10_000_000),
    st.integers(min_value=-5, max_value=300_000_000),
    st.sampled_from([1, SAFE_MIN_CHUNK - 1, SAFE_MIN_CHUNK, 64 * MIB, SAFE_MAX_CHUNK, SAFE_MAX_CHUNK + 1]),
)


class TestPlanChunks:
    @settings(max_examples=2000, deadline=None)
    @given(video_size=sizes)
    def test_every_default_plan_is_valid(self, video_size: int) -> None:
        plan = plan_chunks(video_size)
        assert_plan_is_valid(video_size, plan)

    @settings(max_examples=2000, deadline=None)
    @given(video_size=sizes, preference=preferences)
    @example(video_size=100_000_000, preference=64_000_000)  # the floor trap of the reference
    @example(video_size=FOUR_GB, preference=SAFE_MIN_CHUNK)
    def test_any_preference_yields_a_valid_plan(self, video_size: int, preference: int) -> None:
        plan = plan_chunks(video_size, chunk_size=preference)
        assert_plan_is_valid(video_size, plan)

    @settings(max_examples=300, deadline=None)
    @given(video_size=st.integers(min_value=1, max_value=2_000_000_000))
    def test_ranges_tile_the_file_in_order(self, video_size: int) -> None:
        assert_ranges_tile_the_file(plan_chunks(video_size))

    def test_worked_example_of_the_reference(self) -> None:
        plan = plan_chunks(50_000_123, chunk_size=10_000_000)
        # Under 64,000,000 bytes the planner sends one chunk; the reference's five-chunk example
        # is still a valid plan, and chunk_ranges must lay it out exactly as documented.
        assert plan.total_chunk_count == 1
        example_plan = FileUploadSourceInfo(video_size=50_000_123, chunk_size=10_000_000, total_chunk_count=5)
        assert_plan_is_valid(50_000_123, example_plan)
        assert chunk_ranges(example_plan) == [
            (0, 9_999_999),
            (10_000_000, 19_999_999),
            (20_000_000, 29_999_999),
            (30_000_000, 39_999_999),
            (40_000_000, 50_000_122),
        ]

    def test_multi_chunk_plan_uses_the_preferred_size(self) -> None:
        plan = plan_chunks(250_000_123, chunk_size=10_000_000)
        assert (plan.chunk_size, plan.total_chunk_count) == (10_000_000, 25)
        assert chunk_ranges(plan)[-1] == (240_000_000, 250_000_122)

    def test_four_gb_with_the_default_has_400_chunks(self) -> None:
        plan = plan_chunks(FOUR_GB)
        assert plan.total_chunk_count == 400
        first, last = chunk_ranges(plan)[-1]
        assert last - first + 1 <= 19_999_999

    def test_the_reference_4_gib_example_would_have_429_chunks_but_is_over_the_safe_cap(self) -> None:
        # The reference's own example (4 GiB -> 429 chunks) lies above 4,000,000,000: refused up front.
        with pytest.raises(InvalidInputError):
            plan_chunks(4 * 1024**3)

    def test_floor_trap_is_avoided(self) -> None:
        plan = plan_chunks(100_000_000, chunk_size=64_000_000)
        assert plan.total_chunk_count == 2
        assert plan.chunk_size == 50_000_000

    def test_small_file_is_one_whole_chunk(self) -> None:
        plan = plan_chunks(4_194_304)
        assert (plan.chunk_size, plan.total_chunk_count) == (4_194_304, 1)
        assert chunk_ranges(plan) == [(0, 4_194_303)]

    def test_a_preference_below_the_minimum_is_raised(self) -> None:
        assert plan_chunks(200_000_000, chunk_size=1_000_000).chunk_size == SAFE_MIN_CHUNK

    def test_a_preference_above_the_maximum_is_lowered(self) -> None:
        assert plan_chunks(1_000_000_000, chunk_size=100_000_000).chunk_size == SAFE_MAX_CHUNK


class TestPlanChunksRefuses:
    @pytest.mark.parametrize(("video_size", "code"), [(0, "empty_video"), (-1, "empty_video")])
    def test_empty_videos(self, video_size: int, code: str) -> None:
        with pytest.raises(InvalidInputError) as info:
            plan_chunks(video_size)
        assert info.value.code == code

    @pytest.mark.parametrize("video_size", [FOUR_GB + 1, 5 * 10**9])
    def test_videos_over_4_gib(self, video_size: int) -> None:
        with pytest.raises(InvalidInputError) as info:
            plan_chunks(video_size)
        assert info.value.code == "too_large"

    @pytest.mark.parametrize("bad", [True, 1.5, "100", None])
    def test_non_integer_sizes(self, bad: Any) -> None:
        with pytest.raises(InvalidInputError):
            plan_chunks(bad)

    @pytest.mark.parametrize("bad", [False, 10.0, "10000000"])
    def test_non_integer_preferences(self, bad: Any) -> None:
        with pytest.raises(InvalidInputError):
            plan_chunks(100_000_000, chunk_size=bad)


class TestChunkRangesRefuses:
    def test_a_plan_larger_than_the_video(self) -> None:
        with pytest.raises(InvalidInputError):
            chunk_ranges(FileUploadSourceInfo(video_size=100, chunk_size=60, total_chunk_count=2))

    def test_an_empty_plan(self) -> None:
        with pytest.raises(InvalidInputError):
            chunk_ranges(FileUploadSourceInfo(video_size=100, chunk_size=100, total_chunk_count=0))
