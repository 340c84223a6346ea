"""MongoTokenProvider: a valid access token for an account, refreshed single-flight across processes."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from reelay_common.adapters.mongo.accounts import AccountTokens, MongoAccountStore
from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.domain.errors import (
    AuthExpiredError,
    InvalidInputError,
    RetryableError,
    TransientTikTokError,
)
from reelay_common.domain.messages import utcnow
from reelay_common.domain.oauth import ACCOUNT_DISCONNECTED, ACCOUNT_REAUTH_REQUIRED
from reelay_common.domain.records import AccountStatus
from reelay_common.domain.tiktok import TokenGrant
from reelay_common.logging import get_logger
from reelay_common.metrics import TOKEN_REFRESHES

log = get_logger("reelay_common.adapters.tiktok.tokens")

Clock = Callable[[], datetime]

Sleep = Callable[[float], Awaitable[None]]


class MongoTokenProvider:
    """Hands out access tokens (implements ports.TokenProvider); refreshes single-flight per
    account across processes, elected by a guarded update on the account document."""

    def __init__(
        self,
        store: MongoAccountStore,
        client: TikTokClient,
        *,
        refresh_margin_seconds: float = 300.0,
        lock_seconds: float = 60.0,
        store_grant_seconds: float = 300.0,
        takeover_wait_seconds: float | None = None,
        poll_interval_seconds: float = 0.1,
        wait_timeout_seconds: float | None = None,
        owner: str | None = None,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._store = store
        self._client = client
        self._margin = timedelta(seconds=refresh_margin_seconds)
        self._lock_seconds = lock_seconds
        self._store_grant_seconds = store_grant_seconds
        # How long a refresh refused after taking over an expired lock waits for that lock's owner
        # to store the grant it may hold (by default as long as that owner keeps trying).
        self._takeover_wait = (
            takeover_wait_seconds if takeover_wait_seconds is not None else store_grant_seconds
        )
        self._takeover_poll = max(poll_interval_seconds, 0.5)
        self._in_flight: set[asyncio.Future[str]] = set()  # refreshes outliving a cancelled caller
        self._poll = poll_interval_seconds
        # Losers wait at most a lock lifetime (plus slack), after which the lock is up for grabs.
        self._wait_timeout = wait_timeout_seconds if wait_timeout_seconds is not None else lock_seconds + 5
        self._owner = owner or f"{uuid.uuid4().hex}"
        self._clock = clock
        self._sleep = sleep

    async def access_token(self, account_id: str) -> str:
        """A token valid for more than the margin, refreshing (single-flight) when it is not."""
        tokens = await self._load(account_id)
        remaining = tokens.access_expires_at - self._clock() if tokens.access_expires_at is not None else None
        if tokens.access_token is not None and remaining is not None and remaining > self._margin:
            return tokens.access_token
        try:
            return await self._refresh(tokens)
        except RetryableError as exc:
            # We refresh early; while the current token still works, a TikTok or database hiccup
            # need not stop the call. The next caller tries the refresh again.
            if tokens.access_token is not None and remaining is not None and remaining > timedelta(0):
                log.warning("token_refresh_deferred", account_id=account_id, code=exc.code)
                return tokens.access_token
            raise

    async def grant_refused(self, account_id: str) -> None:
        """TikTok refused a token it had just refreshed: the grant is dead (reauth_required)."""
        await self._store.mark_reauth_required(account_id)
        TOKEN_REFRESHES.labels(outcome="fresh_token_refused").inc()

    async def force_refresh(self, account_id: str, stale_token: str) -> str:
        """`stale_token` was refused: refresh, unless the stored token is already a newer one."""
        tokens = await self._load(account_id)
        if tokens.access_token is not None and tokens.access_token != stale_token:
            return tokens.access_token
        return await self._refresh(tokens)

    async def _load(self, account_id: str) -> AccountTokens:
        tokens = await self._store.get_tokens(account_id)
        if tokens is None:
            raise InvalidInputError(f"unknown account {account_id}", code="unknown_account")
        _ensure_connected(tokens)
        return tokens

    async def _refresh(self, seen: AccountTokens) -> str:
        """Refresh once across every replica; the callers that lose the election wait for the winner."""
        account_id = seen.account_id
        started = time.monotonic()
        while True:
            mine = await self._store.try_lock_refresh(
                account_id,
                owner=self._owner,
                expect_version=seen.token_version,
                lock_seconds=self._lock_seconds,
            )
            if mine is not None:
                # Shielded: once the refresh token is sent, TikTok may rotate it; a caller that is
                # cancelled then (a poll's timeout) must not drop the grant before it is stored
                # (found by `make chaos`). The refresh finishes in the background instead.
                task = asyncio.ensure_future(self._refresh_as_winner(mine))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
                task.add_done_callback(_observe)
                return await asyncio.shield(task)
            current = await self._load(account_id)
            if current.token_version != seen.token_version and current.access_token is not None:
                return current.access_token
            if time.monotonic() - started > self._wait_timeout:
                raise TransientTikTokError(
                    "timed out waiting for another replica's token refresh", code="refresh_wait_timeout"
                )
            await self._sleep(self._poll)

    async def _refresh_as_winner(self, mine: AccountTokens) -> str:
        account_id = mine.account_id
        locked_at = time.monotonic()
        if mine.refresh_token is None:
            await self._store.release_refresh_lock(account_id, owner=self._owner)
            await self._store.mark_reauth_required(account_id)
            TOKEN_REFRESHES.labels(outcome="no_refresh_token").inc()
            raise AuthExpiredError(
                "the account has no refresh token; connect it again", code=ACCOUNT_REAUTH_REQUIRED
            )
        try:
            grant = await self._client.refresh_token(mine.refresh_token)
        except AuthExpiredError as exc:
            # A slower winner whose lock expired may store a rotated token yet; our refresh token was
            # then already dead. Use theirs rather than disconnecting the account. When we took over
            # its lock, it may still be retrying that store (found by `make chaos`: a FerretDB restart
            # outlasted the lock and the uploads that met the account `reauth_required` meanwhile
            # failed for good): wait for it, still holding the lock, before giving the account up.
            current = await (
                self._await_other_grant(mine) if mine.took_over_lock else self._store.get_tokens(account_id)
            )
            await self._store.release_refresh_lock(account_id, owner=self._owner)
            if current is not None and current.token_version != mine.token_version and current.access_token:
                return current.access_token
            await self._store.mark_reauth_required(account_id)
            TOKEN_REFRESHES.labels(outcome="refused").inc()
            log.warning("token_refresh_refused", account_id=account_id, code=exc.code, log_id=exc.log_id)
            raise AuthExpiredError(
                f"TikTok refused to refresh the account's tokens ({exc.code}); connect it again",
                code=ACCOUNT_REAUTH_REQUIRED,
                log_id=exc.log_id,
                http_status=exc.http_status,
            ) from exc
        except BaseException:
            await self._store.release_refresh_lock(account_id, owner=self._owner)
            TOKEN_REFRESHES.labels(outcome="error").inc()
            raise
        version = await self._store_grant(account_id, grant, until=locked_at + self._store_grant_seconds)
        TOKEN_REFRESHES.labels(outcome="refreshed").inc()
        log.info(
            "token_refreshed",
            account_id=account_id,
            token_version=version,
            expires_in=grant.expires_in,
            refresh_expires_in=grant.refresh_expires_in,
        )
        return grant.access_token

    async def _await_other_grant(self, mine: AccountTokens) -> AccountTokens | None:
        """The account's tokens once another caller stored a newer version, or as they are after
        `takeover_wait_seconds` (the grant it held is then taken to be lost)."""
        deadline = time.monotonic() + self._takeover_wait
        current: AccountTokens | None = None
        while True:
            # The database may be what the other caller waits for too: an error is waited out.
            with contextlib.suppress(RetryableError):
                current = await self._store.get_tokens(mine.account_id)
            if current is not None and current.token_version != mine.token_version:
                return current
            if time.monotonic() >= deadline:
                return current
            await self._sleep(self._takeover_poll)

    async def _store_grant(self, account_id: str, grant: TokenGrant, *, until: float) -> int:
        """Store the grant TikTok just rotated to, retrying a database failure (bounded).

        TikTok killed the old refresh token when it answered: this grant is the only live one. Given
        up at the first Mongo hiccup, it was lost, and the next refresh (with the dead token) ended
        the account `reauth_required` (found by `make chaos`, where a FerretDB restart under load
        outlasted the refresh lock). So it is retried past the lock: a caller that refreshes with
        the dead token meanwhile marks the account for reconnection, and the late store, which
        proves the grant alive, reconnects it (MongoAccountStore.store_refreshed).
        """
        delay = 0.5
        while True:
            try:
                return await self._store.store_refreshed(account_id, owner=self._owner, grant=grant)
            except RetryableError as exc:
                if time.monotonic() + delay >= until:
                    TOKEN_REFRESHES.labels(outcome="error").inc()
                    log.error("token_refresh_grant_lost", account_id=account_id, error=type(exc).__name__)
                    raise
                log.warning("token_refresh_store_retry", account_id=account_id, error=type(exc).__name__)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)


def _observe(task: asyncio.Future[str]) -> None:
    """Retrieve the outcome of a refresh whose caller left: its error was logged where it arose."""
    if not task.cancelled():
        task.exception()


# The code an account that cannot post makes its uploads fail with (terminal: only a reconnect helps).
_UNUSABLE_CODE = {
    AccountStatus.REAUTH_REQUIRED: ACCOUNT_REAUTH_REQUIRED,
    AccountStatus.DISCONNECTED: ACCOUNT_DISCONNECTED,
}


def _ensure_connected(tokens: AccountTokens) -> None:
    if tokens.status != AccountStatus.CONNECTED:
        raise AuthExpiredError(
            f"account {tokens.account_id} is {tokens.status}; the user must connect it again",
            code=_UNUSABLE_CODE.get(tokens.status, ACCOUNT_REAUTH_REQUIRED),
        )
