"""Video blobs as files in one local directory (the embedded default; a shared volume in Kubernetes).

Layout: `<root>/<blob id>` for stored files, `<root>/.<blob id>.<random>.part` while one streams
in. A file is written to its `.part` in the same directory, fsynced, then renamed into place and
the directory fsynced: a reader sees a whole file or none, even across a crash. Blob ids are
generated here (32 hex digits) and every id read back is checked against that shape, so no path
is ever made from what a client or a message sent. Every disk call runs in a worker thread.

The disk budget (`max_bytes`) counts the stored files and the `.part` files of every process
sharing the directory; a save that would pass it is refused with StorageFullError (ingest: 507),
as is one the disk itself runs out of room for. `.part` files nobody has written to for an hour
are leftovers of a crash: they are deleted the next time the budget is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from reelay_common.adapters.blobs.metered import (
    MeteredStream,
    check_content_type,
    check_store,
    check_stored_size,
    checked_blob_id,
    new_blob_id,
    pieces_of,
    saved,
)
from reelay_common.domain.errors import RetryableError, StorageFullError
from reelay_common.domain.messages import BlobSource
from reelay_common.logging import get_logger
from reelay_common.ports import BlobInfo, SizedVideo

log = get_logger("reelay_common.adapters.blobs.local")

LOCAL_PIECE_BYTES = 1024 * 1024  # one disk write or read, and the largest piece a reader yields
STALE_PART_SECONDS = 3600.0
_PART_SUFFIX = ".part"


@contextlib.contextmanager
def _translate_os_errors(what: str) -> Iterator[None]:
    """Disk trouble as Reelay errors: no room is StorageFullError, anything else retryable."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(f"no room on disk to {what}", code="storage_full") from exc
        raise RetryableError(f"could not {what}: {exc.strerror or exc}", code="disk_error") from exc


class LocalVideoReader(SizedVideo):
    """A stored file read as a VideoReader: any offset, 1 MiB pieces.

    A piece the page cache holds (the usual case: the file was just written) is copied out on the
    event loop with one non-blocking read (preadv RWF_NOWAIT); only a piece that needs the disk
    goes to a worker thread. A thread hop per piece costs more than the copy, and it makes the
    event loop and the worker take turns on the GIL while the PUT is sending.
    """

    def __init__(
        self, path: Path, *, size: int, content_type: str, piece_bytes: int = LOCAL_PIECE_BYTES
    ) -> None:
        super().__init__(size=size, content_type=content_type)
        self._path = path
        self._piece_bytes = piece_bytes

    async def _pieces(self, offset: int, length: int) -> AsyncGenerator[bytes, None]:
        """Exactly `length` bytes from `offset`, at most one piece at a time."""
        with _translate_os_errors("open a stored video"):
            fd = await asyncio.to_thread(os.open, self._path, os.O_RDONLY)
        try:
            position, end = offset, offset + length
            while position < end:
                wanted = min(self._piece_bytes, end - position)
                with _translate_os_errors("read a stored video"):
                    piece = _read_cached(fd, position, wanted)
                    if piece is None:
                        piece = await asyncio.to_thread(os.pread, fd, wanted, position)
                if not piece:
                    raise RetryableError(f"stored video {self._path.name} ended {end - position} bytes early")
                position += len(piece)
                yield piece
        finally:
            os.close(fd)


_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)  # Linux 4.14+; elsewhere every read is threaded


def _read_cached(fd: int, offset: int, size: int) -> bytes | None:
    """Up to `size` bytes at `offset` if the page cache holds them (never waits), else None."""
    global _NOWAIT
    if _NOWAIT is None:
        return None
    buffer = bytearray(size)
    try:
        got = os.preadv(fd, [buffer], offset, _NOWAIT)
    except BlockingIOError:
        return None  # not cached: the caller reads it in a thread
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            _NOWAIT = None  # this kernel or filesystem cannot: stop asking
            return None
        raise
    if got == 0:
        return None  # the end of the file (or nothing cached yet): the threaded read decides
    return bytes(buffer) if got == size else bytes(memoryview(buffer)[:got])


class LocalBlobStore:
    """Uploaded video files in one directory, written atomically under a disk budget."""

    def __init__(self, root: Path, *, max_bytes: int, piece_bytes: int = LOCAL_PIECE_BYTES) -> None:
        self._root = root
        self._max_bytes = max_bytes
        self._piece_bytes = piece_bytes
        # Bytes written so far by this process's saves in flight (their .part files may lag).
        self._in_flight: dict[str, int] = {}

    @property
    def kind(self) -> Literal["local"]:
        """This is the local-filesystem store."""
        return "local"

    @property
    def root(self) -> Path:
        """The directory the blobs live in."""
        return self._root

    def _path(self, blob_id: str) -> Path:
        return self._root / checked_blob_id(blob_id)

    def _used_bytes(self, exclude: frozenset[str]) -> int:
        """Bytes in the directory now, less this process's own parts in flight; sweeps stale parts."""
        used = 0
        now = time.time()
        with os.scandir(self._root) as entries:
            for entry in entries:
                if not entry.is_file(follow_symlinks=False) or entry.name in exclude:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # renamed or deleted while we looked
                if entry.name.endswith(_PART_SUFFIX) and now - st.st_mtime > STALE_PART_SECONDS:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                    log.warning("blob_stale_part_removed", file=entry.name, bytes=st.st_size)
                    continue
                used += st.st_size
        return used

    async def save(
        self, chunks: AsyncIterable[bytes], *, filename: str | None, content_type: str, max_bytes: int
    ) -> BlobSource:
        """Stream `chunks` into a new file; over `max_bytes`: InvalidInputError "too_large";
        over the disk budget: StorageFullError. Either way, nothing is kept."""
        check_content_type(content_type)
        blob_id = new_blob_id()
        part_name = f".{blob_id}.{secrets.token_hex(4)}{_PART_SUFFIX}"
        part = self._root / part_name
        final = self._root / blob_id
        with _translate_os_errors("prepare the blob directory"):
            await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)
            others = await asyncio.to_thread(self._used_bytes, frozenset({part_name}))
        metered = MeteredStream(chunks, max_bytes=max_bytes, hash_here=False)
        handle: BinaryIO | None = None
        self._in_flight[part_name] = 0
        try:
            with _translate_os_errors("create a blob file"):
                handle = await asyncio.to_thread(_create_exclusive, part)
            async for piece in pieces_of(metered, self._piece_bytes):
                self._in_flight[part_name] += len(piece)
                if others + sum(self._in_flight.values()) > self._max_bytes:
                    raise StorageFullError(
                        f"the blob store's budget of {self._max_bytes} bytes is used up; "
                        "try again once queued uploads have been sent",
                        code="storage_full",
                    )
                with _translate_os_errors("write a blob file"):
                    await asyncio.to_thread(_write_hashed, handle, metered.sha256, piece)
            sha256 = metered.finish()
            with _translate_os_errors("finish a blob file"):
                await asyncio.to_thread(_commit, handle, part, final)
            handle = None
        except BaseException:
            # Synchronous on purpose: a cancelled task must still leave no partial file behind.
            if handle is not None:
                handle.close()
            for leftover in (part, final):  # `final` too: the rename may be done, its fsync not
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
            raise
        finally:
            del self._in_flight[part_name]
        return saved("local", blob_id, metered, content_type=content_type, filename=filename, sha256=sha256)

    async def open(self, source: BlobSource) -> LocalVideoReader:
        """A reader of the stored file (checks it exists and has the recorded size)."""
        check_store(source, self.kind)
        info = await self.stat(source.blob_id)
        size = check_stored_size(source, None if info is None else info.size)
        return LocalVideoReader(
            self._path(source.blob_id),
            size=size,
            content_type=source.content_type,
            piece_bytes=self._piece_bytes,
        )

    async def stat(self, blob_id: str) -> BlobInfo | None:
        """The stored file's size, or None when it does not exist."""
        path = self._path(blob_id)
        with _translate_os_errors("stat a blob file"):
            try:
                st = await asyncio.to_thread(path.stat)
            except FileNotFoundError:
                return None
        return BlobInfo(blob_id=blob_id, size=st.st_size)

    async def delete(self, blob_id: str) -> None:
        """Delete a stored file; deleting one that is already gone is fine."""
        path = self._path(blob_id)
        with _translate_os_errors("delete a blob file"):
            try:
                await asyncio.to_thread(path.unlink)
            except FileNotFoundError:
                return


def _write_hashed(handle: BinaryIO, sha256: Any, piece: bytes) -> None:
    """In the worker thread: hash and write one piece (both let go of the GIL)."""
    sha256.update(piece)
    handle.write(piece)


def _create_exclusive(path: Path) -> BinaryIO:
    # O_EXCL: never write into a file that is already there; 0o640: videos are not world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    return os.fdopen(fd, "wb")


def _commit(handle: BinaryIO, part: Path, final: Path) -> None:
    """Make the written file durable and visible under its final name in one rename."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.rename(part, final)
    dir_fd = os.open(part.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash only once the directory is synced
    finally:
        os.close(dir_fd)
