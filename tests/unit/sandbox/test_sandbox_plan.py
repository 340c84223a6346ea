"""The chunk plan rules (§3), strict "safe" reading and the loose switch."""

from __future__ import annotations

import pytest
from tiktok_sandbox.plan import ChunkPlan, PlanError, validate_plan


class TestSafeRules:
    @pytest.mark.parametrize(
        ("size", "chunk", "count"),
        [
            (50_000_123, 10_000_000, 5),  # the worked example
            (4_194_304, 4_194_304, 1),  # whole file under 5 MB
            (1, 1, 1),
            (64_000_000, 64_000_000, 1),  # largest single chunk
            (30_000_000, 20_000_000, 1),  # one chunk bigger than chunk_size, still <= 64 MB
            (10_485_760, 5_242_880, 2),  # smallest multi-chunk plan
            (128_000_000, 64_000_000, 2),
            (191_999_999, 64_000_000, 2),  # final chunk 127,999,999
            (4_000_000_000, 10_000_000, 400),  # 4 GB
            (4_000_000_000, 5_242_880, 762),
        ],
    )
    def test_accepts_plans_inside_the_safe_ranges(self, size: int, chunk: int, count: int) -> None:
        assert validate_plan(size, chunk, count) == ChunkPlan(size, chunk, count)

    @pytest.mark.parametrize(
        ("size", "chunk", "count", "why"),
        [
            (50_000_123, 10_000_000, 6, "ceil instead of floor"),
            (50_000_123, 10_000_000, 4, "count too small"),
            (50_000_000, 5_000_000, 10, "chunk below 5 MiB"),
            (300_000_000, 65_000_000, 4, "chunk above 64,000,000"),
            (300_000_000, 67_108_864, 4, "64 MiB is over the safe limit"),
            (100_000_000, 64_000_000, 1, "floor trap: > 64 MB as one chunk"),
            (64_000_001, 64_000_001, 1, "whole file over 64 MB"),
            (4_194_304, 2_097_152, 2, "small file split"),
            (4_000_000, 3_000_000, 1, "small file with chunk_size != video_size"),
            (10_000_000, 20_000_000, 0, "chunk larger than the file"),
            (4_000_000_001, 10_000_000, 400, "over 4 GB"),
            (0, 0, 0, "empty"),
            (-5, 10, 0, "negative"),
        ],
    )
    def test_rejects_violations(self, size: int, chunk: int, count: int, why: str) -> None:
        with pytest.raises(PlanError):
            validate_plan(size, chunk, count)

    def test_final_chunk_takes_the_remainder(self) -> None:
        p = validate_plan(50_000_123, 10_000_000, 5)
        assert [p.chunk_range(i) for i in range(5)] == [
            (0, 9_999_999),
            (10_000_000, 19_999_999),
            (20_000_000, 29_999_999),
            (30_000_000, 39_999_999),
            (40_000_000, 50_000_122),
        ]
        with pytest.raises(IndexError):
            p.chunk_range(5)


class TestLooseRules:
    def test_accepts_mebibyte_reading(self) -> None:
        assert validate_plan(300_000_000, 67_108_864, 4, rules="loose").chunk_size == 67_108_864
        assert validate_plan(50_000_000, 5_000_000, 10, rules="loose").total_chunk_count == 10
        assert validate_plan(4_294_967_296, 10_000_000, 429, rules="loose").video_size == 4_294_967_296

    def test_still_rejects_what_no_reading_allows(self) -> None:
        with pytest.raises(PlanError):
            validate_plan(50_000_123, 10_000_000, 6, rules="loose")
        with pytest.raises(PlanError):
            validate_plan(300_000_000, 70_000_000, 4, rules="loose")
        with pytest.raises(PlanError):
            validate_plan(4_294_967_297, 10_000_000, 429, rules="loose")
