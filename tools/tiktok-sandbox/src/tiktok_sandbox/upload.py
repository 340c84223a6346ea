"""The chunk PUT (§3.1): strict headers, strict sequencing, bodies streamed to disk."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
from typing import Any, BinaryIO

import aiohttp
import structlog
from aiohttp import web

from tiktok_sandbox.core import Sandbox
from tiktok_sandbox.faults import PutFault
from tiktok_sandbox.state import ChunkAttempt, Publish, new_log_id

log = structlog.get_logger("tiktok_sandbox")

ALLOWED_CONTENT_TYPES = frozenset({"video/mp4", "video/quicktime", "video/webm"})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_READ_PIECE = 256 << 10
_DISCARD_MAX = 200_000_000  # above the largest legal chunk (128 MB): not worth reading
_WRITE_BUFFER = 1 << 20  # bytes held before a write: memory per PUT stays about this, whatever the chunk


def progress_header(uploaded: int, total: int) -> str:
    """`Content-Range` progress carried by every response: the inclusive range stored so far.

    With nothing stored there is no inclusive range to name, so the RFC 9110 unsatisfied form
    `bytes */total` is used.
    """
    return f"bytes 0-{uploaded - 1}/{total}" if uploaded > 0 else f"bytes */{total}"


class _Rejected(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class UploadApi:
    """`PUT /upload/?upload_id=…&upload_token=…`.

    Sequential only (§3 rule 6): a PUT that arrives while another PUT of the same upload is still
    streaming is refused with 416 and the progress header. 416 is the status the reference gives
    for "Content-Range ≠ server progress": the in-flight chunk is not committed, so the second PUT
    cannot match progress that does not yet exist, and 409 is not part of TikTok's PUT contract.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    def routes(self) -> list[web.RouteDef]:
        """The upload URL route."""
        return [web.put("/upload/", self.put)]

    async def _reply(
        self, request: web.Request, pub: Publish | None, status: int, code: str, message: str = ""
    ) -> web.Response:
        if code != "ok":
            await _discard_body(request)
        headers = {"X-Tt-Logid": new_log_id()}
        if pub is not None and pub.plan is not None:
            headers["Content-Range"] = progress_header(pub.uploaded_bytes, pub.plan.video_size)
        self.sb.state.stats.respond("upload", status, code, message)
        if code == "ok":
            return web.Response(status=status, headers=headers)
        body = {"error": {"code": code, "message": message, "log_id": headers["X-Tt-Logid"]}}
        return web.json_response(body, status=status, headers=headers)

    async def put(self, request: web.Request) -> web.StreamResponse:
        """Accept the next chunk of the plan, or say why not."""
        state = self.sb.state
        await state.arrive("upload")
        upload_id = request.query.get("upload_id", "")
        pub = state.uploads.get(upload_id)
        token = request.query.get("upload_token", "")
        if pub is None or pub.upload_token is None or not hmac.compare_digest(pub.upload_token, token):
            return await self._reply(request, None, 404, "upload_not_found", "No upload task for this URL")
        plan = pub.plan
        if plan is None or pub.upload_expires_at is None:  # pragma: no cover - attach_upload sets both
            return await self._reply(request, None, 404, "upload_not_found", "No upload task for this URL")
        if state.now() >= pub.upload_expires_at:
            return await self._reply(
                request, pub, 403, "upload_url_expired", "The upload URL has expired; init again"
            )
        if state.faults.take_error("upload"):
            return await self._reply(request, pub, 500, "internal_error", "Injected fault")
        if state.faults.take_rate_limit("upload"):
            return await self._reply(request, pub, 429, "rate_limit_exceeded", "Injected fault")
        order = len(pub.chunks) + 1
        if pub.put_in_flight:
            pub.chunks.append(ChunkAttempt(order, None, None, request.content_length, 416, stored=False))
            return await self._reply(
                request, pub, 416, "upload_parallel_put", "Another PUT for this upload is in progress"
            )
        try:
            first, last, size = self._check_headers(request, pub)
        except _Rejected as rej:
            pub.chunks.append(
                ChunkAttempt(order, None, None, request.content_length, rej.status, stored=False)
            )
            return await self._reply(request, pub, rej.status, rej.code, rej.message)
        attempt = ChunkAttempt(order, first, last, size, None, stored=False)
        pub.chunks.append(attempt)
        expected = None if pub.complete else plan.chunk_range(pub.next_chunk)
        if (first, last) != expected:
            attempt.status_code = 416
            return await self._reply(
                request,
                pub,
                416,
                "upload_range_mismatch",
                f"Content-Range does not match the next expected range {expected}",
            )
        fault = state.faults.next_put()
        attempt.fault = None if fault == "none" else fault
        pub.put_in_flight = True
        try:
            return await self._receive(request, pub, attempt, fault)
        finally:
            pub.put_in_flight = False

    def _check_headers(self, request: web.Request, pub: Publish) -> tuple[int, int, int]:
        if pub.plan is None:  # pragma: no cover - checked by the caller
            raise RuntimeError("FILE_UPLOAD publish without plan")
        if request.content_type not in ALLOWED_CONTENT_TYPES:
            raise _Rejected(
                400, "upload_bad_headers", "Content-Type must be video/mp4, video/quicktime or video/webm"
            )
        match = _CONTENT_RANGE.fullmatch(request.headers.get("Content-Range", "").strip())
        if match is None:
            raise _Rejected(400, "upload_bad_headers", "Content-Range must be 'bytes FIRST-LAST/TOTAL'")
        first, last, total = (int(g) for g in match.groups())
        if last < first or total != pub.plan.video_size or last >= total:
            raise _Rejected(400, "upload_bad_headers", "Content-Range is not a range of video_size")
        length = request.content_length
        if length is None:
            raise _Rejected(400, "upload_bad_headers", "Content-Length is required")
        if length != last - first + 1:
            raise _Rejected(400, "upload_bad_headers", "Content-Length must equal LAST-FIRST+1")
        return first, last, length

    async def _receive(
        self, request: web.Request, pub: Publish, attempt: ChunkAttempt, fault: PutFault
    ) -> web.StreamResponse:
        plan = pub.plan
        if plan is None or pub.file_path is None:  # pragma: no cover - set at init
            raise RuntimeError("FILE_UPLOAD publish without plan or file")
        if fault == "error":
            status = self.sb.state.faults.config.put_error_status
            await _drain(request)
            attempt.status_code = status
            return await self._reply(request, pub, status, "internal_error", "Injected fault")
        hasher = pub.hasher.copy()  # committed only if the whole chunk lands
        try:
            received = await self._stream_to_disk(
                request, pub, attempt, hasher, drop=fault == "drop_before_store"
            )
        except _Dropped:
            attempt.status_code = None
            self.sb.state.stats.respond("upload", 0, "fault_dropped_before_store")
            _abort(request)
            return web.Response(status=500)  # never written: the connection is gone
        except (ConnectionError, aiohttp.ClientPayloadError, asyncio.IncompleteReadError) as exc:
            attempt.status_code = None
            log.info("chunk_aborted_by_client", publish_id=pub.publish_id, error=type(exc).__name__)
            self.sb.state.stats.respond("upload", 0, "upload_incomplete_body")
            return web.Response(status=400)
        if received != attempt.size:
            attempt.status_code = 400
            return await self._reply(
                request, pub, 400, "upload_bad_headers", "The body size differs from Content-Length"
            )
        # Commit: progress, hash, chunk index.
        attempt.stored = True
        pub.hasher = hasher
        pub.uploaded_bytes = (attempt.last or 0) + 1
        pub.next_chunk += 1
        if pub.next_chunk == plan.total_chunk_count:
            pub.complete = True
            pub.sha256 = hasher.hexdigest()
            await asyncio.to_thread(_truncate, pub, plan.video_size)
            attempt.status_code = 201
            log.info("upload_complete", publish_id=pub.publish_id, bytes=plan.video_size, sha256=pub.sha256)
            self.sb.start_processing(pub)
        else:
            attempt.status_code = 206
            log.info("chunk_stored", publish_id=pub.publish_id, first=attempt.first, last=attempt.last)
        if fault == "drop_after_store":
            self.sb.state.stats.respond("upload", 0, "fault_dropped_after_store")
            _abort(request)
            return web.Response(status=500)  # never written: the connection is gone
        return await self._reply(request, pub, attempt.status_code, "ok")

    async def _stream_to_disk(
        self, request: web.Request, pub: Publish, attempt: ChunkAttempt, hasher: Any, *, drop: bool
    ) -> int:
        path = pub.file_path
        if path is None or attempt.first is None or attempt.size is None:  # pragma: no cover - set by put()
            raise RuntimeError("chunk attempt without range")
        f: BinaryIO = await asyncio.to_thread(_open_at, path, attempt.first)
        received = 0
        buf = bytearray()
        try:
            async for piece in request.content.iter_chunked(_READ_PIECE):
                received += len(piece)
                if drop and received * 2 >= attempt.size:
                    raise _Dropped  # halfway through the body, before anything is committed
                buf += piece
                if len(buf) >= _WRITE_BUFFER:
                    data = bytes(buf)
                    buf.clear()
                    await asyncio.to_thread(_write, f, hasher, data)
            if drop:
                raise _Dropped
            if buf:
                await asyncio.to_thread(_write, f, hasher, bytes(buf))
        finally:
            await asyncio.to_thread(f.close)
        return received


class _Dropped(Exception):
    """Injected: the connection drops before the chunk is stored."""


def _open_at(path: Any, offset: int) -> BinaryIO:
    f: BinaryIO = path.open("r+b") if path.exists() else path.open("w+b")
    f.seek(offset)
    return f


def _write(f: BinaryIO, hasher: Any, data: bytes) -> None:
    f.write(data)
    hasher.update(data)


def _truncate(pub: Publish, size: int) -> None:
    if pub.file_path is not None:
        with pub.file_path.open("r+b") as f:
            f.truncate(size)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _drain(request: web.Request) -> None:
    async for _ in request.content.iter_chunked(_READ_PIECE):
        pass


async def _discard_body(request: web.Request) -> None:
    """Read a refused body to its end so the client sees the answer; close instead if it is absurd."""
    if not request.can_read_body or request.content.is_eof():
        return
    length = request.content_length
    if length is not None and length > _DISCARD_MAX:
        _close_after_reply(request)
        return
    read = 0
    # A client that went away needs no answer.
    with contextlib.suppress(ConnectionError, aiohttp.ClientPayloadError):
        async for piece in request.content.iter_chunked(_READ_PIECE):
            read += len(piece)
            if read > _DISCARD_MAX:  # a chunked body that never ends
                _close_after_reply(request)
                return


def _close_after_reply(request: web.Request) -> None:
    if request.protocol is not None:
        request.protocol.force_close()
