"""upload_chunks against a scripted upload server: order, retries, resync after 416 and lost
responses, URL expiry, resumption, and streaming without buffering."""

from __future__ import annotations

import pytest
from reelay_common.adapters.tiktok.upload import upload_chunks
from reelay_common.domain.chunks import plan_chunks
from reelay_common.domain.errors import (
    InvalidInputError,
    TikTokRejectedError,
    TransientTikTokError,
    UploadOutOfSyncError,
    UploadUrlExpiredError,
)
from reelay_common.domain.tiktok import FileUploadSourceInfo

from tests.unit.tiktok.tiktok_fakes import (
    UPLOAD_URL,
    FakeUploadServer,
    MemoryReader,
    make_client,
    video_bytes,
)

# A small plan with the shape of a real one: 10 chunks of 100 bytes, the last one 150.
SIZE = 1050
PLAN = FileUploadSourceInfo(video_size=SIZE, chunk_size=100, total_chunk_count=10)
DATA = video_bytes(SIZE)


class Run:
    """One upload against a FakeUploadServer, recording progress callbacks and backoff sleeps."""

    def __init__(self, server: FakeUploadServer, *, piece_size: int = 32) -> None:
        self.server = server
        self.reader = MemoryReader(video_bytes(server.video_size), piece_size=piece_size)
        self.progress: list[int] = []
        self.sleeps: list[float] = []
        self.probes = 0

    async def on_progress(self, confirmed: int) -> None:
        self.progress.append(confirmed)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def probe(self) -> int | None:
        self.probes += 1
        return self.server.progress

    async def __call__(
        self, plan: FileUploadSourceInfo = PLAN, *, start_offset: int = 0, with_probe: bool = False
    ) -> None:
        client, http = make_client(self.server.handler, streaming=True)
        async with http:
            await upload_chunks(
                client,
                UPLOAD_URL,
                plan,
                self.reader,
                start_offset=start_offset,
                on_progress=self.on_progress,
                status_probe=self.probe if with_probe else None,
                sleep=self.sleep,
            )

    def firsts(self) -> list[int]:
        return [first for first, _, _ in self.server.requests]

    def statuses(self) -> list[int]:
        return [status for _, _, status in self.server.requests]


ALL_FIRSTS = list(range(0, 1000, 100))
ALL_CONFIRMED = [*range(100, 1000, 100), SIZE]


class TestUploadChunks:
    async def test_sends_every_chunk_in_order_and_the_server_has_the_file(self) -> None:
        run = Run(FakeUploadServer(SIZE))
        await run()
        assert bytes(run.server.received) == DATA
        assert run.server.requests[-1] == (900, 1049, 201)
        assert run.firsts() == ALL_FIRSTS
        assert run.statuses() == [206] * 9 + [201]
        assert run.progress == ALL_CONFIRMED

    async def test_reads_progress_written_as_a_count_too(self) -> None:
        run = Run(FakeUploadServer(SIZE, inclusive=False))
        await run()
        assert bytes(run.server.received) == DATA
        assert run.firsts() == ALL_FIRSTS

    async def test_a_single_chunk_file_is_one_put(self) -> None:
        size = 4_194_304
        run = Run(FakeUploadServer(size), piece_size=65_536)
        await run(plan_chunks(size))
        assert run.server.requests == [(0, size - 1, 201)]
        assert bytes(run.server.received) == video_bytes(size)


class TestRetries:
    async def test_5xx_retries_the_same_chunk_with_exponential_backoff(self) -> None:
        run = Run(FakeUploadServer(SIZE, faults=[None, "500", "502", "503"]))
        await run()
        assert bytes(run.server.received) == DATA
        assert run.firsts()[:5] == [0, 100, 100, 100, 100]
        assert run.sleeps == [0.5, 1.0, 2.0]
        assert run.progress == ALL_CONFIRMED

    async def test_a_429_on_a_chunk_waits_at_least_retry_after_and_retries_it(self) -> None:
        run = Run(FakeUploadServer(SIZE, faults=[None, "429"]))
        await run()
        assert bytes(run.server.received) == DATA
        assert run.firsts()[:3] == [0, 100, 100]
        assert run.sleeps == [2.0]

    async def test_gives_up_after_bounded_attempts(self) -> None:
        run = Run(FakeUploadServer(SIZE, faults=[None] + ["500"] * 10))
        with pytest.raises(TransientTikTokError) as info:
            await run()
        assert info.value.http_status == 500
        assert run.firsts() == [0, 100, 100, 100, 100, 100]
        assert len(run.sleeps) == 4
        assert run.progress == [100]

    async def test_a_connection_dropped_before_storing_resends_the_chunk(self) -> None:
        run = Run(FakeUploadServer(SIZE, faults=[None, "drop_before_store"]))
        await run(with_probe=True)
        assert bytes(run.server.received) == DATA
        assert run.firsts()[:3] == [0, 100, 100]
        assert 416 not in run.statuses()


class TestResync:
    async def test_lost_response_resyncs_from_the_status_probe_without_resending(self) -> None:
        run = Run(FakeUploadServer(SIZE, faults=[None, "drop_after_store"]))
        await run(with_probe=True)
        assert bytes(run.server.received) == DATA
        assert run.firsts() == ALL_FIRSTS, "the chunk that landed is not sent again"
        assert run.probes == 1
        assert run.progress == ALL_CONFIRMED

    async def test_lost_response_without_a_probe_resyncs_from_the_416(self) -> None:
        run = Run(FakeUploadServer(SIZE, faults=[None, "drop_after_store"]))
        await run()
        assert bytes(run.server.received) == DATA
        assert run.firsts()[:4] == [0, 100, 100, 200]
        assert run.statuses()[2] == 416
        assert run.statuses().count(416) == 1

    @pytest.mark.parametrize("inclusive", [True, False])
    async def test_a_lost_final_response_completes_from_the_server_progress(self, inclusive: bool) -> None:
        run = Run(FakeUploadServer(SIZE, faults=[None] * 9 + ["drop_after_store"], inclusive=inclusive))
        await run()
        assert bytes(run.server.received) == DATA
        assert run.firsts() == [*ALL_FIRSTS, 900]
        assert run.statuses()[-1] == 416
        assert run.progress[-1] == SIZE

    async def test_416_jumps_ahead_to_the_server_progress(self) -> None:
        server = FakeUploadServer(SIZE)
        server.received.extend(DATA[:300])  # a previous attempt already delivered three chunks
        run = Run(server)
        await run(start_offset=0)
        assert bytes(server.received) == DATA
        assert run.firsts() == [0, *range(300, 1000, 100)]
        assert run.progress[0] == 300

    async def test_416_goes_back_when_the_server_is_behind(self) -> None:
        server = FakeUploadServer(SIZE)
        server.received.extend(DATA[:200])
        run = Run(server)
        await run(start_offset=500)
        assert bytes(server.received) == DATA
        assert run.firsts()[:2] == [500, 200]

    async def test_keeps_to_chunk_boundaries_when_progress_is_mid_chunk(self) -> None:
        server = FakeUploadServer(SIZE)
        server.received.extend(DATA[:250])  # not a boundary: the plan's ranges are what TikTok expects
        run = Run(server)
        with pytest.raises(UploadOutOfSyncError):
            await run()
        assert set(run.firsts()) == {0, 200}, "never invents a range outside the plan"

    async def test_a_416_at_our_own_offset_waits_before_resending(self) -> None:
        server = FakeUploadServer(SIZE, faults=[None, "416"])
        run = Run(server)
        await run()
        assert bytes(server.received) == DATA
        assert run.firsts()[:3] == [0, 100, 100]
        assert run.sleeps == [0.5]

    async def test_resyncs_are_bounded(self) -> None:
        server = FakeUploadServer(SIZE)
        server.received.extend(DATA[:250])
        run = Run(server)
        with pytest.raises(UploadOutOfSyncError):
            await run()
        assert len(server.requests) <= 10


class TestRefusals:
    async def test_403_raises_upload_url_expired(self) -> None:
        run = Run(FakeUploadServer(SIZE, faults=[None, None, "403"]))
        with pytest.raises(UploadUrlExpiredError):
            await run()
        assert run.progress == [100, 200]

    async def test_404_is_permanent(self) -> None:
        run = Run(FakeUploadServer(SIZE, faults=["404"]))
        with pytest.raises(TikTokRejectedError):
            await run()
        assert run.sleeps == []

    async def test_a_reader_of_the_wrong_size_is_refused_before_any_put(self) -> None:
        server = FakeUploadServer(SIZE)
        client, http = make_client(server.handler)
        async with http:
            with pytest.raises(InvalidInputError):
                await upload_chunks(client, UPLOAD_URL, PLAN, MemoryReader(video_bytes(SIZE - 1)))
        assert server.requests == []


class TestResume:
    async def test_start_offset_resumes_after_a_crash(self) -> None:
        server = FakeUploadServer(SIZE)
        server.received.extend(DATA[:400])
        run = Run(server)
        await run(start_offset=400)
        assert bytes(server.received) == DATA
        assert run.firsts() == list(range(400, 1000, 100))
        assert run.reader.streams[0] == (400, 100)

    async def test_an_offset_inside_a_chunk_resumes_at_its_start(self) -> None:
        server = FakeUploadServer(SIZE)
        server.received.extend(DATA[:400])
        run = Run(server)
        await run(start_offset=450)
        assert run.firsts()[0] == 400
        assert bytes(server.received) == DATA

    async def test_an_offset_at_the_end_sends_nothing(self) -> None:
        run = Run(FakeUploadServer(SIZE))
        await run(start_offset=SIZE)
        assert run.server.requests == []


class TestMemory:
    async def test_streams_piece_by_piece_without_reading_ahead(self) -> None:
        size = 70_000_000
        plan = plan_chunks(size)
        assert plan.total_chunk_count == 7
        piece = 256 * 1024
        server = FakeUploadServer(size)
        run = Run(server, piece_size=piece)
        server.reader = run.reader
        await run(plan)
        assert server.progress == size
        assert max(server.piece_sizes) <= piece
        # At every piece the transport received, the reader had handed out exactly that much:
        # nothing was buffered beyond the piece in flight (not a chunk, not the file).
        assert set(server.read_ahead) == {0}
        assert [length for _, length in run.reader.streams] == [10_000_000] * 6 + [10_000_000]
