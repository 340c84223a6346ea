"""Benchmark: is an upload as fast as the wire? The uploader vs a bare httpx PUT, side by side.

For each video size and each source kind, fresh child processes send the same bytes to the
same real sandbox process (tools/tiktok-sandbox), one after the other:
- `uploader`: the real uploader handler (`handle_upload_requested`) in-process, with the real
  Mongo upload store and state recorder (checkpoints), TikTok gateway and client, and the real
  video reader of the source kind; the figure is the record's time from `uploading` to `uploaded`
  (its history), and the child's peak RSS;
- `bare`: an httpx streaming PUT of each planned chunk of the same file, read from local disk
  (init untimed): the speed of the wire on this machine;
- `pipe` (URL sources and the S3 store): one streaming read of the whole source (an httpx GET,
  a plain get_object) piped into the same PUTs;
- `floor`: the bare PUT with the one write the uploader makes beside its bytes (the real store's
  move to `uploading` with the new publish's checkpoint, the chunk's last piece held until it is
  durable): the least an upload can take that records its publish before TikTok has every byte.
The ratio is bare / uploader (1.0: as fast as the wire; target >= 0.9). Each pair runs
`--repeat` times and the best of each side counts (shared, noisy machine). A third ratio is the
whole of each side: the bare init and PUT against the handler's time from the command to
`uploaded` (a file upload's window starts after its init: it moves to `uploading` with the new
publish's checkpoint).

Each side that writes state (uploader, floor) has a database of its own, dropped after it: one
upload in flight, as for a service at work, whatever ran before it.

Every side is warm and starts alike: the uploader child first handles a 1 MB upload of the same
kind, unmeasured (a running service has its imports and connections; a cold child paid ~70 ms of
first-use imports inside the window), the bare children make one init first. Then each child says
it is ready and waits for the parent's go; the parent deletes the sandbox's stored uploads (the
last side's copy of the same video) and syncs the disk in between. So the sandbox writes every
side's bytes into memory freed a moment before: on this VM, memory left free for two seconds goes
back to the host, and writing into it costs ten times as much (bench/fresh_pages.py), which made
either side of a pair up to 2x slower at random. Before the first side of each size, a file of
that size is written into the sandbox's folder to be freed the same way.

Source kinds: `url-range` and `url-norange` (a local HTTP server process on 127.0.0.1 serving the
generated file, honouring Range or ignoring it), and one per blob store given with `--stores`
(`gridfs` today; a new store is one entry in BLOB_STORES). The blob is written before the run,
untimed as far as the uploader is concerned; its write time is shown beside it.

    MONGODB_URI=mongodb://127.0.0.1:27117 uv run python bench/upload_speed.py --quick
    MONGODB_URI=mongodb://127.0.0.1:27117 uv run python bench/upload_speed.py  # 10 MB, 200 MB, 1 GB

Every child is bounded by `--row-timeout` seconds (killed and reported as such), so the whole run
stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import httpx
from botocore.exceptions import ClientError
from pydantic import SecretStr
from reelay_common.adapters.blobs.gridfs import GridFSBlobStore
from reelay_common.adapters.blobs.local import LocalBlobStore
from reelay_common.adapters.blobs.s3 import S3BlobStore, connect_s3
from reelay_common.adapters.guarded_http import guarded_transport
from reelay_common.adapters.mongo.client import connect, ensure_indexes
from reelay_common.adapters.mongo.rate_limits import MongoRateLimiter
from reelay_common.adapters.mongo.uploads import MongoUploadStore
from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.adapters.tiktok.gateway import TikTokGateway
from reelay_common.adapters.url_reader import UrlVideoReader
from reelay_common.domain.chunks import chunk_ranges, plan_chunks
from reelay_common.domain.messages import BlobSource, UploadRequested, UrlSource
from reelay_common.domain.records import Change, UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.logging import configure_logging
from reelay_common.outbox import OutboxRelay
from reelay_common.ports import VideoReader
from reelay_common.recorder import StateRecorder
from reelay_common.runtime import tiktok_http_client
from reelay_testing.publisher import FakePublisher
from reelay_testing.stores import FakeAccountStore
from reelay_uploader.handlers import UploaderDeps, handle_upload_requested
from tiktok_sandbox.media import write_sample_mp4

CLIENT_KEY, CLIENT_SECRET = "bench-key", "bench-secret"
BARE_PIECE = 256 * 1024  # what the bare PUT streams per write
INGEST_PIECE = 64 * 1024  # what the bench feeds a blob store's save, piece by piece
S3_PART_BYTES = 8 * 1024 * 1024  # REELAY_S3_PART_BYTES' default
MB = 1000 * 1000
READY = "reelay-bench-child-ready"  # a child's line to the parent: set up, waiting for its go
WARMUP_MB = 1  # the uploader child's first, unmeasured upload (see run_uploader)


# -- blob stores: one entry per store the uploader can read a streamed-in file from --------------


class BlobStoreLike(Protocol):
    """What the benchmark needs of a blob store: ingest's write and the uploader's read."""

    async def save(
        self, chunks: AsyncIterator[bytes], *, filename: str | None, content_type: str, max_bytes: int
    ) -> BlobSource: ...

    async def open(self, source: BlobSource) -> VideoReader: ...

    async def delete(self, blob_id: str) -> None: ...


@asynccontextmanager
async def gridfs_store() -> AsyncIterator[BlobStoreLike]:
    """GridFS in the benchmark's own database of MONGODB_URI."""
    mongo = connect(mongodb_uri(), app_name="reelay-bench")
    try:
        yield GridFSBlobStore(mongo[bench_db()])
    finally:
        await mongo.close()


@asynccontextmanager
async def local_store() -> AsyncIterator[BlobStoreLike]:
    """The local store in the run's own directory (BENCH_BLOB_DIR), as `make up` runs it."""
    yield LocalBlobStore(Path(os.environ["BENCH_BLOB_DIR"]), max_bytes=2**40)


@asynccontextmanager
async def s3_client() -> AsyncIterator[Any]:
    """An S3 client as the services build it (S3_ENDPOINT_URL, REELAY_S3_*), the bucket made if missing."""
    async with contextlib.AsyncExitStack() as stack:
        client = await connect_s3(
            stack,
            endpoint_url=os.environ.get("S3_ENDPOINT_URL"),
            region=os.environ.get("REELAY_S3_REGION"),
            access_key_id=os.environ.get("REELAY_S3_ACCESS_KEY_ID"),
            secret_access_key=os.environ.get("REELAY_S3_SECRET_ACCESS_KEY"),
        )
        try:
            await client.create_bucket(Bucket=s3_bucket())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise
        yield client


@asynccontextmanager
async def s3_store() -> AsyncIterator[BlobStoreLike]:
    """The S3 store on S3_ENDPOINT_URL (SeaweedFS here), under the run's own prefix."""
    async with s3_client() as client:
        yield s3_blob_store(client)


def s3_blob_store(client: Any) -> S3BlobStore:
    """The run's S3 store on `client`: its bucket, its own prefix, the services' part size."""
    return S3BlobStore(client, bucket=s3_bucket(), prefix=s3_prefix(), part_bytes=S3_PART_BYTES)


def s3_bucket() -> str:
    return os.environ.get("REELAY_S3_BUCKET", "reelay-bench")


def s3_prefix() -> str:
    return f"bench/{bench_db()}/"


# name -> an async context manager giving the store, configured from the environment.
BLOB_STORES: dict[str, Callable[[], AbstractAsyncContextManager[BlobStoreLike]]] = {
    "local": local_store,
    "s3": s3_store,
    "gridfs": gridfs_store,
}

URL_KINDS = ("url-range", "url-norange")
# The sources with a bare pipe (run_pipe): a read apart from the PUT.
PIPED_KINDS = frozenset({*URL_KINDS, "s3"})


def mongodb_uri() -> str:
    return os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017")


def bench_db() -> str:
    return os.environ["BENCH_MONGODB_DATABASE"]


# -- the video source server (a child process: a remote server stands apart from the uploader) ----


def serve_source(directory: Path, port_file: Path) -> None:
    """Serve `directory` on 127.0.0.1: /range/<name> honours Range, /norange/<name> ignores it."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # the stdlib's name
            return

        def _target(self) -> tuple[Path, bool] | None:
            match = re.fullmatch(r"/(range|norange)/([\w.-]+)", self.path)
            if match is None or not (directory / match.group(2)).is_file():
                return None
            return directory / match.group(2), match.group(1) == "range"

        def do_HEAD(self) -> None:  # the stdlib's name
            target = self._target()
            if target is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(target[0].stat().st_size))
            if target[1]:
                self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:  # the stdlib's name
            target = self._target()
            if target is None:
                self.send_error(404)
                return
            path, honour_range = target
            size = path.stat().st_size
            first, last = 0, size - 1
            wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if honour_range and wanted is not None:
                first = int(wanted.group(1))
                last = min(size - 1, int(wanted.group(2))) if wanted.group(2) else size - 1
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(last - first + 1))
            self.end_headers()
            with path.open("rb") as f, contextlib.suppress(ConnectionError):
                self.connection.sendfile(f, first, last - first + 1)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


# -- child: the uploader --------------------------------------------------------------------------


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def peak_rss_mb(pid: int | None = None) -> float:
    """A process's peak RSS (VmHWM; this one's by default), in MiB. Not ru_maxrss: Linux carries
    that across fork and exec, so a child of a parent that grew (botocore's models) would report
    the parent's peak."""
    status = Path(f"/proc/{pid or 'self'}/status")
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in {status}")


class StaticTokens:
    """ports.TokenProvider with the sandbox user's token (OAuth is not on the path of the bytes)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def access_token(self, account_id: str) -> str:
        return self._token

    async def force_refresh(self, account_id: str, stale_token: str) -> str:
        return self._token


class TimedUploadStore(MongoUploadStore):
    """The real store, noting to the microsecond when each transition was asked: the moment its
    history entry is stamped, which the record keeps to the millisecond only (1 ms is 5% of a
    10 MB upload here)."""

    def __init__(self, db: Any) -> None:
        super().__init__(db)
        self._asked: dict[tuple[str, UploadState], float] = {}

    async def transition(self, request_id: str, change: Change) -> UploadRecord | None:
        self._asked.setdefault((request_id, change.target), time.perf_counter())
        return await super().transition(request_id, change)

    def between(self, request_id: str, start: UploadState, end: UploadState) -> float:
        """Seconds from the first transition to `start` to the first to `end`."""
        return self._asked[(request_id, end)] - self._asked[(request_id, start)]


def bench_command(account_id: str, source: dict[str, Any]) -> UploadRequested:
    """An inbox upload of `source` for `account_id`, under a new request_id."""
    return UploadRequested.model_validate(
        {
            "request_id": f"bench-{uuid.uuid4().hex}",
            "account_id": account_id,
            "mode": "inbox",
            "source": source,
        }
    )


async def ready_to_time() -> None:
    """Tell the parent this child is set up, and wait for its go (see the module's docstring)."""
    print(READY, flush=True)
    await asyncio.to_thread(sys.stdin.readline)


async def run_uploader(cfg: dict[str, Any]) -> dict[str, Any]:
    """Drive handle_upload_requested for one video; report its uploading -> uploaded time and RSS."""
    mongo = connect(mongodb_uri(), app_name="reelay-bench-uploader")
    db = mongo[cfg["state_db"]]
    await ensure_indexes(db)
    store = TimedUploadStore(db)
    publisher = FakePublisher()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(mongo.close)
        # The same two clients as the uploader's composition root (bootstrap.run).
        tiktok_http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=30.0)
            if os.environ.get("BENCH_TIKTOK_TRANSPORT") == "httpx"
            else tiktok_http_client(30.0)
        )
        source_http = await stack.enter_async_context(
            httpx.AsyncClient(  # as the uploader's main builds it
                transport=guarded_transport(allow_private=True),
                timeout=httpx.Timeout(60.0, connect=10.0),
                follow_redirects=False,
            )
        )
        blobs = (
            await stack.enter_async_context(BLOB_STORES[cfg["kind"]]())
            if cfg["kind"] in BLOB_STORES
            else None
        )

        @asynccontextmanager
        async def open_reader(source: UrlSource | BlobSource) -> AsyncIterator[VideoReader]:
            if isinstance(source, BlobSource):
                assert blobs is not None
                stored = await blobs.open(source)
                try:
                    yield stored
                finally:
                    close = getattr(stored, "aclose", None)  # as main.reader_factory does
                    if close is not None:
                        await close()
                return
            async with await UrlVideoReader.open(source_http, source.url, allow_private=True) as reader:
                yield reader

        client = TikTokClient(
            tiktok_http,
            base_url=cfg["base_url"],
            client_key=CLIENT_KEY,
            client_secret=SecretStr(CLIENT_SECRET),
        )
        gateway = TikTokGateway(client, StaticTokens(cfg["token"]), MongoRateLimiter(db))
        outbox = OutboxRelay(
            store, publisher, requested_topic="bench.upload.requested", status_topic="bench.publish.status"
        )
        account_id = f"bench-{uuid.uuid4().hex[:12]}"

        def command(source: dict[str, Any]) -> UploadRequested:
            return bench_command(account_id, source)

        cmd = command(cfg["source"])
        accounts = FakeAccountStore()  # the gateway's tokens are static: the account is only looked up
        accounts.add_connected(account_id)
        deps = UploaderDeps(
            uploads=store,
            accounts=accounts,
            recorder=StateRecorder(store, outbox),
            outbox=outbox,
            publisher=publisher,
            tiktok=gateway,
            open_reader=open_reader,
            events_topic="bench.publish.events",
        )
        if cfg.get("warmup_source"):
            # A running uploader, not a cold one: a small upload of the same kind first, so that
            # imports made on first use (anyio's backend on the first request: ~70 ms, all of it
            # compiling with PYTHONDONTWRITEBYTECODE=1) and the first connections to Mongo, the
            # sandbox and the source are behind us, as they are for every upload but a service's
            # first. The bare sides are warm the same way (their untimed init).
            warmup = command(cfg["warmup_source"])
            await handle_upload_requested(warmup, deps)
            warmed = await store.get(warmup.request_id)
            assert warmed is not None
            assert warmed.state is UploadState.UPLOADED, warmed.history[-1]
        await ready_to_time()
        baseline = peak_rss_mb()
        started = time.perf_counter()
        await handle_upload_requested(cmd, deps)
        handler_seconds = time.perf_counter() - started
        record = await store.get(cmd.request_id)
    peak = peak_rss_mb()
    assert record is not None
    assert record.state is UploadState.UPLOADED, (record.state, record.history[-1].detail)
    at = {h.state: h.at for h in record.history}
    seconds = store.between(cmd.request_id, UploadState.UPLOADING, UploadState.UPLOADED)
    # The same window as the record's history (which keeps milliseconds), to the microsecond.
    stored = (at[UploadState.UPLOADED] - at[UploadState.UPLOADING]).total_seconds()
    assert abs(seconds - stored) < 0.005, (seconds, stored)
    return {
        "seconds": seconds,
        "handler_seconds": handler_seconds,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak,
    }


# -- child: the bare PUT ----------------------------------------------------------------------------


async def file_pieces(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    # Plain blocking reads: the file is in the page cache, and this is the bare baseline.
    with path.open("rb") as f:  # see above
        f.seek(offset)
        while length:
            piece = f.read(min(BARE_PIECE, length))
            if not piece:
                raise OSError(f"{path} ended early")
            length -= len(piece)
            yield piece


async def put_all_chunks(
    cfg: dict[str, Any], body: Callable[[int, int], AsyncIterator[bytes]], http: httpx.AsyncClient
) -> tuple[float, float]:
    """Init a publish, then PUT every planned chunk from `body(first, length)` with plain httpx
    streaming: the init's seconds, and the seconds from before the first PUT's body is opened to
    the last answer."""
    size = int(cfg["size"])
    client = TikTokClient(
        http, base_url=cfg["base_url"], client_key=CLIENT_KEY, client_secret=SecretStr(CLIENT_SECRET)
    )
    # One init first, unmeasured: imports and the connection, as the uploader's warm-up does.
    await client.init_inbox(cfg["token"], plan_chunks(WARMUP_MB * MB))
    plan = plan_chunks(size)
    await ready_to_time()
    began = time.perf_counter()
    init = await client.init_inbox(cfg["token"], plan)
    init_seconds = time.perf_counter() - began
    assert init.upload_url is not None
    started = time.perf_counter()
    for first, last in chunk_ranges(plan):
        response = await http.put(
            init.upload_url,
            content=body(first, last - first + 1),
            headers={
                "Content-Type": "video/mp4",
                "Content-Length": str(last - first + 1),
                "Content-Range": f"bytes {first}-{last}/{size}",
            },
        )
        assert response.status_code in (201, 206), response.status_code
    return init_seconds, time.perf_counter() - started


def child_result(timed: tuple[float, float]) -> dict[str, Any]:
    """A bare side's result from put_all_chunks' (init seconds, PUT seconds)."""
    init_seconds, seconds = timed
    return {"seconds": seconds, "init_seconds": init_seconds, "peak_rss_mb": peak_rss_mb()}


async def run_bare(cfg: dict[str, Any]) -> dict[str, Any]:
    """Every chunk of the file from local disk (the page cache), PUT with plain httpx streaming."""
    path = Path(cfg["path"])
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
        timed = await put_all_chunks(cfg, lambda first, length: file_pieces(path, first, length), http)
    return child_result(timed)


# -- child: the bare pipe (URL sources and the S3 store) ----------------------------------------


@asynccontextmanager
async def source_pieces(
    cfg: dict[str, Any], http: httpx.AsyncClient
) -> AsyncIterator[Callable[[], AsyncGenerator[bytes, None]]]:
    """What opens the pipe's ONE read of the whole source, and yields it piece by piece.

    A URL: one streaming httpx GET. An S3 blob: one plain get_object of the whole object from a
    client built as the services build it (connect_s3), asked once for the object's head before
    the timed part (the uploader's warm-up leaves its client with a connection and its first-use
    costs paid; the GET itself is timed).
    """
    source = cfg["source"]
    if source["kind"] == "url":

        async def url_pieces() -> AsyncGenerator[bytes, None]:
            async with http.stream("GET", source["url"]) as response:
                async for piece in response.aiter_raw(BARE_PIECE):
                    yield piece

        yield url_pieces
        return
    if source.get("store") != "s3":
        raise ValueError(f"no bare pipe for a {source.get('store')} blob")
    async with s3_client() as client:
        key = s3_blob_store(client).key(source["blob_id"])
        await client.head_object(Bucket=s3_bucket(), Key=key)

        async def s3_pieces() -> AsyncGenerator[bytes, None]:
            response = await client.get_object(Bucket=s3_bucket(), Key=key)
            async with response["Body"] as body:
                while piece := await body.read(BARE_PIECE):
                    yield piece

        yield s3_pieces


async def run_pipe(cfg: dict[str, Any]) -> dict[str, Any]:
    """ONE streaming read of the whole source, piped into the chunk PUTs (the read is timed too).

    The least any upload from that source can cost on this machine: the same two transfers as the
    uploader (source server -> us -> sandbox), with nothing of Reelay in between.
    """
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http,
        source_pieces(cfg, http) as open_source,
    ):
        pieces: AsyncGenerator[bytes, None] | None = None
        held = b""

        async def take(first: int, length: int) -> AsyncIterator[bytes]:
            nonlocal held, pieces
            if pieces is None:  # opened with the first chunk: inside the timed part
                pieces = open_source()
            while length:
                if not held:
                    held = await anext(pieces)
                piece, held = held[:length], held[length:]
                length -= len(piece)
                yield piece

        try:
            timed = await put_all_chunks(cfg, take, http)
        finally:
            if pieces is not None:
                await pieces.aclose()
    return child_result(timed)


# -- child: the floor (the bare PUT with the record's write beside it) ------------------------------


async def run_floor(cfg: dict[str, Any]) -> dict[str, Any]:
    """The bare PUT of run_bare with the one write the uploader makes beside it: the real store's
    move to `uploading` with a new publish's checkpoint, started with the first PUT, and the
    chunk's last piece held until that write is durable (as the uploader's _HeldBack holds it).

    The least an upload can take that records its publish before TikTok has every byte (promise
    2, docs/architecture.md): what is left between this and the uploader is Reelay's own.
    """
    path = Path(cfg["path"])
    mongo = connect(mongodb_uri(), app_name="reelay-bench-floor")
    db = mongo[cfg["state_db"]]
    await ensure_indexes(db)
    store = MongoUploadStore(db)
    size = int(cfg["size"])
    plan = plan_chunks(size)

    def publish_change() -> Change:
        fields = {
            "publish_id": f"v_inbox_file~v2.{uuid.uuid4().hex}",
            "upload_url": f"{cfg['base_url']}/upload/{uuid.uuid4().hex}",
            "upload_url_expires_at": datetime.now(UTC),
            "video_size": plan.video_size,
            "chunk_size": plan.chunk_size,
            "total_chunk_count": plan.total_chunk_count,
            "uploaded_bytes": 0,
            "init_attempts": 1,
        }
        return Change(
            UploadState.UPLOADING, source="uploader", set_fields=fields, announce_after=timedelta(seconds=1)
        )

    account_id = f"bench-{uuid.uuid4().hex[:12]}"
    # Warm as the uploader's warm-up leaves it: the connection made, the server asked once
    # whether it needs write locks, one move made.
    warm, _ = await store.create(bench_command(account_id, cfg["source"]), source="ingest")
    assert await store.transition(warm.request_id, publish_change()) is not None
    measured, _ = await store.create(bench_command(account_id, cfg["source"]), source="ingest")
    writing: asyncio.Task[UploadRecord | None] | None = None

    async def body(first: int, length: int) -> AsyncIterator[bytes]:
        nonlocal writing
        if writing is None:  # the first PUT: the write goes out beside its bytes
            writing = asyncio.create_task(store.transition(measured.request_id, publish_change()))
        held: bytes | None = None
        async for piece in file_pieces(path, first, length):
            if held is not None:
                yield held
            held = piece
        assert await asyncio.shield(writing) is not None
        if held is not None:
            yield held

    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
            timed = await put_all_chunks(cfg, body, http)
    finally:
        await mongo.close()
    return child_result(timed)


CHILDREN = {"uploader": run_uploader, "bare": run_bare, "pipe": run_pipe, "floor": run_floor}
STATE_WRITERS = frozenset({"uploader", "floor"})  # the children given a database of their own (`state_db`)


def run_child_main(mode: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """A child's whole run; under cProfile when the config names a profile file."""
    runner = CHILDREN[mode]
    if not cfg.get("profile"):
        before = resource.getrusage(resource.RUSAGE_SELF)
        result = asyncio.run(runner(cfg))
        after = resource.getrusage(resource.RUSAGE_SELF)
        # CPU of the whole run (startup excluded): on shared cores, CPU is most of the wall time.
        result["cpu_seconds"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return result
    import cProfile  # only for --profile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return asyncio.run(runner(cfg))
    finally:
        profiler.disable()
        profiler.dump_stats(cfg["profile"])


# -- ingest's write: BlobStore.save vs a bare write to the same store -------------------------------


async def file_pieces_async(path: Path) -> AsyncIterator[bytes]:
    """The file in INGEST_PIECE pieces, read in a worker thread (what a request body hands ingest)."""
    with path.open("rb") as f:
        while piece := await asyncio.to_thread(f.read, INGEST_PIECE):
            yield piece


async def bare_write(store_name: str, path: Path) -> float | None:
    """Seconds to write the same pieces to the same store with nothing of Reelay: None if no bare."""
    started = time.perf_counter()
    if store_name == "local":
        target = Path(os.environ["BENCH_BLOB_DIR"]) / f"bare-{uuid.uuid4().hex}"
        try:
            with target.open("wb") as out:
                async for piece in file_pieces_async(path):
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())
            return time.perf_counter() - started
        finally:
            target.unlink(missing_ok=True)
    if store_name == "s3":
        async with s3_client() as client:
            key = f"{s3_prefix()}bare-{uuid.uuid4().hex}"
            started = time.perf_counter()
            upload_id = (await client.create_multipart_upload(Bucket=s3_bucket(), Key=key))["UploadId"]
            parts: list[Any] = []
            part = bytearray()

            async def send(data: bytes) -> None:
                sent = await client.upload_part(
                    Bucket=s3_bucket(), Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=data
                )
                parts.append({"ETag": sent["ETag"], "PartNumber": len(parts) + 1})

            async for piece in file_pieces_async(path):
                part += piece
                if len(part) >= S3_PART_BYTES:
                    await send(bytes(part))
                    part.clear()
            if part:
                await send(bytes(part))
            await client.complete_multipart_upload(
                Bucket=s3_bucket(), Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            seconds = time.perf_counter() - started
            await client.delete_object(Bucket=s3_bucket(), Key=key)
            return seconds
    return None


# -- parent ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, httpx.HTTPError, ValueError):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout} s")


@dataclass
class Child:
    """A finished child run: its JSON result, or why there is none."""

    result: dict[str, Any] | None
    error: str | None = None


CHILD_LOGS: Path | None = None


def run_child(
    mode: str, cfg: dict[str, Any], env: dict[str, str], timeout: float, on_ready: Callable[[], None]
) -> Child:
    """Run one child; `on_ready` runs between its READY line and the go the parent answers with."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, json.dumps(cfg)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
    assert stdin is not None
    assert stdout is not None
    assert stderr is not None
    lines: list[str] = []
    errors: list[str] = []

    def talk() -> None:
        for line in stdout:
            if line.rstrip("\n") != READY:
                lines.append(line)
                continue
            on_ready()
            with contextlib.suppress(BrokenPipeError):
                stdin.write("go\n")
                stdin.flush()

    readers = [
        threading.Thread(target=talk, daemon=True),
        threading.Thread(target=lambda: errors.extend(stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return Child(None, f"stopped after {timeout:.0f} s")
    finally:
        for reader in readers:
            reader.join(timeout=10)
        with contextlib.suppress(BrokenPipeError):
            stdin.close()
    out, err = "".join(lines), "".join(errors)
    if CHILD_LOGS is not None:  # --child-logs: each child's log lines (the service's JSON logs)
        with CHILD_LOGS.open("a") as f:
            f.write(f"=== {mode} {cfg['kind']} {cfg['size']}\n{out}{err}")
    if process.returncode != 0:
        return Child(None, (err.strip().splitlines() or ["failed"])[-1][:200])
    return Child(json.loads(out.strip().splitlines()[-1]))


def write_ballast(path: Path, size: int) -> None:
    """A file of `size` bytes for the first side of a size to free at its go (the later sides free
    the copy the side before them left in the sandbox)."""
    zeros = bytes(8 * 1024 * 1024)
    with path.open("wb") as f:
        for _ in range(size // len(zeros)):
            f.write(zeros)
        f.write(zeros[: size % len(zeros)])


def new_token(base_url: str) -> str:
    """The access token of a new sandbox user."""
    with httpx.Client(timeout=30.0) as http:
        username = f"bench-{uuid.uuid4().hex[:8]}"
        user = http.post(f"{base_url}/sandbox/users", json={"username": username}).json()
        tokens = http.post(f"{base_url}/sandbox/users/{user['open_id']}/tokens").json()
    return str(tokens["access_token"])


async def save_blob(store_name: str, path: Path) -> tuple[BlobSource, float]:
    """Write the file into the store as ingest does (64 KiB pieces); return the source and seconds."""
    async with BLOB_STORES[store_name]() as store:
        started = time.perf_counter()
        source = await store.save(
            file_pieces_async(path), filename=path.name, content_type="video/mp4", max_bytes=2**32
        )
        return source, time.perf_counter() - started


async def delete_blob(store_name: str, blob_id: str) -> None:
    async with BLOB_STORES[store_name]() as store:
        await store.delete(blob_id)


async def drop_bench_db(name: str | None = None) -> None:
    mongo = connect(mongodb_uri(), app_name="reelay-bench")
    try:
        await mongo.drop_database(name or bench_db())
    finally:
        await mongo.close()


def warmup_source(kind: str, path: Path, source_base: str, spent: list[BlobSource]) -> dict[str, Any]:
    """A small video of the row's kind for the uploader's warm-up (a blob is spent by its upload:
    a new one each time, recorded in `spent` to be deleted with the row's)."""
    if kind in BLOB_STORES:
        warm, _ = asyncio.run(save_blob(kind, path))
        spent.append(warm)
        return warm.model_dump(mode="json")
    return url_source(kind, source_base, path)


def url_source(kind: str, source_base: str, path: Path) -> dict[str, Any]:
    """The UrlSource of `path` on the source server, for `url-range` or `url-norange`."""
    prefix = "range" if kind == "url-range" else "norange"
    return {"kind": "url", "url": f"{source_base}/{prefix}/{path.name}"}


def best(runs: list[Child]) -> dict[str, Any] | None:
    done = [r.result for r in runs if r.result is not None]
    return min(done, key=lambda r: float(r["seconds"])) if done else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 MB and 200 MB only")
    parser.add_argument("--sizes-mb", type=int, nargs="+", help="override the sizes (MB of 10^6 bytes)")
    parser.add_argument("--stores", nargs="*", default=list(BLOB_STORES), choices=sorted(BLOB_STORES))
    parser.add_argument(
        "--gridfs-max-mb",
        type=int,
        help="largest video sent through GridFS (FerretDB reads it at ~2 MB/s); default: 200, --quick: 10",
    )
    parser.add_argument(
        "--profile", type=Path, help="write a cProfile of each uploader child into this folder"
    )
    parser.add_argument("--child-logs", type=Path, help="append every child's log lines to this file")
    parser.add_argument("--url-kinds", nargs="*", default=list(URL_KINDS), choices=URL_KINDS)
    parser.add_argument(
        "--tiktok-transport",
        choices=("services", "httpx"),
        default="services",
        help="the uploader's transport to TikTok: the services' own (default) or httpx's, for an A/B",
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side per row; the best counts")
    parser.add_argument("--row-timeout", type=float, default=300.0, help="seconds before a child is stopped")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-source", nargs=2, metavar=("DIR", "PORT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_source:
        serve_source(Path(args.serve_source[0]), Path(args.serve_source[1]))
        return
    if args.child:
        mode, cfg = args.child
        configure_logging("info", "json")  # as the service logs (one line per chunk, among others)
        print(json.dumps(run_child_main(mode, json.loads(cfg))))
        return

    configure_logging("warning")
    global CHILD_LOGS
    CHILD_LOGS = args.child_logs
    sizes = args.sizes_mb or ([10, 200] if args.quick else [10, 200, 1000])
    kinds = [*args.url_kinds, *args.stores]
    gridfs_max_mb = args.gridfs_max_mb or (10 if args.quick else 200)
    os.environ.setdefault("BENCH_MONGODB_DATABASE", f"reelay_bench_speed_{os.getpid()}")
    os.environ["BENCH_TIKTOK_TRANSPORT"] = args.tiktok_transport
    workdir = Path(tempfile.mkdtemp(prefix="reelay-bench-speed-"))
    videos, sandbox_dir = workdir / "videos", workdir / "sandbox"
    videos.mkdir()
    sandbox_dir.mkdir()
    os.environ["BENCH_BLOB_DIR"] = str(workdir / "blobs")
    (workdir / "blobs").mkdir()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "SANDBOX_PORT": str(port),
        "SANDBOX_CLIENT_KEY": CLIENT_KEY,
        "SANDBOX_CLIENT_SECRET": CLIENT_SECRET,
        "SANDBOX_DATA_DIR": str(sandbox_dir),
        "SANDBOX_RATE_LIMIT_INIT": "1000",
        # No media check during the run: 2 s after each upload (the default) it reads the whole
        # file, and landed on the next child's init (+0.1-0.5 s measured on the blob rows).
        "SANDBOX_PROCESSING_DELAY_SECONDS": "86400",
        "SANDBOX_LOG_LEVEL": "warning",
        "LOG_LEVEL": "warning",
    }
    base_url = f"http://127.0.0.1:{port}"

    def free_sandbox_pages() -> None:
        # Between a child's READY and its go. The sandbox keeps every upload on disk: each side
        # starts with it empty (left there, the bare side's copy slowed the uploader's PUTs that
        # followed it by 30-45%), and with the memory of the last side's copy just freed (see the
        # docstring). No dirty pages either: the blob just written (fsynced) and the sandbox's
        # copies would otherwise hold up FerretDB's own fsyncs (SQLite) during the uploader's init
        # and checkpoints (measured: +0.2-0.5 s on the `uploading` -> init step).
        for part in sandbox_dir.iterdir():
            part.unlink(missing_ok=True)
        os.sync()

    processes: list[subprocess.Popen[bytes]] = []
    rows: list[dict[str, Any]] = []
    started = datetime.now(UTC)
    try:
        processes.append(
            subprocess.Popen([sys.executable, "-m", "tiktok_sandbox"], env=env, stdout=subprocess.DEVNULL)
        )
        port_file = workdir / "source.port"
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, "--serve-source", str(videos), str(port_file)], env=env
            )
        )
        wait_until(lambda: httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200, "the sandbox")
        wait_until(lambda: port_file.exists() and bool(port_file.read_text()), "the source server")
        source_base = f"http://127.0.0.1:{port_file.read_text()}"
        warmup_path = videos / "warmup.mp4"
        write_sample_mp4(warmup_path, WARMUP_MB * MB)
        for size_mb in sizes:
            path = videos / f"video-{size_mb}.mp4"
            write_sample_mp4(path, size_mb * MB)
            write_ballast(sandbox_dir / f"ballast-{size_mb}", size_mb * MB)
            for kind in kinds:
                if kind == "gridfs" and size_mb > gridfs_max_mb:
                    continue
                row: dict[str, Any] = {"kind": kind, "size_mb": size_mb, "note": ""}
                blob: BlobSource | None = None
                warmups: list[BlobSource] = []
                if kind in BLOB_STORES:
                    row["bare_write_seconds"] = asyncio.run(bare_write(kind, path))
                    blob, row["write_seconds"] = asyncio.run(save_blob(kind, path))
                    source: dict[str, Any] = blob.model_dump(mode="json")
                else:
                    source = url_source(kind, source_base, path)
                cfg = {
                    "kind": kind,
                    "base_url": base_url,
                    "source": source,
                    "path": str(path),
                    "size": size_mb * MB,
                }
                bare_runs, pipe_runs, floor_runs, uploader_runs = [], [], [], []

                def side(mode: str, side_cfg: dict[str, Any]) -> Child:
                    # A side that writes state does it in a database of its own: one upload in
                    # flight, as for a service at work. Shared, every upload the run made stayed
                    # in flight (there is no poller to settle them), and each guarded write scans
                    # the in-flight collection on FerretDB: a row got slower with the rows before
                    # it (FerretDB's CPU in a 10 MB window grew from 3.7 to 11.8 ms over eight
                    # uploader runs; url-norange, run after url-range, paid for it).
                    state_db = (
                        f"{bench_db()}_{mode}_{uuid.uuid4().hex[:8]}" if mode in STATE_WRITERS else None
                    )
                    sandbox_cpu = cpu_seconds_of(processes[0].pid)
                    try:
                        if state_db is not None:
                            side_cfg = side_cfg | {"state_db": state_db}
                        done = run_child(mode, side_cfg, env, args.row_timeout, free_sandbox_pages)
                    finally:
                        if state_db is not None:
                            asyncio.run(drop_bench_db(state_db))
                    if done.result is not None:  # the other half of the two cores' work
                        done.result["sandbox_cpu_seconds"] = cpu_seconds_of(processes[0].pid) - sandbox_cpu
                    return done

                for attempt in range(args.repeat):
                    # A new sandbox user each time: TikTok caps the pending inbox shares per user.
                    bare_runs.append(side("bare", cfg | {"token": new_token(base_url)}))
                    if kind in PIPED_KINDS:
                        pipe_runs.append(side("pipe", cfg | {"token": new_token(base_url)}))
                    floor_runs.append(side("floor", cfg | {"token": new_token(base_url)}))
                    warm = warmup_source(kind, warmup_path, source_base, warmups)
                    uploader = cfg | {"token": new_token(base_url), "warmup_source": warm}
                    if args.profile:
                        uploader["profile"] = str(args.profile / f"{kind}-{size_mb}mb-{attempt}.prof")
                    uploader_runs.append(side("uploader", uploader))
                    if uploader_runs[-1].result is None:
                        break  # a failed or stopped row is not worth another try
                row["bare"], row["pipe"], row["floor"], row["uploader"] = (
                    best(bare_runs),
                    best(pipe_runs),
                    best(floor_runs),
                    best(uploader_runs),
                )
                errors = [r.error for r in bare_runs + pipe_runs + floor_runs + uploader_runs if r.error]
                row["note"] = "; ".join(sorted(set(e for e in errors if e)))
                for spent in [blob, *warmups] if blob is not None else []:
                    asyncio.run(delete_blob(kind, spent.blob_id))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            path.unlink()
    finally:
        for process in reversed(processes):
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        with contextlib.suppress(Exception):  # best effort: the run's own scratch database
            asyncio.run(drop_bench_db())
        shutil.rmtree(workdir, ignore_errors=True)

    report(args, sizes, kinds, rows, started)


def report(
    args: argparse.Namespace,
    sizes: list[int],
    kinds: list[str],
    rows: list[dict[str, Any]],
    started: datetime,
) -> None:
    command = "uv run python bench/upload_speed.py " + " ".join(sys.argv[1:])
    print(
        f"date: {started:%Y-%m-%d %H:%M} UTC; machine: {platform.node()} ({os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, load {os.getloadavg()[0]:.1f})"
    )
    print(f"command: {command.strip()} (MONGODB_URI={mongodb_uri()})")
    print()
    print(
        "| source | video | bare PUT s | bare GET→PUT pipe s | bare PUT + record write s "
        "| uploader s (uploading → uploaded) | ratio bare PUT/uploader | ratio pipe/uploader "
        "| ratio bare PUT/(PUT + write) | ratio (PUT + write)/uploader | ratio bare init+PUT/handler "
        "| uploader peak RSS | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        bare, pipe, floor, up = row["bare"], row["pipe"], row["floor"], row["uploader"]
        note = row["note"]
        if "write_seconds" in row:
            note = f"blob written in {row['write_seconds']:.1f} s" + (f"; {note}" if note else "")
        cells = [
            row["kind"],
            f"{row['size_mb']} MB",
            _seconds(bare),
            _seconds(pipe),
            _seconds(floor),
            f"{up['seconds']:.3f} (handler {up['handler_seconds']:.3f})" if up else "—",
            _ratio(bare, up),
            _ratio(pipe, up),
            _ratio(bare, floor),
            _ratio(floor, up),
            _ratio(_with_init(bare), _handler(up)),
            f"{up['peak_rss_mb']:.0f} MB" if up else "—",
            note,
        ]
        print("| " + " | ".join(cells) + " |")
    writes = [r for r in rows if r.get("bare_write_seconds") is not None]
    if writes:
        print()
        print("| store | video | bare write s | BlobStore.save s (ingest) | save MB/s | ratio bare/save |")
        print("|---|---|---|---|---|---|")
        for row in writes:
            bare_s, save_s = row["bare_write_seconds"], row["write_seconds"]
            print(
                f"| {row['kind']} | {row['size_mb']} MB | {bare_s:.2f} | {save_s:.2f} "
                f"| {row['size_mb'] / save_s:.0f} | {bare_s / save_s:.2f} |"
            )
    print()
    print("CPU seconds of each side's whole child run (warm-up and setup included) and of the sandbox")
    print("meanwhile: on two cores, (child + sandbox) / 2 is about the least the run can take.")
    print()
    print("| source | video | bare: client + sandbox | pipe: client + sandbox | uploader: child + sandbox |")
    print("|---|---|---|---|---|")
    for row in rows:
        cells = [row["kind"], f"{row['size_mb']} MB"]
        for side_name in ("bare", "pipe", "uploader"):
            result = row[side_name]
            cpu = (result or {}).get("cpu_seconds")
            sandbox = (result or {}).get("sandbox_cpu_seconds")
            cells.append(f"{cpu:.2f} + {sandbox:.2f}" if cpu is not None and sandbox is not None else "—")
        print("| " + " | ".join(cells) + " |")
    if len(sizes) > 1:
        print()
        print(f"| source | uploader peak RSS {sizes[0]} MB | {sizes[-1]} MB | ratio |")
        print("|---|---|---|---|")
        for kind in kinds:
            by_size = {r["size_mb"]: r["uploader"] for r in rows if r["kind"] == kind}
            small, large = by_size.get(sizes[0]), by_size.get(sizes[-1])
            if small and large:
                low, high = small["peak_rss_mb"], large["peak_rss_mb"]
                print(f"| {kind} | {low:.0f} MB | {high:.0f} MB | {high / low:.2f}x |")
            else:
                print(f"| {kind} | — | — | — |")


def _with_init(bare: dict[str, Any] | None) -> dict[str, Any] | None:
    """The bare side with its (warm) init call counted, to set against the uploader's handler."""
    if bare is None or bare.get("init_seconds") is None:
        return None
    return {"seconds": bare["seconds"] + bare["init_seconds"]}


def _handler(uploader: dict[str, Any] | None) -> dict[str, Any] | None:
    """The uploader's whole handling: the command to `uploaded`, init and pacing included."""
    return {"seconds": uploader["handler_seconds"]} if uploader else None


def _seconds(result: dict[str, Any] | None) -> str:
    return f"{result['seconds']:.3f}" if result else "—"


def _ratio(baseline: dict[str, Any] | None, uploader: dict[str, Any] | None) -> str:
    if not baseline or not uploader:
        return "—"
    return f"{baseline['seconds'] / uploader['seconds']:.2f}"


if __name__ == "__main__":
    main()
