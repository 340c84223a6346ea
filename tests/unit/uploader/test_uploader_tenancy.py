"""Specification of tenancy in the uploader: a command is its tenant's, and one naming an account of
another tenant is dead-lettered before anything is stored or posted (docs/architecture.md, "Tenants")."""

from __future__ import annotations

from typing import cast

import pytest
from reelay_common.domain.errors import InvalidInputError
from reelay_common.domain.messages import DeadLetter, UploadRequested, VideoUploaded
from reelay_common.domain.states import UploadState
from reelay_testing.stores import FakeAccountStore
from reelay_uploader.handlers import (
    ACCOUNT_NOT_IN_TENANT,
    handle_dead_letter,
    handle_upload_requested,
)

from tests.unit.uploader.test_upload_handler import EVENTS, World, direct, make_world


def of_tenant(cmd: UploadRequested, tenant_id: str) -> UploadRequested:
    return cmd.model_copy(update={"tenant_id": tenant_id})


def with_accounts(*keys: str) -> World:
    world = make_world()
    for key in keys:
        cast(FakeAccountStore, world.deps.accounts).add_connected(key)
    return world


class TestAnotherTenantsAccount:
    async def test_is_dead_lettered_with_the_reason_and_nothing_is_stored_or_posted(self) -> None:
        world = with_accounts("team-a~acct-a")
        cmd = of_tenant(direct("req-x").model_copy(update={"account_id": "acct-a"}), "team-b")
        with pytest.raises(InvalidInputError) as refused:  # the consumer loop dead-letters it
            await handle_upload_requested(cmd, world.deps)
        assert refused.value.code == ACCOUNT_NOT_IN_TENANT
        assert "team-b" in refused.value.message
        assert world.uploads.records == {}
        assert world.tiktok.inits == []
        assert world.publisher.sent == []

    async def test_its_dead_letter_fails_no_upload_of_that_request_id(self) -> None:
        world = with_accounts("team-b~acct-b")
        own = of_tenant(direct("req-x").model_copy(update={"account_id": "acct-b"}), "team-b")
        await world.uploads.create(own, source="ingest")
        letter = DeadLetter(
            topic="t",
            partition=0,
            offset=1,
            value="{}",
            reason=ACCOUNT_NOT_IN_TENANT,
            error="InvalidInputError: ...",
            request_id="req-x",
            account_id="acct-a",
            tenant_id="team-b",
        )
        await handle_dead_letter(letter, world.deps)
        assert await world.state("team-b~req-x") is UploadState.ACCEPTED

    async def test_a_default_tenant_command_for_an_unknown_account_is_refused_the_same_way(self) -> None:
        world = make_world()
        with pytest.raises(InvalidInputError) as refused:
            await handle_upload_requested(direct().model_copy(update={"account_id": "nobody"}), world.deps)
        assert refused.value.code == ACCOUNT_NOT_IN_TENANT
        assert world.uploads.records == {}


class TestTwoTenants:
    async def test_the_same_ids_are_two_uploads_each_posted_for_its_own_account(self) -> None:
        world = with_accounts("team-a~acct-1", "team-b~acct-1")
        for tenant in ("team-a", "team-b"):
            await handle_upload_requested(of_tenant(direct(), tenant), world.deps)
        assert await world.state("team-a~req-1") is UploadState.UPLOADED
        assert await world.state("team-b~req-1") is UploadState.UPLOADED
        assert await world.uploads.get("req-1") is None  # the default tenant's is another upload
        assert sorted(i["account_id"] for i in world.tiktok.inits) == ["team-a~acct-1", "team-b~acct-1"]
        events = [(m, k) for t, m, k in world.publisher.sent if t == EVENTS]
        assert sorted(
            (m.request_id, m.account_id, m.tenant_id, k) for m, k in events if isinstance(m, VideoUploaded)
        ) == [
            ("req-1", "acct-1", "team-a", "team-a~acct-1"),
            ("req-1", "acct-1", "team-b", "team-b~acct-1"),
        ]

    async def test_a_dead_letter_fails_the_upload_of_its_own_tenant_only(self) -> None:
        world = with_accounts("team-a~acct-1")
        await world.uploads.create(direct(), source="ingest")
        await world.uploads.create(of_tenant(direct(), "team-a"), source="ingest")
        letter = DeadLetter(
            topic="t",
            partition=0,
            offset=1,
            value="{}",
            reason="handler_failed",
            error="boom",
            request_id="req-1",
            account_id="acct-1",
            tenant_id="team-a",
        )
        await handle_dead_letter(letter, world.deps)
        assert await world.state("team-a~req-1") is UploadState.FAILED
        assert await world.state("req-1") is UploadState.ACCEPTED
