"""The skeleton every service runs on: connect the shared infrastructure from settings, then
supervise the service's workers (consumer loops, background loops, HTTP servers) until stopped.

A service's `main.py` reads: settings -> `Infrastructure.connect` -> handlers with their deps ->
`supervise({...}, stop)`, started by `run_service` from its console script, which turns the first
SIGTERM/SIGINT into `stop` (so a signal during start-up or teardown is graceful too).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, TypeVar

import httpx
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor, RequestInfo
from opentelemetry.trace import Span
from pydantic import ValidationError
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from reelay_common.adapters.blobs import open_blob_store
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.http_transport import AiohttpTransport
from reelay_common.adapters.kafka.publisher import KafkaPublisher
from reelay_common.adapters.kafka.topics import ensure_topics
from reelay_common.adapters.mongo.accounts import MongoAccountStore
from reelay_common.adapters.mongo.client import connect, ensure_indexes, ping
from reelay_common.adapters.mongo.rate_limits import MongoRateLimiter
from reelay_common.adapters.mongo.uploads import MongoUploadStore
from reelay_common.adapters.ops_server import serve_ops
from reelay_common.adapters.tiktok.client import TikTokClient
from reelay_common.adapters.tiktok.gateway import TikTokGateway
from reelay_common.adapters.tiktok.tokens import MongoTokenProvider
from reelay_common.faults import crash_once
from reelay_common.logging import configure_logging, get_logger
from reelay_common.outbox import OutboxRelay
from reelay_common.ports import BlobStore
from reelay_common.readiness import Check
from reelay_common.recorder import StateRecorder
from reelay_common.settings import CommonSettings
from reelay_common.tracing import current_provider, service_tracing

log = get_logger("reelay_common.runtime")

S = TypeVar("S", bound=CommonSettings)

# A worker runs until the event is set, then finishes what it holds (within its own grace) and returns.
Worker = Callable[[asyncio.Event], Awaitable[None]]

# On a hard stop (the supervisor cancelled), how long the cancelled workers get to unwind.
HARD_STOP_SECONDS = 10.0


class ConsumerSettings(Protocol):
    """What the settings of a service that consumes a topic say of its consumer."""

    @property
    def kafka_bootstrap_servers(self) -> str: ...

    @property
    def consumer_group(self) -> str: ...

    @property
    def shutdown_grace_seconds(self) -> float: ...


class ServiceConsumer(TypedDict):
    """ConsumerLoop keywords a service takes from its settings and infrastructure (`**` them in)."""

    bootstrap_servers: str
    group_id: str
    publisher: KafkaPublisher
    shutdown_grace_seconds: float
    client_id: str


class WorkerStopped(RuntimeError):
    """A worker returned while no stop was asked for: the service is broken, so it stops."""


@dataclass(frozen=True)
class Infrastructure:
    """The connected clients and adapters the services share (Mongo, Kafka, TikTok, the blob store)."""

    mongo: AsyncMongoClient[dict[str, Any]]
    db: AsyncDatabase[dict[str, Any]]
    publisher: KafkaPublisher
    tiktok: TikTokClient
    accounts: MongoAccountStore
    tokens: MongoTokenProvider
    uploads: MongoUploadStore
    outbox: OutboxRelay
    recorder: StateRecorder
    blobs: BlobStore

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        settings: CommonSettings,
        *,
        app_name: str,
        topics: Sequence[str] = (),
        topics_without_dlq: Sequence[str] = (),
    ) -> AsyncIterator[Infrastructure]:
        """Connect Mongo (indexes ensured), ensure `topics` (each with its `.dlq`) and
        `topics_without_dlq`, start the Kafka publisher and the TikTok HTTP client, open the
        configured blob store (REELAY_BLOB_STORE), with the service's tracing (OTEL_*) set up
        first; on exit close them all, in reverse (spans flushed last)."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(service_tracing(app_name))  # OTEL_*: off unless configured
            mongo: AsyncMongoClient[dict[str, Any]] = connect(
                settings.mongodb_uri.get_secret_value(), app_name=app_name
            )
            stack.push_async_callback(mongo.close)
            db = mongo[settings.mongodb_database]
            await ensure_indexes(db)

            for names, with_dlq in ((topics, True), (topics_without_dlq, False)):
                if names:
                    await ensure_topics(
                        settings.kafka_bootstrap_servers,
                        list(names),
                        partitions=settings.topic_partitions,
                        replication_factor=settings.topic_replication_factor,
                        with_dlq=with_dlq,
                    )
            publisher = await stack.enter_async_context(
                KafkaPublisher(settings.kafka_bootstrap_servers, client_id=app_name)
            )
            tiktok_http = await stack.enter_async_context(
                instrument_http_client(tiktok_http_client(settings.tiktok_timeout_seconds))
            )
            tiktok = TikTokClient.from_settings(tiktok_http, settings)
            accounts = MongoAccountStore(db, TokenCipher(settings.token_keys()))
            uploads = MongoUploadStore(db)
            outbox = OutboxRelay(
                uploads,
                publisher,
                requested_topic=settings.topic_upload_requested,
                status_topic=settings.topic_publish_status,
                send_timeout_seconds=settings.outbox_send_timeout_seconds,
                lease_seconds=settings.outbox_lease_seconds,
                interval_seconds=settings.outbox_interval_seconds,
                before_send=crash_once(settings.crash_before_send),
            )
            blobs = await open_blob_store(settings, stack, db=db)  # local, s3 or gridfs
            log.info(
                "infrastructure_connected",
                service=app_name,
                database=settings.mongodb_database,
                kafka=settings.kafka_bootstrap_servers,
                tiktok=settings.tiktok_api_base_url,
                blob_store=blobs.kind,
            )
            yield cls(
                mongo=mongo,
                db=db,
                publisher=publisher,
                tiktok=tiktok,
                accounts=accounts,
                tokens=MongoTokenProvider(accounts, tiktok),
                uploads=uploads,
                outbox=outbox,
                recorder=StateRecorder(uploads, outbox),
                blobs=blobs,
            )

    def rate_limiter(self, *, max_wait_seconds: float | None = None) -> MongoRateLimiter:
        """TikTok's per-account pacing, shared by every replica; waits at most `max_wait_seconds`."""
        return MongoRateLimiter(self.db, max_wait_seconds=max_wait_seconds)

    def tiktok_gateway(
        self,
        *,
        max_wait_seconds: float | None = None,
        max_rate_limit_retries: int = 3,
        backoff_max: float = 30.0,
    ) -> TikTokGateway:
        """The TikTokApi port: this client, the token provider and a rate limiter, paced as asked."""
        return TikTokGateway(
            self.tiktok,
            self.tokens,
            self.rate_limiter(max_wait_seconds=max_wait_seconds),
            max_rate_limit_retries=max_rate_limit_retries,
            backoff_max=backoff_max,
            on_grant_refused=self.tokens.grant_refused,
        )

    def consumer_options(self, settings: ConsumerSettings, *, app_name: str) -> ServiceConsumer:
        """The arguments of a service's ConsumerLoop that come from its settings and this
        infrastructure: its group, dead letters sent by this publisher, its shutdown grace."""
        return ServiceConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.consumer_group,
            publisher=self.publisher,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
            client_id=app_name,
        )

    async def mongo_ready(self) -> bool:
        """Whether MongoDB answers a ping."""
        return await ping(self.mongo)

    def ready_checks(self) -> dict[str, Check]:
        """The readiness checks of the shared infrastructure: Mongo answers, the producer sees Kafka."""
        return {"mongo": self.mongo_ready, "kafka": self.publisher.healthy}


def tiktok_transport() -> httpx.AsyncBaseTransport:
    """The transport of every call to TikTok: httpx's API over aiohttp's connections (HTTP parsed
    in C; docs/design.md, "HTTP underneath"), proxies and CA bundle from the environment as
    httpx's default client takes them."""
    return AiohttpTransport(trust_env=True)


def tiktok_http_client(timeout_seconds: float) -> httpx.AsyncClient:
    """The client of every call to TikTok (`tiktok_transport`), each timeout `timeout_seconds`."""
    return httpx.AsyncClient(timeout=timeout_seconds, transport=tiktok_transport())


def instrument_http_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Give `client` CLIENT spans (and a `traceparent` on its requests) when tracing is on; the
    spans' URLs lose their query (TikTok's upload URL carries its upload_token there)."""
    provider = current_provider()
    if provider is not None:
        HTTPXClientInstrumentor.instrument_client(
            client, tracer_provider=provider, request_hook=_url_without_query
        )
    return client


async def _url_without_query(span: Span, request: RequestInfo) -> None:
    if span.is_recording() and isinstance(request.url, httpx.URL) and request.url.query:
        url = str(request.url.copy_with(query=None))
        span.set_attributes({"http.url": url, "url.full": url})  # the old and the new convention


def ops_server(
    *, host: str, port: int, checks: Mapping[str, Check], on_bound: Callable[[int], None] | None = None
) -> Worker:
    """The ops server (/healthz, /readyz over `checks`, /metrics) as a worker."""

    async def serve(stop: asyncio.Event) -> None:
        await serve_ops(host=host, port=port, checks=checks, stop=stop, on_bound=on_bound)

    return serve


async def supervise(workers: Mapping[str, Worker], stop: asyncio.Event) -> None:
    """Run `workers` together until `stop` is set, then wait until each has finished.

    When one fails or returns on its own, the others are stopped gracefully and the first failure
    is raised. Cancelled (a hard stop), the workers are cancelled too: no grace, nothing committed.
    """
    tasks = [asyncio.create_task(_run_worker(name, work, stop), name=name) for name, work in workers.items()]
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=HARD_STOP_SECONDS)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a hard stop reports the cancellation, not these
        raise
    failures = [exc for task in tasks if (exc := task.exception()) is not None]
    for extra in failures[1:]:
        log.error("worker_also_failed", error=f"{type(extra).__name__}: {extra}")
    if failures:
        raise failures[0]


@contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT set `stop` (a graceful shutdown) instead of killing."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, stop, sig.name)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _request_stop(stop: asyncio.Event, signame: str) -> None:
    if stop.is_set():
        log.info("shutdown_already_requested", signal=signame)
        return
    # Each worker finishes or hands back what it holds within its own grace period, then returns.
    log.info("shutdown_requested", signal=signame)
    stop.set()


async def _run_worker(name: str, work: Worker, stop: asyncio.Event) -> None:
    try:
        await work(stop)
    except Exception as exc:
        # Re-raised unchanged: the supervisor raises it (with its traceback) once the others stopped.
        log.error("worker_failed", worker=name, error=f"{type(exc).__name__}: {exc}")
        stop.set()
        raise
    if not stop.is_set():
        # Half a service must not keep running (the orchestrator restarts the process).
        stop.set()
        raise WorkerStopped(f"the {name} worker stopped on its own")


Serve = Callable[[S, asyncio.Event], Awaitable[None]]


def run_service(name: str, settings_type: type[S], serve: Serve[S]) -> None:
    """A console entry point: read the settings (exit 2 if invalid), configure logging, run
    `serve(settings, stop)` with SIGTERM/SIGINT setting `stop`, until it returns (exit 0) or
    fails (logged, exit 1)."""
    try:
        settings = settings_type()
    except ValidationError as exc:
        print(f"{name}: invalid settings:\n{exc}", file=sys.stderr)  # before logging exists
        raise SystemExit(2) from exc
    configure_logging(settings.log_level, settings.log_format)
    log.info("service_starting", service=name, environment=settings.environment)
    try:
        asyncio.run(_serve(serve, settings))
    except Exception as exc:
        log.error("service_crashed", service=name, exc_info=exc)
        raise SystemExit(1) from None


async def _serve(serve: Serve[S], settings: S) -> None:
    stop = asyncio.Event()
    with stop_on_signals(stop):
        await serve(settings, stop)
