"""Which video types ingest takes, judged by the declared type, the file name and the first bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import PurePosixPath

from reelay_common.domain.messages import ALLOWED_CONTENT_TYPES
from reelay_common.domain.rules import SNIFF_BYTES, sniff_video_type

from reelay_ingest.errors import RequestRejected, UnsupportedMediaError

_BY_EXTENSION = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm"}
# Clients (curl -F among them) send files they cannot name as octet-stream.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
# MP4 and MOV are the same ISO box format, and files carry either brand under either name.
_ISO_TYPES = frozenset({"video/mp4", "video/quicktime"})


def _unsupported(message: str, declared: str | None) -> UnsupportedMediaError:
    return UnsupportedMediaError(
        message,
        code="unsupported_media_type",
        extra={"content_type": declared, "allowed": list(ALLOWED_CONTENT_TYPES)},
    )


def video_content_type(declared: str | None, filename: str | None) -> str:
    """The video type of a file part: the declared type, else the file name's; refuse others."""
    base = (declared or "").split(";", 1)[0].strip().lower()
    if base in ALLOWED_CONTENT_TYPES:
        return base
    if base in _GENERIC_TYPES and filename:
        guessed = _BY_EXTENSION.get(PurePosixPath(filename).suffix.lower())
        if guessed is not None:
            return guessed
    raise _unsupported(
        f"unsupported video type {declared or '(none)'}; send one of {', '.join(ALLOWED_CONTENT_TYPES)}",
        declared,
    )


def looks_like(content_type: str, head: bytes) -> bool:
    """Whether the first bytes of a file fit `content_type` (a magic-number check, not a decoder)."""
    sniffed = sniff_video_type(head)
    if content_type == "video/webm":
        return sniffed == "video/webm"
    return sniffed in _ISO_TYPES


async def checked_stream(chunks: AsyncIterator[bytes], content_type: str) -> AsyncIterator[bytes]:
    """Read enough of `chunks` to check the magic number, then return a stream of every byte.

    Raises UnsupportedMediaError before anything is handed on when the bytes are not that type.
    """
    head = b""
    async for piece in chunks:
        head += piece
        if len(head) >= SNIFF_BYTES:
            break
    if not head:
        raise RequestRejected("the file is empty", code="empty_file")
    if not looks_like(content_type, head[:SNIFF_BYTES]):
        raise _unsupported(f"the file's content is not a {content_type} video", content_type)
    return _prepend(head, chunks)


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for piece in rest:
        yield piece
