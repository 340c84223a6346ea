"""A refreshed grant survives a database hiccup: TikTok rotated the refresh token when it answered,
so the grant in hand is the only live one (found by `make chaos`: a FerretDB restart right after a
refresh lost the grant, and the account ended `reauth_required` at its next refresh)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from reelay_common.adapters.tiktok.tokens import MongoTokenProvider
from reelay_common.domain.errors import AuthExpiredError, DatabaseUnavailableError
from reelay_testing.waiting import eventually
from tiktok_sandbox.testing import SandboxHandle

from tests.integration.tiktok.tiktok_it import TikTokLayer, connect_account


async def test_a_grant_whose_store_fails_past_the_lock_is_stored_and_the_account_stays_connected(
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
    # A lock shorter than the retries (0.5 s + 1 s): the grant is still stored after it expired.
    provider = MongoTokenProvider(layer.store, layer.client, lock_seconds=0.2)

    token = await provider.access_token("acct")

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


async def test_a_late_grant_reconnects_an_account_a_racing_refresh_marked_dead(
    layer: TikTokLayer, sandbox: SandboxHandle
) -> None:
    _, grant = await connect_account(layer, sandbox.base_url, "acct", username="late-grant", expires_in=1)
    seen = await layer.store.get_tokens("acct")
    assert seen is not None
    mine = await layer.store.try_lock_refresh(
        "acct", owner="slow", expect_version=seen.token_version, lock_seconds=0.01
    )
    assert mine is not None
    live = await layer.client.refresh_token(grant["refresh_token"])  # TikTok rotates now
    # Our lock expired while the store was down; another caller took it over, refreshed with the
    # dead token and waited for us no longer than it was told to.
    racer = MongoTokenProvider(layer.store, layer.client, takeover_wait_seconds=0.2)
    with pytest.raises(AuthExpiredError):
        await racer.access_token("acct")
    marked = await layer.store.get("acct")
    assert marked is not None
    assert marked.status == "reauth_required"

    await layer.store.store_refreshed("acct", owner="slow", grant=live)

    record = await layer.store.get("acct")
    assert record is not None
    assert record.status == "connected", "the live grant was stored, yet the account stays dead"
    assert await layer.tokens.access_token("acct") == live.access_token


async def test_a_refresh_that_took_over_an_expired_lock_waits_for_its_owners_late_grant(
    layer: TikTokLayer, sandbox: SandboxHandle
) -> None:
    # make chaos: a FerretDB restart outlasted the refresh lock; the caller that took it over met
    # invalid_grant, marked the account reauth_required, and the uploads meeting that failed for good
    # although the slow owner stored the live grant moments later.
    _, grant = await connect_account(layer, sandbox.base_url, "acct", username="takeover", expires_in=1)
    seen = await layer.store.get_tokens("acct")
    assert seen is not None
    slow = await layer.store.try_lock_refresh(
        "acct", owner="slow", expect_version=seen.token_version, lock_seconds=0.01
    )
    assert slow is not None
    assert not slow.took_over_lock
    live = await layer.client.refresh_token(grant["refresh_token"])  # TikTok rotates now
    await asyncio.sleep(0.05)  # the slow owner's lock expires

    racer = asyncio.create_task(
        MongoTokenProvider(layer.store, layer.client, takeover_wait_seconds=30).access_token("acct")
    )

    async def racer_locked() -> bool:
        doc = await layer.store.get("acct")
        return doc is not None and doc.refresh_lock_owner not in (None, "slow")

    await eventually(racer_locked, timeout=30, interval=0.05, what="the racer to take over the lock")
    await asyncio.sleep(1.0)  # it has met invalid_grant by now, and waits
    assert not racer.done()
    waiting = await layer.store.get("acct")
    assert waiting is not None
    assert waiting.status == "connected", "the account was given up while the live grant was on its way"

    await layer.store.store_refreshed("acct", owner="slow", grant=live)

    assert await asyncio.wait_for(racer, timeout=30) == live.access_token
    record = await layer.store.get("acct")
    assert record is not None
    assert record.status == "connected"
    assert record.refresh_lock_owner is None, "the racer kept its lock"


async def test_a_caller_cancelled_while_the_grant_is_stored_does_not_lose_it(
    layer: TikTokLayer, sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The status-poller's per-poll timeout cancelled a poll whose token refresh TikTok had answered.
    _, grant = await connect_account(layer, sandbox.base_url, "acct", username="cancelled", expires_in=1)
    real = layer.store.store_refreshed
    storing = asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> int:
        storing.set()
        await asyncio.sleep(0.3)
        return await real(*args, **kwargs)

    monkeypatch.setattr(layer.store, "store_refreshed", slow)
    caller = asyncio.create_task(layer.tokens.access_token("acct"))
    await storing.wait()  # TikTok has rotated; the new grant is on its way to Mongo
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller

    async def stored() -> str | None:
        tokens = await layer.store.get_tokens("acct")
        assert tokens is not None
        return tokens.refresh_token if tokens.refresh_token != grant["refresh_token"] else None

    await eventually(stored, timeout=30, interval=0.1, what="the rotated grant to be stored")
    token = await layer.tokens.access_token("acct")
    assert await layer.tokens.force_refresh("acct", token) != token  # the stored one is TikTok's live one
