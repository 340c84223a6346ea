"""What happens after the bytes arrive: downloads, media checks, status changes and their webhooks."""

from __future__ import annotations

import asyncio
import math
import random
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from tiktok_sandbox.media import MediaError, iter_sample_mp4, probe_media
from tiktok_sandbox.plan import LIMITS
from tiktok_sandbox.state import Publish, SandboxState
from tiktok_sandbox.webhooks import WebhookSender

log = structlog.get_logger("tiktok_sandbox")

_MIN_SIDE, _MAX_SIDE = 360, 4096  # §9 picture size, width and height
_MIN_FPS, _MAX_FPS = 23.0, 60.0  # §9 frame rate
_PULL_PIECE = 1 << 20


class Sandbox:
    """The running emulator: state plus the outbound sides (webhooks, downloads)."""

    def __init__(self, state: SandboxState, webhooks: WebhookSender) -> None:
        self.state = state
        self.settings = state.settings
        self.webhooks = webhooks
        # Draws the processing times; seeded, a run draws the same times in the same order.
        self._rng = random.Random(state.settings.processing_seed)  # not for secrets

    @property
    def session(self) -> aiohttp.ClientSession:
        """The outbound HTTP session (downloads, webhooks), alive while the app runs."""
        return self.webhooks.session

    async def aclose(self) -> None:
        """Cancel background jobs and wait for them."""
        tasks = list(self.state.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------ events

    def emit(self, event: str, open_id: str, content: dict[str, Any]) -> None:
        """Record an event and deliver it in the background."""
        delivery = self.webhooks.build(event, open_id, content)
        self.state.spawn(self.webhooks.deliver(delivery))

    def _publish_type(self, pub: Publish) -> str:
        # §8: DIRECT_PUBLISH is what Direct Post sends in the field, not DIRECT_POST.
        return "DIRECT_PUBLISH" if pub.mode == "direct" else "INBOX_SHARE"

    def fail(self, pub: Publish, reason: str) -> None:
        """End a publish FAILED and announce it."""
        if pub.terminal:
            return
        pub.status = "FAILED"
        pub.fail_reason = reason
        pub.completed_at = self.state.now()
        log.info("publish_failed", publish_id=pub.publish_id, reason=reason)
        self.emit(
            "post.publish.failed",
            pub.open_id,
            {"publish_id": pub.publish_id, "reason": reason, "publish_type": self._publish_type(pub)},
        )

    def handle_draft(self, pub: Publish, action: str) -> None:
        """The creator acts on an inbox draft: "post" publishes it, "delete" drops it."""
        pub.handled = True
        if action == "post":
            pub.status = "PUBLISH_COMPLETE"
            # §8: post.publish.complete may also come for drafts the creator posts.
            self.emit(
                "post.publish.complete",
                pub.open_id,
                {"publish_id": pub.publish_id, "publish_type": self._publish_type(pub)},
            )

    def revoke(self, open_id: str, reason: int) -> int:
        """Revoke a user's tokens and fire authorization.removed."""
        n = self.state.revoke_user(open_id)
        self.emit("authorization.removed", open_id, {"reason": reason})
        return n

    # ------------------------------------------------------------ pipelines

    def start_processing(self, pub: Publish) -> None:
        """All bytes are in: check the media after the configured delay."""
        pub.task = self.state.spawn(self._process(pub))

    def start_download(self, pub: Publish) -> None:
        """PULL_FROM_URL: fetch (or simulate) the video, then process it."""
        pub.task = self.state.spawn(self._download_then_process(pub))

    async def _process(self, pub: Publish) -> None:
        try:
            pub.processing_seconds = self.processing_delay(pub)
            pub.processing_started_at = self.state.now()
            await asyncio.sleep(pub.processing_seconds)
            reason = self.state.faults.take_forced_failure()
            if reason is None and pub.file_path is not None:
                reason = await asyncio.to_thread(self._check_media, pub)
            if reason is not None:
                self.fail(pub, reason)
                return
            await self._succeed(pub)
        finally:
            if pub.file_path is not None and not self.settings.keep_files:
                pub.file_path.unlink(missing_ok=True)

    def processing_delay(self, pub: Publish) -> float:
        """This publish's processing time: the base, a share per MB of the video, a lognormal spread."""
        s = self.settings
        size = pub.plan.video_size if pub.plan is not None else (pub.download_total or 0)
        delay = s.processing_delay_seconds + s.processing_seconds_per_mb * size / 1_000_000
        if s.processing_spread > 0:
            delay *= math.exp(self._rng.gauss(0.0, s.processing_spread))
        return delay

    def _check_media(self, pub: Publish) -> str | None:
        """§9 checks in TikTok's terms; returns a fail_reason or None."""
        if pub.file_path is None:
            return "file_format_check_failed"
        try:
            info = probe_media(pub.file_path)
        except (MediaError, OSError):
            return "file_format_check_failed"
        pub.media = info
        user = self.state.users.get(pub.open_id)
        max_duration = user.max_video_post_duration_sec if user else 600
        if info.duration_s is not None and info.duration_s > max_duration:
            return "duration_check_failed"
        if not (_MIN_SIDE <= info.width <= _MAX_SIDE and _MIN_SIDE <= info.height <= _MAX_SIDE):
            return "picture_size_check_failed"
        if info.fps is not None and not _MIN_FPS <= round(info.fps, 3) <= _MAX_FPS:
            return "frame_rate_check_failed"
        return None

    async def _succeed(self, pub: Publish) -> None:
        if pub.terminal:
            return
        publish_type = self._publish_type(pub)
        if pub.mode == "inbox":
            pub.status = "SEND_TO_USER_INBOX"
            pub.completed_at = self.state.now()
            log.info("publish_inbox_delivered", publish_id=pub.publish_id)
            self.emit(
                "post.publish.inbox_delivered",
                pub.open_id,
                {"publish_id": pub.publish_id, "publish_type": publish_type},
            )
            return
        pub.status = "PUBLISH_COMPLETE"
        pub.completed_at = self.state.now()
        log.info("publish_complete", publish_id=pub.publish_id)
        self.emit(
            "post.publish.complete", pub.open_id, {"publish_id": pub.publish_id, "publish_type": publish_type}
        )
        privacy = (pub.post_info or {}).get("privacy_level")
        if privacy != "PUBLIC_TO_EVERYONE":
            return  # post ids are only published for public, moderated posts (§6)
        await asyncio.sleep(self.settings.moderation_delay_seconds)
        post_id = self.state.new_post_id()
        pub.post_ids.append(post_id)
        self.emit(
            "post.publish.publicly_available",
            pub.open_id,
            {
                "publish_id": pub.publish_id,
                "post_id": str(post_id) if self.settings.post_id_json == "string" else post_id,
                "publish_type": publish_type,
            },
        )

    async def _download_then_process(self, pub: Publish) -> None:
        pub.file_path = self.state.data_dir / f"{pub.publish_id.replace('~', '_')}.pull"
        try:
            await asyncio.sleep(self.settings.download_delay_seconds)
            if self.settings.pull_mode == "simulate":
                await asyncio.to_thread(self._simulate_download, pub, pub.file_path)
            else:
                await asyncio.wait_for(self._download(pub, pub.file_path), self.settings.pull_timeout_seconds)
        except asyncio.CancelledError:
            pub.file_path.unlink(missing_ok=True)
            raise
        except (aiohttp.ClientError, OSError, TimeoutError, _PullError) as exc:
            log.info("pull_failed", publish_id=pub.publish_id, error=type(exc).__name__, detail=str(exc))
            pub.file_path.unlink(missing_ok=True)
            self.fail(pub, "video_pull_failed")
            return
        pub.download_done = True
        await self._process(pub)

    def _simulate_download(self, pub: Publish, path: Path) -> None:
        pub.download_total = self.settings.pull_simulate_size
        with path.open("wb") as f:
            for piece in iter_sample_mp4(self.settings.pull_simulate_size):
                f.write(piece)
                pub.downloaded_bytes += len(piece)

    async def _download(self, pub: Publish, path: Path) -> None:
        if pub.video_url is None:
            raise _PullError("no video_url")
        ssl_ctx: ssl.SSLContext | bool = True
        if self.settings.pull_ca_file is not None:
            ssl_ctx = ssl.create_default_context(cafile=str(self.settings.pull_ca_file))
        # §4: https only and no redirects; a 3xx is a failed pull, not something to follow.
        async with self.session.get(pub.video_url, allow_redirects=False, ssl=ssl_ctx) as resp:
            if resp.status != 200:
                raise _PullError(f"HTTP {resp.status}")
            max_video = LIMITS["loose"].max_video
            pub.download_total = resp.content_length
            if resp.content_length is not None and resp.content_length > max_video:
                raise _PullError("video larger than 4 GB")
            f = await asyncio.to_thread(path.open, "wb")
            try:
                async for piece in resp.content.iter_chunked(_PULL_PIECE):
                    await asyncio.to_thread(f.write, piece)
                    pub.downloaded_bytes += len(piece)
                    if pub.downloaded_bytes > max_video:
                        raise _PullError("video larger than 4 GB")
            finally:
                await asyncio.to_thread(f.close)


class _PullError(Exception):
    """The download did not produce a video."""
