"""The ingest service as it runs: real uvicorn on a free port, real Kafka and FerretDB, the
in-process TikTok sandbox. Topics and database are unique per test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.adapters.ops_server import serve_app
from reelay_ingest.main import run
from reelay_ingest.settings import IngestSettings
from reelay_testing.waiting import eventually
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

API_KEY = "integration-key"


@dataclass
class IngestWorld:
    """A running ingest service and what it is connected to."""

    base_url: str
    http: httpx.AsyncClient
    settings: IngestSettings
    db: AsyncDatabase[dict[str, Any]]
    sandbox: SandboxHandle
    bootstrap: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    async def connect_account(self, *, private: bool = False) -> str:
        """A sandbox creator whose tokens are registered through POST /v1/accounts. Returns account_id."""
        username = f"it-{uuid.uuid4().hex[:8]}"
        user = self.sandbox.add_user(username, private_account=private)
        tokens = self.sandbox.issue_tokens(user.open_id)
        account_id = f"acct-{username}"
        resp = await self.http.post(
            "/v1/accounts",
            headers=self.auth,
            json={
                "account_id": account_id,
                **{
                    k: tokens[k]
                    for k in (
                        "open_id",
                        "access_token",
                        "refresh_token",
                        "expires_in",
                        "refresh_expires_in",
                        "scope",
                    )
                },
            },
        )
        assert resp.status_code == 201, resp.text
        return account_id


def unique_settings(
    bootstrap: str, mongodb_uri: str, database: str, sandbox_url: str, **overrides: Any
) -> IngestSettings:
    suffix = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "mongodb_uri": mongodb_uri,
        "mongodb_database": database,
        "topic_upload_requested": f"it.ingest.requested.{suffix}",
        "topic_publish_events": f"it.ingest.events.{suffix}",
        "topic_publish_status": f"it.ingest.status.{suffix}",
        "topic_partitions": 1,
        "tiktok_api_base_url": sandbox_url,
        "api_keys": API_KEY,
        "host": "127.0.0.1",
        "port": 0,
    }
    values.update(overrides)
    return IngestSettings(**values)


@asynccontextmanager
async def served(settings: IngestSettings, *, app: FastAPI | None = None) -> AsyncIterator[str]:
    """Run ingest on a free port as `python -m reelay_ingest` does (`main.run`), or serve `app`
    (over fakes) the same way; stopped gracefully on exit."""
    stop = asyncio.Event()
    ports: list[int] = []
    if app is None:
        service = run(settings, stop, on_bound=ports.append)
    else:
        service = serve_app(app, host="127.0.0.1", port=0, stop=stop, on_bound=ports.append)
    task = asyncio.create_task(service)
    try:
        await eventually(lambda: _started(ports, task), timeout=60, what="ingest to start")
        yield f"http://127.0.0.1:{ports[0]}"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def _started(ports: list[int], task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()  # raise the start-up failure, if any
        raise AssertionError("ingest stopped during start-up")
    return bool(ports)


@asynccontextmanager
async def ingest_world(
    bootstrap: str, mongodb_uri: str, db: AsyncDatabase[dict[str, Any]], **overrides: Any
) -> AsyncIterator[IngestWorld]:
    """Sandbox + ingest (real uvicorn) + an HTTP client to it."""
    async with running_sandbox() as sandbox:
        settings = unique_settings(bootstrap, mongodb_uri, db.name, sandbox.base_url, **overrides)
        async with served(settings) as base_url, httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            yield IngestWorld(base_url, http, settings, db, sandbox, bootstrap)
