"""The sandbox's processing time: fixed by default, else growing with the video's size and spread
lognormally per publish (seeded), for benchmarks of status tracking."""

from __future__ import annotations

import math
import statistics

import pytest
from pydantic import ValidationError
from tiktok_sandbox.core import Sandbox
from tiktok_sandbox.plan import ChunkPlan
from tiktok_sandbox.settings import SandboxSettings
from tiktok_sandbox.state import Publish, SandboxState
from tiktok_sandbox.webhooks import WebhookSender

MB = 1_000_000


def sandbox(**settings: object) -> Sandbox:
    s = SandboxSettings.model_validate(settings)
    return Sandbox(SandboxState(s), WebhookSender(s))


def publish(size: int) -> Publish:
    return Publish(
        publish_id="v_pub_file~v2-1.1",
        open_id="open-1",
        mode="direct",
        source="FILE_UPLOAD",
        created_at=0.0,
        plan=ChunkPlan(video_size=size, chunk_size=size, total_chunk_count=1),
    )


class TestProcessingDelay:
    def test_is_fixed_by_default(self) -> None:
        sb = sandbox()
        assert {sb.processing_delay(publish(n * MB)) for n in (1, 50, 500)} == {2.0}

    def test_grows_with_the_size_of_the_video(self) -> None:
        sb = sandbox(processing_delay_seconds=5, processing_seconds_per_mb=2)
        assert sb.processing_delay(publish(1 * MB)) == pytest.approx(7.0)
        assert sb.processing_delay(publish(10 * MB)) == pytest.approx(25.0)

    def test_spreads_lognormally_around_its_median_and_repeats_with_a_seed(self) -> None:
        draws = [
            sandbox(processing_delay_seconds=20, processing_spread=0.3, processing_seed=3) for _ in range(2)
        ]
        first, second = ([sb.processing_delay(publish(MB)) for _ in range(500)] for sb in draws)
        assert first == second
        logs = [math.log(d) for d in first]
        assert statistics.median(first) == pytest.approx(20, rel=0.1)
        assert statistics.stdev(logs) == pytest.approx(0.3, rel=0.15)

    @pytest.mark.parametrize(
        "field", ["processing_delay_seconds", "processing_seconds_per_mb", "processing_spread"]
    )
    def test_a_negative_setting_is_refused(self, field: str) -> None:
        with pytest.raises(ValidationError, match=field):
            SandboxSettings.model_validate({field: -1})
