"""The status-poller's composition root: settings -> infrastructure -> handler deps -> the consumer
of publish events, the poll scheduler and the ops server, supervised until SIGTERM."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any

from reelay_common.adapters.callbacks import callback_sender
from reelay_common.adapters.kafka.consumer import ConsumerLoop, RecordContext
from reelay_common.adapters.mongo.poll_profiles import MongoPollProfiles
from reelay_common.adapters.mongo.webhooks import MongoWebhookLedger
from reelay_common.domain.messages import PUBLISH_EVENT_ADAPTER, PublishEvent, PublishStatusChanged, utcnow
from reelay_common.domain.profiles import LearnedSchedule
from reelay_common.domain.records import UploadRecord
from reelay_common.domain.rules import Backoff
from reelay_common.logging import get_logger
from reelay_common.readiness import instant_check
from reelay_common.runtime import Infrastructure, ops_server, run_service, supervise
from reelay_common.tracing import continued_span

from reelay_status_poller.callbacks import CallbackDeps, CallbackPolicy, handle_status_changed
from reelay_status_poller.handlers import PollerDeps, PollOutcome, PollPolicy, handle_publish_event, poll_once
from reelay_status_poller.scheduler import PollScheduler, archive_settled_uploads
from reelay_status_poller.settings import PollerSettings

log = get_logger("reelay_status_poller")

APP_NAME = "reelay-status-poller"


# One status/fetch may use this share of the lease (pacing wait included), so it always ends,
# and its outcome is written, well before another replica could take the upload over.
FETCH_SHARE_OF_LEASE = 0.6


def policy_of(settings: PollerSettings) -> PollPolicy:
    """The poll schedule the settings describe."""
    return PollPolicy(
        min_interval=settings.min_interval_seconds,
        max_interval=settings.max_interval_seconds,
        backoff_factor=settings.backoff_factor,
        give_up_after=settings.give_up_after_seconds,
        post_id_watch=settings.post_id_watch_seconds,
        fetch_timeout=settings.lease_seconds * FETCH_SHARE_OF_LEASE,
    )


def learning_of(settings: PollerSettings) -> LearnedSchedule | None:
    """The learnt schedule the settings describe; None when learning is off (the backoff alone)."""
    if not settings.learn_schedule:
        return None
    return LearnedSchedule(
        max_gap=settings.learned_max_gap_seconds, min_observations=settings.learn_min_observations
    )


def callback_policy_of(settings: PollerSettings) -> CallbackPolicy:
    """Where callbacks go by default and how they are retried, as the settings say."""
    return CallbackPolicy(
        default_url=settings.callback_default_url,
        retry_seconds=settings.callback_retry_seconds,
        backoff=Backoff(
            settings.callback_backoff_initial_seconds, settings.callback_backoff_max_seconds, jitter=0.2
        ),
    )


async def run(
    settings: PollerSettings,
    stop: asyncio.Event,
    *,
    on_ops_bound: Callable[[int], None] | None = None,
    consumer_overrides: Mapping[str, Any] | None = None,
) -> None:
    """Consume publish events, poll due uploads and serve ops until `stop` is set; in-flight polls
    and records finish (bounded), then everything is closed. `consumer_overrides` reach the Kafka
    consumer (tests shorten its session timeouts)."""
    async with (
        Infrastructure.connect(
            settings,
            app_name=APP_NAME,
            # The status topic is read here too (callbacks), so a bad record of it has a dead letter.
            topics=[settings.topic_publish_events, settings.topic_publish_status],
        ) as infra,
        callback_sender(
            settings.callback_secret.get_secret_value(),
            timeout_seconds=settings.callback_timeout_seconds,
            allow_private=settings.callback_allow_private_urls,
        ) as sender,
    ):
        policy = policy_of(settings)
        deps = PollerDeps(
            uploads=infra.uploads,
            recorder=infra.recorder,
            outbox=infra.outbox,
            tiktok=infra.tiktok_gateway(
                # A poll that would wait long for a status slot is rescheduled instead
                # (RateLimitedError with retry_after), so it never sits on its lease.
                max_wait_seconds=policy.fetch_timeout / 2,
                # Same for TikTok's own 429: the scheduler's next poll is the retry.
                max_rate_limit_retries=0,
            ),
            policy=policy,
            clock=utcnow,
            webhooks=MongoWebhookLedger(infra.db),
            # Profiles are learnt even with learning off, so turning it on starts from what was seen.
            profiles=MongoPollProfiles(infra.db),
            learning=learning_of(settings),
        )

        # The consumer loop binds topic/partition/offset and the message's ids to every log line.
        async def on_publish_event(event: PublishEvent, _ctx: RecordContext) -> None:
            await handle_publish_event(event, deps)

        consumer: ConsumerLoop[PublishEvent] = ConsumerLoop(
            topic=settings.topic_publish_events,
            decode=PUBLISH_EVENT_ADAPTER.validate_json,
            handle=on_publish_event,
            **infra.consumer_options(settings, app_name=APP_NAME),
            **(consumer_overrides or {}),
        )

        callback_deps = CallbackDeps(
            uploads=infra.uploads, sender=sender, policy=callback_policy_of(settings), clock=utcnow
        )

        async def on_status_changed(msg: PublishStatusChanged, _ctx: RecordContext) -> None:
            await handle_status_changed(msg, callback_deps)

        callback_options = infra.consumer_options(settings, app_name=APP_NAME)
        callback_options["group_id"] = settings.callback_consumer_group
        callbacks: ConsumerLoop[PublishStatusChanged] = ConsumerLoop(
            topic=settings.topic_publish_status,
            decode=PublishStatusChanged.model_validate_json,
            handle=on_status_changed,
            **callback_options,
            **(consumer_overrides or {}),
        )

        # The scheduler binds each poll's ids (its unit of work) to every log line.
        async def poll(record: UploadRecord) -> PollOutcome:
            with continued_span("poll publish status", record.trace_context):  # the trace of tracking
                return await poll_once(record, deps)

        scheduler = PollScheduler(
            uploads=infra.uploads,
            poll=poll,
            clock=utcnow,
            lease_seconds=settings.lease_seconds,
            concurrency=settings.scheduler_concurrency,
            idle_sleep_seconds=settings.idle_sleep_seconds,
            error_retry_seconds=settings.max_interval_seconds,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
        )

        log.info(
            "status_poller_started",
            topic=settings.topic_publish_events,
            group_id=settings.consumer_group,
        )
        try:
            await supervise(
                {
                    "consumer": consumer.run,
                    "outbox": infra.outbox.run,
                    "scheduler": scheduler.run,
                    "callbacks": callbacks.run,
                    "archiver": functools.partial(
                        archive_settled_uploads,
                        infra.uploads,
                        clock=utcnow,
                        grace_seconds=settings.archive_grace_seconds,
                        interval_seconds=settings.archive_interval_seconds,
                    ),
                    "ops": ops_server(
                        host=settings.ops_host,
                        port=settings.ops_port,
                        checks={
                            **infra.ready_checks(),
                            "consumer": instant_check(consumer.is_healthy),
                            "assigned": instant_check(consumer.has_assignment),
                            "scheduler": instant_check(scheduler.is_healthy),
                            "callbacks": instant_check(callbacks.is_healthy),
                        },
                        on_bound=on_ops_bound,
                    ),
                },
                stop,
            )
        finally:
            log.info("status_poller_stopped")


def main() -> None:
    """Console entry point (`reelay-status-poller`)."""
    run_service(APP_NAME, PollerSettings, run)
