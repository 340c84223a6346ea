"""Ingest, the uploader and the status-poller running in this process through their real
composition roots (`main.run` of each), on real Kafka and FerretDB (unique topics, database and
groups), with the TikTok sandbox in-process and a local HTTP server as the video source.

Every service is started inside `tracing.exporting_to(spans)`, so each has its own tracer
provider (its own `service.name`) exporting into the one in-memory exporter; log lines are
captured with the name of the service whose task wrote them.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog
import structlog.testing
from aiohttp import web
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pymongo.asynchronous.database import AsyncDatabase
from reelay_common.logging import add_trace_id
from reelay_common.tracing import current_provider, exporting_to
from reelay_ingest.main import run as run_ingest
from reelay_ingest.settings import IngestSettings
from reelay_status_poller.main import run as run_poller
from reelay_status_poller.settings import PollerSettings
from reelay_testing.waiting import eventually
from reelay_uploader.main import run as run_uploader
from reelay_uploader.settings import UploaderSettings
from structlog.typing import EventDict, WrappedLogger
from tiktok_sandbox.media import write_sample_mp4
from tiktok_sandbox.testing import SandboxHandle, running_sandbox

API_KEY = "observability-key"
INGEST, UPLOADER, POLLER = "reelay-ingest", "reelay-uploader", "reelay-status-poller"
# Consumers join and notice each other quickly in tests.
FAST_KAFKA = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "metadata_max_age_ms": 5000}


def service_of_span(span: ReadableSpan) -> str:
    return str(span.resource.attributes.get(SERVICE_NAME))


def _add_service(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # The task that logs belongs to one service: the one whose tracing it runs under.
    provider = current_provider()
    event_dict["service"] = None if provider is None else provider.resource.attributes.get(SERVICE_NAME)
    return event_dict


@dataclass
class Services:
    """The three services running, what they run on, and what they traced and logged."""

    ingest_url: str
    uploader_ops: str
    poller_ops: str
    http: httpx.AsyncClient
    sandbox: SandboxHandle
    db: AsyncDatabase[dict[str, Any]]
    topics: dict[str, str]
    videos_url: str
    videos_dir: Path
    spans: InMemorySpanExporter
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    async def connect_account(self) -> tuple[str, str]:
        """A sandbox creator registered through POST /v1/accounts: (account_id, open_id)."""
        user = self.sandbox.add_user(f"obs-{uuid.uuid4().hex[:8]}")
        tokens = self.sandbox.issue_tokens(user.open_id)
        account_id = f"acct-{user.open_id[-10:]}"
        keys = ("open_id", "access_token", "refresh_token", "expires_in", "refresh_expires_in", "scope")
        resp = await self.http.post(
            f"{self.ingest_url}/v1/accounts",
            headers=self.auth,
            json={"account_id": account_id, **{k: tokens[k] for k in keys}},
        )
        assert resp.status_code == 201, resp.text
        return account_id, user.open_id

    def video(self, size: int) -> str:
        """The URL of a fresh sample MP4 of `size` bytes on the local video server."""
        path = write_sample_mp4(self.videos_dir / f"clip-{uuid.uuid4().hex[:8]}.mp4", size)
        return f"{self.videos_url}/{path.name}"

    async def upload_url(self, account_id: str, url: str) -> str:
        """POST /v1/uploads of a video URL as a direct post; the request_id."""
        resp = await self.http.post(
            f"{self.ingest_url}/v1/uploads",
            headers=self.auth,
            json={
                "account_id": account_id,
                "mode": "direct",
                "video_url": url,
                "post_info": {"privacy_level": "SELF_ONLY", "title": "observability #reelay"},
            },
        )
        assert resp.status_code == 202, resp.text
        return str(resp.json()["request_id"])

    async def wait_state(self, request_id: str, state: str, *, timeout: float = 120) -> dict[str, Any]:
        last: dict[str, Any] = {}

        async def reached() -> dict[str, Any] | None:
            nonlocal last
            resp = await self.http.get(f"{self.ingest_url}/v1/uploads/{request_id}", headers=self.auth)
            if resp.status_code == 200:
                last = resp.json()
            return last if last.get("state") == state else None

        try:
            return await eventually(reached, timeout=timeout, interval=0.2, what=f"{request_id} {state}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last body: {last}") from exc


async def _serve_videos(root: Path, stack: AsyncExitStack) -> str:
    async def serve(request: web.Request) -> web.StreamResponse:
        path = root / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound
        return web.FileResponse(path, headers={"Content-Type": "video/mp4"})  # Range and HEAD too

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _start(
    stack: AsyncExitStack,
    name: str,
    run: Callable[[asyncio.Event, Callable[[int], None]], Coroutine[None, None, None]],
) -> int:
    """Start one service as a task (it copies this context: the exporter); its bound port."""
    stop = asyncio.Event()
    ports: list[int] = []
    task = asyncio.create_task(run(stop, ports.append), name=name)

    async def stopped() -> None:
        stop.set()
        await asyncio.wait_for(task, timeout=60)

    stack.push_async_callback(stopped)

    async def started() -> bool:
        if task.done():
            task.result()  # its start-up failure, if any
            raise AssertionError(f"{name} stopped during start-up")
        return bool(ports)

    await eventually(started, timeout=60, what=f"{name} to start")
    return ports[0]


@asynccontextmanager
async def running_services(
    kafka: str, mongodb_uri: str, db: AsyncDatabase[dict[str, Any]], workdir: Path
) -> AsyncIterator[Services]:
    """Sandbox, video server and the three services, ready (consumers assigned); stopped after."""
    suffix = uuid.uuid4().hex[:10]
    topics = {
        "topic_upload_requested": f"obs.{suffix}.upload.requested",
        "topic_publish_events": f"obs.{suffix}.publish.events",
        "topic_publish_status": f"obs.{suffix}.publish.status",
    }
    spans = InMemorySpanExporter()
    logs = structlog.testing.LogCapture()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _add_service, add_trace_id, logs]
    )
    videos_dir = workdir / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    try:
        async with (
            AsyncExitStack() as stack,
            running_sandbox(processing_delay_seconds=1.0, moderation_delay_seconds=0.2) as sandbox,
            httpx.AsyncClient(timeout=60) as http,
        ):
            videos_url = await _serve_videos(videos_dir, stack)
            common: dict[str, Any] = {
                **topics,
                "kafka_bootstrap_servers": kafka,
                "mongodb_uri": mongodb_uri,
                "mongodb_database": db.name,
                "topic_partitions": 1,
                "tiktok_api_base_url": sandbox.base_url,
            }
            ingest = IngestSettings.model_validate(
                {**common, "api_keys": API_KEY, "host": "127.0.0.1", "port": 0, "allow_private_urls": True}
            )
            uploader = UploaderSettings.model_validate(
                {
                    **common,
                    "consumer_group": f"obs-uploader-{suffix}",
                    "allow_private_urls": True,  # the video server listens on loopback
                    "ops_host": "127.0.0.1",
                    "ops_port": 0,
                    "shutdown_grace_seconds": 2.0,
                }
            )
            poller = PollerSettings.model_validate(
                {
                    **common,
                    "consumer_group": f"obs-poller-{suffix}",
                    "min_interval_seconds": 0.2,
                    "max_interval_seconds": 1.0,
                    "idle_sleep_seconds": 0.05,
                    "ops_host": "127.0.0.1",
                    "ops_port": 0,
                    "shutdown_grace_seconds": 2.0,
                }
            )
            with exporting_to(spans):  # the tasks created here copy it: each service exports here
                ingest_port = await _start(
                    stack, INGEST, lambda stop, bound: run_ingest(ingest, stop, on_bound=bound)
                )
                uploader_port = await _start(
                    stack, UPLOADER, lambda stop, bound: run_uploader(uploader, stop, on_ops_bound=bound)
                )
                poller_port = await _start(
                    stack,
                    POLLER,
                    lambda stop, bound: run_poller(
                        poller, stop, on_ops_bound=bound, consumer_overrides=FAST_KAFKA
                    ),
                )
            services = Services(
                ingest_url=f"http://127.0.0.1:{ingest_port}",
                uploader_ops=f"http://127.0.0.1:{uploader_port}",
                poller_ops=f"http://127.0.0.1:{poller_port}",
                http=http,
                sandbox=sandbox,
                db=db,
                topics=topics,
                videos_url=videos_url,
                videos_dir=videos_dir,
                spans=spans,
                logs=logs.entries,
            )
            for ops in (services.uploader_ops, services.poller_ops):
                # Ready: Mongo and Kafka answer and the consumer holds its partition.
                await eventually(functools.partial(_ready, http, ops), timeout=60, what=f"{ops}/readyz 200")
            yield services
    finally:
        structlog.reset_defaults()


async def _ready(http: httpx.AsyncClient, base: str) -> bool:
    return (await http.get(f"{base}/readyz")).status_code == 200
