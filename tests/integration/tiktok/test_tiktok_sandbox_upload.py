"""The TikTok layer against the real sandbox and FerretDB: uploads complete byte-exact through every
injected fault, without a second init, and never commit a violation the sandbox would reject."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from reelay_common.domain.chunks import plan_chunks
from reelay_common.domain.messages import PostInfo
from reelay_common.ports import ChunkedUpload
from reelay_testing.readers import FileVideoReader
from tiktok_sandbox.media import write_sample_mp4
from tiktok_sandbox.testing import SandboxHandle

from tests.integration.tiktok.tiktok_it import (
    TikTokLayer,
    connect_account,
    sandbox_publishes,
    sandbox_stats,
)
from tests.support import sha256_of

SELF_ONLY = PostInfo(privacy_level="SELF_ONLY")
# What the sandbox counts as a "violation" when it injects a fault itself: allowed in fault runs.
INJECTED_CODES = {
    "internal_error",
    "rate_limit_exceeded",
    "fault_dropped_before_store",
    "fault_dropped_after_store",
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Sample MP4s the sandbox accepts, one per size (written once for the module)."""
    folder = tmp_path_factory.mktemp("videos")
    out: dict[int, Path] = {}
    for size in (700_000, 5_242_879, 20_000_000, 64_000_000, 64_000_001, 80_000_000, 150_000_123):
        path = folder / f"sample-{size}.mp4"
        write_sample_mp4(path, size)
        out[size] = path
    return out


async def publish_file(layer: TikTokLayer, account_id: str, path: Path) -> tuple[str, list[int]]:
    """As the uploader does: creator_info, init, PUT every chunk. Returns (publish_id, progress)."""
    reader = FileVideoReader(path)
    plan = plan_chunks(reader.size)
    info = await layer.gateway.creator_info(account_id)
    assert "SELF_ONLY" in info.privacy_level_options
    init = await layer.gateway.init_upload(account_id, mode="direct", post_info=SELF_ONLY, source_info=plan)
    assert init.upload_url is not None
    progress: list[int] = []

    async def on_progress(confirmed: int) -> None:
        progress.append(confirmed)

    await layer.gateway.upload_chunks(
        ChunkedUpload(init.upload_url, plan, reader, account_id=account_id, publish_id=init.publish_id),
        on_progress=on_progress,
    )
    return init.publish_id, progress


async def wait_for_status(layer: TikTokLayer, account_id: str, publish_id: str, wanted: str) -> None:
    for _ in range(100):
        status = await layer.gateway.fetch_status(account_id, publish_id)
        if status.status == wanted:
            return
        assert status.status != "FAILED", status.fail_reason
        await asyncio.sleep(0.1)
    raise AssertionError(f"{publish_id} never reached {wanted}")


class TestConformance:
    async def test_varied_sizes_upload_byte_exact_with_no_violation(
        self, layer: TikTokLayer, sandbox: SandboxHandle, videos: dict[int, Path]
    ) -> None:
        open_id, _ = await connect_account(layer, sandbox.base_url, "acct-conf", username="conformance")
        sizes = [700_000, 5_242_879, 20_000_000, 64_000_000, 64_000_001, 150_000_123]
        published: dict[str, Path] = {}
        for size in sizes:
            publish_id, progress = await publish_file(layer, "acct-conf", videos[size])
            assert progress[-1] == size
            published[publish_id] = videos[size]
        for publish_id in published:
            await wait_for_status(layer, "acct-conf", publish_id, "PUBLISH_COMPLETE")

        publishes = {
            p["publish_id"]: p for p in await sandbox_publishes(layer.http, sandbox.base_url, open_id)
        }
        assert set(publishes) == set(published)
        for publish_id, path in published.items():
            pub = publishes[publish_id]
            assert pub["complete"] is True
            assert pub["sha256"] == sha256_of(path)
            assert [c["status_code"] for c in pub["chunks"]][-1] == 201
            assert len(pub["chunks"]) == pub["total_chunk_count"], "no chunk was sent twice"
        stats = await sandbox_stats(layer.http, sandbox.base_url)
        assert stats["violations"] == {}, stats["recent_violations"]
        assert stats["calls"]["video_init"] == len(sizes)


FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("5xx on two chunks", {"put_error_on": [2, 3]}),
    ("connection dropped mid-body", {"put_drop_before_store_on": [3]}),
    ("response lost after the chunk was stored", {"put_drop_after_store_on": [3]}),
    ("response lost after the final chunk", {"put_drop_after_store_on": [8]}),
    ("500 bursts on the PUT", {"error_burst": {"upload": 2}}),
    (
        "429 bursts on init, creator_info and status",
        {"rate_limit_burst": {"video_init": 2, "creator_info": 2}},
    ),
    ("429 on a PUT", {"rate_limit_burst": {"upload": 1}}),
    (
        "random mix",
        {
            "seed": 11,
            "put_error_rate": 0.15,
            "put_drop_before_store_rate": 0.1,
            "put_drop_after_store_rate": 0.1,
        },
    ),
]


class TestFaults:
    @pytest.mark.parametrize(("name", "faults"), FAULTS, ids=[name for name, _ in FAULTS])
    async def test_upload_completes_once_and_byte_exact(
        self,
        name: str,
        faults: dict[str, Any],
        layer: TikTokLayer,
        sandbox: SandboxHandle,
        videos: dict[int, Path],
    ) -> None:
        open_id, _ = await connect_account(layer, sandbox.base_url, "acct-faults", username="faults")
        sandbox.set_faults(**faults)
        path = videos[80_000_000]
        assert plan_chunks(80_000_000).total_chunk_count == 8

        publish_id, progress = await publish_file(layer, "acct-faults", path)

        assert progress[-1] == 80_000_000
        publishes = await sandbox_publishes(layer.http, sandbox.base_url, open_id)
        assert [p["publish_id"] for p in publishes] == [publish_id], "one init for one upload"
        (pub,) = publishes
        assert pub["complete"] is True
        assert pub["sha256"] == sha256_of(path)
        stats = await sandbox_stats(layer.http, sandbox.base_url)
        assert stats["faults_injected"], "the fault was really injected"
        assert set(stats["violations"]) <= INJECTED_CODES, stats["recent_violations"]


class TestPacing:
    async def test_more_inits_than_the_limit_are_paced_not_refused(
        self, layer: TikTokLayer, sandbox: SandboxHandle, videos: dict[int, Path]
    ) -> None:
        # The sandbox enforces 6 inits per (shortened) window; 8 uploads must wait, never 429.
        await connect_account(layer, sandbox.base_url, "acct-paced", username="paced")
        started = asyncio.get_running_loop().time()
        for _ in range(8):
            await publish_file(layer, "acct-paced", videos[700_000])
        elapsed = asyncio.get_running_loop().time() - started
        stats = await sandbox_stats(layer.http, sandbox.base_url)
        assert stats["calls"]["video_init"] == 8
        assert "rate_limit_exceeded" not in stats["violations"], stats["recent_violations"]
        assert stats["violations"] == {}
        assert elapsed >= 3.0, "the 7th init waited for the window"
