"""Specification: ingest's own path (HTTP, multipart parsing, media check) streams a file through
in pieces; its memory does not grow with the video (ARCHITECTURE promise 3)."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterable

import httpx
from reelay_common.domain.messages import BlobSource
from reelay_ingest.app import create_app
from reelay_ingest.deps import IngestDeps, Topics
from reelay_testing.publisher import FakePublisher
from reelay_testing.stores import FakeAccountStore, FakeUploadStore
from tiktok_sandbox.media import iter_sample_mp4

from tests.integration.ingest.ingest_world import API_KEY, served, unique_settings
from tests.recording import recording
from tests.unit.ingest.ingest_fakes import FakeTikTok

MB = 1_000_000


class DiscardingBlobStore:
    """A blob store that counts bytes and keeps none, so only ingest's own memory is measured
    (the GridFS driver batches chunks per insert on its own; see test_ingest_service)."""

    def __init__(self) -> None:
        self.received = 0
        self.largest_piece = 0

    async def save(
        self, chunks: AsyncIterable[bytes], *, filename: str | None, content_type: str, max_bytes: int
    ) -> BlobSource:
        async for piece in chunks:
            self.received += len(piece)
            self.largest_piece = max(self.largest_piece, len(piece))
        return BlobSource(
            blob_id="discarded", size=self.received, content_type="video/mp4", filename=filename
        )

    async def delete(self, blob_id: str) -> None:
        return None


class _Video:
    """A sample MP4 as a file-like object (httpx reads it in 64 KiB pieces)."""

    def __init__(self, size: int) -> None:
        self._pieces = iter_sample_mp4(size)
        self._buffer = b""

    def read(self, n: int = -1) -> bytes:
        while len(self._buffer) < n:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


class TestIngestStreams:
    async def test_a_64_mb_upload_peaks_at_a_few_megabytes(self) -> None:
        accounts = FakeAccountStore()
        accounts.add_connected("acct")
        uploads, publisher, blobs = FakeUploadStore(), FakePublisher(), DiscardingBlobStore()
        topics = Topics("t.req", "t.events", "t.status")
        rec = recording(
            uploads, publisher, status_topic=topics.publish_status, requested_topic=topics.upload_requested
        )
        deps = IngestDeps(
            uploads=uploads,
            accounts=accounts,
            publisher=publisher,
            recorder=rec.recorder,
            outbox=rec.outbox,
            blobs=blobs,
            tiktok=FakeTikTok(),
            topics=topics,
        )
        settings = unique_settings("unused:9", "mongodb://unused", "unused", "http://unused")
        app = create_app(settings, deps)

        async with (
            served(settings, app=app) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=60) as http,
        ):
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                resp = await http.post(
                    "/v1/uploads",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    data={"account_id": "acct", "mode": "inbox"},
                    files={"file": ("big.mp4", _Video(64 * MB), "video/mp4")},  # type: ignore[dict-item]  # file-like
                )
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()

        assert resp.status_code == 202, resp.text
        assert blobs.received == 64 * MB
        # Client and server share this process and both stream; a buffered file would show 64 MB.
        assert peak < 8 * MB, f"peak traced memory {peak} bytes for a 64 MB upload"
        assert blobs.largest_piece <= 1024 * 1024
