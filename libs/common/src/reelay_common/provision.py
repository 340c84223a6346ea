"""`reelay-create-topics`: create Reelay's Kafka topics with their partitions and configs (the
Kubernetes Job of deploy/k8s, or by hand), reading only the Kafka and topic settings."""

from __future__ import annotations

import asyncio
import sys

from reelay_common.adapters.kafka.topics import ensure_topics
from reelay_common.domain.errors import RetryableError
from reelay_common.logging import configure_logging, get_logger
from reelay_common.settings import TopicSettings

log = get_logger("reelay_common.provision")

__all__ = ["TopicSettings", "create_topics", "main", "topic_configs"]


def topic_configs(replication_factor: int) -> dict[str, str]:
    """Topic-level configs: with 3 replicas or more, acks=all needs 2 in sync (one broker may go)."""
    return {"min.insync.replicas": str(min(2, replication_factor))} if replication_factor >= 3 else {}


async def create_topics(settings: TopicSettings) -> None:
    """Create the consumed topics (each with its `.dlq`) and the outbound status topic."""
    configs = topic_configs(settings.topic_replication_factor)
    consumed = [settings.topic_upload_requested, settings.topic_publish_events]
    for topics, with_dlq in ((consumed, True), ([settings.topic_publish_status], False)):
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            topics,
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            with_dlq=with_dlq,
            configs=configs,
        )
    log.info(
        "topics_ensured",
        topics=[*consumed, settings.topic_publish_status],
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
        configs=configs,
    )


def main() -> None:
    """Console entry point (`reelay-create-topics`): exit 0 once the topics exist, 1 if Kafka
    cannot be reached (the Job retries)."""
    settings = TopicSettings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(create_topics(settings))
    except RetryableError as exc:
        log.error("topics_not_created", error=str(exc))
        sys.exit(1)
