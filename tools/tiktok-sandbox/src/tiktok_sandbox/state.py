"""The sandbox's in-memory world: users, tokens, publishes, rate windows and counters."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import tempfile
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tiktok_sandbox.faults import Endpoint, FaultInjector
from tiktok_sandbox.media import MediaInfo
from tiktok_sandbox.plan import ChunkPlan
from tiktok_sandbox.settings import SandboxSettings

PUBLIC_OPTIONS = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY")
PRIVATE_OPTIONS = ("FOLLOWER_OF_CREATOR", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY")
PRIVACY_LEVELS = frozenset(PUBLIC_OPTIONS + PRIVATE_OPTIONS)
KNOWN_SCOPES = frozenset(
    {"user.info.basic", "user.info.profile", "user.info.stats", "video.list", "video.publish", "video.upload"}
)
DEFAULT_SCOPES = ("user.info.basic", "video.publish", "video.upload")
DAY = 86_400.0

Mode = Literal["direct", "inbox"]
Source = Literal["FILE_UPLOAD", "PULL_FROM_URL"]
Status = Literal[
    "PROCESSING_UPLOAD", "PROCESSING_DOWNLOAD", "SEND_TO_USER_INBOX", "PUBLISH_COMPLETE", "FAILED"
]


def new_log_id() -> str:
    """A log_id shaped like TikTok's: UTC timestamp then 20 hex digits."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + secrets.token_hex(10).upper()


def _digits19() -> int:
    # Real ids are 19 digits and above 2^53, which is the trap for clients parsing JSON numbers
    # into doubles; this range keeps every id there (2^53 ~ 9.0e15).
    return secrets.randbelow(500_000_000_000_000_000) + 7_000_000_000_000_000_000


@dataclass
class User:
    """A sandbox creator account."""

    open_id: str
    username: str
    nickname: str
    private_account: bool = False
    scopes: frozenset[str] = frozenset(DEFAULT_SCOPES)
    max_video_post_duration_sec: int = 600
    comment_disabled: bool = False
    duet_disabled: bool = False
    stitch_disabled: bool = False
    banned: bool = False

    def privacy_level_options(self) -> list[str]:
        """§5.2: private accounts cannot post publicly but can post to followers."""
        return list(PRIVATE_OPTIONS if self.private_account else PUBLIC_OPTIONS)

    def creator_info(self) -> dict[str, Any]:
        """creator_info/query `data` (§5.2)."""
        return {
            "creator_avatar_url": f"https://sandbox.invalid/avatar/{self.open_id}.jpeg",
            "creator_username": self.username,
            "creator_nickname": self.nickname,
            "privacy_level_options": self.privacy_level_options(),
            "comment_disabled": self.comment_disabled,
            # Private accounts have duet and stitch off, whatever the setting says.
            "duet_disabled": self.duet_disabled or self.private_account,
            "stitch_disabled": self.stitch_disabled or self.private_account,
            "max_video_post_duration_sec": self.max_video_post_duration_sec,
        }

    def to_json(self) -> dict[str, Any]:
        """Inspection view: every field, the scopes sorted."""
        return {**asdict(self), "scopes": sorted(self.scopes)}


@dataclass
class AccessToken:
    """A user access token (`act.…`)."""

    token: str
    open_id: str
    scopes: frozenset[str]
    expires_at: float
    revoked: bool = False


@dataclass
class RefreshToken:
    """A refresh token (`rft.…`); dies when it is used (rotation), expires or is revoked."""

    token: str
    open_id: str
    scopes: frozenset[str]
    expires_at: float
    used: bool = False
    revoked: bool = False


@dataclass
class AuthCode:
    """An authorization code handed out by /v2/auth/authorize/."""

    code: str
    open_id: str
    scopes: frozenset[str]
    redirect_uri: str
    code_challenge: str | None
    expires_at: float
    used: bool = False


@dataclass
class ChunkAttempt:
    """One PUT against an upload URL, whatever its outcome."""

    order: int
    first: int | None
    last: int | None
    size: int | None
    status_code: int | None  # None when the connection was dropped
    stored: bool
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Inspection view: every field."""
        return asdict(self)


@dataclass
class Publish:
    """One publish_id and everything the sandbox knows about it."""

    publish_id: str
    open_id: str
    mode: Mode
    source: Source
    created_at: float
    post_info: dict[str, Any] | None = None
    plan: ChunkPlan | None = None
    video_url: str | None = None
    upload_id: str | None = None
    upload_token: str | None = None
    upload_url: str | None = None
    upload_expires_at: float | None = None
    file_path: Path | None = None
    status: Status = "PROCESSING_UPLOAD"
    fail_reason: str | None = None
    uploaded_bytes: int = 0
    downloaded_bytes: int = 0
    download_total: int | None = None
    download_done: bool = False
    # Inbox shares: the creator posted or deleted the draft (no longer pending).
    handled: bool = False
    next_chunk: int = 0
    chunks: list[ChunkAttempt] = field(default_factory=list)
    put_in_flight: bool = False
    complete: bool = False
    sha256: str | None = None
    hasher: Any = field(default_factory=hashlib.sha256)
    post_ids: list[int] = field(default_factory=list)
    media: MediaInfo | None = None
    task: asyncio.Task[None] | None = None
    # What the benchmarks read back: the processing time drawn for it, when processing began and
    # when its status became terminal (wall clock), and how many status/fetch calls asked about it.
    processing_seconds: float | None = None
    processing_started_at: float | None = None
    completed_at: float | None = None
    status_fetches: int = 0

    @property
    def terminal(self) -> bool:
        """True once the status can no longer change (PUBLISH_COMPLETE may still gain post ids)."""
        return self.status in ("FAILED", "SEND_TO_USER_INBOX", "PUBLISH_COMPLETE")

    def status_data(self, post_id_json: Literal["number", "string"]) -> dict[str, Any]:
        """status/fetch `data` (§6)."""
        data: dict[str, Any] = {
            "status": self.status,
            "publicaly_available_post_id": [
                str(i) if post_id_json == "string" else i for i in self.post_ids
            ],  # misspelled by TikTok, verbatim
        }
        if self.status == "FAILED":
            data["fail_reason"] = self.fail_reason
        if self.source == "FILE_UPLOAD":
            data["uploaded_bytes"] = self.uploaded_bytes
        else:
            data["downloaded_bytes"] = self.downloaded_bytes
        return data

    def to_json(self) -> dict[str, Any]:
        """Inspection view."""
        return {
            "publish_id": self.publish_id,
            "open_id": self.open_id,
            "mode": self.mode,
            "source": self.source,
            "created_at": self.created_at,
            "post_info": self.post_info,
            "video_size": self.plan.video_size if self.plan else self.download_total,
            "chunk_size": self.plan.chunk_size if self.plan else None,
            "total_chunk_count": self.plan.total_chunk_count if self.plan else None,
            "video_url": self.video_url,
            "upload_url": self.upload_url,
            "upload_expires_at": self.upload_expires_at,
            "status": self.status,
            "fail_reason": self.fail_reason,
            "uploaded_bytes": self.uploaded_bytes,
            "downloaded_bytes": self.downloaded_bytes,
            "chunks": [c.to_json() for c in self.chunks],
            "chunks_stored": self.next_chunk,
            "complete": self.complete,
            "handled": self.handled,
            "sha256": self.sha256,
            "post_ids": [str(i) for i in self.post_ids],
            "processing_seconds": self.processing_seconds,
            "processing_started_at": self.processing_started_at,
            "completed_at": self.completed_at,
            "status_fetches": self.status_fetches,
            "media": None
            if self.media is None
            else {
                "container": self.media.container,
                "duration_s": self.media.duration_s,
                "width": self.media.width,
                "height": self.media.height,
                "fps": self.media.fps,
            },
        }


@dataclass
class Violation:
    """A rejected call, kept for operators to read."""

    at: float
    endpoint: str
    code: str
    status: int
    detail: str


class Stats:
    """Counters that /sandbox/stats reports."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        self.recent: deque[Violation] = deque(maxlen=200)

    def call(self, endpoint: str) -> None:
        """Count one call of an endpoint."""
        self.calls[endpoint] += 1

    def respond(self, endpoint: str, status: int, code: str, detail: str = "") -> None:
        """Count a response; anything but ok is a violation."""
        self.responses[f"{endpoint}:{status}"] += 1
        if code != "ok":
            self.violations[code] += 1
            self.recent.append(Violation(time.time(), endpoint, code, status, detail))


class SandboxState:
    """All mutable state; one instance per running sandbox, shared by the handlers."""

    def __init__(self, settings: SandboxSettings, data_dir: Path | None = None) -> None:
        self.settings = settings
        # Set when the app starts (a temporary directory unless SANDBOX_DATA_DIR is given).
        self.data_dir = data_dir or Path(tempfile.gettempdir())
        self.public_base_url = settings.public_base_url or f"http://{settings.host}:{settings.port}"
        self.faults = FaultInjector(settings.faults)
        self.tasks: set[asyncio.Task[None]] = set()
        self._init_world()

    async def arrive(self, endpoint: Endpoint) -> None:
        """Count a call of `endpoint`, then wait out the delay the faults inject into it, if any."""
        self.stats.call(endpoint)
        delay = self.faults.delay(endpoint)
        if delay:
            await asyncio.sleep(delay)

    def _init_world(self) -> None:
        self.users: dict[str, User] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.codes: dict[str, AuthCode] = {}
        self.publishes: dict[str, Publish] = {}
        self.uploads: dict[str, Publish] = {}
        self.windows: dict[tuple[str, str], deque[float]] = {}
        self.inits: deque[tuple[float, str, Mode]] = deque()
        self.stats = Stats()
        self.default_user = self.add_user(
            username=self.settings.default_username,
            private_account=self.settings.default_private_account,
            open_id=_stable_open_id(self.settings.default_username),
        )

    def now(self) -> float:
        """Wall-clock seconds; one place so every expiry uses the same clock."""
        return time.time()

    def reset(self) -> None:
        """Forget everything (tasks, files, users, tokens, counters); faults back to the settings."""
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()
        for pub in self.publishes.values():
            if pub.file_path is not None:
                pub.file_path.unlink(missing_ok=True)
        self.faults.set(self.settings.faults)
        self._init_world()

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        """Run a background job (processing, webhook delivery) that reset/shutdown can cancel."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # ------------------------------------------------------------ users and tokens

    def add_user(
        self,
        *,
        username: str,
        nickname: str | None = None,
        private_account: bool = False,
        scopes: frozenset[str] | None = None,
        max_video_post_duration_sec: int | None = None,
        comment_disabled: bool = False,
        duet_disabled: bool = False,
        stitch_disabled: bool = False,
        banned: bool = False,
        open_id: str | None = None,
    ) -> User:
        """Create a creator account."""
        user = User(
            open_id=open_id or str(uuid.uuid4()),
            username=username,
            nickname=nickname or username.title(),
            private_account=private_account,
            scopes=scopes if scopes is not None else frozenset(DEFAULT_SCOPES),
            max_video_post_duration_sec=max_video_post_duration_sec
            or self.settings.default_max_video_post_duration_sec,
            comment_disabled=comment_disabled,
            duet_disabled=duet_disabled,
            stitch_disabled=stitch_disabled,
            banned=banned,
        )
        self.users[user.open_id] = user
        return user

    def find_user(self, key: str) -> User | None:
        """A user by open_id or username."""
        if key in self.users:
            return self.users[key]
        return next((u for u in self.users.values() if u.username == key), None)

    def issue_tokens(self, open_id: str, scopes: frozenset[str]) -> dict[str, Any]:
        """A fresh access + refresh token pair, as the flat oauth/token body."""
        s = self.settings
        now = self.now()
        access = AccessToken(
            "act." + secrets.token_urlsafe(40), open_id, scopes, now + s.access_token_ttl_seconds
        )
        refresh = RefreshToken(
            "rft." + secrets.token_urlsafe(40), open_id, scopes, now + s.refresh_token_ttl_seconds
        )
        self.access_tokens[access.token] = access
        self.refresh_tokens[refresh.token] = refresh
        return {
            "access_token": access.token,
            "expires_in": max(1, round(s.access_token_ttl_seconds)),
            "open_id": open_id,
            "refresh_token": refresh.token,
            "refresh_expires_in": max(1, round(s.refresh_token_ttl_seconds)),
            "scope": ",".join(sorted(scopes)),
            "token_type": "Bearer",
        }

    def valid_access_token(self, token: str) -> AccessToken | None:
        """The token if it exists, is not revoked, has not expired and its user still exists."""
        at = self.access_tokens.get(token)
        if at is None or at.revoked or self.now() >= at.expires_at or at.open_id not in self.users:
            return None
        return at

    def revoke_user(self, open_id: str) -> int:
        """Kill every access and refresh token of a user; returns how many were live."""
        n = 0
        for at in self.access_tokens.values():
            if at.open_id == open_id and not at.revoked:
                at.revoked = True
                n += 1
        for rt in self.refresh_tokens.values():
            if rt.open_id == open_id and not rt.revoked:
                rt.revoked = True
                n += 1
        for code in self.codes.values():
            if code.open_id == open_id:
                code.used = True
        return n

    # ------------------------------------------------------------ limits

    def admit(self, token: str, bucket: str, limit: int) -> bool:
        """Sliding-window rate limit per access token; only admitted calls fill the window."""
        now = self.now()
        window = self.windows.setdefault((token, bucket), deque())
        horizon = now - self.settings.rate_limit_window_seconds
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def inits_within_day(
        self, *, open_id: str | None = None, mode: Mode | None = None
    ) -> list[tuple[float, str, Mode]]:
        """Successful inits of the last 24 h, optionally for one user / mode."""
        horizon = self.now() - DAY
        while self.inits and self.inits[0][0] <= horizon:
            self.inits.popleft()
        return [
            i for i in self.inits if (open_id is None or i[1] == open_id) and (mode is None or i[2] == mode)
        ]

    def pending_shares(self, open_id: str) -> int:
        """Inbox shares of the last 24 h that did not fail and the creator has not posted or deleted."""
        horizon = self.now() - DAY
        return sum(
            1
            for p in self.publishes.values()
            if p.open_id == open_id
            and p.mode == "inbox"
            and p.created_at > horizon
            and p.status != "FAILED"
            and not p.handled
        )

    # ------------------------------------------------------------ publishes

    def new_publish(self, *, open_id: str, mode: Mode, source: Source) -> Publish:
        """Register a publish_id shaped like TikTok's (`v_pub_file~v2-1.<19 digits>`)."""
        kind = "pub" if mode == "direct" else "inbox"
        src = "file" if source == "FILE_UPLOAD" else "url"
        publish_id = f"v_{kind}_{src}~v2-1.{_digits19()}"
        pub = Publish(
            publish_id=publish_id,
            open_id=open_id,
            mode=mode,
            source=source,
            created_at=self.now(),
            status="PROCESSING_UPLOAD" if source == "FILE_UPLOAD" else "PROCESSING_DOWNLOAD",
        )
        self.publishes[publish_id] = pub
        self.inits.append((pub.created_at, open_id, mode))
        return pub

    def attach_upload(self, pub: Publish) -> str:
        """Give a FILE_UPLOAD publish its upload URL (≤ 256 chars, expires after the TTL)."""
        pub.upload_id = str(_digits19())
        pub.upload_token = secrets.token_urlsafe(24)
        base = self.public_base_url.rstrip("/")
        pub.upload_url = f"{base}/upload/?upload_id={pub.upload_id}&upload_token={pub.upload_token}"
        if len(pub.upload_url) > 256:
            raise ValueError("SANDBOX_PUBLIC_BASE_URL is too long: upload URLs must fit in 256 characters")
        pub.upload_expires_at = self.now() + self.settings.upload_url_ttl_seconds
        pub.file_path = self.data_dir / f"{pub.upload_id}.part"
        self.uploads[pub.upload_id] = pub
        return pub.upload_url

    def new_post_id(self) -> int:
        """A 19-digit post id above 2^53."""
        return _digits19()


def _stable_open_id(username: str) -> str:
    # The default user keeps its open_id across restarts and resets, so a demo stack's
    # connected account stays valid.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"tiktok-sandbox:{username}"))
