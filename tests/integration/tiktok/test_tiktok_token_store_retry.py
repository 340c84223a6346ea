"""A refreshed grant survives a database hiccup: TikTok rotated the refresh token when it answered,
so the grant in hand is the only live one (found by `make chaos`: a Mongo failure right after the
refresh lost it, and the account ended `reauth_required` at its next refresh)."""

from __future__ import annotations

from typing import Any

import pytest
from reelay_common.domain.errors import DatabaseUnavailableError
from tiktok_sandbox.testing import SandboxHandle

from tests.integration.tiktok.tiktok_it import TikTokLayer, connect_account


async def test_a_grant_whose_first_store_fails_is_stored_and_the_account_stays_connected(
    layer: TikTokLayer, sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, grant = await connect_account(layer, sandbox.base_url, "acct", username="store-hiccup", expires_in=1)
    real = layer.store.store_refreshed
    failures = 0

    async def flaky(*args: Any, **kwargs: Any) -> int:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise DatabaseUnavailableError("server selection timed out")
        return await real(*args, **kwargs)

    monkeypatch.setattr(layer.store, "store_refreshed", flaky)

    token = await layer.tokens.access_token("acct")

    assert failures == 2
    assert token != grant["access_token"]
    stored = await layer.store.get_tokens("acct")
    assert stored is not None
    assert stored.access_token == token
    assert stored.refresh_token != grant["refresh_token"], "the rotated refresh token was not kept"
    # The refresh token kept is TikTok's live one: the next refresh works.
    assert await layer.tokens.force_refresh("acct", token) != token
    record = await layer.store.get("acct")
    assert record is not None
    assert record.status == "connected"
