"""Specification of `make up`'s dev tenant: made once with `reelay-admin` on the real database, its
key kept for the next run while ingest accepts it, replaced when it no longer works."""

from __future__ import annotations

import stat
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.domain.api_keys import key_digest
from reelay_dev import config as c
from reelay_dev.dev_tenant import DevTenantError, ensure_dev_key, key_file


@pytest.fixture
async def stack_db(
    mongo_client: Any, mongodb_uri: str, tmp_path: Path
) -> AsyncIterator[tuple[c.StackConfig, dict[str, str], AsyncDatabase[dict[str, Any]]]]:
    name = f"reelay_devtenant_{uuid.uuid4().hex[:12]}"
    env = {"MONGODB_URI": mongodb_uri, "MONGODB_DATABASE": name, "REELAY_RUN_DIR": str(tmp_path / "run")}
    cfg = c.StackConfig.from_env(tmp_path, env, python=sys.executable)
    try:
        yield cfg, env, mongo_client[name]
    finally:
        await mongo_client.drop_database(name)


def ingest_answering(status: int, seen: list[str]) -> httpx.AsyncClient:
    """An ingest stand-in that answers `status` to every key it is shown (and notes the key)."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"].removeprefix("Bearer "))
        return httpx.Response(status, json={"items": [], "count": 0})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def test_the_key_is_made_once_kept_and_replaced_when_it_stops_working(
    stack_db: tuple[c.StackConfig, dict[str, str], AsyncDatabase[dict[str, Any]]],
) -> None:
    cfg, env, db = stack_db
    said: list[str] = []
    seen: list[str] = []
    async with ingest_answering(200, seen) as http:
        key = await ensure_dev_key(cfg, env, http, said.append)
        assert key.startswith("rly_")
        assert key_file(cfg).read_text().strip() == key
        assert stat.S_IMODE(key_file(cfg).stat().st_mode) == 0o600
        [doc] = await db["api_keys"].find({}).to_list(None)
        assert (doc["tenant_id"], doc["digest"]) == ("dev", key_digest(key))
        assert await db["tenants"].count_documents({"_id": "dev"}) == 1

        again = await ensure_dev_key(cfg, env, http, said.append)
        assert again == key, "a key that works is used again"
        assert seen == [key]
        assert await db["api_keys"].count_documents({}) == 1

    async with ingest_answering(401, seen) as http:  # revoked, say
        fresh = await ensure_dev_key(cfg, env, http, said.append)
    assert fresh != key
    assert key_file(cfg).read_text().strip() == fresh
    assert await db["api_keys"].count_documents({"tenant_id": "dev"}) == 2
    assert await db["tenants"].count_documents({}) == 1
    assert any("no longer works" in line for line in said)


async def test_a_refusal_of_reelay_admin_is_reported(tmp_path: Path) -> None:
    env = {"REELAY_RUN_DIR": str(tmp_path)}
    cfg = c.StackConfig.from_env(tmp_path, env, python="/bin/false")  # a reelay-admin that fails
    async with ingest_answering(200, []) as http:
        with pytest.raises(DevTenantError, match=r"reelay-admin tenants create dev .* exited 1"):
            await ensure_dev_key(cfg, env, http, print)
    assert not key_file(cfg).exists()
