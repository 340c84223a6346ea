"""Video readers for sources Reelay downloads itself (`UrlSource`): a `ports.VideoReader` over HTTP.

The reader learns the video's size and type once (HEAD, or a GET's headers), then serves any byte
range with a ranged GET, so a resumed upload re-reads only what TikTok still lacks. Memory stays
bounded by one network piece: a source that will not say its length is spooled to a temp file on
disk, never held in memory.

Redirects are followed by hand so that every hop passes the SSRF guard (`netguard`), and httpx's
errors are translated here into the error tree: 404/410 and other refusals are permanent
(`InvalidInputError`), 5xx, 408/429, timeouts and dropped connections are retryable."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from reelay_common.adapters.netguard import ensure_public_url
from reelay_common.domain.errors import InvalidInputError, RetryableError
from reelay_common.domain.messages import ALLOWED_CONTENT_TYPES, MAX_VIDEO_BYTES
from reelay_common.domain.rules import SNIFF_BYTES, parse_content_range, sniff_video_type

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


_RETRYABLE_STATUSES = frozenset({408, 425, 429})


_GONE_STATUSES = frozenset({404, 410})


_OCTET_STREAM = frozenset({"application/octet-stream", "binary/octet-stream", ""})


_FILE_PIECE = 1024 * 1024  # bytes per read from a spooled file


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _status_error(status: int, url_host: str) -> Exception:
    """The error tree's verdict on a source answering `status`."""
    if status in _GONE_STATUSES:
        return InvalidInputError(
            f"the video source answered {status}: the video is not there",
            code="source_not_found",
            http_status=status,
        )
    if status >= 500 or status in _RETRYABLE_STATUSES:
        return RetryableError(
            f"the video source ({url_host}) answered {status}", code="source_unavailable", http_status=status
        )
    return InvalidInputError(
        f"the video source refused the download with {status}", code="source_refused", http_status=status
    )


class UrlVideoReader:
    """`ports.VideoReader` over an http(s) URL. Open with `UrlVideoReader.open(...)`, close with
    `aclose()` (or use it as an async context manager)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        size: int,
        content_type: str,
        spool_path: Path | None = None,
        allow_private: bool = False,
        max_redirects: int = 5,
        piece_size: int = 64 * 1024,
    ) -> None:
        self._http = http
        self._url = url
        self._size = size
        self._content_type = content_type
        self._spool_path = spool_path
        self._allow_private = allow_private
        self._max_redirects = max_redirects
        self._piece_size = piece_size

    @classmethod
    async def open(
        cls,
        http: httpx.AsyncClient,
        url: str,
        *,
        allow_private: bool = False,
        max_redirects: int = 5,
        max_bytes: int = MAX_VIDEO_BYTES,
        spool_dir: Path | None = None,
        piece_size: int = 64 * 1024,
    ) -> UrlVideoReader:
        """Probe `url` (size and type) and return a reader; raises InvalidInputError or RetryableError."""
        reader = cls(
            http,
            url,
            size=0,
            content_type="",
            allow_private=allow_private,
            max_redirects=max_redirects,
            piece_size=piece_size,
        )
        try:
            await reader._probe(max_bytes=max_bytes, spool_dir=spool_dir)
        except BaseException:
            await reader.aclose()
            raise
        return reader

    @property
    def size(self) -> int:
        """Total bytes of the video."""
        return self._size

    @property
    def content_type(self) -> str:
        """One of video/mp4, video/quicktime, video/webm."""
        return self._content_type

    @property
    def spooled(self) -> bool:
        """True when the source gave no length and its bytes were spooled to a temp file."""
        return self._spool_path is not None

    async def aclose(self) -> None:
        """Delete the spool file, if any."""
        path, self._spool_path = self._spool_path, None
        if path is not None:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """Yield exactly `length` bytes starting at `offset`, in pieces of bounded size."""
        if offset < 0 or length < 0 or offset + length > self._size:
            raise ValueError(f"range {offset}+{length} is outside the video (size {self._size})")
        if length == 0:
            return
        if self._spool_path is not None:
            async for piece in self._stream_file(self._spool_path, offset, length):
                yield piece
            return
        async for piece in self._stream_http(offset, length):
            yield piece

    # -- probing -------------------------------------------------------------------------------

    async def _probe(self, *, max_bytes: int, spool_dir: Path | None) -> None:
        size, content_type = await self._probe_head()
        if size is None:
            size, content_type = await self._probe_get(max_bytes=max_bytes, spool_dir=spool_dir)
        if size <= 0:
            raise InvalidInputError("the video source is empty", code="source_empty")
        if size > max_bytes:
            raise InvalidInputError(
                f"the video is {size} bytes; the limit is {max_bytes} bytes", code="too_large"
            )
        self._size = size
        if content_type in _OCTET_STREAM:
            head = b"".join([piece async for piece in self.stream(0, min(SNIFF_BYTES, size))])
            sniffed = sniff_video_type(head)
            if sniffed is None:
                raise InvalidInputError(
                    "the video source is not an MP4, QuickTime or WebM file", code="unsupported_media_type"
                )
            content_type = sniffed
        if content_type not in ALLOWED_CONTENT_TYPES:
            raise InvalidInputError(
                f"the video source's content type {content_type!r} is not one of "
                f"{', '.join(ALLOWED_CONTENT_TYPES)}",
                code="unsupported_media_type",
            )
        self._content_type = content_type

    async def _probe_head(self) -> tuple[int | None, str]:
        """Size and type from a HEAD, or (None, ...) when the server will not say."""
        response = await self._send("HEAD", {})
        await response.aclose()
        status = response.status_code
        if status in (405, 501) or (
            400 <= status < 500 and status not in _GONE_STATUSES | _RETRYABLE_STATUSES
        ):
            # Some servers refuse HEAD but serve GET (URLs signed for GET only, for one); the GET decides.
            return None, ""
        if response.status_code >= 300:
            raise _status_error(response.status_code, response.url.host)
        content_type = _media_type(response.headers.get("content-type"))
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > 0:
            return int(length), content_type
        return None, content_type

    async def _probe_get(self, *, max_bytes: int, spool_dir: Path | None) -> tuple[int, str]:
        """Size and type from a GET's headers; spool the body to disk when there is no length."""
        response = await self._send("GET", {"Range": "bytes=0-"})
        try:
            if response.status_code >= 300:
                raise _status_error(response.status_code, response.url.host)
            content_type = _media_type(response.headers.get("content-type"))
            if response.status_code == 206:
                parsed = parse_content_range(response.headers.get("content-range"))
                if parsed is not None and parsed[2] is not None:
                    return parsed[2], content_type
            length = response.headers.get("content-length")
            if response.status_code == 200 and length is not None and length.isdigit():
                return int(length), content_type
            size = await self._spool(response, max_bytes=max_bytes, spool_dir=spool_dir)
            return size, content_type
        finally:
            await response.aclose()

    async def _spool(self, response: httpx.Response, *, max_bytes: int, spool_dir: Path | None) -> int:
        """Copy the body to a temp file (bounded by `max_bytes`); return its size."""
        fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="reelay-spool-", dir=spool_dir)
        self._spool_path = Path(name)
        written = 0
        with os.fdopen(fd, "wb") as out:
            try:
                async for piece in response.aiter_raw(self._piece_size):
                    written += len(piece)
                    if written > max_bytes:
                        raise InvalidInputError(
                            f"the video is larger than the limit of {max_bytes} bytes", code="too_large"
                        )
                    await asyncio.to_thread(out.write, piece)
            except httpx.TransportError as exc:
                raise RetryableError(
                    f"the video download broke off: {type(exc).__name__}", code="source_unavailable"
                ) from exc
        return written

    # -- reading -------------------------------------------------------------------------------

    async def _stream_http(self, offset: int, length: int) -> AsyncIterator[bytes]:
        last = offset + length - 1
        response = await self._send("GET", {"Range": f"bytes={offset}-{last}"})
        try:
            if response.status_code == 206:
                parsed = parse_content_range(response.headers.get("content-range"))
                if (
                    parsed is None
                    or parsed[0] != offset
                    or (parsed[2] is not None and parsed[2] != self._size)
                ):
                    raise InvalidInputError(
                        "the video source answered a different range than asked (did the file change?)",
                        code="source_changed",
                    )
                skip = 0
            elif response.status_code == 200:
                # The server ignored Range: read past the first `offset` bytes without keeping them.
                skip = offset
            elif response.status_code == 416:
                raise InvalidInputError(
                    "the video source no longer has the bytes asked for (did the file change?)",
                    code="source_changed",
                    http_status=416,
                )
            else:
                raise _status_error(response.status_code, response.url.host)
            remaining = length
            try:
                async for piece in response.aiter_raw(self._piece_size):
                    if skip >= len(piece):
                        skip -= len(piece)
                        continue
                    wanted = piece[skip : skip + remaining]
                    skip = 0
                    remaining -= len(wanted)
                    yield wanted
                    if not remaining:
                        break
            except httpx.TransportError as exc:
                raise RetryableError(
                    f"the video download broke off: {type(exc).__name__}", code="source_unavailable"
                ) from exc
            if remaining:
                raise RetryableError(
                    f"the video source ended {remaining} bytes early", code="source_truncated"
                )
        finally:
            await response.aclose()

    async def _stream_file(self, path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
        handle: IO[bytes] = await asyncio.to_thread(path.open, "rb")
        try:
            await asyncio.to_thread(handle.seek, offset)
            remaining = length
            while remaining:
                piece = await asyncio.to_thread(handle.read, min(_FILE_PIECE, remaining))
                if not piece:
                    raise InvalidInputError(
                        "the spooled video is shorter than expected", code="source_changed"
                    )
                remaining -= len(piece)
                yield piece
        finally:
            await asyncio.to_thread(handle.close)

    # -- transport -----------------------------------------------------------------------------

    async def _send(self, method: str, headers: dict[str, str]) -> httpx.Response:
        """Send a streamed request, following redirects by hand so each hop passes the SSRF guard."""
        url = self._url
        # Compressed bodies would make Content-Length and ranges count different bytes.
        all_headers = {"Accept-Encoding": "identity", **headers}
        for _hop in range(self._max_redirects + 1):
            await ensure_public_url(url, allow_private=self._allow_private)
            try:
                request = self._http.build_request(method, url, headers=all_headers)
                response = await self._http.send(request, stream=True, follow_redirects=False)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                raise InvalidInputError(f"the video URL is not usable: {exc}", code="url_invalid") from exc
            except httpx.TransportError as exc:
                # Timeouts, refused or dropped connections, TLS hiccups: the source may come back.
                raise RetryableError(
                    f"the video source could not be reached: {type(exc).__name__}", code="source_unavailable"
                ) from exc
            if response.status_code not in _REDIRECT_STATUSES:
                return response
            await response.aclose()
            location = response.headers.get("location")
            if not location:
                raise InvalidInputError(
                    "the video source redirected without a Location", code="source_refused"
                )
            url = str(response.url.join(location))
        raise InvalidInputError(
            f"the video URL redirected more than {self._max_redirects} times", code="too_many_redirects"
        )
