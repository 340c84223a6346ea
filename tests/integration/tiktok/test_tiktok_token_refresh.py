"""Tokens against the real sandbox and FerretDB: encrypted at rest, refreshed single-flight across
tasks and processes, rotated, lifetimes from the response, dead grants marked for reconnection."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.tiktok.tokens import MongoTokenProvider
from reelay_common.domain.errors import AuthExpiredError, InvalidInputError, TransientTikTokError
from reelay_common.domain.messages import utcnow
from reelay_common.domain.tiktok import TokenGrant
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

from tests.integration.tiktok.tiktok_it import TikTokLayer, build_layer, connect_account, sandbox_stats

WORKER = Path(__file__).with_name("refresh_worker.py")


async def refresh_calls(layer: TikTokLayer, base_url: str) -> int:
    stats = await sandbox_stats(layer.http, base_url)
    return int(stats["calls"].get("oauth_token:refresh_token", 0))


def replica(layer: TikTokLayer) -> MongoTokenProvider:
    """Another provider on the same store: what a second replica of a service would hold."""
    return MongoTokenProvider(layer.store, layer.client, poll_interval_seconds=0.02)


class TestAccessToken:
    async def test_a_valid_token_is_handed_out_without_refreshing(
        self, layer: TikTokLayer, sandbox: SandboxHandle
    ) -> None:
        _, grant = await connect_account(layer, sandbox.base_url, "acct", username="valid")
        assert await layer.tokens.access_token("acct") == grant["access_token"]
        assert await refresh_calls(layer, sandbox.base_url) == 0

    async def test_an_unknown_account_is_refused(self, layer: TikTokLayer) -> None:
        with pytest.raises(InvalidInputError) as info:
            await layer.tokens.access_token("nobody")
        assert info.value.code == "unknown_account"

    async def test_tokens_are_encrypted_at_rest(
        self, layer: TikTokLayer, sandbox: SandboxHandle, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        _, grant = await connect_account(layer, sandbox.base_url, "acct", username="sealed")
        raw = await mongo_db["accounts"].find_one({"_id": "acct"})
        assert raw is not None
        dumped = repr(raw)
        assert grant["access_token"] not in dumped
        assert grant["refresh_token"] not in dumped
        assert raw["access_token_enc"]
        assert raw["refresh_token_enc"]


class TestSingleFlightRefresh:
    async def test_concurrent_replicas_refresh_once_and_share_the_new_token(
        self, layer: TikTokLayer, sandbox: SandboxHandle
    ) -> None:
        _, grant = await connect_account(layer, sandbox.base_url, "acct", username="tasks", expires_in=1)
        providers = [replica(layer) for _ in range(8)]
        tokens = await asyncio.gather(*(p.access_token("acct") for p in providers))
        assert len(set(tokens)) == 1
        assert tokens[0] != grant["access_token"]
        assert await refresh_calls(layer, sandbox.base_url) == 1
        stored = await layer.store.get_tokens("acct")
        assert stored is not None
        assert stored.access_token == tokens[0]

    async def test_concurrent_processes_refresh_once_and_share_the_new_token(
        self,
        layer: TikTokLayer,
        sandbox: SandboxHandle,
        mongo_db: AsyncDatabase[dict[str, Any]],
        mongodb_uri: str,
    ) -> None:
        _, grant = await connect_account(layer, sandbox.base_url, "acct", username="procs", expires_in=1)
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                mongodb_uri,
                mongo_db.name,
                "acct",
                sandbox.base_url,
                "3",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(4)
        ]
        for proc in procs:  # every process imported, connected and warmed up: now race
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=120)
            assert line.strip() == b"ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        await asyncio.gather(*(p.stdin.drain() for p in procs if p.stdin is not None))
        local = await asyncio.gather(*(replica(layer).access_token("acct") for _ in range(2)))
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), timeout=120)
        tokens = list(local)
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err.decode()
            tokens.extend(json.loads(out.decode().strip().splitlines()[-1]))
        assert len(tokens) == 14
        assert len(set(tokens)) == 1, "every caller ends with the same, new token"
        assert tokens[0] != grant["access_token"]
        assert await refresh_calls(layer, sandbox.base_url) == 1

    async def test_force_refresh_with_the_same_stale_token_refreshes_once(
        self, layer: TikTokLayer, sandbox: SandboxHandle
    ) -> None:
        _, grant = await connect_account(layer, sandbox.base_url, "acct", username="stale")
        stale = grant["access_token"]
        tokens = await asyncio.gather(*(replica(layer).force_refresh("acct", stale) for _ in range(6)))
        assert len(set(tokens)) == 1
        assert tokens[0] != stale
        assert await refresh_calls(layer, sandbox.base_url) == 1
        # Someone reporting the old token again gets the current one, not another refresh.
        assert await layer.tokens.force_refresh("acct", stale) == tokens[0]
        assert await refresh_calls(layer, sandbox.base_url) == 1

    async def test_a_live_lock_of_a_crashed_replica_is_waited_out_then_taken_over(
        self, layer: TikTokLayer, sandbox: SandboxHandle, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        _, grant = await connect_account(layer, sandbox.base_url, "acct", username="crashed", expires_in=1)
        await mongo_db["accounts"].update_one(
            {"_id": "acct"},
            {
                "$set": {
                    "refresh_lock_owner": "dead-replica",
                    "refresh_lock_until": utcnow() + timedelta(seconds=1),
                }
            },
        )
        token = await replica(layer).access_token("acct")
        assert token != grant["access_token"]
        assert await refresh_calls(layer, sandbox.base_url) == 1
        raw = await mongo_db["accounts"].find_one({"_id": "acct"})
        assert raw is not None
        assert raw["refresh_lock_owner"] is None


class TestRotationAndLifetimes:
    async def test_the_rotated_refresh_token_is_stored(
        self, layer: TikTokLayer, sandbox: SandboxHandle
    ) -> None:
        _, grant = await connect_account(layer, sandbox.base_url, "acct", username="rotate")
        first = await layer.tokens.force_refresh("acct", grant["access_token"])
        stored = await layer.store.get_tokens("acct")
        assert stored is not None
        assert stored.refresh_token != grant["refresh_token"]
        # The sandbox killed the old refresh token: a second refresh only works with the new one.
        second = await layer.tokens.force_refresh("acct", first)
        assert second not in (first, grant["access_token"])
        assert await refresh_calls(layer, sandbox.base_url) == 2

    async def test_lifetimes_come_from_the_response(
        self, tt_http: httpx.AsyncClient, mongo_db: AsyncDatabase[dict[str, Any]]
    ) -> None:
        async with running_sandbox(access_token_ttl_seconds=1234, refresh_token_ttl_seconds=98765) as sb:
            layer = build_layer(tt_http, mongo_db, sb.base_url)
            _, _grant = await connect_account(layer, sb.base_url, "acct", username="ttl", expires_in=1)
            before = utcnow()
            await layer.tokens.access_token("acct")
            stored = await layer.store.get_tokens("acct")
        assert stored is not None
        assert stored.access_expires_at
        assert stored.refresh_expires_at
        assert abs((stored.access_expires_at - before).total_seconds() - 1234) < 5
        assert abs((stored.refresh_expires_at - before).total_seconds() - 98765) < 5


class TestRefreshHiccups:
    async def test_a_failed_early_refresh_falls_back_to_the_still_valid_token(
        self, layer: TikTokLayer, sandbox: SandboxHandle
    ) -> None:
        # Valid for 60 s more, inside the 300 s margin: refreshed early, but TikTok answers 5xx.
        _, grant = await connect_account(layer, sandbox.base_url, "acct", username="hiccup", expires_in=60)
        sandbox.set_faults(error_burst={"oauth_token": 1})
        assert await layer.tokens.access_token("acct") == grant["access_token"]
        record = await layer.store.get("acct")
        assert record is not None
        assert record.status == "connected"
        assert record.refresh_lock_owner is None, "the lock was released for the next caller"
        # The next call refreshes for real.
        assert await layer.tokens.access_token("acct") != grant["access_token"]

    async def test_a_failed_refresh_of_an_expired_token_is_retryable(
        self, layer: TikTokLayer, sandbox: SandboxHandle
    ) -> None:
        await connect_account(layer, sandbox.base_url, "acct", username="hiccup2", expires_in=0)
        sandbox.set_faults(error_burst={"oauth_token": 1})
        with pytest.raises(TransientTikTokError):
            await layer.tokens.access_token("acct")
        record = await layer.store.get("acct")
        assert record is not None
        assert record.status == "connected"


class TestDeadGrants:
    async def test_invalid_grant_marks_the_account_for_reconnection(
        self, layer: TikTokLayer, sandbox: SandboxHandle
    ) -> None:
        open_id, _ = await connect_account(layer, sandbox.base_url, "acct", username="revoked", expires_in=1)
        revoke = await layer.http.put(f"{sandbox.base_url}/sandbox/faults", json={"revoke_tokens": [open_id]})
        assert revoke.status_code == 200
        with pytest.raises(AuthExpiredError) as info:
            await layer.tokens.access_token("acct")
        # The upload's code says what to do; TikTok's own answer is its cause.
        assert info.value.code == "account_reauth_required"
        assert isinstance(info.value.__cause__, AuthExpiredError)
        assert info.value.__cause__.code == "invalid_grant"
        record = await layer.store.get("acct")
        assert record is not None
        assert record.status == "reauth_required"
        assert record.refresh_lock_owner is None
        # From now on nobody calls TikTok for this account until the user reconnects.
        with pytest.raises(AuthExpiredError):
            await replica(layer).access_token("acct")
        assert await refresh_calls(layer, sandbox.base_url) == 1


class TestGatewayRefresh:
    async def test_a_refused_token_is_refreshed_once_and_the_call_retried(
        self, layer: TikTokLayer, sandbox: SandboxHandle
    ) -> None:
        _, grant = await connect_account(layer, sandbox.base_url, "acct", username="refused")
        # The store believes in a token TikTok does not know (revoked elsewhere, say).
        await layer.store.upsert_tokens(
            "acct",
            TokenGrant.model_validate({**grant, "access_token": "act.not-a-live-token", "expires_in": 7200}),
        )
        info = await layer.gateway.creator_info("acct")
        assert info.creator_username == "refused"
        assert await refresh_calls(layer, sandbox.base_url) == 1
        stats = await sandbox_stats(layer.http, sandbox.base_url)
        assert stats["violations"] == {"access_token_invalid": 1}


class TestAccountStore:
    async def test_upsert_creates_then_updates_one_document(
        self, layer: TikTokLayer, sandbox: SandboxHandle
    ) -> None:
        await connect_account(layer, sandbox.base_url, "acct", username="store")
        first = await layer.store.get("acct")
        await connect_account(layer, sandbox.base_url, "acct", username="store2")
        second = await layer.store.get("acct")
        assert first is not None
        assert second is not None
        assert second.created_at == first.created_at
        assert second.token_version == first.token_version + 1
        assert second.status == "connected"

    async def test_disconnected_accounts_forget_their_tokens(
        self, layer: TikTokLayer, sandbox: SandboxHandle
    ) -> None:
        await connect_account(layer, sandbox.base_url, "acct", username="gone")
        await layer.store.mark_disconnected("acct", reason="test")
        tokens = await layer.store.get_tokens("acct")
        assert tokens is not None
        assert tokens.status == "disconnected"
        assert tokens.access_token is None
        assert tokens.refresh_token is None
        with pytest.raises(AuthExpiredError):
            await layer.tokens.access_token("acct")

    async def test_marking_an_unknown_account_is_refused(self, layer: TikTokLayer) -> None:
        with pytest.raises(InvalidInputError):
            await layer.store.mark_reauth_required("nobody")
        assert await layer.store.get("nobody") is None
