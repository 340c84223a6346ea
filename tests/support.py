"""Helpers of this suite that are not test doubles: file digests (waits: reelay_testing.waiting)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TypeVar

from reelay_common.ports import SizedVideo

T = TypeVar("T")


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


async def reader_sha256(reader: SizedVideo) -> str:
    """The hex SHA-256 of everything a stored video's reader serves."""
    digest = hashlib.sha256()
    async for piece in reader.stream(0, reader.size):
        digest.update(piece)
    return digest.hexdigest()
