"""The composition root of the status-poller: Mongo, Kafka, TikTok, the consumer of publish events,
the poll scheduler and the ops server, all built here and closed in reverse on shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from reelay_common.adapters.crypto import TokenCipher
from reelay_common.adapters.kafka.consumer import ConsumerLoop, RecordContext
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
from reelay_common.domain.messages import PUBLISH_EVENT_ADAPTER, PublishEvent, utcnow
from reelay_common.domain.records import UploadRecord
from reelay_common.logging import get_logger
from reelay_common.recorder import StateRecorder

from reelay_status_poller.handlers import (
    PollerDeps,
    PollOutcome,
    PollPolicy,
    handle_publish_event,
    poll_once,
)
from reelay_status_poller.scheduler import PollScheduler
from reelay_status_poller.settings import PollerSettings

log = get_logger(__name__)

# One status/fetch may use this share of the lease (pacing wait included), so it always ends,
# and its outcome is written, well before another replica could take the upload over.
FETCH_SHARE_OF_LEASE = 0.6


@dataclass
class Poller:
    """A built status-poller: run it until `stop` is set."""

    settings: PollerSettings
    deps: PollerDeps
    consumer: ConsumerLoop[PublishEvent]
    scheduler: PollScheduler
    checks: Mapping[str, Callable[[], Awaitable[bool]]]

    async def run(self, stop: asyncio.Event, *, on_ops_bound: Callable[[int], None] | None = None) -> None:
        """Consume publish events, poll due uploads and serve ops until `stop`; fail fast if one dies."""
        log.info(
            "status_poller_started",
            topic=self.settings.topic_publish_events,
            group_id=self.settings.consumer_group,
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._until_stop(self.consumer.run(stop), stop), name="consumer")
                group.create_task(self._until_stop(self.scheduler.run(stop), stop), name="scheduler")
                group.create_task(
                    serve_ops(
                        host=self.settings.ops_host,
                        port=self.settings.ops_port,
                        checks=self.checks,
                        stop=stop,
                        on_bound=on_ops_bound,
                    ),
                    name="ops",
                )
        finally:
            log.info("status_poller_stopped")

    @staticmethod
    async def _until_stop(work: Awaitable[None], stop: asyncio.Event) -> None:
        # A part that ends on its own, without stop, is broken: stop the others rather than
        # run half a poller (the orchestrator restarts the process).
        await work
        if not stop.is_set():
            stop.set()
            raise RuntimeError("a status-poller component stopped on its own")


def policy_from(settings: PollerSettings) -> PollPolicy:
    """The poll schedule the settings describe."""
    return PollPolicy(
        min_interval=settings.min_interval_seconds,
        max_interval=settings.max_interval_seconds,
        backoff_factor=settings.backoff_factor,
        give_up_after=settings.give_up_after_seconds,
        post_id_watch=settings.post_id_watch_seconds,
        fetch_timeout=settings.lease_seconds * FETCH_SHARE_OF_LEASE,
    )


@asynccontextmanager
async def build_poller(settings: PollerSettings, **consumer_overrides: Any) -> AsyncIterator[Poller]:
    """Connect everything the poller needs; on exit close it all, in reverse."""
    async with AsyncExitStack() as stack:
        mongo = connect(settings.mongodb_uri.get_secret_value(), app_name="reelay-status-poller")
        stack.push_async_callback(mongo.close)
        db = mongo[settings.mongodb_database]
        await ensure_indexes(db)

        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [settings.topic_publish_events],
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
        )
        # The status topic is outbound only: nobody here consumes it, so it has no dead letters.
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [settings.topic_publish_status],
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            with_dlq=False,
        )
        publisher = await stack.enter_async_context(
            KafkaPublisher(settings.kafka_bootstrap_servers, client_id="reelay-status-poller")
        )
        uploads = MongoUploadStore(db)
        recorder = StateRecorder(uploads, publisher, status_topic=settings.topic_publish_status)

        policy = policy_from(settings)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=settings.tiktok_timeout_seconds))
        client = TikTokClient.from_settings(http, settings)
        accounts = MongoAccountStore(db, TokenCipher(settings.token_encryption_key))
        gateway = TikTokGateway(
            client,
            MongoTokenProvider(accounts, client),
            # A poll that would wait long for a status slot is rescheduled instead (RateLimitedError
            # with retry_after), so it never sits on its lease.
            MongoRateLimiter(db, max_wait_seconds=policy.fetch_timeout / 2),
            # Same for TikTok's own 429: the scheduler's next poll is the retry.
            max_rate_limit_retries=0,
        )

        deps = PollerDeps(uploads=uploads, recorder=recorder, tiktok=gateway, policy=policy, clock=utcnow)

        async def handle(event: PublishEvent, ctx: RecordContext) -> None:
            await handle_publish_event(event, deps)

        consumer: ConsumerLoop[PublishEvent] = ConsumerLoop(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.consumer_group,
            topic=settings.topic_publish_events,
            decode=PUBLISH_EVENT_ADAPTER.validate_json,
            handle=handle,
            publisher=publisher,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
            client_id="reelay-status-poller",
            **consumer_overrides,
        )

        async def poll(record: UploadRecord) -> PollOutcome:
            return await poll_once(record, deps)

        scheduler = PollScheduler(
            uploads=uploads,
            poll=poll,
            clock=utcnow,
            lease_seconds=settings.lease_seconds,
            concurrency=settings.scheduler_concurrency,
            idle_sleep_seconds=settings.idle_sleep_seconds,
            error_retry_seconds=settings.max_interval_seconds,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
        )

        async def mongo_ready() -> bool:
            return await ping(mongo)

        async def consumer_ready() -> bool:
            return consumer.is_healthy()

        async def scheduler_ready() -> bool:
            return scheduler.is_healthy()

        log.info(
            "status_poller_connected",
            database=settings.mongodb_database,
            kafka=settings.kafka_bootstrap_servers,
            tiktok=settings.tiktok_api_base_url,
        )
        yield Poller(
            settings=settings,
            deps=deps,
            consumer=consumer,
            scheduler=scheduler,
            checks={
                "mongo": mongo_ready,
                "kafka": publisher.healthy,
                "consumer": consumer_ready,
                "scheduler": scheduler_ready,
            },
        )


async def run(settings: PollerSettings, stop: asyncio.Event) -> None:
    """Build the poller and run it until `stop` is set."""
    async with build_poller(settings) as poller:
        await poller.run(stop)
