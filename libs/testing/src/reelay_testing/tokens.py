"""Fakes of what stands between a handler and TikTok's limits: tokens and call pacing."""

from __future__ import annotations

from collections.abc import Iterable

from reelay_common.domain.errors import AuthExpiredError
from reelay_common.ports import RateBucket


class FakeTokenProvider:
    """ports.TokenProvider handing out one fixed token; records forced refreshes."""

    def __init__(
        self,
        token: str = "act.test-token",  # noqa: S107  # a fake token for tests, not a secret
        *,
        accounts: Iterable[str] | None = None,
    ) -> None:
        self.token = token
        self.accounts = set(accounts) if accounts is not None else None
        self.refreshes: list[tuple[str, str]] = []

    def _check(self, account_id: str) -> None:
        if self.accounts is not None and account_id not in self.accounts:
            raise AuthExpiredError(f"account {account_id} is not connected", code="account_not_connected")

    async def access_token(self, account_id: str) -> str:
        """The fixed token (AuthExpiredError for accounts outside `accounts`, when given)."""
        self._check(account_id)
        return self.token

    async def force_refresh(self, account_id: str, stale_token: str) -> str:
        """Record the refresh and keep handing out the same token."""
        self._check(account_id)
        self.refreshes.append((account_id, stale_token))
        return self.token


class FakeRateLimiter:
    """ports.RateLimiter that never waits; records every acquire."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, RateBucket]] = []

    async def acquire(self, account_id: str, bucket: RateBucket) -> None:
        """Record the call and return at once."""
        self.calls.append((account_id, bucket))
