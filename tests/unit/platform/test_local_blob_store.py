"""The local blob store's own promises: the disk budget, atomic writes, ids that are never paths."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from reelay_common.adapters.blobs import local as local_module
from reelay_common.adapters.blobs.local import STALE_PART_SECONDS, LocalBlobStore
from reelay_common.domain.errors import InvalidInputError, RetryableError, StorageFullError
from reelay_common.domain.messages import BlobSource
from reelay_testing.readers import aiter_bytes

KIB = 1024


def names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


async def save(store: LocalBlobStore, data: bytes) -> BlobSource:
    return await store.save(
        aiter_bytes(data, 4 * KIB), filename=None, content_type="video/mp4", max_bytes=len(data)
    )


class TestBudget:
    async def test_a_file_that_would_pass_the_budget_is_refused_and_leaves_nothing(
        self, tmp_path: Path
    ) -> None:
        store = LocalBlobStore(tmp_path, max_bytes=100 * KIB, piece_bytes=16 * KIB)
        with pytest.raises(StorageFullError) as exc:
            await save(store, os.urandom(100 * KIB + 1))
        assert exc.value.code == "storage_full"
        assert names(tmp_path) == []

    async def test_stored_files_count_against_it_until_deleted(self, tmp_path: Path) -> None:
        store = LocalBlobStore(tmp_path, max_bytes=100 * KIB, piece_bytes=16 * KIB)
        first = await save(store, os.urandom(60 * KIB))
        with pytest.raises(StorageFullError):
            await save(store, os.urandom(60 * KIB))
        assert names(tmp_path) == [first.blob_id]
        await store.delete(first.blob_id)
        second = await save(store, os.urandom(60 * KIB))
        assert names(tmp_path) == [second.blob_id]

    async def test_saves_in_flight_count_against_it_together(self, tmp_path: Path) -> None:
        store = LocalBlobStore(tmp_path, max_bytes=100 * KIB, piece_bytes=16 * KIB)

        async def gen(n: int) -> AsyncIterator[bytes]:
            for _ in range(n):
                yield os.urandom(16 * KIB)

        results = await asyncio.gather(
            *(store.save(gen(4), filename=None, content_type="video/mp4", max_bytes=10**9) for _ in range(2)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, StorageFullError)]
        assert len(refused) == 1  # 2 x 64 KiB > 100 KiB: one of them must give way
        assert len(names(tmp_path)) == 1

    async def test_a_full_disk_is_storage_full_too(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = LocalBlobStore(tmp_path, max_bytes=10**9, piece_bytes=16 * KIB)
        real = local_module._create_exclusive

        def no_room(path: Path):  # type: ignore[no-untyped-def]  # wraps the real file in a failing writer
            handle = real(path)

            class Full:
                def write(self, _data: bytes) -> int:
                    raise OSError(28, "No space left on device")

                def __getattr__(self, name: str) -> object:
                    return getattr(handle, name)

            return Full()

        monkeypatch.setattr(local_module, "_create_exclusive", no_room)
        with pytest.raises(StorageFullError):
            await save(store, os.urandom(20 * KIB))
        assert names(tmp_path) == []


class TestAtomicity:
    async def test_while_a_file_streams_in_only_a_part_file_exists(self, tmp_path: Path) -> None:
        store = LocalBlobStore(tmp_path, max_bytes=10**9, piece_bytes=4 * KIB)
        seen: list[list[str]] = []

        async def watched() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield os.urandom(4 * KIB)
                seen.append(names(tmp_path))

        source = await store.save(watched(), filename=None, content_type="video/mp4", max_bytes=10**9)
        assert seen[-1]
        assert all(n.startswith(".") and n.endswith(".part") for n in seen[-1])
        assert names(tmp_path) == [source.blob_id]

    async def test_a_failed_rename_leaves_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = LocalBlobStore(tmp_path, max_bytes=10**9)

        def broken_rename(_src: object, _dst: object) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(local_module.os, "rename", broken_rename)
        with pytest.raises(RetryableError):
            await save(store, b"x" * 10 * KIB)
        assert names(tmp_path) == []

    async def test_stored_files_are_whole_hashed_and_not_world_readable(self, tmp_path: Path) -> None:
        store = LocalBlobStore(tmp_path, max_bytes=10**9)
        data = os.urandom(50 * KIB)
        source = await save(store, data)
        path = tmp_path / source.blob_id
        assert path.read_bytes() == data
        assert source.sha256 == hashlib.sha256(data).hexdigest()
        assert stat.S_IMODE(path.stat().st_mode) & stat.S_IROTH == 0

    async def test_part_files_abandoned_by_a_crash_are_swept_and_stop_counting(self, tmp_path: Path) -> None:
        store = LocalBlobStore(tmp_path, max_bytes=100 * KIB)
        stale = tmp_path / ".0123456789abcdef0123456789abcdef.deadbeef.part"
        stale.write_bytes(b"x" * 90 * KIB)
        old = time.time() - STALE_PART_SECONDS - 10
        os.utime(stale, (old, old))
        fresh = tmp_path / ".fedcba9876543210fedcba9876543210.cafebabe.part"
        fresh.write_bytes(b"y" * 10 * KIB)  # another process's upload in flight: kept, counted
        source = await save(store, os.urandom(80 * KIB))
        assert names(tmp_path) == sorted([fresh.name, source.blob_id])


class TestIds:
    @pytest.mark.parametrize(
        "bad", ["../escape", "/etc/passwd", "ABCDEF0123456789abcdef0123456789", "a" * 31, ""]
    )
    async def test_an_id_not_made_here_never_becomes_a_path(self, tmp_path: Path, bad: str) -> None:
        store = LocalBlobStore(tmp_path / "blobs", max_bytes=10**9)
        for call in (
            store.stat(bad),
            store.delete(bad),
            store.open(BlobSource(blob_id=bad, size=1, store="local")),
        ):
            with pytest.raises(InvalidInputError) as exc:
                await call
            assert exc.value.code == "invalid_blob_id"
