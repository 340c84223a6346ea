"""Helpers of this suite that are not test doubles: file digests (waits: reelay_testing.waiting)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
