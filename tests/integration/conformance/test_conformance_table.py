"""The conformance table: every documented TikTok rule, seen from both sides.

For each rule of the reference (docs/architecture.md, "TikTok") the table below holds two
proofs, run as two parametrized tests:

- `test_sandbox_rejects_the_violation[rule]`: the violating request, sent with plain httpx to the real
  in-process sandbox, gets the documented HTTP status and error code (envelope, flat OAuth error, or
  for a PUT the status plus the sandbox's code), /sandbox/stats counts exactly that violation, and
  nothing was created (no publish, no stored byte, no token).
- `test_client_never_commits_it[rule]`: Reelay's own code (planner, client, uploader, gateway,
  ingest checks, token provider, rate limiter) driven over the rule's input space against the real
  sandbox, with every request recorded by a transport that wraps the real one. The sandbox's
  violation counters must end exactly as the rule says: empty, except where only TikTok can know
  (the statement says so, and the test shows what Reelay does with the refusal instead).

Run: KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 MONGODB_URI=mongodb://127.0.0.1:27117 \
     uv run pytest tests/integration/conformance -q
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.mongo.accounts import MongoAccountStore
from reelay_common.adapters.mongo.rate_limits import DEFAULT_LIMITS, MongoRateLimiter
from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.adapters.tiktok.gateway import TikTokGateway
from reelay_common.adapters.tiktok.tokens import MongoTokenProvider
from reelay_common.adapters.tiktok.upload import upload_chunks
from reelay_common.domain.chunks import MAX_VIDEO_SIZE, chunk_ranges, plan_chunks
from reelay_common.domain.errors import (
    AuthExpiredError,
    InvalidInputError,
    PermanentError,
    RetryableError,
    TikTokRejectedError,
    UploadUrlExpiredError,
)
from reelay_common.domain.messages import (
    MAX_VIDEO_BYTES,
    PostInfo,
    PullFromUrlSource,
    UploadRequested,
    UrlSource,
    utf16_len,
)
from reelay_common.domain.records import UploadRecord
from reelay_common.domain.states import UploadState
from reelay_common.domain.tiktok import FileUploadSourceInfo, PullFromUrlSourceInfo, TokenGrant
from reelay_common.ports import ChunkedUpload, RateLimiter, TokenProvider, VideoReader
from reelay_common.runtime import tiktok_transport
from reelay_common.settings import DEV_TOKEN_KEY
from reelay_ingest.deps import IngestDeps, Topics
from reelay_ingest.errors import RequestRejected
from reelay_ingest.handlers import UploadTarget, check_upload_target
from reelay_ingest.schemas import UploadByUrl
from reelay_testing.blobs import FakeBlobStore
from reelay_testing.clocks import FakeClock
from reelay_testing.publisher import FakePublisher
from reelay_testing.readers import BytesVideoReader
from reelay_testing.stores import FakeAccountStore, FakeUploadStore
from reelay_testing.tokens import FakeRateLimiter, FakeTokenProvider
from reelay_testing.waiting import eventually
from reelay_uploader.handlers import UploaderDeps, handle_upload_requested
from tiktok_sandbox.media import iter_sample_mp4
from tiktok_sandbox.plan import validate_plan
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

from tests.recording import recording

CLIENT_KEY = "dev-client-key"
CLIENT_SECRET = "dev-client-secret"  # the sandbox's documented dev secret
ACCOUNT = "acct-conformance"
MIB5 = 5_242_880  # the smallest chunk_size legal under both readings of "5 MB"
MB64 = 64_000_000
MB128 = 128_000_000
THREE_CHUNKS = 3 * MIB5 + 4321  # a real multi-chunk upload of the smallest legal chunks
JSON_UTF8 = "application/json; charset=UTF-8"
FORM = "application/x-www-form-urlencoded"
CHUNK_SIZE_INVALID = "The chunk size is invalid"
SELF_ONLY = PostInfo(privacy_level="SELF_ONLY")
SELF_ONLY_JSON = {"privacy_level": "SELF_ONLY"}

PATH_CREATOR_INFO = "/v2/post/publish/creator_info/query/"
PATH_VIDEO_INIT = "/v2/post/publish/video/init/"
PATH_INBOX_INIT = "/v2/post/publish/inbox/video/init/"
PATH_STATUS = "/v2/post/publish/status/fetch/"
PATH_CANCEL = "/v2/post/publish/cancel/"
PATH_TOKEN = "/v2/oauth/token/"
PATH_REVOKE = "/v2/oauth/revoke/"
DATA_PATHS = (PATH_CREATOR_INFO, PATH_VIDEO_INIT, PATH_INBOX_INIT, PATH_STATUS, PATH_CANCEL)

# Fast clocks; nothing here waits for processing, but finished publishes should not linger.
BASE_SETTINGS: dict[str, Any] = {"processing_delay_seconds": 0.05, "moderation_delay_seconds": 0.05}
# The client side inits many times per test: caps that are not the rule under test are lifted
# (init pacing has its own row, which puts the limit back).
CLIENT_SETTINGS: dict[str, Any] = {
    **BASE_SETTINGS,
    "rate_limit_init": 10_000,
    "rate_limit_creator_info": 10_000,
    "direct_post_daily_cap": 10_000,
    "pending_share_cap": 10_000,
}

# The planner's input space: the reference's edges (1 B, 5 MB both ways, 64 MB, the floor trap
# between 64 and 128 MB, 128 MB, 2 x 64 MB, the 4 GB cap), the worked examples, and chunk size
# preferences from absurdly small to absurdly large.
EDGE_SIZES = (
    1,
    4_194_304,
    4_999_999,
    5_000_000,
    5_242_879,
    5_242_880,
    5_242_881,
    10_485_760,
    50_000_123,
    63_999_999,
    64_000_000,
    64_000_001,
    100_000_000,
    127_999_999,
    128_000_000,
    128_000_001,
    191_999_999,
    192_000_000,
    1_000_000_000,
    3_999_999_999,
    4_000_000_000,
)
PREFERENCES = (1, 5_242_879, 5_242_880, 10_000_000, 32_000_001, 64_000_000, 64_000_001, 10**12)


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def file_source(video_size: int, chunk_size: int, count: int) -> dict[str, Any]:
    """A FILE_UPLOAD source_info as raw JSON (for violations the client could not even build)."""
    return {
        "source": "FILE_UPLOAD",
        "video_size": video_size,
        "chunk_size": chunk_size,
        "total_chunk_count": count,
    }


def legal_plan(video_size: int, chunk_size: int = MIB5) -> FileUploadSourceInfo:
    """A plan that is legal in the safe reading (floor count, chunks of `chunk_size`)."""
    return FileUploadSourceInfo(
        video_size=video_size, chunk_size=chunk_size, total_chunk_count=video_size // chunk_size
    )


_SAMPLES: dict[int, bytes] = {}


def video_bytes(size: int) -> bytes:
    """A valid sample MP4 of exactly `size` bytes (below an MP4's minimum: zero bytes), cached."""
    if size not in _SAMPLES:
        _SAMPLES[size] = b"".join(iter_sample_mp4(size)) if size >= 1024 else b"\0" * size
    return _SAMPLES[size]


async def admin_json(http: httpx.AsyncClient, path: str, **params: str) -> Any:
    """GET a /sandbox/ inspection route."""
    response = await http.get(path, params=params)
    response.raise_for_status()
    return response.json()


async def new_user(http: httpx.AsyncClient, username: str, **fields: Any) -> str:
    """Create a sandbox user through the admin API; returns its open_id."""
    response = await http.post("/sandbox/users", json={"username": username, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["open_id"])


async def grant_for(http: httpx.AsyncClient, open_id: str, scopes: list[str] | None = None) -> dict[str, Any]:
    """A flat token grant for the user, as oauth/token returns it (admin shortcut)."""
    body = {"scopes": scopes} if scopes is not None else {}
    response = await http.post(f"/sandbox/users/{open_id}/tokens", json=body)
    assert response.status_code == 200, response.text
    grant: dict[str, Any] = response.json()
    return grant


# ---------------------------------------------------------------------------------------------
# Side (a): the violation, sent with plain httpx
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the sandbox holds: the violation counters and everything a request could create."""

    violations: dict[str, int]
    publishes: int
    stored_bytes: int
    access_tokens: int


async def snapshot(sb: SandboxHandle, http: httpx.AsyncClient) -> Snapshot:
    """Read the sandbox through its inspection API (tokens have no list-all route: read state)."""
    stats = await admin_json(http, "/sandbox/stats")
    pubs = (await admin_json(http, "/sandbox/publishes"))["publishes"]
    return Snapshot(
        violations=dict(stats["violations"]),
        publishes=len(pubs),
        stored_bytes=sum(int(p["uploaded_bytes"]) for p in pubs),
        access_tokens=len(sb.state.access_tokens),
    )


@dataclass
class Probe:
    """Sends requests the way a careless client would, and frames the one violating request."""

    sb: SandboxHandle
    http: httpx.AsyncClient
    token: str
    refresh_token: str
    before: Snapshot | None = None
    after: Snapshot | None = None

    async def violate(self, request: Awaitable[httpx.Response]) -> httpx.Response:
        """Send the violating request, with a snapshot of the sandbox on either side of it alone."""
        self.before = await snapshot(self.sb, self.http)
        response = await request
        self.after = await snapshot(self.sb, self.http)
        return response

    async def call(self, path: str, body: Any = None, *, token: str | None = None) -> httpx.Response:
        """POST a data endpoint: Bearer token, JSON body."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        if body is None:
            return await self.http.post(path, headers=headers)
        return await self.http.post(path, headers=headers, json=body)

    async def init_direct(
        self,
        source: Mapping[str, Any],
        post_info: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
    ) -> httpx.Response:
        body = {"post_info": dict(post_info or SELF_ONLY_JSON), "source_info": dict(source)}
        return await self.call(PATH_VIDEO_INIT, body, token=token)

    async def init_inbox(self, source: Mapping[str, Any]) -> httpx.Response:
        return await self.call(PATH_INBOX_INIT, {"source_info": dict(source)})

    async def init_file(self, video_size: int, chunk_size: int | None = None) -> tuple[str, str]:
        """A successful FILE_UPLOAD init (setup, not a violation): (publish_id, upload_url)."""
        chunk = chunk_size or video_size
        response = await self.init_direct(file_source(video_size, chunk, video_size // chunk))
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        return str(data["publish_id"]), str(data["upload_url"])

    async def put(
        self,
        url: str,
        body: bytes | AsyncIterator[bytes],
        first: int,
        last: int,
        total: int,
        *,
        content_type: str = "video/mp4",
        length: int | None = None,
    ) -> httpx.Response:
        """PUT raw bytes with the documented headers (Content-Length from the body unless given)."""
        headers = {"Content-Type": content_type, "Content-Range": f"bytes {first}-{last}/{total}"}
        if length is not None:
            headers["Content-Length"] = str(length)
        return await self.http.put(url, content=body, headers=headers)

    async def refresh(self, refresh_token: str, *, key_field: str = "client_key") -> httpx.Response:
        """POST oauth/token with the refresh_token grant, form-encoded."""
        form = {
            key_field: CLIENT_KEY,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        }
        return await self.http.post(PATH_TOKEN, data=form)


Violate = Callable[[Probe], Awaitable[httpx.Response]]


def bad_plan(video_size: int, chunk_size: int, count: int) -> Violate:
    """Init with a chunk plan that breaks §3."""

    async def violate(p: Probe) -> httpx.Response:
        return await p.violate(p.init_direct(file_source(video_size, chunk_size, count)))

    return violate


async def violate_content_length(p: Probe) -> httpx.Response:
    _, url = await p.init_file(1000)
    # Content-Range promises 1000 bytes; the body (and so Content-Length) has 999.
    return await p.violate(p.put(url, video_bytes(999), 0, 999, 1000))


async def violate_out_of_order(p: Probe) -> httpx.Response:
    _, url = await p.init_file(THREE_CHUNKS, MIB5)
    response = await p.violate(p.put(url, bytes(MIB5), MIB5, 2 * MIB5 - 1, THREE_CHUNKS))
    assert response.headers["Content-Range"] == f"bytes */{THREE_CHUNKS}", "nothing stored yet"
    return response


async def violate_replayed_chunk(p: Probe) -> httpx.Response:
    _, url = await p.init_file(THREE_CHUNKS, MIB5)
    first = await p.put(url, bytes(MIB5), 0, MIB5 - 1, THREE_CHUNKS)
    assert first.status_code == 206, first.text
    response = await p.violate(p.put(url, bytes(MIB5), 0, MIB5 - 1, THREE_CHUNKS))
    # The 416 carries the server's progress: what a client resynchronises from.
    assert response.headers["Content-Range"] == f"bytes 0-{MIB5 - 1}/{THREE_CHUNKS}"
    return response


async def violate_parallel_put(p: Probe) -> httpx.Response:
    publish_id, url = await p.init_file(2 * MIB5 + 1, MIB5)
    release = asyncio.Event()

    async def stalled_body() -> AsyncIterator[bytes]:
        yield bytes(1 << 20)
        await release.wait()
        yield bytes(MIB5 - (1 << 20))

    first = asyncio.create_task(p.put(url, stalled_body(), 0, MIB5 - 1, 2 * MIB5 + 1, length=MIB5))
    try:
        await eventually(lambda: p.sb.state.publishes[publish_id].put_in_flight, timeout=10, interval=0.01)
        response = await p.violate(p.put(url, bytes(MIB5 + 1), MIB5, 2 * MIB5, 2 * MIB5 + 1))
    finally:
        release.set()
    assert (await first).status_code == 206, "the PUT already in flight is unaffected"
    return response


async def violate_expired_url(p: Probe) -> httpx.Response:
    _, url = await p.init_file(1000)
    return await p.violate(p.put(url, video_bytes(1000), 0, 999, 1000))


async def violate_content_type(p: Probe) -> httpx.Response:
    _, url = await p.init_file(1000)
    return await p.violate(
        p.put(url, video_bytes(1000), 0, 999, 1000, content_type="application/octet-stream")
    )


async def violate_missing_bearer(p: Probe) -> httpx.Response:
    return await p.violate(p.http.post(PATH_CREATOR_INFO))


async def violate_form_body(p: Probe) -> httpx.Response:
    headers = {"Authorization": f"Bearer {p.token}", "Content-Type": FORM}
    body = b"post_info=SELF_ONLY&source_info=FILE_UPLOAD"
    return await p.violate(p.http.post(PATH_VIDEO_INIT, content=body, headers=headers))


async def violate_missing_scope(p: Probe) -> httpx.Response:
    grant = await grant_for(p.http, p.sb.default_user.open_id, ["user.info.basic", "video.upload"])
    source = file_source(1000, 1000, 1)
    return await p.violate(p.init_direct(source, token=grant["access_token"]))


async def violate_init_rate(p: Probe) -> httpx.Response:
    source = file_source(1000, 1000, 1)
    for _ in range(6):
        response = await p.init_direct(source)
        assert response.status_code == 200, response.text
    return await p.violate(p.init_direct(source))


async def violate_privacy_not_offered(p: Probe) -> httpx.Response:
    # The default user is public: its options are PUBLIC_TO_EVERYONE, MUTUAL_FOLLOW_FRIENDS, SELF_ONLY.
    source = file_source(1000, 1000, 1)
    return await p.violate(p.init_direct(source, {"privacy_level": "FOLLOWER_OF_CREATOR"}))


async def violate_missing_privacy(p: Probe) -> httpx.Response:
    return await p.violate(p.init_direct(file_source(1000, 1000, 1), {"title": "no privacy level"}))


async def violate_long_title(p: Probe) -> httpx.Response:
    # 1100 astral emoji are 2200 UTF-16 units in 1100 code points; one more character breaks the cap.
    post_info = {"privacy_level": "SELF_ONLY", "title": "\U0001f600" * 1100 + "x"}
    return await p.violate(p.init_direct(file_source(1000, 1000, 1), post_info))


async def violate_unaudited_public(p: Probe) -> httpx.Response:
    return await p.violate(p.init_direct(file_source(1000, 1000, 1)))


async def violate_reused_refresh_token(p: Probe) -> httpx.Response:
    first = await p.refresh(p.refresh_token)
    assert first.status_code == 200, first.text
    assert "access_token" in first.json()
    return await p.violate(p.refresh(p.refresh_token))


async def violate_client_id(p: Probe) -> httpx.Response:
    return await p.violate(p.refresh(p.refresh_token, key_field="client_id"))


async def violate_pull_over_http(p: Probe) -> httpx.Response:
    source = {"source": "PULL_FROM_URL", "video_url": "http://media.example.com/v.mp4"}
    return await p.violate(p.init_direct(source))


async def violate_pull_unverified(p: Probe) -> httpx.Response:
    source = {"source": "PULL_FROM_URL", "video_url": "https://cdn.other.net/v.mp4"}
    return await p.violate(p.init_direct(source))


# ---------------------------------------------------------------------------------------------
# Side (b): Reelay's client, recorded on the wire, against the real sandbox
# ---------------------------------------------------------------------------------------------


@dataclass
class Sent:
    """One request as it left Reelay (and what came back)."""

    method: str
    url: httpx.URL
    headers: httpx.Headers
    content: bytes  # the body of a buffered request; b"" for a streamed (PUT) one
    started: float
    streamed: int = 0  # bytes of a streamed body that really left
    ended: float | None = None
    status: int | None = None  # None: no answer (the connection dropped)
    response: bytes = b""

    @property
    def path(self) -> str:
        return self.url.path

    def form(self) -> dict[str, list[str]]:
        """The body as a form (OAuth requests)."""
        return parse_qs(self.content.decode(), keep_blank_values=True)


class _CountingStream(httpx.AsyncByteStream):
    """Passes a streamed body through, counting the bytes that really leave."""

    def __init__(self, inner: httpx.AsyncByteStream, sent: Sent) -> None:
        self._inner = inner
        self._sent = sent

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._inner:
            self._sent.streamed += len(piece)
            yield piece


class Wire(httpx.AsyncBaseTransport):
    """Wraps the services' own transport to TikTok (`runtime.tiktok_transport`): records every
    request Reelay sends, and how many PUTs overlap."""

    def __init__(self) -> None:
        self._inner = tiktok_transport()
        self.sent: list[Sent] = []
        self._puts_in_flight = 0
        self.max_puts_in_flight = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        loop = asyncio.get_running_loop()
        streamed = not isinstance(request.stream, httpx.ByteStream)
        entry = Sent(
            method=request.method,
            url=request.url,
            headers=httpx.Headers(request.headers),
            content=b"" if streamed else request.content,
            started=loop.time(),
        )
        self.sent.append(entry)
        is_put = request.method == "PUT"
        if streamed and isinstance(request.stream, httpx.AsyncByteStream):
            request.stream = _CountingStream(request.stream, entry)
        if is_put:
            self._puts_in_flight += 1
            self.max_puts_in_flight = max(self.max_puts_in_flight, self._puts_in_flight)
        try:
            response = await self._inner.handle_async_request(request)
            entry.status = response.status_code
            if not is_put:
                entry.response = await response.aread()  # cached: the client reads it again
            return response
        finally:
            if is_put:
                self._puts_in_flight -= 1
            entry.ended = loop.time()

    async def aclose(self) -> None:
        await self._inner.aclose()

    def to(self, *paths: str) -> list[Sent]:
        """The requests sent to any of `paths`, in order."""
        return [s for s in self.sent if s.path in paths]

    def puts(self) -> list[Sent]:
        return [s for s in self.sent if s.method == "PUT"]


@dataclass
class World:
    """One sandbox, Reelay's client wired to it through the Wire, and what a rule may need."""

    sb: SandboxHandle
    admin: httpx.AsyncClient
    wire: Wire
    client: TikTokClient
    db: AsyncDatabase[dict[str, Any]]
    monkeypatch: pytest.MonkeyPatch
    token: str
    refresh_token: str

    def gateway(
        self,
        *,
        token: str | None = None,
        tokens: TokenProvider | None = None,
        limiter: RateLimiter | None = None,
    ) -> TikTokGateway:
        """The gateway as the services build it (fast backoffs); a fixed token unless given a provider."""
        return TikTokGateway(
            self.client,
            tokens if tokens is not None else FakeTokenProvider(token or self.token),
            limiter if limiter is not None else FakeRateLimiter(),
            backoff_initial=0.01,
            upload_backoff_initial=0.01,
        )

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await admin_json(self.admin, "/sandbox/stats")
        return stats

    async def calls(self, endpoint: str) -> int:
        return int((await self.stats())["calls"].get(endpoint, 0))

    async def publish(self, publish_id: str) -> dict[str, Any]:
        pub: dict[str, Any] = await admin_json(self.admin, f"/sandbox/publishes/{publish_id}")
        return pub

    async def upload(
        self,
        data: bytes,
        plan: FileUploadSourceInfo | None = None,
        *,
        content_type: str = "video/mp4",
        gateway: TikTokGateway | None = None,
    ) -> tuple[str, str, FileUploadSourceInfo]:
        """As the uploader does: init with the plan, then PUT every chunk through the gateway.
        Returns (publish_id, upload_url, plan)."""
        plan = plan or plan_chunks(len(data))
        gw = gateway or self.gateway()
        init = await gw.init_upload(ACCOUNT, mode="direct", post_info=SELF_ONLY, source_info=plan)
        assert init.upload_url is not None
        reader = BytesVideoReader(data, content_type, piece_size=1 << 20)
        await gw.upload_chunks(
            ChunkedUpload(init.upload_url, plan, reader, account_id=ACCOUNT, publish_id=init.publish_id)
        )
        return init.publish_id, init.upload_url, plan

    async def assert_stored_whole(self, publish_id: str, data: bytes) -> dict[str, Any]:
        """The sandbox holds every byte, once, in order: the assembled file hashes as the video."""
        pub = await self.publish(publish_id)
        assert pub["complete"] is True
        assert pub["sha256"] == hashlib.sha256(data).hexdigest()
        return pub


Comply = Callable[[World], Awaitable[None]]


# -- the uploader and ingest, wired to the sandbox as their composition roots wire them --------


def opens(reader: VideoReader) -> Callable[[Any], AbstractAsyncContextManager[VideoReader]]:
    """A reader factory that hands out `reader` (the uploader's open_reader port)."""

    @asynccontextmanager
    async def open_reader(_source: Any) -> AsyncIterator[VideoReader]:
        yield reader

    return open_reader


@dataclass
class Uploader:
    """The uploader's handler over in-memory stores and the real gateway."""

    deps: UploaderDeps
    uploads: FakeUploadStore

    async def handle(self, cmd: UploadRequested) -> UploadRecord:
        await handle_upload_requested(cmd, self.deps)
        record = await self.uploads.get(cmd.request_id)
        assert record is not None
        return record


def uploader(w: World, reader: VideoReader | None = None, *, token: str | None = None) -> Uploader:
    uploads = FakeUploadStore()
    publisher = FakePublisher()
    accounts = FakeAccountStore()
    accounts.add_connected(ACCOUNT)
    deps = UploaderDeps(
        uploads=uploads,
        accounts=accounts,
        recorder=(rec := recording(uploads, publisher, status_topic="conformance.status")).recorder,
        outbox=rec.outbox,
        publisher=publisher,
        tiktok=w.gateway(token=token),
        open_reader=opens(reader or BytesVideoReader(video_bytes(100_000))),
        events_topic="conformance.events",
    )
    return Uploader(deps, uploads)


def direct_cmd(request_id: str, post_info: PostInfo = SELF_ONLY) -> UploadRequested:
    """A direct post of a video Reelay downloads and sends in chunks."""
    return UploadRequested(
        request_id=request_id,
        account_id=ACCOUNT,
        mode="direct",
        source=UrlSource(url="https://videos.example/v.mp4"),
        post_info=post_info,
    )


def pull_cmd(request_id: str, url: str, *, mode: Literal["direct", "inbox"] = "direct") -> UploadRequested:
    """TikTok pulls the video itself (PULL_FROM_URL)."""
    return UploadRequested(
        request_id=request_id,
        account_id=ACCOUNT,
        mode=mode,
        source=PullFromUrlSource(url=url),
        post_info=SELF_ONLY if mode == "direct" else None,
    )


def failure(record: UploadRecord) -> dict[str, Any]:
    """The detail of the `failed` transition."""
    assert record.state is UploadState.FAILED, record.state
    return record.history[-1].detail


def ingest_deps(w: World, accounts: FakeAccountStore) -> IngestDeps:
    uploads = FakeUploadStore()
    publisher = FakePublisher()
    return IngestDeps(
        uploads=uploads,
        accounts=accounts,
        publisher=publisher,
        recorder=(rec := recording(uploads, publisher, status_topic="conformance.status")).recorder,
        outbox=rec.outbox,
        blobs=FakeBlobStore(),
        tiktok=w.gateway(),
        topics=Topics("conformance.requested", "conformance.events", "conformance.status"),
    )


class SizedReader:
    """A VideoReader that only knows its size: anything that reads it is a bug."""

    def __init__(self, size: int) -> None:
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    @property
    def content_type(self) -> str:
        return "video/mp4"

    async def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        raise AssertionError("a video over the size cap must never be read")
        yield b""  # unreachable: makes this an async generator, as the port expects


class ShortReader(BytesVideoReader):
    """Yields one byte too few for the chunk starting at `short_at` (a source that shrank)."""

    def __init__(self, data: bytes, *, short_at: int) -> None:
        super().__init__(data, piece_size=1 << 20)
        self.short_at = short_at

    async def stream(self, offset: int, length: int) -> AsyncIterator[bytes]:
        async for piece in super().stream(offset, length - 1 if offset == self.short_at else length):
            yield piece


# -- §3: the chunk plan -------------------------------------------------------------------------


def planner_space() -> list[tuple[int, int, FileUploadSourceInfo]]:
    """Every (size, preference) of the edge space, with the plan Reelay makes of it."""
    return [(size, pref, plan_chunks(size, chunk_size=pref)) for size in EDGE_SIZES for pref in PREFERENCES]


async def sandbox_accepts(w: World, plans: Iterable[FileUploadSourceInfo]) -> int:
    """Init each distinct plan through the gateway; the sandbox must take every one (no bytes sent)."""
    gw = w.gateway()
    distinct = list(dict.fromkeys(plans))
    for plan in distinct:
        result = await gw.init_upload(ACCOUNT, mode="direct", post_info=SELF_ONLY, source_info=plan)
        assert result.upload_url
    sent = [json.loads(s.content)["source_info"] for s in w.wire.to(PATH_VIDEO_INIT)[-len(distinct) :]]
    assert sent == [p.model_dump(mode="json") for p in distinct], "the plan goes out exactly as made"
    return len(distinct)


def final_chunk(plan: FileUploadSourceInfo) -> int:
    first, last = chunk_ranges(plan)[-1]
    return last - first + 1


async def comply_floor_count(w: World) -> None:
    for size, pref, plan in planner_space():
        assert plan.total_chunk_count == size // plan.chunk_size, (size, pref)
        ranges = chunk_ranges(plan)
        assert ranges[-1][1] == size - 1, "the remainder joins the last chunk"
        assert final_chunk(plan) >= plan.chunk_size, "never ceil: no short trailing chunk"
        validate_plan(plan.video_size, plan.chunk_size, plan.total_chunk_count)  # the sandbox's reading
    assert await sandbox_accepts(w, (plan_chunks(s) for s in EDGE_SIZES)) >= 10


async def comply_min_chunk(w: World) -> None:
    for size, pref, plan in planner_space():
        if plan.total_chunk_count > 1:
            # 5,242,880 is 5 MiB and more than 5,000,000: 5 MB under either reading.
            assert plan.chunk_size >= MIB5, (size, pref)
            assert all(last - first + 1 >= MIB5 for first, last in chunk_ranges(plan))
        else:
            assert plan.chunk_size == size, "only a whole file may be smaller than 5 MB"
    smallest = [plan_chunks(s, chunk_size=1) for s in EDGE_SIZES if s > MB64]
    assert {p.chunk_size for p in smallest} == {MIB5}, "a 1-byte preference is raised to the floor"
    await sandbox_accepts(w, smallest)


async def comply_max_chunk(w: World) -> None:
    for size, pref, plan in planner_space():
        ranges = chunk_ranges(plan)
        # Every chunk but the final one (which has its own row) is at most 64,000,000 bytes.
        assert all(last - first + 1 <= MB64 for first, last in ranges[:-1]), (size, pref)
        assert plan.chunk_size <= MB64
    largest = [plan_chunks(s, chunk_size=10**12) for s in EDGE_SIZES if s > MB64]
    assert max(p.chunk_size for p in largest) == MB64, "a huge preference is lowered to the ceiling"
    await sandbox_accepts(w, largest)


async def comply_final_chunk(w: World) -> None:
    finals = [final_chunk(plan) for _, _, plan in planner_space()]
    assert max(finals) <= MB128
    assert max(finals) == 127_999_999, "the largest final chunk sits one byte under the cap"
    edges = [plan_chunks(s, chunk_size=MB64) for s in (127_999_999, 128_000_000, 128_000_001, 191_999_999)]
    assert [final_chunk(p) for p in edges] == [64_000_000, 64_000_000, 64_000_001, 127_999_999]
    await sandbox_accepts(w, edges)


async def comply_chunk_count(w: World) -> None:
    counts = [plan.total_chunk_count for _, _, plan in planner_space()]
    assert min(counts) == 1
    assert max(counts) <= 1000
    most = plan_chunks(MAX_VIDEO_SIZE, chunk_size=1)
    assert most.total_chunk_count == 762, "the most chunks any plan can have: 4e9 / 5 MiB"
    await sandbox_accepts(w, [most, plan_chunks(1)])


async def comply_small_file_whole(w: World) -> None:
    for size, pref, plan in planner_space():
        if size < MIB5:
            assert (plan.total_chunk_count, plan.chunk_size) == (1, size), (size, pref)
    for size in (1, MIB5 - 1):
        data = video_bytes(size)
        publish_id, _, _ = await w.upload(data)
        await w.assert_stored_whole(publish_id, data)
    puts = w.wire.puts()
    assert [(p.headers["Content-Range"], p.status) for p in puts] == [
        ("bytes 0-0/1", 201),
        (f"bytes 0-{MIB5 - 2}/{MIB5 - 1}", 201),
    ], "each file under 5 MB goes whole, in one PUT"


async def comply_big_file_split(w: World) -> None:
    for size, pref, plan in planner_space():
        if size > MB64:
            assert plan.total_chunk_count >= 2, (size, pref)
    # The floor trap: 64..128 MB with the largest preferences would be one chunk under a naive planner.
    trap = [
        plan_chunks(s, chunk_size=p) for s in (64_000_001, 100_000_000, 127_999_999) for p in (MB64, 10**12)
    ]
    assert all(p.total_chunk_count == 2 for p in trap)
    await sandbox_accepts(w, trap)


async def comply_max_file_size(w: World) -> None:
    with pytest.raises(InvalidInputError) as refused:
        plan_chunks(MAX_VIDEO_SIZE + 1)
    assert refused.value.code == "too_large"
    assert MAX_VIDEO_SIZE == MAX_VIDEO_BYTES == 4_000_000_000, "the reading of 4 GB safe under both"
    # The uploader refuses it before any call to TikTok, without reading a byte.
    record = await uploader(w, SizedReader(MAX_VIDEO_SIZE + 1)).handle(direct_cmd("too-big"))
    assert failure(record)["code"] == "too_large"
    assert (await w.stats())["calls"] == {}, "not even creator_info was asked"
    await sandbox_accepts(w, [plan_chunks(MAX_VIDEO_SIZE)])


# -- §3.1: the PUT --------------------------------------------------------------------------------


async def comply_content_length(w: World) -> None:
    data = video_bytes(THREE_CHUNKS)
    publish_id, _, plan = await w.upload(data, legal_plan(THREE_CHUNKS))
    await w.assert_stored_whole(publish_id, data)
    puts = w.wire.puts()
    assert len(puts) == 3
    for put, (first, last) in zip(puts, chunk_ranges(plan), strict=True):
        assert put.headers["Content-Length"] == str(last - first + 1)
        assert put.streamed == last - first + 1, "the body is exactly what Content-Length declares"
        assert "Transfer-Encoding" not in put.headers, "never chunked transfer encoding"
    # A source that yields a byte short: Reelay aborts the PUT rather than send a body that does
    # not match its Content-Length; the sandbox never gets a whole mismatched request to answer 400.
    gw = w.gateway()
    init = await gw.init_upload(ACCOUNT, mode="direct", post_info=SELF_ONLY, source_info=plan)
    assert init.upload_url is not None
    with pytest.raises(InvalidInputError) as refused:
        await gw.upload_chunks(ChunkedUpload(init.upload_url, plan, ShortReader(data, short_at=MIB5)))
    assert refused.value.code == "source_size_mismatch"
    await eventually(lambda: _counted(w, "upload_incomplete_body"), timeout=10, interval=0.01)
    assert (await w.publish(init.publish_id))["uploaded_bytes"] == MIB5, "the short chunk was not stored"
    assert "upload:400" not in (await w.stats())["responses"]


async def _counted(w: World, code: str) -> bool:
    return bool((await w.stats())["violations"].get(code))


async def comply_content_range(w: World) -> None:
    data = video_bytes(THREE_CHUNKS)
    publish_id, upload_url, plan = await w.upload(data, legal_plan(THREE_CHUNKS))
    pub = await w.assert_stored_whole(publish_id, data)
    puts = w.wire.puts()
    expected = [f"bytes {first}-{last}/{THREE_CHUNKS}" for first, last in chunk_ranges(plan)]
    assert [p.headers["Content-Range"] for p in puts] == expected, "inclusive, in plan order, each once"
    assert expected == [
        f"bytes 0-{MIB5 - 1}/{THREE_CHUNKS}",
        f"bytes {MIB5}-{2 * MIB5 - 1}/{THREE_CHUNKS}",
        f"bytes {2 * MIB5}-{THREE_CHUNKS - 1}/{THREE_CHUNKS}",
    ]
    assert {str(p.url) for p in puts} == {upload_url}, "one upload_url, used verbatim"
    assert all("Authorization" not in p.headers for p in puts), "no Authorization on the PUT"
    assert [c["status_code"] for c in pub["chunks"]] == [206, 206, 201]


async def comply_resync_not_restart(w: World) -> None:
    data = video_bytes(THREE_CHUNKS)
    plan = legal_plan(THREE_CHUNKS)
    ranges = [f"bytes {first}-{last}/{THREE_CHUNKS}" for first, last in chunk_ranges(plan)]
    reader = BytesVideoReader(data, piece_size=1 << 20)
    gw = w.gateway()
    # 1. The response to chunk 2 is lost after the sandbox stored it, and nothing can be asked:
    #    the retry of chunk 2 meets a 416 whose progress moves the upload on to chunk 3.
    w.sb.set_faults(put_drop_after_store_on=[2])
    init = await gw.init_upload(ACCOUNT, mode="direct", post_info=SELF_ONLY, source_info=plan)
    assert init.upload_url is not None
    await upload_chunks(w.client, init.upload_url, plan, reader, backoff_initial=0.01)
    await w.assert_stored_whole(init.publish_id, data)
    puts = w.wire.puts()
    assert [(p.headers["Content-Range"], p.status) for p in puts] == [
        (ranges[0], 206),
        (ranges[1], None),
        (ranges[1], 416),
        (ranges[2], 201),
    ], "resynchronised from the 416's progress; byte 0 was never sent again"
    # 2. With status/fetch to ask (as the uploader wires it), there is not even a 416.
    w.sb.set_faults(put_drop_after_store_on=[2])
    publish_id, _, _ = await w.upload(data, plan)
    await w.assert_stored_whole(publish_id, data)
    later = w.wire.puts()[len(puts) :]
    assert [(p.headers["Content-Range"], p.status) for p in later] == [
        (ranges[0], 206),
        (ranges[1], None),
        (ranges[2], 201),
    ]
    assert len(w.wire.to(PATH_STATUS)) == 1, "one status/fetch told it chunk 2 had landed"


async def comply_sequential(w: World) -> None:
    # Each PUT is held 50 ms at the sandbox, so overlapping PUTs could not go unnoticed.
    w.sb.set_faults(delay_seconds={"upload": 0.05})
    data = video_bytes(THREE_CHUNKS)
    publish_id, _, _ = await w.upload(data, legal_plan(THREE_CHUNKS))
    pub = await w.assert_stored_whole(publish_id, data)
    puts = w.wire.puts()
    assert len(puts) == 3
    assert w.wire.max_puts_in_flight == 1
    for before, after in itertools.pairwise(puts):
        assert before.ended is not None
        assert after.started >= before.ended, "each PUT starts after the previous one was answered"
    assert [c["status_code"] for c in pub["chunks"]] == [206, 206, 201]


async def comply_expired_url(w: World) -> None:
    # The sandbox hands out URLs that are dead on arrival: Reelay cannot know, so it may PUT once.
    data = video_bytes(100_000)
    plan = plan_chunks(len(data))
    gw = w.gateway()
    init = await gw.init_upload(ACCOUNT, mode="direct", post_info=SELF_ONLY, source_info=plan)
    assert init.upload_url is not None
    with pytest.raises(UploadUrlExpiredError) as expired:
        await gw.upload_chunks(ChunkedUpload(init.upload_url, plan, BytesVideoReader(data)))
    assert not isinstance(expired.value, RetryableError), "the consumer loop must not back off and retry"
    assert expired.value.http_status == 403
    assert len(w.wire.puts()) == 1, "the dead URL got exactly one PUT"
    # The uploader inits anew for each dead URL (a publish whose URL died can never post), PUTs to
    # each new URL once, and gives up after max_init_attempts.
    record = await uploader(w, BytesVideoReader(data)).handle(direct_cmd("expiring"))
    assert failure(record)["code"] == "init_attempts_exhausted"
    stats = await w.stats()
    assert stats["calls"]["video_init"] == 1 + 3
    assert stats["calls"]["upload"] == 1 + 3, "one PUT per upload_url, never resent blindly"


async def comply_content_type(w: World) -> None:
    data = video_bytes(100_000)
    for content_type in ("video/mp4", "video/quicktime", "video/webm"):
        publish_id, _, _ = await w.upload(data, content_type=content_type)
        await w.assert_stored_whole(publish_id, data)
    assert [p.headers["Content-Type"] for p in w.wire.puts()] == [
        "video/mp4",
        "video/quicktime",
        "video/webm",
    ], "the PUT says what the reader holds"
    # A source of another type is refused by the uploader before any publish exists.
    octets = BytesVideoReader(data, "application/octet-stream")
    record = await uploader(w, octets).handle(direct_cmd("octets"))
    assert failure(record)["code"] == "unsupported_media_type"
    assert (await w.stats())["calls"]["video_init"] == 3


# -- §1, §2: data endpoints, auth, scopes, pacing ----------------------------------------------


async def comply_bearer_token(w: World) -> None:
    # Every data call carries the account's current token as a Bearer token.
    gw = w.gateway()
    await gw.creator_info(ACCOUNT)
    init = await gw.init_upload(ACCOUNT, mode="direct", post_info=SELF_ONLY, source_info=plan_chunks(1000))
    await gw.fetch_status(ACCOUNT, init.publish_id)
    data_calls = w.wire.to(*DATA_PATHS)
    assert len(data_calls) == 3
    assert all(s.headers["Authorization"] == f"Bearer {w.token}" for s in data_calls)
    # A stored token TikTok no longer takes (expired early, revoked elsewhere): Reelay cannot tell
    # before asking. It takes one 401, refreshes once (single-flight), and retries with the new token.
    store = MongoAccountStore(w.db, TokenCipher(SecretStr(DEV_TOKEN_KEY)))
    open_id = await new_user(w.admin, "stale")
    grant = await grant_for(w.admin, open_id)
    await store.upsert_tokens(
        "acct-stale",
        # A dead token: the point of the test.
        TokenGrant.model_validate({**grant, "access_token": "act.no-longer-accepted", "expires_in": 7200}),
    )
    provider = MongoTokenProvider(store, w.client, poll_interval_seconds=0.02)
    info = await w.gateway(tokens=provider).creator_info("acct-stale")
    assert info.privacy_level_options
    fresh = await provider.access_token("acct-stale")
    stale_calls = w.wire.to(PATH_CREATOR_INFO)[1:]
    assert [(s.headers["Authorization"], s.status) for s in stale_calls] == [
        ("Bearer act.no-longer-accepted", 401),
        (f"Bearer {fresh}", 200),
    ]
    assert len(w.wire.to(PATH_TOKEN)) == 1


async def comply_json_bodies(w: World) -> None:
    gw = w.gateway()
    await gw.creator_info(ACCOUNT)
    direct = await gw.init_upload(ACCOUNT, mode="direct", post_info=SELF_ONLY, source_info=plan_chunks(1000))
    await gw.init_upload(ACCOUNT, mode="inbox", post_info=None, source_info=plan_chunks(1000))
    await gw.fetch_status(ACCOUNT, direct.publish_id)
    pull = await gw.init_upload(
        ACCOUNT,
        mode="inbox",
        post_info=None,
        source_info=PullFromUrlSourceInfo(video_url="https://media.example.com/v.mp4"),
    )
    await w.client.cancel(w.token, pull.publish_id)  # still downloading: cancellable
    data_calls = w.wire.to(*DATA_PATHS)
    assert {s.path for s in data_calls} == set(DATA_PATHS), "every data endpoint was exercised"
    for s in data_calls:
        assert s.method == "POST"
        assert s.headers["Content-Type"] == JSON_UTF8, s.path
        assert s.status == 200, s.path
        if s.path == PATH_CREATOR_INFO:
            assert s.content == b"", "creator_info takes no body"
        else:
            assert isinstance(json.loads(s.content), dict), "the body is a JSON object"


async def comply_scopes(w: World) -> None:
    accounts = FakeAccountStore()
    accounts.add_connected("inbox-only", scopes=["user.info.basic", "video.upload"])
    accounts.add_connected("direct-only", scopes=["user.info.basic", "video.publish"])
    deps = ingest_deps(w, accounts)
    targets = [
        (UploadTarget("inbox-only", "direct", SELF_ONLY), "video.publish"),
        (UploadTarget("direct-only", "inbox", None), "video.upload"),
    ]
    for target, scope in targets:
        with pytest.raises(RequestRejected) as refused:
            await check_upload_target(target, deps)
        assert refused.value.code == "missing_scope"
        assert refused.value.extra["required_scope"] == scope
    assert (await w.stats())["calls"] == {}, "refused before anything reached TikTok"
    # Stored scopes that lie (the grant shrank since): TikTok's 401 scope_not_authorized is a
    # permanent AuthExpiredError, and no refresh is attempted (a refresh cannot add a scope).
    narrow = await grant_for(w.admin, w.sb.default_user.open_id, ["user.info.basic", "video.upload"])
    provider = FakeTokenProvider(narrow["access_token"])
    with pytest.raises(AuthExpiredError) as denied:
        await w.gateway(tokens=provider).init_upload(
            ACCOUNT, mode="direct", post_info=SELF_ONLY, source_info=plan_chunks(1000)
        )
    assert isinstance(denied.value, PermanentError)
    assert denied.value.code == "scope_not_authorized"
    assert provider.refreshes == []
    assert len(w.wire.to(PATH_VIDEO_INIT)) == 1, "not retried"


async def comply_init_pacing(w: World) -> None:
    # Reelay's limiter and the sandbox's window run on one clock that moves only when the limiter
    # sleeps: a minute passes in no time, and the sandbox still judges every init by it.
    clock = FakeClock(time.time())
    w.monkeypatch.setattr(w.sb.state, "now", clock.time)
    assert DEFAULT_LIMITS["init"] == 6
    gw = w.gateway(limiter=MongoRateLimiter(w.db, clock=clock.time, sleep=clock.sleep))
    for _ in range(8):
        await gw.init_upload(ACCOUNT, mode="direct", post_info=SELF_ONLY, source_info=plan_chunks(1000))
    # The 7th waited until the 1st left the 60 s window (+ the 1 s safety margin); the 8th did not.
    assert clock.sleeps == [pytest.approx(61.0)]
    assert [s.status for s in w.wire.to(PATH_VIDEO_INIT)] == [200] * 8


async def comply_privacy_offered(w: World) -> None:
    # The uploader asks creator_info before the init and refuses a level the creator does not offer.
    record = await uploader(w).handle(
        direct_cmd("public-acct", PostInfo(privacy_level="FOLLOWER_OF_CREATOR"))
    )
    assert failure(record)["code"] == "privacy_level_not_offered"
    private = await new_user(w.admin, "private", private_account=True)
    private_token = (await grant_for(w.admin, private))["access_token"]
    record = await uploader(w, token=private_token).handle(
        direct_cmd("private-acct", PostInfo(privacy_level="PUBLIC_TO_EVERYONE"))
    )
    assert failure(record)["code"] == "privacy_level_not_offered"
    # Ingest refuses it earlier still, at the API, with the levels the creator does offer.
    accounts = FakeAccountStore()
    accounts.add_connected(ACCOUNT)
    with pytest.raises(RequestRejected) as refused:
        await check_upload_target(
            UploadTarget(ACCOUNT, "direct", PostInfo(privacy_level="FOLLOWER_OF_CREATOR")),
            ingest_deps(w, accounts),
        )
    assert refused.value.code == "privacy_level_not_offered"
    assert refused.value.extra["offered"] == ["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]
    stats = await w.stats()
    assert stats["calls"]["creator_info"] == 3
    assert "video_init" not in stats["calls"]


async def comply_privacy_required(w: World) -> None:
    for bad in ({}, {"title": "x"}, {"privacy_level": None}, {"privacy_level": "EVERYONE"}):
        with pytest.raises(ValidationError):
            PostInfo.model_validate(bad)
    with pytest.raises(ValidationError, match="post_info"):
        UploadRequested(
            request_id="r", account_id=ACCOUNT, mode="direct", source=UrlSource(url="https://v.example/v.mp4")
        )
    with pytest.raises(InvalidInputError) as refused:
        await w.gateway().init_upload(ACCOUNT, mode="direct", post_info=None, source_info=plan_chunks(1000))
    assert refused.value.code == "missing_post_info"
    assert (await w.stats())["calls"] == {}
    # What does go out always names the level.
    await w.gateway().init_upload(ACCOUNT, mode="direct", post_info=SELF_ONLY, source_info=plan_chunks(1000))
    (sent,) = w.wire.to(PATH_VIDEO_INIT)
    assert json.loads(sent.content)["post_info"]["privacy_level"] == "SELF_ONLY"


async def comply_title_length(w: World) -> None:
    emoji = "\U0001f600"
    for too_long in (emoji * 1100 + "x", "x" * 2201, "x" * 2199 + emoji):
        assert utf16_len(too_long) == 2201
        with pytest.raises(ValidationError, match="2200 UTF-16"):
            PostInfo(privacy_level="SELF_ONLY", title=too_long)
    gw = w.gateway()
    for title in (emoji * 1100, "x" * 2200, "#tag @mention " + emoji * 1093):
        assert utf16_len(title) == 2200
        init = await gw.init_upload(
            ACCOUNT,
            mode="direct",
            post_info=PostInfo(privacy_level="SELF_ONLY", title=title),
            source_info=plan_chunks(1000),
        )
        assert (await w.publish(init.publish_id))["post_info"]["title"] == title, "sent unaltered"


async def comply_unaudited(w: World) -> None:
    # Reelay cannot know whether the app passed TikTok's audit: it has no guard. TikTok's 403 is a
    # permanent failure recorded with its code and log_id, and is never retried.
    up = uploader(w)
    record = await up.handle(direct_cmd("unaudited"))
    detail = failure(record)
    assert detail["code"] == "unaudited_client_can_only_post_to_private_accounts"
    assert detail["http_status"] == 403
    assert detail["log_id"]
    again = await up.handle(direct_cmd("unaudited"))  # the record redelivered
    assert again.state is UploadState.FAILED
    assert (await w.stats())["calls"]["video_init"] == 1, "one init, never repeated"
    # A private account posting SELF_ONLY is what an unaudited app may do, and it goes through.
    private = await new_user(w.admin, "private", private_account=True)
    private_token = (await grant_for(w.admin, private))["access_token"]
    record = await uploader(w, token=private_token).handle(direct_cmd("private-self-only"))
    assert record.state is UploadState.UPLOADED


async def comply_refresh_rotation(w: World) -> None:
    # Access tokens live 60 s here, under the provider's 300 s margin: every access_token() refreshes.
    store = MongoAccountStore(w.db, TokenCipher(SecretStr(DEV_TOKEN_KEY)))
    open_id = await new_user(w.admin, "rotating")
    grant = await grant_for(w.admin, open_id)
    await store.upsert_tokens(
        ACCOUNT,
        TokenGrant.model_validate(grant),
    )
    provider = MongoTokenProvider(store, w.client, poll_interval_seconds=0.02)
    issued = [await provider.access_token(ACCOUNT) for _ in range(3)]
    assert len(set(issued)) == 3
    refreshes = w.wire.to(PATH_TOKEN)
    sent = [s.form()["refresh_token"] for s in refreshes]
    returned = [json.loads(s.response)["refresh_token"] for s in refreshes]
    assert sent == [[grant["refresh_token"]], [returned[0]], [returned[1]]], "always the most recent"
    # Replicas racing on one refused token: one refresh (single-flight), one new token for all.
    replicas = [MongoTokenProvider(store, w.client, poll_interval_seconds=0.02) for _ in range(4)]
    shared = await asyncio.gather(*(r.force_refresh(ACCOUNT, issued[-1]) for r in replicas))
    assert len(set(shared)) == 1
    assert len(w.wire.to(PATH_TOKEN)) == 4
    stored = await store.get_tokens(ACCOUNT)
    assert stored is not None
    assert stored.refresh_token == json.loads(w.wire.to(PATH_TOKEN)[-1].response)["refresh_token"]


async def comply_client_key(w: World) -> None:
    redirect_uri = "https://app.example/callback"
    consent = await w.admin.get(
        "/v2/auth/authorize/",
        params={
            "client_key": CLIENT_KEY,
            "scope": "user.info.basic,video.publish",
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "state": "s1",
            "sandbox_consent": "auto",
        },
    )
    assert consent.status_code == 302, consent.text
    code = parse_qs(urlsplit(consent.headers["Location"]).query)["code"][0]
    grant = await w.client.exchange_code(code, redirect_uri=redirect_uri)
    renewed = await w.client.refresh_token(grant.refresh_token)
    await w.client.revoke(renewed.access_token)
    oauth = w.wire.to(PATH_TOKEN, PATH_REVOKE)
    assert [s.status for s in oauth] == [200, 200, 200]
    for s in oauth:
        assert s.headers["Content-Type"] == FORM, "form-encoded, not JSON"
        form = s.form()
        assert form["client_key"] == [CLIENT_KEY]
        assert form["client_secret"] == [CLIENT_SECRET]
        assert "client_id" not in form
    assert [s.form().get("grant_type") for s in oauth] == [["authorization_code"], ["refresh_token"], None]


async def comply_pull_https(w: World) -> None:
    for bad in ("http://media.example.com/v.mp4", "ftp://media.example.com/v.mp4", "//media.example.com/v"):
        with pytest.raises(ValidationError):
            PullFromUrlSource(url=bad)
        with pytest.raises(ValidationError):
            UploadByUrl(account_id=ACCOUNT, mode="inbox", pull_from_url=bad)
    # An https URL on a verified domain: the uploader's init goes through.
    record = await uploader(w).handle(pull_cmd("pull-ok", "https://media.example.com/v.mp4", mode="inbox"))
    assert record.state is UploadState.UPLOADED
    pub = await w.publish(str(record.publish_id))
    assert (pub["source"], pub["video_url"]) == ("PULL_FROM_URL", "https://media.example.com/v.mp4")


async def comply_pull_verified(w: World) -> None:
    # Which domains the app verified is known to TikTok alone: Reelay has no guard. The 403 ends
    # the upload for good (TikTokRejectedError, code and log_id recorded) and is never retried.
    up = uploader(w)
    record = await up.handle(pull_cmd("pull-unverified", "https://cdn.other.net/v.mp4"))
    detail = failure(record)
    assert detail["code"] == "url_ownership_unverified"
    assert detail["error"] == TikTokRejectedError.__name__
    assert detail["http_status"] == 403
    assert detail["log_id"]
    again = await up.handle(pull_cmd("pull-unverified", "https://cdn.other.net/v.mp4"))
    assert again.state is UploadState.FAILED
    assert (await w.stats())["calls"]["video_init"] == 1, "one init, never repeated"


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

Shape = Literal["envelope", "oauth", "put"]


@dataclass(frozen=True)
class Rule:
    """One documented rule: where it is written, what it says, how it is broken, how Reelay keeps it."""

    id: str
    section: str
    statement: str
    # What the sandbox answers the violation: HTTP status, and the code in the body. Data endpoints
    # answer an envelope, OAuth a flat error; the reference gives PUT errors by status only, so
    # for a PUT `code` is the sandbox's own, as /sandbox/stats counts it.
    status: int
    code: str
    shape: Shape
    violate: Violate
    comply: Comply
    sandbox_settings: Mapping[str, Any] = field(default_factory=dict)
    client_settings: Mapping[str, Any] = field(default_factory=dict)
    # The sandbox's violation counters once Reelay is done: empty, except what only TikTok can
    # know (Reelay takes the refusal once) and what the test injected on purpose.
    client_violations: Mapping[str, int] = field(default_factory=dict)
    message: str | None = None  # the exact error message, where TikTok's is known
    reason: str | None = None  # the sandbox's recorded reason for the refusal


def plan_rule(
    rule_id: str, section: str, statement: str, *, violate: Violate, comply: Comply, reason: str
) -> Rule:
    """A §3 plan rule: TikTok refuses every bad plan alike, 400 invalid_params "The chunk size is
    invalid" [FIELD]; `reason` is the check the sandbox records for it."""
    return Rule(
        rule_id,
        section,
        statement,
        status=400,
        code="invalid_params",
        shape="envelope",
        violate=violate,
        comply=comply,
        message=CHUNK_SIZE_INVALID,
        reason=reason,
    )


RULES: list[Rule] = [
    # ---- §3 FILE_UPLOAD chunk plan (the planner; the sandbox checks plans at init)
    plan_rule(
        "chunk_count_is_floor",
        "§3 rule 1",
        "total_chunk_count = floor(video_size / chunk_size); the remainder joins the last chunk, never ceil.",
        violate=bad_plan(50_000_123, 10_000_000, 6),
        comply=comply_floor_count,
        reason="floor(video_size/chunk_size)",
    ),
    plan_rule(
        "chunk_size_at_least_5_mb",
        "§3 rule 2",
        "Every chunk is at least 5 MB (5,242,880 B: safe under both readings); only a whole file is smaller.",
        violate=bad_plan(40_000_000, 4_000_000, 10),
        comply=comply_min_chunk,
        reason="chunk_size must be 5242880..64000000",
    ),
    plan_rule(
        "chunk_size_at_most_64_mb",
        "§3 rule 2",
        "Every chunk but the final one is at most 64 MB (64,000,000 B: safe under both readings).",
        violate=bad_plan(300_000_000, 70_000_000, 4),
        comply=comply_max_chunk,
        reason="chunk_size must be 5242880..64000000",
    ),
    plan_rule(
        "final_chunk_at_most_128_mb",
        "§3 rule 2",
        "The final chunk may exceed chunk_size, up to 128 MB (128,000,000 B). With a floor count and a "
        "legal chunk_size it is always < 2 x 64,000,000, so a plan with a bigger final chunk always "
        "breaks another rule first: the sandbox names the floor count as its reason.",
        violate=bad_plan(194_000_000, 64_000_000, 2),  # a final chunk of 130,000,000
        comply=comply_final_chunk,
        reason="floor(video_size/chunk_size)",
    ),
    plan_rule(
        "chunk_count_1_to_1000",
        "§3 rule 5",
        "1 <= total_chunk_count <= 1000. No plan within 4 GB and 5 MiB chunks can exceed 762, and a "
        "count of 0 breaks the floor rule first: the sandbox names the floor count as its reason.",
        violate=bad_plan(4_194_304, 4_194_304, 0),
        comply=comply_chunk_count,
        reason="floor(video_size/chunk_size)",
    ),
    plan_rule(
        "small_file_is_one_chunk",
        "§3 rule 3",
        "A file under 5 MB goes as one chunk with chunk_size = video_size (the sandbox refuses a split "
        "one by its chunk-size floor); 1 B and 5,242,879 B really upload in one PUT each.",
        violate=bad_plan(4_194_304, 2_097_152, 2),
        comply=comply_small_file_whole,
        reason="chunk_size must be 5242880..64000000",
    ),
    plan_rule(
        "big_file_is_several_chunks",
        "§3 rule 4, floor trap",
        "A file over 64 MB goes in several chunks; files between chunk_size and 2 x chunk_size never "
        "collapse into one oversize chunk.",
        violate=bad_plan(100_000_000, 64_000_000, 1),
        comply=comply_big_file_split,
        reason="must be sent in several chunks",
    ),
    plan_rule(
        "file_at_most_4_gb",
        "§3 rule 7, §9",
        "A video is at most 4 GB (4,000,000,000 B: safe under both readings); Reelay refuses a larger one "
        "before any call to TikTok.",
        violate=bad_plan(4_000_000_001, 10_000_000, 400),
        comply=comply_max_file_size,
        reason="exceeds 4000000000",
    ),
    # ---- §3.1 the chunk PUT
    Rule(
        "put_content_length_is_the_chunk",
        "§3.1",
        "Content-Length = last - first + 1 = the bytes actually sent (400 otherwise); a source that "
        "yields too few bytes makes Reelay abort the PUT, never send a mismatched one.",
        status=400,
        code="upload_bad_headers",
        shape="put",
        violate=violate_content_length,
        comply=comply_content_length,
        client_violations={"upload_incomplete_body": 1},
        reason="Content-Length must equal LAST-FIRST+1",
    ),
    Rule(
        "put_content_range_is_the_next_chunk",
        "§3.1, §1",
        "Content-Range: bytes FIRST-LAST/TOTAL, inclusive, TOTAL = video_size, the plan's chunks in "
        "order, each once (416 otherwise); one upload_url used verbatim, no Authorization on the PUT.",
        status=416,
        code="upload_range_mismatch",
        shape="put",
        violate=violate_out_of_order,
        comply=comply_content_range,
    ),
    Rule(
        "put_416_resyncs_not_restarts",
        "§3.1 resync, §10",
        "After a 416 or a lost response, resume from the server's progress (the response's "
        "Content-Range, or status/fetch uploaded_bytes), never from byte 0.",
        status=416,
        code="upload_range_mismatch",
        shape="put",
        violate=violate_replayed_chunk,
        comply=comply_resync_not_restart,
        # Injected: two lost responses; and the one 416 a client with nothing to ask must take.
        client_violations={"fault_dropped_after_store": 2, "upload_range_mismatch": 1},
    ),
    Rule(
        "puts_are_sequential",
        "§3 rule 6",
        "Chunks are uploaded sequentially, never in parallel (the sandbox answers a parallel PUT 416).",
        status=416,
        code="upload_parallel_put",
        shape="put",
        violate=violate_parallel_put,
        comply=comply_sequential,
    ),
    Rule(
        "expired_upload_url_is_not_retried",
        "§3 rule 8, §3.1 403",
        "The upload_url expires 1 h after init (403). Only TikTok knows when it really died: Reelay "
        "raises UploadUrlExpiredError (not retryable) after one PUT, and the uploader inits anew, "
        "a bounded number of times.",
        status=403,
        code="upload_url_expired",
        shape="put",
        violate=violate_expired_url,
        comply=comply_expired_url,
        sandbox_settings={"upload_url_ttl_seconds": 0},
        client_settings={"upload_url_ttl_seconds": 0},
        client_violations={"upload_url_expired": 4},
    ),
    Rule(
        "put_content_type_is_video",
        "§3.1",
        "The PUT's Content-Type is video/mp4, video/quicktime or video/webm (400 otherwise); the "
        "uploader refuses other media before any init.",
        status=400,
        code="upload_bad_headers",
        shape="put",
        violate=violate_content_type,
        comply=comply_content_type,
        reason="Content-Type must be video/mp4",
    ),
    # ---- §1, §2 data endpoints
    Rule(
        "data_calls_carry_a_bearer_token",
        "§1, §2",
        "Every data call carries Authorization: Bearer <the user's access token> (401 "
        "access_token_invalid otherwise). A token TikTok stopped accepting is found out by its 401: "
        "Reelay refreshes once and retries.",
        status=401,
        code="access_token_invalid",
        shape="envelope",
        violate=violate_missing_bearer,
        comply=comply_bearer_token,
        client_violations={"access_token_invalid": 1},
    ),
    Rule(
        "data_calls_send_json",
        "§1",
        "Data calls are POSTs with Content-Type: application/json; charset=UTF-8 and a JSON object "
        "body (400 invalid_params otherwise).",
        status=400,
        code="invalid_params",
        shape="envelope",
        violate=violate_form_body,
        comply=comply_json_bodies,
        client_settings={
            "verified_domains": ["example.com"],
            "pull_mode": "simulate",
            "download_delay_seconds": 30,  # the pull stays cancellable
        },
        reason="Content-Type must be application/json",
    ),
    Rule(
        "scope_is_granted",
        "§1, §2",
        "Direct Post needs video.publish, inbox upload video.upload (401 scope_not_authorized "
        "otherwise). Ingest refuses a mode whose scope the account lacks; when stored scopes are "
        "stale, TikTok's 401 is a permanent AuthExpiredError, not refreshed or retried.",
        status=401,
        code="scope_not_authorized",
        shape="envelope",
        violate=violate_missing_scope,
        comply=comply_scopes,
        client_violations={"scope_not_authorized": 1},
    ),
    Rule(
        "init_at_most_6_per_minute",
        "§7",
        "video/init and inbox/video/init: at most 6 per minute per user token (429 "
        "rate_limit_exceeded); Reelay's shared limiter paces the 7th instead of sending it.",
        status=429,
        code="rate_limit_exceeded",
        shape="envelope",
        violate=violate_init_rate,
        comply=comply_init_pacing,
        client_settings={"rate_limit_init": 6},
    ),
    # ---- §5 metadata
    Rule(
        "privacy_level_is_offered",
        "§5.1, §5.2",
        "privacy_level must be one of creator_info's privacy_level_options (403 "
        "privacy_level_option_mismatch); the uploader and ingest check it before any init.",
        status=403,
        code="privacy_level_option_mismatch",
        shape="envelope",
        violate=violate_privacy_not_offered,
        comply=comply_privacy_offered,
    ),
    Rule(
        "privacy_level_is_required",
        "§5.1",
        "A Direct Post's post_info carries a privacy_level, one of the four values, with no default "
        "(400 invalid_params otherwise).",
        status=400,
        code="invalid_params",
        shape="envelope",
        violate=violate_missing_privacy,
        comply=comply_privacy_required,
        reason="privacy_level is required",
    ),
    Rule(
        "title_at_most_2200_utf16",
        "§5.1",
        "The title is at most 2200 UTF-16 code units (an astral emoji counts 2) (400 invalid_params "
        "otherwise); PostInfo refuses longer, and 2200 exactly goes through unaltered.",
        status=400,
        code="invalid_params",
        shape="envelope",
        violate=violate_long_title,
        comply=comply_title_length,
        reason="2200 UTF-16 code units",
    ),
    # ---- §7 audit
    Rule(
        "unaudited_client_posts_private_self_only",
        "§7, §10",
        "An unaudited client may post only to private accounts, SELF_ONLY (403 "
        "unaudited_client_can_only_post_to_private_accounts). Reelay cannot know the audit status "
        "and has no guard: the 403 fails the upload for good with code and log_id, never retried.",
        status=403,
        code="unaudited_client_can_only_post_to_private_accounts",
        shape="envelope",
        violate=violate_unaudited_public,
        comply=comply_unaudited,
        sandbox_settings={"audited": False},
        client_settings={"audited": False},
        client_violations={"unaudited_client_can_only_post_to_private_accounts": 1},
    ),
    # ---- §2.1 OAuth
    Rule(
        "refresh_with_the_latest_refresh_token",
        "§2.1",
        "Refresh tokens rotate: the old one dies when a new one is issued (flat invalid_grant). "
        "Reelay always refreshes with the most recent one, single-flight across replicas.",
        status=200,  # SANDBOX_OAUTH_ERROR_STATUS; TikTok's status is UNCONFIRMED (200 seen)
        code="invalid_grant",
        shape="oauth",
        violate=violate_reused_refresh_token,
        comply=comply_refresh_rotation,
        client_settings={"access_token_ttl_seconds": 60},
    ),
    Rule(
        "oauth_sends_client_key",
        "§2.1, §10",
        "oauth/token and oauth/revoke are form-encoded and name the app by client_key, not client_id "
        "(flat invalid_request otherwise).",
        status=200,
        code="invalid_request",
        shape="oauth",
        violate=violate_client_id,
        comply=comply_client_key,
        reason="TikTok does not read client_id",
    ),
    # ---- §4 PULL_FROM_URL
    Rule(
        "pull_url_is_https",
        "§4",
        "A PULL_FROM_URL video_url is https (400 invalid_params otherwise); Reelay's messages and API "
        "refuse any other scheme.",
        status=400,
        code="invalid_params",
        shape="envelope",
        violate=violate_pull_over_http,
        comply=comply_pull_https,
        sandbox_settings={"verified_domains": ["example.com"]},
        client_settings={"verified_domains": ["example.com"], "pull_mode": "simulate"},
        reason="video_url must be an https URL",
    ),
    Rule(
        "pull_url_is_on_a_verified_domain",
        "§4",
        "A PULL_FROM_URL video_url sits under a verified domain or URL prefix (403 "
        "url_ownership_unverified). Only TikTok knows the app's properties: Reelay has no guard; the "
        "403 fails the upload for good (TikTokRejectedError with code and log_id), never retried.",
        status=403,
        code="url_ownership_unverified",
        shape="envelope",
        violate=violate_pull_unverified,
        comply=comply_pull_verified,
        sandbox_settings={"verified_domains": ["example.com"]},
        client_settings={"verified_domains": ["example.com"], "pull_mode": "simulate"},
        client_violations={"url_ownership_unverified": 1},
    ),
]
RULE_IDS = [rule.id for rule in RULES]


def error_code(response: httpx.Response, shape: Shape) -> tuple[str, str, str]:
    """(code, message, log_id) of a refusal, in the shape the endpoint answers."""
    body = response.json()
    if shape == "oauth":
        assert "access_token" not in body
        return str(body["error"]), str(body["error_description"]), str(body["log_id"])
    error = body["error"]
    return str(error["code"]), str(error["message"]), str(error["log_id"])


class TestConformanceTable:
    """Every documented rule: the sandbox refuses its violation; Reelay never commits it."""

    def test_each_rule_is_listed_once(self) -> None:
        assert len(set(RULE_IDS)) == len(RULE_IDS)
        assert all(rule.section.startswith("§") and rule.statement for rule in RULES)

    @pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
    async def test_sandbox_rejects_the_violation(self, rule: Rule) -> None:
        async with (
            running_sandbox(**{**BASE_SETTINGS, **rule.sandbox_settings}) as sb,
            httpx.AsyncClient(base_url=sb.base_url, timeout=30) as http,
        ):
            grant = await grant_for(http, sb.default_user.open_id)
            probe = Probe(sb, http, grant["access_token"], grant["refresh_token"])
            response = await rule.violate(probe)
            recent = (await admin_json(http, "/sandbox/stats"))["recent_violations"]
        assert response.status_code == rule.status, response.text
        code, message, log_id = error_code(response, rule.shape)
        assert code == rule.code, response.text
        assert message
        assert log_id
        if rule.message is not None:
            assert message == rule.message
        before, after = probe.before, probe.after
        assert before is not None
        assert after is not None, "the violating request went through Probe.violate"
        delta = {k: v - before.violations.get(k, 0) for k, v in after.violations.items()}
        assert {k: v for k, v in delta.items() if v} == {rule.code: 1}, "counted once, as this code"
        if rule.reason is not None:
            assert rule.reason in recent[-1]["detail"], recent[-1]
        assert (after.publishes, after.stored_bytes, after.access_tokens) == (
            before.publishes,
            before.stored_bytes,
            before.access_tokens,
        ), "a refused request creates nothing"

    @pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
    async def test_client_never_commits_it(
        self, rule: Rule, mongo_db: AsyncDatabase[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        wire = Wire()
        async with (
            running_sandbox(**{**CLIENT_SETTINGS, **rule.client_settings}) as sb,
            httpx.AsyncClient(base_url=sb.base_url, timeout=30) as admin,
            httpx.AsyncClient(transport=wire, timeout=30) as http,
        ):
            grant = await grant_for(admin, sb.default_user.open_id)
            client = TikTokClient(
                http, base_url=sb.base_url, client_key=CLIENT_KEY, client_secret=SecretStr(CLIENT_SECRET)
            )
            world = World(
                sb=sb,
                admin=admin,
                wire=wire,
                client=client,
                db=mongo_db,
                monkeypatch=monkeypatch,
                token=grant["access_token"],
                refresh_token=grant["refresh_token"],
            )
            await rule.comply(world)
            assert wire.sent, "the proof went through Reelay's HTTP client"
            stats = await world.stats()
        assert stats["violations"] == dict(rule.client_violations), stats["recent_violations"]
