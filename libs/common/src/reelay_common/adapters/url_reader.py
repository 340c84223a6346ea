"""Video readers for sources Reelay downloads itself (`UrlSource`): a `ports.VideoReader` over HTTP.

The reader learns the video's size and type once (HEAD, or a GET's headers), then reads the video
with ONE streaming GET that stays open across chunks: each `stream(offset, length)` that starts
where the previous one stopped takes the next bytes of the same response. A Range request is sent
only when reading must start elsewhere: a resumed upload (a redelivery starting at TikTok's count),
a retried chunk, or a connection that dropped mid-stream (resumed transparently, a few times). A
source that ignores Range is read from its start once per such resume, never once per chunk.
Memory stays bounded by one network piece: a source that will not say its length is spooled to a
temp file on disk, never held in memory.

Redirects are followed by hand so that every hop passes the SSRF guard (`netguard`), and httpx's
errors are translated here into the error tree: 404/410 and other refusals are permanent
(`InvalidInputError`), 5xx, 408/429, timeouts and dropped connections are retryable."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from reelay_common.adapters.netguard import ensure_public_url
from reelay_common.domain.errors import InvalidInputError, RetryableError
from reelay_common.domain.messages import ALLOWED_CONTENT_TYPES, MAX_VIDEO_BYTES
from reelay_common.domain.rules import SNIFF_BYTES, parse_content_range, sniff_video_type
from reelay_common.logging import get_logger
from reelay_common.ports import SizedVideo

log = get_logger("reelay_common.adapters.url_reader")

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


_RETRYABLE_STATUSES = frozenset({408, 425, 429})


_GONE_STATUSES = frozenset({404, 410})


_OCTET_STREAM = frozenset({"application/octet-stream", "binary/octet-stream", ""})


_FILE_PIECE = 1024 * 1024  # bytes per read from a spooled file


_MAX_RESUMES = 3  # reopenings in a row after dropped connections, before the error goes up


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


class _Body:
    """One open GET response, positioned: the next byte it hands out is the video's `position`.

    `end` is where the response promised to stop (exclusive). A response to a server that ignored
    Range starts at byte 0: `skip` bytes are read past, unkept, to reach `position`.
    """

    def __init__(
        self, response: httpx.Response, *, position: int, end: int, skip: int, piece_size: int
    ) -> None:
        self.response = response
        self.position = position
        self.end = end
        self._skip = skip
        self._piece_size = piece_size
        # Network pieces as the transport received them (aiohttp's, up to http_transport's
        # RECEIVE_BYTES): httpx's chunk_size would copy every byte twice more (into a BytesIO, then
        # out of it) to re-cut them.
        self._pieces = response.aiter_raw()
        self._held = b""  # the network piece the last read did not finish handing out
        self._at = 0  # where in `_held` the next read starts
        self.usable = True

    async def read(self, limit: int) -> bytes:
        """Up to `limit` bytes at `position`, b"" once the body ended; raises httpx.TransportError.

        A network piece no larger than `limit` and the piece size is handed out as it came,
        uncopied; a larger one in slices, copying only the slice.
        """
        if self._at == len(self._held):
            # A read that does not finish (cancelled, or the connection broke) leaves the body at
            # an unknown place in the stream: it must not be reused.
            self.usable = False
            while True:
                try:
                    piece = await anext(self._pieces)
                except StopAsyncIteration:
                    self.usable = True
                    return b""
                if self._skip >= len(piece):
                    self._skip -= len(piece)
                    continue
                self._held, self._at, self._skip = piece, self._skip, 0
                break
            self.usable = True
        start, held = self._at, self._held
        stop = min(len(held), start + min(limit, self._piece_size))
        self._at = stop
        piece = held if start == 0 and stop == len(held) else held[start:stop]
        self.position += len(piece)
        return piece

    def unread(self, data: bytes) -> None:
        """Put back the bytes just read, so that the next read hands them out again."""
        self._held = data + self._held[self._at :]
        self._at = 0
        self.position -= len(data)

    async def aclose(self) -> None:
        self.usable = False
        await self.response.aclose()


class UrlVideoReader(SizedVideo):
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
        piece_size: int = 256 * 1024,
    ) -> None:
        super().__init__(size=size, content_type=content_type)  # both learnt by the probe in `open`
        self._http = http
        self._url = url
        self._spool_path = spool_path
        self._allow_private = allow_private
        self._max_redirects = max_redirects
        self._piece_size = piece_size
        self._body: _Body | None = None  # the open GET, kept across chunks

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
        piece_size: int = 256 * 1024,
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
    def spooled(self) -> bool:
        """True when the source gave no length and its bytes were spooled to a temp file."""
        return self._spool_path is not None

    async def aclose(self) -> None:
        """Close the open download and delete the spool file, if any."""
        await self._drop_body()
        path, self._spool_path = self._spool_path, None
        if path is not None:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _pieces(self, offset: int, length: int) -> AsyncGenerator[bytes, None]:
        """Exactly `length` bytes starting at `offset` (from the spool file, or over HTTP)."""
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
            if self._body is not None and self._body.position == len(head):
                # The upload reads from byte 0 next: the same download serves it, head included.
                self._body.unread(head)
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
        """Size and type from a GET's headers; spool the body to disk when there is no length.

        With a length, the response stays open as the download the upload will read from byte 0.
        """
        response = await self._send("GET", {"Range": "bytes=0-"})
        kept = False
        try:
            if response.status_code >= 300:
                raise _status_error(response.status_code, response.url.host)
            content_type = _media_type(response.headers.get("content-type"))
            if response.status_code == 206:
                parsed = parse_content_range(response.headers.get("content-range"))
                if parsed is not None and parsed[2] is not None and parsed[0] == 0:
                    self._keep_body(response, end=min(parsed[1] + 1, parsed[2]))
                    kept = True
                    return parsed[2], content_type
            length = response.headers.get("content-length")
            if response.status_code == 200 and length is not None and length.isdigit():
                self._keep_body(response, end=int(length))
                kept = True
                return int(length), content_type
            size = await self._spool(response, max_bytes=max_bytes, spool_dir=spool_dir)
            return size, content_type
        finally:
            if not kept:
                await response.aclose()

    def _keep_body(self, response: httpx.Response, *, end: int) -> None:
        self._body = _Body(response, position=0, end=end, skip=0, piece_size=self._piece_size)

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
        remaining = length
        position = offset
        resumes = 0
        while remaining:
            body = await self._body_at(position)
            try:
                piece = await body.read(min(self._piece_size, remaining))
            except httpx.TransportError as exc:
                await self._drop_body()
                resumes += 1
                if resumes > _MAX_RESUMES:
                    raise RetryableError(
                        f"the video download broke off: {type(exc).__name__}", code="source_unavailable"
                    ) from exc
                log.info(
                    "source_download_resuming", offset=position, attempt=resumes, error=type(exc).__name__
                )
                continue
            if not piece:
                promised = body.end
                await self._drop_body()
                if position < promised:
                    raise RetryableError(
                        f"the video source ended {remaining} bytes early", code="source_truncated"
                    )
                # The server answered a shorter range than asked (some cap them): ask for the rest.
                continue
            resumes = 0
            remaining -= len(piece)
            position += len(piece)
            yield piece

    async def _body_at(self, offset: int) -> _Body:
        """The open download if it stands at `offset`, else a new GET starting there."""
        body = self._body
        if body is not None and body.usable and body.position == offset:
            return body
        await self._drop_body()
        self._body = await self._open_body(offset)
        return self._body

    async def _open_body(self, offset: int) -> _Body:
        """A GET for the rest of the video from `offset`, checked to be the bytes asked for."""
        response = await self._send("GET", {"Range": f"bytes={offset}-"})
        try:
            if response.status_code == 206:
                parsed = parse_content_range(response.headers.get("content-range"))
                if (
                    parsed is None
                    or parsed[0] != offset
                    or parsed[1] < offset
                    or (parsed[2] is not None and parsed[2] != self._size)
                ):
                    raise InvalidInputError(
                        "the video source answered a different range than asked (did the file change?)",
                        code="source_changed",
                    )
                end = min(parsed[1] + 1, self._size)
                return _Body(response, position=offset, end=end, skip=0, piece_size=self._piece_size)
            if response.status_code == 200:
                if offset:
                    # Once per resume, not per chunk: the rest of the upload reads on from here.
                    log.info("source_ignores_range", offset=offset)
                return _Body(
                    response, position=offset, end=self._size, skip=offset, piece_size=self._piece_size
                )
            if response.status_code == 416:
                raise InvalidInputError(
                    "the video source no longer has the bytes asked for (did the file change?)",
                    code="source_changed",
                    http_status=416,
                )
            raise _status_error(response.status_code, response.url.host)
        except BaseException:
            await response.aclose()
            raise

    async def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            await body.aclose()

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
