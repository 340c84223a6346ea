"""TikTok per account (implements ports.TikTokApi): token, pacing, one refresh on 401, 429 backoff.

Handlers see accounts, not tokens. Every data call takes a token from the TokenProvider, a slot
from the RateLimiter, and:
- on 401 `access_token_invalid` refreshes once (single-flight, across replicas) and retries;
- on 429 waits (`Retry-After`, else exponential) a bounded number of times, then raises
  RateLimitedError so the consumer loop retries the record later: a 429 never fails an upload."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from reelay_common.adapters.tiktok.client import AccessTokenInvalidError, TikTokClient
from reelay_common.adapters.tiktok.upload import upload_chunks
from reelay_common.domain.errors import InvalidInputError, RateLimitedError
from reelay_common.domain.messages import PostInfo, UploadMode
from reelay_common.domain.oauth import ACCOUNT_REAUTH_REQUIRED
from reelay_common.domain.rules import Backoff
from reelay_common.domain.tiktok import (
    CreatorInfo,
    InitResult,
    PublishStatus,
    SourceInfo,
)
from reelay_common.logging import get_logger
from reelay_common.ports import (
    ChunkedUpload,
    ProgressCallback,
    RateBucket,
    RateLimiter,
    TokenProvider,
)

log = get_logger("reelay_common.adapters.tiktok.gateway")

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
GrantRefused = Callable[[str], Awaitable[None]]


class TikTokGateway:
    """The TikTokApi port over TikTokClient, a TokenProvider and a RateLimiter."""

    def __init__(
        self,
        client: TikTokClient,
        tokens: TokenProvider,
        limiter: RateLimiter,
        *,
        max_rate_limit_retries: int = 3,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        upload_max_attempts: int = 5,
        upload_backoff_initial: float = 0.5,
        sleep: Sleep = asyncio.sleep,
        on_grant_refused: GrantRefused | None = None,
    ) -> None:
        self._client = client
        # Told when TikTok refuses a token it has just refreshed: the account must reconnect.
        self._on_grant_refused = on_grant_refused
        self._tokens = tokens
        self._limiter = limiter
        self._max_429 = max_rate_limit_retries
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._upload_max_attempts = upload_max_attempts
        self._upload_backoff_initial = upload_backoff_initial
        self._sleep = sleep

    async def creator_info(self, account_id: str) -> CreatorInfo:
        """creator_info/query for the account (paced 20/min)."""
        return await self._call(account_id, "creator_info", self._client.creator_info)

    async def init_upload(
        self, account_id: str, *, mode: UploadMode, post_info: PostInfo | None, source_info: SourceInfo
    ) -> InitResult:
        """video/init (mode 'direct', with post_info) or inbox/video/init (mode 'inbox'), paced 6/min."""
        if mode == "direct":
            if post_info is None:
                raise InvalidInputError("a direct post needs post_info", code="missing_post_info")
            direct_info = post_info

            async def init(token: str) -> InitResult:
                return await self._client.init_direct_post(token, direct_info, source_info)

        elif mode == "inbox":
            if post_info is not None:
                raise InvalidInputError("an inbox upload takes no post_info", code="unexpected_post_info")

            async def init(token: str) -> InitResult:
                return await self._client.init_inbox(token, source_info)

        else:
            raise InvalidInputError(f"unknown upload mode {mode!r}", code="invalid_mode")
        result = await self._call(account_id, "init", init)
        log.info("tiktok_publish_initialised", account_id=account_id, publish_id=result.publish_id, mode=mode)
        return result

    async def fetch_status(self, account_id: str, publish_id: str) -> PublishStatus:
        """status/fetch for one publish (paced 30/min)."""

        async def fetch(token: str) -> PublishStatus:
            return await self._client.fetch_status(token, publish_id)

        return await self._call(account_id, "status", fetch)

    async def cancel_publish(self, account_id: str, publish_id: str) -> None:
        """cancel for one publish. TikTok documents no limit of its own: paced with status/fetch's."""

        async def cancel(token: str) -> None:
            await self._client.cancel(token, publish_id)

        await self._call(account_id, "status", cancel)

    async def upload_chunks(
        self, upload: ChunkedUpload, *, on_progress: ProgressCallback | None = None
    ) -> None:
        """PUT the chunks (see upload.upload_chunks); with the upload's account_id and publish_id, a
        lost response is resynchronised from status/fetch `uploaded_bytes`."""
        probe = None
        if upload.account_id is not None and upload.publish_id is not None:
            probe_account, probe_publish = upload.account_id, upload.publish_id

            async def probe_uploaded_bytes() -> int | None:
                status = await self.fetch_status(probe_account, probe_publish)
                return status.uploaded_bytes

            probe = probe_uploaded_bytes
        await upload_chunks(
            self._client,
            upload.upload_url,
            upload.plan,
            upload.reader,
            start_offset=upload.start_offset,
            on_progress=on_progress,
            status_probe=probe,
            max_attempts=self._upload_max_attempts,
            backoff_initial=self._upload_backoff_initial,
        )

    async def _call(self, account_id: str, bucket: RateBucket, call: Callable[[str], Awaitable[T]]) -> T:
        """Run `call(token)` paced, with one refresh on a refused token and bounded 429 backoff."""
        token = await self._tokens.access_token(account_id)
        refreshed = False
        rate_limited = 0
        while True:
            await self._limiter.acquire(account_id, bucket)
            try:
                return await call(token)
            except AccessTokenInvalidError as exc:
                if refreshed:
                    # TikTok refuses even a fresh token: the grant is gone, only a reconnect helps.
                    if self._on_grant_refused is not None:
                        await self._on_grant_refused(account_id)
                    log.warning("tiktok_fresh_token_refused", account_id=account_id, log_id=exc.log_id)
                    raise AccessTokenInvalidError(
                        "TikTok refused a freshly refreshed token; connect the account again",
                        code=ACCOUNT_REAUTH_REQUIRED,
                        log_id=exc.log_id,
                        http_status=exc.http_status,
                    ) from exc
                log.info("tiktok_token_refused", account_id=account_id, bucket=bucket, log_id=exc.log_id)
                token = await self._tokens.force_refresh(account_id, token)
                refreshed = True
            except RateLimitedError as exc:
                rate_limited += 1
                if rate_limited > self._max_429:
                    raise
                if exc.retry_after is not None:
                    delay = min(exc.retry_after, self._backoff.maximum)
                else:
                    delay = self._backoff.delay(rate_limited - 1)
                log.info(
                    "tiktok_rate_limited",
                    account_id=account_id,
                    bucket=bucket,
                    attempt=rate_limited,
                    delay=delay,
                    log_id=exc.log_id,
                )
                await self._sleep(delay)
